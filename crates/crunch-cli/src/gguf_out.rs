//! `crunch quantize MODEL --format gguf --mix Q4_K_M --out OUT.gguf [--calib FILE]
//! [--method rtn|gptq]`: one GGUF file llama.cpp loads, every tensor's type chosen by a
//! llama-quantize preset (plus `--tensor-type` overrides), encoded by crunch's encoders weighted
//! by each input column's importance (E[x²] over the calibration text, on by default when
//! `--calib` is given). With `--method gptq` the block linear layers are quantized by GPTQ onto
//! their types instead (calibrated block by block on the quantized model's own activations);
//! the other tensors (embeddings, output) are rounded as with `rtn`.
//!
//! It runs as a recipe like every other command: the flags become a recipe with
//! `format = "gguf"`, a `[gguf]` table and no stages, written beside the output as
//! `OUT.recipe.toml` (for `OUT.gguf`), which `crunch compress --recipe` reproduces byte for byte.

use crate::calib_args::file_name;
use crate::compress::{load_calibration, merged_calib, OutputArgs};
use crate::device::with_backend;
use crate::progress::{self, Bars};
use anyhow::{anyhow, bail, Result};
use clap::Args;
use crunch_calib::{collect_importance, gptq_gguf_model, GgufSpec, GptqOptions, RecipeFile};
use crunch_export::gguf::{
    self, importance_by_gguf_name, read_imatrix, to_llama_rows, Importance, Inputs, Mix, Preset,
};
use crunch_export::OutputKind;
use crunch_formats::gguf::quants::{Codec, ENCODABLE};
use crunch_formats::gguf::GgufValue;
use crunch_formats::DType;
use crunch_model::weights::gguf_location;
use crunch_model::Checkpoint;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The GGUF flags that `crunch quantize --format gguf` and the budget search
/// (`crunch compress --target-… --format gguf`) both take.
#[derive(Args, Clone, Debug, Default)]
pub struct MixArgs {
    /// --format gguf: llama-quantize's preset choosing each tensor's type: Q2_K, Q3_K_S,
    /// Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
    /// IQ4_NL, IQ4_XS, F16, BF16, F32 [default: Q4_K_M]. With a search target, the preset gives
    /// the types of the tensors the search does not choose (token embedding, output, norms)
    /// [default: the preset whose file size is nearest --target-size; Q4_K_M for the other
    /// targets]; the block linear layers get GGUF types by the search (k-quants Q2_K … Q6_K,
    /// IQ4_XS and Q8_0 where rows are whole 256-value super-blocks, else IQ4_NL, Q4_1, Q5_0,
    /// Q5_1, Q8_0).
    #[arg(long, value_name = "PRESET", value_parser = preset_flag)]
    pub mix: Option<String>,
    /// --format gguf: weight rounding errors by llama.cpp's importance matrix from this file
    /// (`llama-imatrix -o FILE`, or crunch's `--save-imatrix`) instead of collecting E[x²] from
    /// --calib (a search still draws its windows from --calib). The recipe names the file.
    #[arg(long, value_name = "FILE")]
    pub imatrix: Option<PathBuf>,
}

/// The flags of `crunch quantize --format gguf`.
#[derive(Args, Default)]
pub struct GgufArgs {
    #[command(flatten)]
    pub types: MixArgs,
    /// --format gguf: give tensors whose llama.cpp name matches PATTERN this type, e.g.
    /// `ffn_down=Q6_K` or `blk.0.*=Q8_0` (repeatable; the first match wins; `*` wildcards,
    /// else a substring).
    #[arg(long, value_name = "PATTERN=TYPE")]
    pub tensor_type: Vec<String>,
    /// --format gguf: plain squared-error rounding even when --calib is given.
    #[arg(long, conflicts_with = "imatrix")]
    pub no_importance: bool,
    /// --format gguf: also save the importance collected from --calib in llama.cpp's imatrix
    /// format (readable by --imatrix and by llama-quantize --imatrix); with --plan, collect
    /// and save it without writing a model.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["imatrix", "no_importance"])]
    pub save_imatrix: Option<PathBuf>,
    /// --format gguf: print every tensor's planned type and the file's exact size (JSON), and
    /// write nothing.
    #[arg(long)]
    pub plan: bool,
}

