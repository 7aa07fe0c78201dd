//! Writing a whole model as a GGUF file that llama.cpp loads: llama.cpp's tensor names and
//! q/k row order, per-tensor ggml types chosen by a [`Mix`] (a llama-quantize preset plus
//! overrides), metadata carried over from a GGUF source or built from a Hugging Face
//! directory, 32-byte alignment, tied embeddings written once.
//!
//! [`plan`] decides every tensor's type and lays the file out (its exact size is known before
//! anything is encoded); [`write`] streams it to a temporary file beside the destination,
//! encoding one tensor at a time (rows in parallel), and renames it into place. A tensor whose
//! type is unchanged from a GGUF source is copied byte for byte; the others are decoded to f32
//! and encoded with crunch's importance-weighted encoders ([`crunch_formats::gguf::quants`]),
//! or taken as already-encoded bytes from the caller (how error-feedback quantizers such as
//! GPTQ hand in their tensors).

pub mod meta;
pub mod mix;

pub use mix::{Category, Mix, ModelFacts, Preset};

use crate::{Error, Result};
use crunch_formats::gguf::quants::Codec;
use crunch_formats::gguf::{GgufFile, GgufValue, Layout};
use crunch_formats::{DType, TensorSource};
use crunch_model::config::RopeScaling;
use crunch_model::model::tensor_shapes;
use crunch_model::rope::inverse_frequencies;
use crunch_model::weights::{gguf_location, gguf_name, permute_rows};
use crunch_model::{Arch, Checkpoint, ModelConfig};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Per-input-column importance of each matrix (E[x²] of the column's input over calibration
/// data, as in llama.cpp's imatrix), keyed by llama.cpp tensor name (`blk.0.attn_q.weight`;
/// `output.weight` also serves a tied `token_embd.weight`).
pub type Importance = BTreeMap<String, Vec<f32>>;

/// What went wrong writing a GGUF file or reading an importance file (in [`Error::Gguf`],
/// with the file's path).
#[derive(Debug, thiserror::Error)]
pub enum GgufProblem {
    /// crunch-formats' GGUF writer refused the layout or a write failed (its message).
    #[error("{0}")]
    Layout(String),
    #[error("tensor `{tensor}`: crunch does not encode {dtype} (it reads it)")]
    NotEncodable { tensor: String, dtype: &'static str },
    #[error("tensor `{tensor}`: {got} importance weights for rows of {cols}")]
    ImportanceLength {
        tensor: String,
        got: usize,
        cols: usize,
    },
    #[error("tensor `{tensor}`: {got} pre-encoded bytes, {planned} planned as {dtype}")]
    PreEncoded {
        tensor: String,
        got: usize,
        planned: usize,
        dtype: &'static str,
    },
    /// The codec refused the rows (its message: a row length that is not whole blocks).
    #[error("tensor `{tensor}`: {message}")]
    Encode { tensor: String, message: String },
    #[error("`{tensor}` has no `{counts}`")]
    ImatrixNoCounts { tensor: String, counts: String },
    #[error("`{tensor}` has {matrices} matrices (experts); crunch reads dense models only")]
    ImatrixExperts { tensor: String, matrices: usize },
    #[error("`{counts}` is {value}, not a positive count")]
    ImatrixCount { counts: String, value: f32 },
    #[error("no `*.in_sum2` tensors: not an imatrix file")]
    NotImatrix,
    #[error("missing; llama.cpp needs the tokenizer inside the GGUF")]
    NoTokenizer,
    #[error(
        "a GGUF of a {arch} model is written only from a GGUF source so far (from a Hugging \
         Face directory: llama, mistral, qwen2, qwen3); convert it with llama.cpp's \
         convert_hf_to_gguf.py first, or pick another --format"
    )]
    ArchitectureFromHf { arch: &'static str },
}

fn gguf_err(path: &Path, problem: GgufProblem) -> Error {
    Error::Gguf {
        path: path.to_path_buf(),
        problem,
    }
}

/// One tensor of the output.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedTensor {
    /// llama.cpp name.
    pub name: String,
    /// The Hugging Face name it comes from (`None` for `rope_freqs.weight` made from the
    /// config).
    pub hf_name: Option<String>,
    /// Row-major shape.
    pub shape: Vec<usize>,
    /// Type in the source.
    pub source: DType,
    /// Type written.
    pub dtype: DType,
    /// Bytes written.
    pub bytes: usize,
}

