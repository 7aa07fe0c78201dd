//! Named weight access with the checkpoint's naming and layout quirks undone, so the model
//! code sees Hugging Face names and layouts whatever the file format.
//!
//! GGUF quirks undone here: llama.cpp's names (per architecture), its q/k row permutation on
//! Llama-architecture files, Gemma's norms stored as `1 + w` (llama.cpp's converter adds the
//! one; Hugging Face stores `w`), and experts stacked into one `[experts, rows, cols]` tensor
//! per part (`blk.N.ffn_gate_exps.weight`), of which one expert is read at a time.

use crate::config::{Arch, ModelConfig};
use crate::{Error, Result, TensorProblem};
use crunch_formats::{SharedBuffer, SharedBytes, TensorInfo, TensorSource};
use crunch_runtime::kernels::{self, Bytes};
use crunch_runtime::PackedMatrix;
use std::sync::Arc;

/// How stored tensor names relate to Hugging Face names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    HuggingFace,
    /// llama.cpp names (`blk.N.attn_q.weight`). `unpermute_qk`: llama.cpp's converter reorders
    /// the rows of q and k for its interleaved rotary layout on Llama-architecture files.
    Gguf {
        unpermute_qk: bool,
    },
}

/// Where a Hugging Face tensor lives in a GGUF file: a tensor, or one expert of a stacked one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufLocation {
    pub name: String,
    /// Index into the leading axis of a stacked `[experts, rows, cols]` tensor.
    pub expert: Option<usize>,
}

pub struct Weights {
    source: Box<dyn TensorSource>,
    naming: Naming,
    /// The architecture, for llama.cpp's per-architecture names and layouts.
    arch: Arch,
}

impl Weights {
    pub fn new(source: Box<dyn TensorSource>, naming: Naming) -> Self {
        Self {
            source,
            naming,
            arch: Arch::Llama,
        }
    }

    /// Sets the architecture whose llama.cpp names and layouts a GGUF source uses.
    pub fn with_arch(mut self, arch: Arch) -> Self {
        self.arch = arch;
        self
    }

    pub fn source(&self) -> &dyn TensorSource {
        self.source.as_ref()
    }

    pub fn naming(&self) -> Naming {
        self.naming
    }

    fn locate(&self, hf: &str) -> GgufLocation {
        match self.naming {
            Naming::HuggingFace => GgufLocation {
                name: hf.to_string(),
                expert: None,
            },
            Naming::Gguf { .. } => gguf_location(hf, self.arch),
        }
    }

    /// The stored name of a Hugging Face tensor name (for a stacked expert, the stacked
    /// tensor's name and the expert: `blk.0.ffn_up_exps.weight[3]`).
    pub fn stored_name(&self, hf: &str) -> String {
        let loc = self.locate(hf);
        match loc.expert {
            Some(e) => format!("{}[{e}]", loc.name),
            None => loc.name,
        }
    }

    pub fn contains(&self, hf: &str) -> bool {
        self.info(hf).is_some()
    }

    /// The tensor's description as the model sees it (an expert's slice of a stacked tensor:
    /// the slice's shape; `None` when the stack has no such expert).
    pub fn info(&self, hf: &str) -> Option<TensorInfo> {
        let loc = self.locate(hf);
        let info = self.source.info(&loc.name)?;
        match loc.expert {
            None => Some(info),
            Some(e) => match info.shape[..] {
                [experts, rows, cols] if e < experts => Some(TensorInfo {
                    shape: vec![rows, cols],
                    ..info
                }),
                _ => None,
            },
        }
    }

    /// The stored description of the stacked tensor holding expert tensor `hf`, if `hf` is
    /// one (the structural check counts its experts).
    pub fn stacked_info(&self, hf: &str) -> Option<TensorInfo> {
        let loc = self.locate(hf);
        loc.expert?;
        self.source.info(&loc.name)
    }