impl GgufArgs {
    /// The first GGUF-only flag given, if any.
    pub fn given(&self) -> Option<&'static str> {
        [
            (self.types.mix.is_some(), "--mix"),
            (!self.tensor_type.is_empty(), "--tensor-type"),
            (self.types.imatrix.is_some(), "--imatrix"),
            (self.no_importance, "--no-importance"),
            (self.save_imatrix.is_some(), "--save-imatrix"),
            (self.plan, "--plan"),
        ]
        .into_iter()
        .find_map(|(set, flag)| set.then_some(flag))
    }
}

/// The llama-quantize preset called `name` (a flag's or a recipe's `mix`).
pub fn preset(name: &str) -> Result<Preset> {
    Preset::parse(name).ok_or_else(|| anyhow!("--mix `{name}`: {}", not_a_preset()))
}

fn not_a_preset() -> String {
    let names: Vec<&str> = Preset::all().map(Preset::name).collect();
    format!("not a preset (one of {})", names.join(", "))
}

/// `--mix`: a name that is no preset is refused before anything is read; a preset is kept as
/// spelled (the recipe records it so).
fn preset_flag(name: &str) -> Result<String, String> {
    match Preset::parse(name) {
        Some(_) => Ok(name.to_string()),
        None => Err(not_a_preset()),
    }
}

/// `crunch quantize --format gguf`: the flags as a recipe, then [`run`].
pub fn quantize(
    c: &OutputArgs,
    method: Option<&str>,
    grid_keys: &toml::Table,
    flags: &GgufArgs,
) -> Result<()> {
    let gptq = match method.unwrap_or("rtn") {
        "rtn" => false,
        "gptq" => true,
        m => bail!("--format gguf supports --method rtn or gptq, not {m}"),
    };
    let mut damp = None;
    for (key, value) in grid_keys {
        match key.as_str() {
            "damp" if gptq => damp = value.as_float(),
            "damp" => bail!("--damp applies to --method gptq only"),
            _ => bail!("`{key}` (a grid flag) does not apply to --format gguf: --mix and --tensor-type choose the types"),
        }
    }
    let file = RecipeFile {
        format: Some("gguf".into()),
        gguf: Some(GgufSpec {
            mix: flags.types.mix.clone().unwrap_or_else(|| "Q4_K_M".into()),
            tensor_types: flags.tensor_type.clone(),
            importance: !flags.no_importance,
            imatrix: flags
                .types
                .imatrix
                .as_ref()
                .map(|p| p.display().to_string()),
            method: gptq.then(|| "gptq".to_string()),
            damp,
        }),
        ..RecipeFile::default()
    };
    run(c, file, flags)
}

/// `OUT.recipe.toml` beside `OUT.gguf`.
pub fn recipe_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    out.with_file_name(format!("{stem}.recipe.toml"))
}

/// Writes the GGUF file a recipe with `format = "gguf"` describes (`flags`: the run-only
/// flags `--plan` and `--save-imatrix`; the rest is in `file`).
pub fn run(c: &OutputArgs, file: RecipeFile, flags: &GgufArgs) -> Result<()> {
    run_with(c, file, flags, None)
}

/// What a budget search hands the writer: the importance it collected (by llama.cpp name; the
/// recipe's calibration table says from what), tensors it already encoded in their planned
/// types (by llama.cpp name), and its record for `--json` (`search`).
pub struct Given {
    pub importance: Importance,
    pub desc: String,
    pub encoded: BTreeMap<String, Vec<u8>>,
    pub search: serde_json::Value,
}