/// A laid-out export: every tensor with its type, the metadata, and the file's exact size.
pub struct GgufPlan {
    pub tensors: Vec<PlannedTensor>,
    pub metadata: Vec<(String, GgufValue)>,
    pub layout: Layout,
}

impl GgufPlan {
    /// The file's size in bytes.
    pub fn file_bytes(&self) -> u64 {
        self.layout.file_len()
    }

    /// Bits per weight over the tensors matching `filter` (e.g. the block linear layers).
    pub fn bits_per_weight(&self, filter: impl Fn(&PlannedTensor) -> bool) -> f64 {
        let (bits, n) =
            self.tensors
                .iter()
                .filter(|t| filter(t))
                .fold((0f64, 0f64), |(b, n), t| {
                    (
                        b + 8.0 * t.bytes as f64,
                        n + t.shape.iter().product::<usize>() as f64,
                    )
                });
        if n > 0.0 {
            bits / n
        } else {
            0.0
        }
    }
}

/// The tensors of a checkpoint under llama.cpp names, in llama.cpp's order.
fn source_tensors(ckpt: &Checkpoint, gguf: Option<&GgufFile>) -> Vec<PlannedTensor> {
    let mut out: Vec<PlannedTensor> = match gguf {
        Some(f) => f
            .tensors()
            .into_iter()
            .map(|t| PlannedTensor {
                hf_name: None,
                name: t.name,
                shape: t.shape,
                source: t.dtype,
                dtype: t.dtype,
                bytes: 0,
            })
            .collect(),
        None => {
            let cfg = &ckpt.config;
            let mut v: Vec<PlannedTensor> = tensor_shapes(cfg)
                .into_iter()
                .map(|(hf, shape)| {
                    let source = ckpt.weights.info(&hf).map_or(DType::F32, |i| i.dtype);
                    PlannedTensor {
                        name: gguf_name(&hf),
                        hf_name: Some(hf),
                        shape,
                        source,
                        dtype: source,
                        bytes: 0,
                    }
                })
                .collect();
            if matches!(cfg.rope_scaling, Some(RopeScaling::Llama3 { .. })) {
                v.push(PlannedTensor {
                    name: "rope_freqs.weight".into(),
                    hf_name: None,
                    shape: vec![cfg.head_dim / 2],
                    source: DType::F32,
                    dtype: DType::F32,
                    bytes: 0,
                });
            }
            v
        }
    };
    out.sort_by_key(|t| mix::llama_order(&t.name));
    out
}

/// Vectors and norms stay F32 (as llama.cpp's converter writes them); 16-bit sources keep
/// their 16-bit matrices unless the mix quantizes them.
fn unquantized_type(t: &PlannedTensor) -> DType {
    if t.shape.len() < 2 || !t.source.is_float() {
        DType::F32
    } else {
        t.source
    }
}