    /// The stored bytes of `hf` if it is kept as F16/BF16 under its Hugging Face name (see
    /// [`TensorSource::raw_half`]); `None` for GGUF, whose tensors are renamed and permuted.
    /// Bytes holding a NaN or an infinity give `None` too, so the caller's fallback
    /// ([`Weights::read`]) reports them.
    pub fn raw_half(&self, hf: &str) -> Option<(crunch_formats::DType, &[u8])> {
        match self.naming {
            Naming::HuggingFace => self
                .source
                .raw_half(hf)
                .filter(|(d, b)| crunch_formats::dtype::first_non_finite(*d, b).is_none()),
            Naming::Gguf { .. } => None,
        }
    }

    /// The stored GGUF blocks of `hf`, when crunch's format can keep them as they are: a type
    /// of [`crunch_formats::dtype::BLOCKS_IN_SAFETENSORS`], rows of whole blocks in crunch's
    /// row order (not a q/k projection llama.cpp permuted, not one expert of a stacked tensor),
    /// and shape `shape`. Non-finite values are left to the reader of the output, which
    /// refuses them on load as it does for any GGUF.
    pub fn raw_blocks(&self, hf: &str, shape: &[usize]) -> Option<SharedBytes> {
        let permuted = matches!(self.naming, Naming::Gguf { unpermute_qk: true })
            && (hf.ends_with("self_attn.q_proj.weight") || hf.ends_with("self_attn.k_proj.weight"));
        if permuted || self.locate(hf).expert.is_some() {
            return None;
        }
        let (stored, _) = self.checked_info(hf, shape).ok()?;
        let raw = self.source.raw_shared(&stored)?;
        crunch_formats::dtype::BLOCKS_IN_SAFETENSORS
            .contains(&raw.dtype)
            .then_some(raw)
    }

    /// The stored description of `hf`, checked to have shape `shape`.
    fn checked_info(&self, hf: &str, shape: &[usize]) -> Result<(String, TensorInfo)> {
        let stored = self.stored_name(hf);
        let bad = |problem| Error::tensor(self.source.path(), problem);
        let info = self.info(hf).ok_or_else(|| {
            bad(TensorProblem::Missing {
                tensor: stored.clone(),
                implied_by: None,
            })
        })?;
        if info.shape != shape {
            return Err(bad(TensorProblem::Shape {
                tensor: stored,
                found: info.shape,
                expected: shape.to_vec(),
                implied_by: "the config".into(),
            }));
        }
        Ok((stored, info))
    }