/// [`run`], with what a search already made (`given`).
pub fn run_with(
    c: &OutputArgs,
    mut file: RecipeFile,
    flags: &GgufArgs,
    given: Option<Given>,
) -> Result<()> {
    let start = Instant::now();
    if !file.stages.is_empty() {
        bail!(
            "a GGUF export quantizes every tensor from the source with its preset's types; \
             recipe stages before it are not supported yet (use a recipe with no [[stage]])"
        );
    }
    let spec = file.gguf.clone().ok_or_else(|| {
        anyhow!("format gguf needs a [gguf] table (mix = \"Q4_K_M\", ...) in the recipe")
    })?;
    if !file.skip.is_empty() || !c.skip.is_empty() {
        bail!("--skip / skip does not apply to a GGUF export: use --tensor-type PATTERN=F16");
    }
    let preset = preset(&spec.mix)?;
    let overrides = spec
        .tensor_types
        .iter()
        .map(|s| parse_override(s))
        .collect::<Result<Vec<_>>>()?;
    let recipe_out = recipe_path(&c.out);
    // Checked before the (long) importance pass: never the input, never an unforced overwrite.
    if !flags.plan {
        for out in [&c.out, &recipe_out] {
            crate::output_notes(crunch_export::prepare_output(
                out,
                &[&c.model],
                OutputKind::File,
                c.force,
            )?);
        }
    }
    if let Some(path) = &flags.save_imatrix {
        crunch_export::check_output(path, &[&c.model], OutputKind::File, c.force)?;
    }
    let calib_given = merged_calib(&c.calib, file.calibration.as_ref())
        .calib
        .is_some();
    if flags.save_imatrix.is_some() && !calib_given {
        bail!("--save-imatrix needs --calib (the text to collect the importance on)");
    }
    let gptq = match spec.method.as_deref() {
        None | Some("rtn") => None,
        Some("gptq") => {
            let opts = GptqOptions::in_order(spec.damp.unwrap_or(0.01) as f32);
            opts.validate().map_err(|e| anyhow!("--damp: {e}"))?;
            if !calib_given {
                bail!("--method gptq needs --calib FILE (or --calib self:NxL): GPTQ calibrates every layer");
            }
            Some(opts)
        }
        Some(m) => bail!("[gguf] method `{m}`: expected rtn or gptq"),
    };
    if gptq.is_none() && spec.damp.is_some() {
        bail!("--damp / damp applies to --method gptq only");
    }
    let ckpt = Checkpoint::open(&c.model)?;

    // Importance: llama.cpp's imatrix file, or collected from the calibration data (unless
    // turned off).
    let collect = spec.imatrix.is_none() && spec.importance && calib_given;
    let (given_importance, given_encoded, search_record) = match given {
        Some(g) => (
            Some((g.importance, g.desc)),
            Some(g.encoded),
            Some(g.search),
        ),
        None => (None, None, None),
    };
    let collect = collect || given_importance.is_some();
    // The calibration windows, when importance is collected or GPTQ runs.
    let mut windows = None;
    let (importance, importance_desc): (Option<Importance>, String) =
        if let Some((imp, desc)) = given_importance {
            (Some(imp), desc)
        } else if let Some(path) = &spec.imatrix {
            if gptq.is_none() {
                file.calibration = None;
            }
            let path = Path::new(path);
            (
                Some(read_imatrix(path)?),
                format!("imatrix {}", file_name(path)),
            )
        } else if collect && (!flags.plan || flags.save_imatrix.is_some()) {
            let who = if gptq.is_some() {
                "--method gptq"
            } else {
                "importance"
            };
            let got = calibrated_importance(c, &mut file, &ckpt, who)?;
            let (calibration, desc) = (got.calibration, got.desc);
            let importance = importance_by_gguf_name(got.importance, ckpt.config.arch);
            if let Some(path) = &flags.save_imatrix {
                let rows = calibration.samples * calibration.tokens_per_sample;
                gguf::write_imatrix(
                    path,
                    &importance,
                    rows,
                    calibration.tokens_per_sample,
                    &calibration.data,
                    c.force,
                )?;
            }
            windows = Some(got.windows);
            (Some(importance), desc)
        } else {
            if !collect && gptq.is_none() {
                file.calibration = None;
            }
            (None, "none".into())
        };
    // GPTQ with importance from an imatrix file (or none) loads its windows here.
    if gptq.is_some() && !flags.plan && windows.is_none() {
        windows = Some(load_calibration(c, &mut file, &ckpt, "--method gptq")?.0);
    }
    let importance_seconds = start.elapsed().as_secs_f64();

    // Two of llama.cpp's preset rules depend on whether importance data is used.
    let with_importance = spec.imatrix.is_some() || collect;
    let mix = Mix {
        preset,
        overrides,
        with_importance,
    };
    let extra = crunch_metadata(&mix, &importance_desc);
    let plan = gguf::plan(&ckpt, &mix, &extra)?;
    let mut types: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for t in &plan.tensors {
        let e = types.entry(t.dtype.ggml_name()).or_default();
        e.0 += 1;
        e.1 += t.bytes as u64;
    }
    let linear = |t: &gguf::PlannedTensor| t.name.starts_with("blk.") && t.shape.len() == 2;
    let summary = serde_json::json!({
        "out": c.out,
        "format": "gguf",
        "mix": mix_description(&mix),
        "method": if gptq.is_some() { "gptq" } else { "rtn" },
        "importance": importance_desc,
        "tensors": plan.tensors.len(),
        "types": types.iter().map(|(k, (n, b))| (k.to_string(), serde_json::json!({"tensors": n, "bytes": b}))).collect::<serde_json::Map<_, _>>(),
        "size_on_disk": plan.file_bytes(),
        "bits_per_weight": plan.bits_per_weight(|t| t.shape.len() == 2),
        "linear_bits_per_weight": plan.bits_per_weight(linear),
    });
    if flags.plan {
        let tensors: Vec<serde_json::Value> = plan
            .tensors
            .iter()
            .map(|t| {
                serde_json::json!({
                    "name": t.name, "shape": t.shape, "type": t.dtype.ggml_name(),
                    "source": t.source.ggml_name(), "bytes": t.bytes,
                })
            })
            .collect();
        let mut v = summary;
        v["tensors"] = tensors.into();
        v["importance_seconds"] = importance_seconds.into();
        crate::report::json(v);
        return Ok(());
    }

    // GPTQ: the block linear layers whose type changes, encoded by the calibration loop.
    let gptq_start = Instant::now();
    let encoded = match (gptq, &windows) {
        (Some(opts), Some(windows)) => Some(gptq_layers(c, &ckpt, &plan, windows, &opts)?),
        _ => given_encoded,
    };
    let gptq_seconds = gptq_start.elapsed().as_secs_f64();

    let n = plan.tensors.len();
    let bar = progress::bar(n, "encoding");
    let inputs = Inputs {
        importance: importance.as_ref(),
        encoded: encoded.as_ref(),
    };
    gguf::write(&ckpt, &plan, &inputs, &c.out, c.force, &mut |i, _, name| {
        bar.set_position(i as u64);
        bar.set_message(name.to_string());
    })?;
    bar.finish_and_clear();
    // The recipe that reproduces the file, beside it.
    file.format = Some("gguf".into());
    let text = file.to_toml();
    crunch_export::atomic_file(&recipe_out, &[&c.model], c.force, |tmp| {
        std::fs::write(tmp, &text).map_err(|source| crunch_export::Error::Io {
            path: tmp.to_path_buf(),
            source,
        })
    })?;
    let total_seconds = start.elapsed().as_secs_f64();
    let mut v = summary;
    v["recipe"] = serde_json::json!(recipe_out);
    v["importance_seconds"] = importance_seconds.into();
    v["gptq_seconds"] = gptq_seconds.into();
    v["encode_seconds"] = (total_seconds - importance_seconds - gptq_seconds).into();
    v["total_seconds"] = total_seconds.into();
    if let Some(r) = search_record {
        v["search"] = r;
    }
    if c.json {
        crate::report::json(v);
    } else {
        println!(
            "{}: {} ({} importance), {:.3} bits per weight ({:.3} in block linear layers), {:.1} MB, {total_seconds:.1} s",
            c.out.display(),
            mix_description(&mix),
            if importance.is_some() { "with" } else { "no" },
            v["bits_per_weight"].as_f64().unwrap_or(0.0),
            v["linear_bits_per_weight"].as_f64().unwrap_or(0.0),
            plan.file_bytes() as f64 / 1e6
        );
    }
    Ok(())
}