/// Decides every tensor's type and lays out the file. `extra` metadata is appended (e.g.
/// what produced the file).
pub fn plan(ckpt: &Checkpoint, mix: &Mix, extra: &[(String, GgufValue)]) -> Result<GgufPlan> {
    let gguf = open_gguf_source(ckpt)?;
    if gguf.is_none() && !meta::builds_from_hf(ckpt.config.arch) {
        let arch = ckpt.config.arch.name();
        return Err(gguf_err(
            &ckpt.path,
            GgufProblem::ArchitectureFromHf { arch },
        ));
    }
    let mut tensors = source_tensors(ckpt, gguf.as_ref());
    let cfg = &ckpt.config;
    if gguf.is_none() {
        for t in &mut tensors {
            t.source = unquantized_type(t);
            t.dtype = t.source;
        }
    }
    let facts = ModelFacts {
        gqa: cfg.heads / cfg.kv_heads.max(1),
        tied: !tensors.iter().any(|t| t.name == "output.weight"),
        is_70b: cfg.arch == Arch::Llama && cfg.layers == 80 && cfg.heads != cfg.kv_heads,
    };
    let descs: Vec<(String, Vec<usize>, DType)> = tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone(), t.source))
        .collect();
    for (t, d) in tensors.iter_mut().zip(mix.assign(&descs, facts)) {
        t.dtype = d;
    }
    let mut metadata = match &gguf {
        Some(f) => meta::from_gguf(f, mix.preset.file_type()),
        None => meta::from_hf(ckpt, mix.preset.file_type())?,
    };
    metadata.extend(extra.iter().cloned());
    let meta_refs: Vec<(&str, GgufValue)> = metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let descs: Vec<(&str, &[usize], DType)> = tensors
        .iter()
        .map(|t| (t.name.as_str(), t.shape.as_slice(), t.dtype))
        .collect();
    let layout = Layout::new(&meta_refs, &descs)
        .map_err(|e| gguf_err(&ckpt.path, GgufProblem::Layout(e)))?;
    for (t, &size) in tensors.iter_mut().zip(&layout.sizes) {
        t.bytes = size;
    }
    Ok(GgufPlan {
        tensors,
        metadata,
        layout,
    })
}

fn open_gguf_source(ckpt: &Checkpoint) -> Result<Option<GgufFile>> {
    Ok(match ckpt.format {
        crunch_model::checkpoint::Format::Gguf => Some(GgufFile::open(&ckpt.path)?),
        _ => None,
    })
}

/// What [`write`] encodes with besides the mix.
#[derive(Default)]
pub struct Inputs<'a> {
    /// Importance per input column for the encoders' error weighting.
    pub importance: Option<&'a Importance>,
    /// Tensors already encoded in their planned type (by llama.cpp name): written as given.
    pub encoded: Option<&'a BTreeMap<String, Vec<u8>>>,
}

/// Writes `plan` for `ckpt` to `out` (through a temporary file renamed into place; an existing
/// `out` is replaced only with `overwrite`, and never when it is the input: see
/// [`crate::output::check_output`]).
/// `progress(i, n, name)` is called before each tensor.
pub fn write(
    ckpt: &Checkpoint,
    plan: &GgufPlan,
    inputs: &Inputs<'_>,
    out: &Path,
    overwrite: bool,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<()> {
    let gguf = open_gguf_source(ckpt)?;
    let n = plan.tensors.len();
    crate::atomic::atomic_file(out, &[&ckpt.path], overwrite, |tmp| {
        let io = |source| Error::Io {
            path: tmp.to_path_buf(),
            source,
        };
        let file = std::fs::File::create(tmp).map_err(io)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 22, file);
        // The writer takes string errors; a tensor's own error is kept here, typed.
        let mut failed = None;
        let written = plan.layout.write(&mut w, |i| {
            let t = &plan.tensors[i];
            progress(i, n, &t.name);
            tensor_bytes(ckpt, gguf.as_ref(), t, inputs).map_err(|e| {
                let msg = e.to_string();
                failed = Some(e);
                msg
            })
        });
        if let Some(e) = failed {
            return Err(e);
        }
        written.map_err(|e| gguf_err(tmp, GgufProblem::Layout(e)))?;
        w.flush().map_err(io)?;
        Ok(())
    })
}