    /// The matrix `hf` (`shape = [rows, cols]`) in its stored encoding, for backends that
    /// multiply packed weights: the file's own bytes, shared with the mapped file where the
    /// layout allows (GGUF); `None` when the source cannot hand its bytes over or the kernels
    /// have no product for the encoding (the caller then reads f32).
    pub fn packed(
        &self,
        hf: &str,
        shape: &[usize],
        cfg: &ModelConfig,
    ) -> Result<Option<PackedMatrix>> {
        let (stored, _) = self.checked_info(hf, shape)?;
        let &[rows, cols] = shape else {
            return Ok(None);
        };
        // An expert is a slice of a stacked tensor (GGUF): read as f32 for now.
        if self.locate(hf).expert.is_some() {
            return Ok(None);
        }
        // The stored encoding: the source's own bytes (a GGUF's mapped blocks, crunch's codes
        // rewritten as blocks), else a 16-bit float tensor copied as it is (half the memory of
        // f32), else nothing (the caller reads f32).
        let raw = match self.source.raw_shared(&stored) {
            Some(raw) => raw,
            None => match self.raw_half(hf) {
                Some((dtype, b)) => SharedBytes {
                    dtype,
                    buffer: Arc::new(b.to_vec()),
                    range: 0..b.len(),
                },
                None => return Ok(None),
            },
        };
        if !kernels::supported(raw.dtype) {
            return Ok(None);
        }
        let heads = match self.naming {
            Naming::Gguf { unpermute_qk: true } if hf.ends_with("self_attn.q_proj.weight") => {
                Some(cfg.heads)
            }
            Naming::Gguf { unpermute_qk: true } if hf.ends_with("self_attn.k_proj.weight") => {
                Some(cfg.kv_heads)
            }
            _ => None,
        };
        let bad = |problem| Error::tensor(self.source.path(), problem);
        let unusable = |problem: String| {
            bad(TensorProblem::Unusable {
                tensor: stored.clone(),
                problem,
            })
        };
        let bytes = match heads {
            // Rows are whole blocks, so llama.cpp's row order is undone on the stored bytes.
            Some(heads) => {
                let stored = &raw.buffer[raw.range.clone()];
                Bytes::owned(unpermute_rows(stored, heads, cfg.head_dim, rows))
            }
            None => {
                let len = raw.range.len();
                Bytes::shared(Arc::new(Shared(raw.buffer)), raw.range.start, len)
                    .ok_or_else(|| unusable("its stored range lies outside the file".into()))?
            }
        };
        let m = PackedMatrix::new(raw.dtype, rows, cols, bytes).map_err(unusable)?;
        // The same refusal of non-finite weights as `read` (a NaN scale in one block would
        // make every output NaN).
        if let Some((i, value)) = m.first_non_finite() {
            return Err(bad(TensorProblem::NonFinite {
                tensor: stored,
                value,
                at: format!("row {}, column {}", i / cols, i % cols),
            }));
        }
        Ok(Some(m))
    }

    /// Reads `hf` as f32, checking that its shape is `shape`.
    pub fn read(&self, hf: &str, shape: &[usize], cfg: &ModelConfig) -> Result<Vec<f32>> {
        let (stored, info) = self.checked_info(hf, shape)?;
        let bad = |problem| Error::tensor(self.source.path(), problem);
        let loc = self.locate(hf);
        let mut data = match loc.expert {
            None => self.source.read_f32(&loc.name)?,
            Some(e) => {
                let n = info.numel();
                self.source.read_f32_range(&loc.name, e * n, n)?
            }
        };
        // A NaN or infinity in a weight or norm makes every output NaN (or silently wrong,
        // after quantization rounds around it): refuse it here, where every read passes.
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            let at = match shape {
                [_, cols] => format!("row {}, column {}", i / cols, i % cols),
                _ => format!("index {i}"),
            };
            return Err(bad(TensorProblem::NonFinite {
                tensor: stored,
                value: data[i],
                at,
            }));
        }
        if let Naming::Gguf { unpermute_qk } = self.naming {
            if unpermute_qk {
                if hf.ends_with("self_attn.q_proj.weight") || hf.ends_with("self_attn.q_proj.bias")
                {
                    data = unpermute_rows(&data, cfg.heads, cfg.head_dim, cfg.heads * cfg.head_dim);
                } else if hf.ends_with("self_attn.k_proj.weight")
                    || hf.ends_with("self_attn.k_proj.bias")
                {
                    data = unpermute_rows(
                        &data,
                        cfg.kv_heads,
                        cfg.head_dim,
                        cfg.kv_heads * cfg.head_dim,
                    );
                }
            }
            if self.arch == Arch::Gemma3 && hf.ends_with("norm.weight") {
                // llama.cpp stores Gemma's norms as 1 + w; the model sees Hugging Face's w.
                data.iter_mut().for_each(|v| *v -= 1.0);
            }
        }
        Ok(data)
    }
}

/// Maps a Hugging Face tensor name to llama.cpp's for the dense Llama-style architectures
/// (names it does not know pass through). See [`gguf_location`] for every architecture.
pub fn gguf_name(hf: &str) -> String {
    gguf_location(hf, Arch::Llama).name
}