/// GPTQ onto the planned types of the block linear layers whose type changes from the source
/// (a tensor kept in its source type is copied as it is), keyed by llama.cpp name, rows in
/// llama.cpp's order.
fn gptq_layers(
    c: &OutputArgs,
    ckpt: &Checkpoint,
    plan: &gguf::GgufPlan,
    windows: &[Vec<u32>],
    opts: &GptqOptions,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let planned: BTreeMap<&str, DType> = plan
        .tensors
        .iter()
        .filter(|t| t.dtype != t.source && Codec::new(t.dtype).is_some())
        .map(|t| (t.name.as_str(), t.dtype))
        .collect();
    let arch = ckpt.config.arch;
    let types = |hf: &str| {
        let loc = gguf_location(hf, arch);
        match loc.expert {
            Some(_) => None,
            None => planned.get(loc.name.as_str()).copied(),
        }
    };
    let bar = progress::bar(ckpt.config.layers, "GPTQ");
    let by_hf = with_backend!(c.device, b => gptq_gguf_model(
        &b,
        ckpt,
        windows,
        &types,
        opts,
        &mut Bars(bar.clone()),
    )?);
    bar.finish_and_clear();
    Ok(by_hf
        .into_iter()
        .map(|(hf, bytes)| {
            let name = gguf_location(&hf, arch).name;
            let rows = ckpt.weights.info(&hf).map_or(0, |i| i.shape[0]);
            (name, to_llama_rows(&ckpt.config, &hf, &bytes, rows))
        })
        .collect())
}