/// The bytes of one tensor in its planned type.
fn tensor_bytes(
    ckpt: &Checkpoint,
    gguf: Option<&GgufFile>,
    t: &PlannedTensor,
    inputs: &Inputs<'_>,
) -> Result<Vec<u8>> {
    if let Some(bytes) = inputs.encoded.and_then(|m| m.get(&t.name)) {
        if bytes.len() != t.bytes {
            return Err(gguf_err(
                &ckpt.path,
                GgufProblem::PreEncoded {
                    tensor: t.name.clone(),
                    got: bytes.len(),
                    planned: t.bytes,
                    dtype: t.dtype.ggml_name(),
                },
            ));
        }
        return Ok(bytes.clone());
    }
    if let Some(f) = gguf {
        if t.dtype == t.source {
            return Ok(f.raw(&t.name)?.to_vec());
        }
    }
    let values = llama_layout_values(ckpt, gguf, t)?;
    let cols = t.shape.last().copied().unwrap_or(1);
    let bad = |problem| gguf_err(&ckpt.path, problem);
    Ok(match t.dtype {
        DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        DType::BF16 => values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        d => {
            let codec = Codec::new(d).ok_or_else(|| {
                bad(GgufProblem::NotEncodable {
                    tensor: t.name.clone(),
                    dtype: d.ggml_name(),
                })
            })?;
            let imp = importance_for(inputs.importance, &t.name);
            if let Some(w) = imp {
                if w.len() != cols {
                    return Err(bad(GgufProblem::ImportanceLength {
                        tensor: t.name.clone(),
                        got: w.len(),
                        cols,
                    }));
                }
            }
            codec.encode_rows(&values, cols, imp).map_err(|message| {
                bad(GgufProblem::Encode {
                    tensor: t.name.clone(),
                    message,
                })
            })?
        }
    })
}

/// The importance of tensor `name`: its own, or for a tied `token_embd.weight` the output
/// matrix's.
fn importance_for<'a>(imp: Option<&'a Importance>, name: &str) -> Option<&'a [f32]> {
    let imp = imp?;
    imp.get(name)
        .or_else(|| {
            (name == "token_embd.weight")
                .then(|| imp.get("output.weight"))
                .flatten()
        })
        .map(Vec::as_slice)
}

/// A tensor's values as f32 in llama.cpp's layout (q/k rows permuted on Llama).
fn llama_layout_values(
    ckpt: &Checkpoint,
    gguf: Option<&GgufFile>,
    t: &PlannedTensor,
) -> Result<Vec<f32>> {
    if let Some(f) = gguf {
        return Ok(f.read_f32(&t.name)?);
    }
    let cfg = &ckpt.config;
    let Some(hf) = &t.hf_name else {
        // rope_freqs.weight: the per-frequency divisors llama.cpp applies for Llama 3 scaling.
        return Ok(rope_factors(cfg));
    };
    let v = ckpt.weights.read(hf, &t.shape, cfg)?;
    Ok(to_llama_rows(cfg, hf, &v, t.shape[0]))
}

/// Hugging Face tensor `hf`'s `rows` rows (of any element type: values, or a row-wise
/// encoding's bytes) in llama.cpp's row order: q and k rows permuted on architectures whose
/// GGUF uses the interleaved rotary layout, every other tensor as it is.
pub fn to_llama_rows<T: Copy>(cfg: &ModelConfig, hf: &str, data: &[T], rows: usize) -> Vec<T> {
    let heads = if !gguf_arch_permutes(cfg.arch) {
        None
    } else if hf.contains("self_attn.q_proj") {
        Some(cfg.heads)
    } else if hf.contains("self_attn.k_proj") {
        Some(cfg.kv_heads)
    } else {
        None
    };
    match heads {
        Some(h) if h * cfg.head_dim == rows => permute_rows(data, h, cfg.head_dim),
        _ => data.to_vec(),
    }
}

fn gguf_arch_permutes(arch: Arch) -> bool {
    meta::gguf_arch(arch) == "llama"
}

fn rope_factors(cfg: &ModelConfig) -> Vec<f32> {
    let plain = ModelConfig {
        rope_scaling: None,
        ..cfg.clone()
    };
    let base = inverse_frequencies(&plain, None);
    let scaled = inverse_frequencies(cfg, None);
    base.iter()
        .zip(&scaled)
        .map(|(b, s)| (b / s) as f32)
        .collect()
}