/// Where llama.cpp stores Hugging Face tensor `hf` of a model of architecture `arch`. The GGUF
/// fixtures in [`crate::testing`] are named with it too, so what checks the table is the tests
/// below, `scripts/check_tiny_gguf.py` (the fixtures against transformers' GGUF reader) and
/// loading real llama.cpp files (SmolLM2's GGUF in crunch-eval's `smollm2` test, Gemma 3
/// 270M's in bench `real_logits`).
pub fn gguf_location(hf: &str, arch: Arch) -> GgufLocation {
    const GLOBAL: &[(&str, &str)] = &[
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    const COMMON: &[(&str, &str)] = &[
        ("input_layernorm", "attn_norm"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("self_attn.q_norm", "attn_q_norm"),
        ("self_attn.k_norm", "attn_k_norm"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
    ];
    // Gemma's post_attention_layernorm follows attention (llama.cpp: post_attention_norm);
    // elsewhere it is the MLP's input norm (ffn_norm).
    const GEMMA3: &[(&str, &str)] = &[
        ("post_attention_layernorm", "post_attention_norm"),
        ("pre_feedforward_layernorm", "ffn_norm"),
        ("post_feedforward_layernorm", "post_ffw_norm"),
    ];
    const OTHERS: &[(&str, &str)] = &[("post_attention_layernorm", "ffn_norm")];
    // Phi-3's fused gate_up is llama.cpp's ffn_up (gate rows first, as in Hugging Face).
    const PHI3: &[(&str, &str)] = &[
        ("self_attn.qkv_proj", "attn_qkv"),
        ("mlp.gate_up_proj", "ffn_up"),
    ];
    const ROUTERS: &[(&str, &str)] = &[
        ("block_sparse_moe.gate", "ffn_gate_inp"),
        ("mlp.gate", "ffn_gate_inp"),
    ];
    let plain = |name: String| GgufLocation { name, expert: None };
    if let Some((_, g)) = GLOBAL.iter().find(|(h, _)| *h == hf) {
        return plain(g.to_string());
    }
    let Some((layer, tail)) = hf
        .strip_prefix("model.layers.")
        .and_then(|r| r.split_once('.'))
    else {
        return plain(hf.to_string());
    };
    // Experts: `{module}.experts.E.{part}.weight` → one slice of `ffn_{part}_exps.weight`.
    if let Some((_, rest)) = tail.split_once("experts.") {
        let mut it = rest.splitn(3, '.');
        if let (Some(e), Some(part), Some(suffix)) = (it.next(), it.next(), it.next()) {
            let stacked = match part {
                "gate_proj" | "w1" => Some("ffn_gate_exps"),
                "up_proj" | "w3" => Some("ffn_up_exps"),
                "down_proj" | "w2" => Some("ffn_down_exps"),
                _ => None,
            };
            if let (Ok(e), Some(stacked)) = (e.parse::<usize>(), stacked) {
                return GgufLocation {
                    name: format!("blk.{layer}.{stacked}.{suffix}"),
                    expert: Some(e),
                };
            }
        }
    }
    let arch_table: &[(&str, &str)] = match arch {
        Arch::Gemma3 => GEMMA3,
        Arch::Phi3 => PHI3,
        _ => &[],
    };
    let norms = if arch == Arch::Gemma3 {
        &[][..]
    } else {
        OTHERS
    };
    for (h, g) in arch_table.iter().chain(norms).chain(ROUTERS).chain(COMMON) {
        // Whole name segments only: `mlp.gate` must not match `mlp.gate_proj`.
        if let Some(suffix) = tail.strip_prefix(h).filter(|s| s.starts_with('.')) {
            return plain(format!("blk.{layer}.{g}{suffix}"));
        }
    }
    plain(hf.to_string())
}

/// A mapped file's bytes as the kernels' byte owner.
struct Shared(SharedBuffer);

impl std::ops::Deref for Shared {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// llama.cpp's converter's q/k row order for its interleaved rotary layout (what a GGUF of a
/// Llama-architecture model stores, and what [`Weights`] undoes on reading): within each head,
/// Hugging Face row `j·d/2 + i` goes to row `2i + j`. Rows are moved whole.
pub fn permute_rows<T: Copy>(data: &[T], heads: usize, head_dim: usize) -> Vec<T> {
    let cols = data.len() / (heads * head_dim);
    let half = head_dim / 2;
    let mut out = Vec::with_capacity(data.len());
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = h * head_dim + j * half + i;
                out.extend_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// Undoes llama.cpp's q/k row permutation. Within each head, llama.cpp stores row `2i + j`
/// what Hugging Face stores at row `j * d/2 + i` (i < d/2, j ∈ {0, 1}). Rows are moved whole,
/// so `data` may hold any element type (`rows` rows of equal size).
fn unpermute_rows<T: Copy + Default>(
    data: &[T],
    heads: usize,
    head_dim: usize,
    rows: usize,
) -> Vec<T> {
    debug_assert_eq!(rows, heads * head_dim);
    let cols = data.len() / rows;
    let half = head_dim / 2;
    let mut out = vec![T::default(); data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = h * head_dim + 2 * i + j;
                let dst = h * head_dim + j * half + i;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_llama_cpp() {
        assert_eq!(
            gguf_name("model.layers.12.self_attn.q_proj.weight"),
            "blk.12.attn_q.weight"
        );
        assert_eq!(
            gguf_name("model.layers.0.self_attn.k_proj.bias"),
            "blk.0.attn_k.bias"
        );
        assert_eq!(
            gguf_name("model.layers.3.mlp.down_proj.weight"),
            "blk.3.ffn_down.weight"
        );
        assert_eq!(gguf_name("model.embed_tokens.weight"), "token_embd.weight");
        assert_eq!(gguf_name("lm_head.weight"), "output.weight");
        let at = |hf: &str, arch| {
            let l = gguf_location(hf, arch);
            (l.name, l.expert)
        };
        assert_eq!(
            at(
                "model.layers.1.post_attention_layernorm.weight",
                Arch::Gemma3
            ),
            ("blk.1.post_attention_norm.weight".into(), None)
        );
        assert_eq!(
            at(
                "model.layers.1.pre_feedforward_layernorm.weight",
                Arch::Gemma3
            ),
            ("blk.1.ffn_norm.weight".into(), None)
        );
        assert_eq!(
            at(
                "model.layers.1.post_attention_layernorm.weight",
                Arch::Qwen3
            ),
            ("blk.1.ffn_norm.weight".into(), None)
        );
        assert_eq!(
            at("model.layers.0.mlp.gate_up_proj.weight", Arch::Phi3),
            ("blk.0.ffn_up.weight".into(), None)
        );
        assert_eq!(
            at("model.layers.2.mlp.gate.weight", Arch::Qwen3Moe),
            ("blk.2.ffn_gate_inp.weight".into(), None)
        );
        assert_eq!(
            at("model.layers.2.mlp.gate_proj.weight", Arch::Qwen3Moe),
            ("blk.2.ffn_gate.weight".into(), None)
        );
        assert_eq!(
            at(
                "model.layers.2.mlp.experts.5.down_proj.weight",
                Arch::Qwen3Moe
            ),
            ("blk.2.ffn_down_exps.weight".into(), Some(5))
        );
        assert_eq!(
            at(
                "model.layers.0.block_sparse_moe.experts.1.w3.weight",
                Arch::Mixtral
            ),
            ("blk.0.ffn_up_exps.weight".into(), Some(1))
        );
        assert_eq!(
            at("model.layers.0.block_sparse_moe.gate.weight", Arch::Mixtral),
            ("blk.0.ffn_gate_inp.weight".into(), None)
        );
    }

    #[test]
    fn unpermute_inverts_the_converter() {
        let data: Vec<f32> = (0..3 * 8 * 5).map(|x| x as f32).collect();
        assert_eq!(unpermute_rows(&permute_rows(&data, 3, 8), 3, 8, 24), data);
    }
}