/// What [`calibrated_importance`] collected.
pub(crate) struct Collected {
    pub windows: Vec<Vec<u32>>,
    pub calibration: crunch_repr::format::Calibration,
    /// E[x²] per input column, by Hugging Face weight name.
    pub importance: BTreeMap<String, Vec<f32>>,
    /// What it was collected on, in words.
    pub desc: String,
}

/// Loads the calibration windows (recording them in `file`) and collects E[x²] of every
/// linear layer's input columns over them.
pub(crate) fn calibrated_importance(
    c: &OutputArgs,
    file: &mut RecipeFile,
    ckpt: &Checkpoint,
    who: &str,
) -> Result<Collected> {
    let (windows, calibration) = load_calibration(c, file, ckpt, who)?;
    let bar = progress::bar(ckpt.config.layers, "importance");
    let importance = with_backend!(c.device, b => collect_importance(
        &b,
        ckpt,
        &windows,
        &mut Bars(bar.clone()),
    )?);
    bar.finish_and_clear();
    let desc = format!(
        "E[x^2] over {} x {} tokens of {} (seed {})",
        calibration.samples, calibration.tokens_per_sample, calibration.data, calibration.seed
    );
    Ok(Collected {
        windows,
        calibration,
        importance,
        desc,
    })
}

/// `PATTERN=TYPE` of `--tensor-type`.
fn parse_override(s: &str) -> Result<(String, DType)> {
    let (p, t) = s
        .rsplit_once('=')
        .ok_or_else(|| anyhow!("--tensor-type `{s}`: expected PATTERN=TYPE, e.g. ffn_down=Q6_K"))?;
    let dtype = DType::from_ggml_name(t)
        .filter(|d| ENCODABLE.contains(d) || matches!(d, DType::F32 | DType::F16 | DType::BF16))
        .ok_or_else(|| {
            let names: Vec<&str> = ENCODABLE.iter().map(|d| d.ggml_name()).collect();
            anyhow!(
                "--tensor-type `{s}`: `{t}` is not a type crunch writes (F32, F16, BF16, {})",
                names.join(", ")
            )
        })?;
    if p.is_empty() {
        bail!("--tensor-type `{s}`: empty pattern");
    }
    Ok((p.to_string(), dtype))
}

/// The metadata crunch adds to the GGUF files it writes.
pub(crate) fn crunch_metadata(mix: &Mix, importance_desc: &str) -> Vec<(String, GgufValue)> {
    vec![
        (
            "crunch.version".to_string(),
            GgufValue::String(env!("CARGO_PKG_VERSION").into()),
        ),
        (
            "crunch.mix".to_string(),
            GgufValue::String(mix_description(mix)),
        ),
        (
            "crunch.importance".to_string(),
            GgufValue::String(importance_desc.into()),
        ),
    ]
}

/// The preset and its overrides; past 8 overrides (a budget search names every layer's type)
/// only their count: the tensors hold their types, and the metadata's size then does not
/// depend on which types a search picks.
fn mix_description(mix: &Mix) -> String {
    let mut s = mix.preset.name().to_string();
    if mix.overrides.len() > 8 {
        s.push_str(&format!(" with {} per-tensor types", mix.overrides.len()));
        return s;
    }
    for (p, t) in &mix.overrides {
        s.push_str(&format!(" {p}={}", t.ggml_name()));
    }
    s
}