/// Importance keyed by Hugging Face weight names (as `crunch_calib::collect_importance` gives
/// it) re-keyed by llama.cpp's names for `arch` (`lm_head.weight` becomes `output.weight`).
/// Experts are left out: llama.cpp stacks them into one `ffn_*_exps` tensor, which crunch's
/// encoders weight with one vector per tensor, not one per expert, so they are rounded
/// without importance.
pub fn importance_by_gguf_name(hf: BTreeMap<String, Vec<f32>>, arch: Arch) -> Importance {
    hf.into_iter()
        .map(|(k, v)| (gguf_location(&k, arch), v))
        .filter(|(loc, _)| loc.expert.is_none())
        .map(|(loc, v)| (loc.name, v))
        .collect()
}

/// Reads llama.cpp's importance file (`llama-imatrix -o FILE`, GGUF): for each matrix
/// `NAME.in_sum2` (per-column sums of squares) and `NAME.counts` (rows summed), giving
/// E[x²] = in_sum2 / counts. Only dense matrices (one count) are accepted.
pub fn read_imatrix(path: &Path) -> Result<Importance> {
    let f = GgufFile::open(path)?;
    let bad = |problem| gguf_err(path, problem);
    let mut out = Importance::new();
    for t in f.tensors() {
        let Some(name) = t.name.strip_suffix(".in_sum2") else {
            continue;
        };
        let counts_name = format!("{name}.counts");
        let counts = f.read_f32(&counts_name).map_err(|_| {
            bad(GgufProblem::ImatrixNoCounts {
                tensor: t.name.clone(),
                counts: counts_name.clone(),
            })
        })?;
        if counts.len() != 1 {
            return Err(bad(GgufProblem::ImatrixExperts {
                tensor: name.to_string(),
                matrices: counts.len(),
            }));
        }
        let n = counts[0];
        if n.is_nan() || n <= 0.0 {
            return Err(bad(GgufProblem::ImatrixCount {
                counts: counts_name,
                value: n,
            }));
        }
        let sums = f.read_f32(&t.name)?;
        out.insert(name.to_string(), sums.iter().map(|s| s / n).collect());
    }
    if out.is_empty() {
        return Err(bad(GgufProblem::NotImatrix));
    }
    Ok(out)
}

/// Writes `importance` in llama.cpp's importance-matrix format (what `llama-imatrix -o` writes
/// and `llama-quantize --imatrix` and [`read_imatrix`] read): per matrix `NAME.in_sum2` (the
/// sums of squares, E[x²]·rows) and `NAME.counts` (`rows`, the calibration tokens), with
/// `general.type = imatrix` and the dataset name.
pub fn write_imatrix(
    path: &Path,
    importance: &Importance,
    rows: usize,
    chunk_size: usize,
    dataset: &str,
    overwrite: bool,
) -> Result<()> {
    let meta = [
        ("general.type", GgufValue::String("imatrix".into())),
        (
            "imatrix.datasets",
            GgufValue::Array(vec![GgufValue::String(dataset.into())]),
        ),
        (
            "imatrix.chunk_count",
            GgufValue::U32((rows / chunk_size.max(1)) as u32),
        ),
        ("imatrix.chunk_size", GgufValue::U32(chunk_size as u32)),
    ];
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, mean) in importance {
        let sums: Vec<u8> = mean
            .iter()
            .flat_map(|m| (m * rows as f32).to_le_bytes())
            .collect();
        data.push((format!("{name}.in_sum2"), vec![1, mean.len()], sums));
        data.push((
            format!("{name}.counts"),
            vec![1, 1],
            (rows as f32).to_le_bytes().to_vec(),
        ));
    }
    let specs: Vec<(&str, &[usize], DType, &[u8])> = data
        .iter()
        .map(|(n, s, b)| (n.as_str(), s.as_slice(), DType::F32, b.as_slice()))
        .collect();
    let bytes = crunch_formats::gguf::serialize(&meta, &specs)
        .map_err(|e| gguf_err(path, GgufProblem::Layout(e)))?;
    crate::atomic::atomic_file(path, &[], overwrite, |tmp| {
        std::fs::write(tmp, &bytes).map_err(|source| Error::Io {
            path: tmp.to_path_buf(),
            source,
        })
    })
}
