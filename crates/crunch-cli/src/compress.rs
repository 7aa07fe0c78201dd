//! Every command that writes a model: `crunch quantize`, `crunch prune`, `crunch lowrank` and
//! `crunch compress --recipe FILE`. The first three build a one-stage recipe from their flags;
//! all four then run the same path (one shared block of output flags, `--format` included),
//! and every output carries the recipe that made it (`recipe.toml`), which `crunch compress
//! --recipe` accepts and reproduces byte for byte.

use crate::calib_args::{file_name, CalibArgs};
use crate::device::{with_backend, Device};
use crate::progress::{self, Bars};
use anyhow::{anyhow, bail, Context, Result};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::Args;
use crunch_calib::{
    check_recipe, compress_model, first_calibrated, output_recipe, planned, CalibrationSpec,
    Family, Method, RecipeError, RecipeFile, Stage,
};
use crunch_export::crunch_dir::Embeddings;
use crunch_export::{Format, Target};
use crunch_model::Checkpoint;
use crunch_repr::format::Calibration;
use crunch_repr::{Compressed, CompressedLayer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What every command that writes a model shares.
#[derive(Args)]
pub struct OutputArgs {
    /// Model directory or GGUF file to compress.
    pub model: PathBuf,
    /// Output directory, in the layout `--format` names (a file for `--format gguf`).
    #[arg(long)]
    pub out: PathBuf,
    /// Layout of the output [default: crunch, or the recipe's `format`]. A layout that cannot
    /// hold what the method produces is refused before calibration starts.
    #[arg(long, value_parser = format_parser())]
    pub format: Option<Format>,
    #[command(flatten)]
    pub calib: CalibArgs,
    /// Leave layers matching this pattern as they are (repeatable; `*` wildcards, else a
    /// substring of names like model.layers.3.mlp.down_proj). Embeddings and lm_head are
    /// never compressed.
    #[arg(long, value_name = "PATTERN")]
    pub skip: Vec<String>,
    /// How crunch's format stores the token embedding and an untied LM head: keep (the
    /// source's encoding: a GGUF's blocks, 16-bit floats, never wider), f16, or a GGUF block
    /// type (q8_0, q6_k, q5_k, q4_k, q5_0) [default: keep, or the recipe's `embeddings`].
    #[arg(long, value_name = "ENCODING")]
    pub embeddings: Option<String>,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// Where calibration runs: cpu; cuda[:N] (f32, needs a build with the `cuda` feature);
    /// or cuda-bf16[:N] (weights and matrix products in bf16, accumulated in f32).
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// Print one JSON object with bits per weight, size on disk and timings.
    #[arg(long)]
    pub json: bool,
}

fn format_parser() -> impl TypedValueParser<Value = Format> {
    let values = Format::ALL.map(|(_, name, about)| PossibleValue::new(name).help(about));
    PossibleValuesParser::new(values).map(|s| s.parse::<Format>().expect("a listed format"))
}

/// `--method`, offering the methods of one family from the one list in `crunch_calib`.
fn method_parser(family: Family) -> PossibleValuesParser {
    PossibleValuesParser::new(Method::names(family))
}

/// The flags of a quantization grid and of the methods that fit one. Each maps to the recipe
/// key of the same meaning; a flag the chosen method does not read is refused.
#[derive(Args)]
pub struct GridArgs {
    /// Bits per weight: 2 to 8 [quantize: default 4; prune: quantize the kept weights
    /// in the same pass (SparseGPT)].
    #[arg(long)]
    pub bits: Option<u8>,
    /// Input columns sharing one scale and zero point; `channel` (or 0) for one per output
    /// row [default: 128].
    #[arg(long, value_parser = parse_group)]
    pub group_size: Option<usize>,
    /// Symmetric grid (zero point fixed at the middle).
    #[arg(long, conflicts_with = "asym")]
    pub sym: bool,
    /// Asymmetric grid (the default).
    #[arg(long)]
    pub asym: bool,
    /// GPTQ: quantize columns in order of decreasing Hessian diagonal (groups stay static)
    /// [GPTQ's default; decision 092].
    #[arg(long, overrides_with = "no_act_order")]
    pub act_order: bool,
    /// GPTQ: quantize columns in their stored order.
    #[arg(long, overrides_with = "act_order")]
    pub no_act_order: bool,
    /// Search the clipping range that minimises the quantization error [GPTQ's default; RTN:
    /// off unless given].
    #[arg(long, overrides_with = "no_mse")]
    pub mse: bool,
    /// Min–max grids, no clipping search.
    #[arg(long, overrides_with = "mse")]
    pub no_mse: bool,
    /// GPTQ and SparseGPT dampening, as a fraction of the mean Hessian diagonal [default: 0.01].
    #[arg(long)]
    pub damp: Option<f64>,
    /// GPTQ: code each group's scale on this many bits (4–8) against one f16 scale per row
    /// instead of storing it as f16 (k-quant-style two-level scales, decision 145): 3 bits at
    /// --group-size 16 with --scale-bits 6 cost 3 + (6 + 3)/16 bits per weight plus 16 per row.
    #[arg(long)]
    pub scale_bits: Option<u8>,
}

fn parse_group(s: &str) -> Result<usize, String> {
    match s {
        "channel" | "0" | "-1" => Ok(0),
        _ => s
            .parse::<usize>()
            .map_err(|_| format!("`{s}` is not a group size (a number, or `channel`)")),
    }
}

impl GridArgs {
    /// The recipe keys these flags set (only those given).
    fn keys(&self, t: &mut toml::Table) {
        put(t, "bits", self.bits.map(i64::from));
        put(t, "group_size", self.group_size.map(|g| g as i64));
        put(t, "symmetric", (self.sym || self.asym).then_some(self.sym));
        put(t, "act_order", on_off(self.act_order, self.no_act_order));
        put(t, "mse_clip", on_off(self.mse, self.no_mse));
        put(t, "damp", self.damp);
        put(t, "scale_bits", self.scale_bits.map(i64::from));
    }
}

/// A `--x`/`--no-x` pair as a recipe value: only what was given (the last one wins).
fn on_off(on: bool, off: bool) -> Option<bool> {
    match (on, off) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

fn put(t: &mut toml::Table, key: &str, value: Option<impl Into<toml::Value>>) {
    if let Some(v) = value {
        t.insert(key.into(), v.into());
    }
}

/// Recipe keys and the flags that set them, for errors about flags.
const FLAGS: [(&str, &str); 10] = [
    ("bits", "--bits"),
    ("group_size", "--group-size"),
    ("symmetric", "--sym/--asym"),
    ("act_order", "--act-order/--no-act-order"),
    ("mse_clip", "--mse/--no-mse"),
    ("damp", "--damp"),
    ("scale_bits", "--scale-bits"),
    ("sparsity", "--sparsity/--pattern"),
    ("keep", "--keep"),
    ("rank", "--eora-rank"),
];

/// The stage `method` with the recipe keys `keys`, as one stage of a recipe built from flags.
fn stage(method: &str, mut keys: toml::Table) -> Result<Stage> {
    keys.insert("method".into(), method.into());
    Stage::from_table(keys, 1).map_err(|e| {
        let msg = e.to_string();
        let flag = match &e {
            RecipeError::StageKeys { .. } => FLAGS
                .iter()
                .find(|(key, _)| msg.contains(&format!("unknown field `{key}`"))),
            _ => None,
        };
        match flag {
            Some((_, flag)) => anyhow!("{flag} does not apply to --method {method}"),
            None => anyhow!("--method {method}: {}", msg.trim_start_matches("stage 1 ")),
        }
    })
}

#[derive(Args)]
pub struct QuantizeArgs {
    #[command(flatten)]
    pub common: OutputArgs,
    /// rtn: round to nearest (no calibration data needed); gptq: error-correcting quantization
    /// with the calibration Hessian [default: gptq; rtn for --format gguf].
    #[arg(long, value_parser = method_parser(Family::Quantize))]
    pub method: Option<String>,
    #[command(flatten)]
    pub grid: GridArgs,
    #[command(flatten)]
    pub gguf: crate::gguf_out::GgufArgs,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("amount").required(true).args(["sparsity", "pattern"])))]
pub struct PruneArgs {
    #[command(flatten)]
    pub common: OutputArgs,
    /// magnitude: smallest |W| in the whole layer (no data needed); wanda: smallest |W|·‖X‖ per
    /// output row, no weight update; sparsegpt: OBS-style pruning that updates the remaining
    /// weights (and can quantize them with --bits).
    #[arg(long, default_value = "sparsegpt", value_parser = method_parser(Family::Prune))]
    pub method: String,
    /// Fraction of weights removed, unstructured (e.g. 0.5).
    #[arg(long)]
    pub sparsity: Option<f32>,
    /// N:M pattern: at most N non-zeros in every M consecutive inputs (2:4, 4:8).
    #[arg(long, value_name = "N:M")]
    pub pattern: Option<String>,
    #[command(flatten)]
    pub grid: GridArgs,
}

#[derive(Args)]
pub struct LowRankArgs {
    #[command(flatten)]
    pub common: OutputArgs,
    /// svd: truncated SVD of the weights (no data needed); whitened-svd: SVD-LLM, truncation
    /// in the whitened space of the calibration inputs.
    #[arg(long, default_value = "whitened-svd", value_parser = method_parser(Family::LowRank))]
    pub method: String,
    /// Fraction of the linear layers' parameters to keep; ranks per layer come from this one
    /// global budget.
    #[arg(long)]
    pub keep: f64,
    /// Add an EoRA correction of this rank to every factored layer.
    #[arg(long, value_name = "R")]
    pub eora_rank: Option<usize>,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("goal").required(true)
    .args(["recipe", "target_bpw", "target_size", "target_kl"])))]
pub struct CompressArgs {
    #[command(flatten)]
    pub common: OutputArgs,
    /// TOML recipe: stages of methods per layer pattern (see `docs/recipes.md`). Calibration
    /// flags given here override the recipe's [calibration] table, `--format` its `format`.
    #[arg(long, value_name = "FILE")]
    pub recipe: Option<PathBuf>,
    /// Or a target, and a search picks each layer's level (EvoPress).
    #[command(flatten)]
    pub search: crate::search::SearchArgs,
}

pub fn quantize(args: QuantizeArgs) -> Result<()> {
    let mut keys = toml::Table::new();
    args.grid.keys(&mut keys);
    if args.common.format == Some(Format::Gguf) {
        return crate::gguf_out::quantize(&args.common, args.method.as_deref(), &keys, &args.gguf);
    }
    if let Some(flag) = args.gguf.given() {
        bail!("{flag} applies to --format gguf only");
    }
    keys.entry("bits").or_insert(4.into());
    let stages = vec![stage(args.method.as_deref().unwrap_or("gptq"), keys)?];
    run(&args.common, RecipeFile::default(), stages, None)
}

pub fn prune(args: PruneArgs) -> Result<()> {
    let sparsity = match (&args.sparsity, &args.pattern) {
        (Some(f), None) => f.to_string(),
        (None, Some(p)) => p.clone(),
        _ => bail!("give exactly one of --sparsity and --pattern"),
    };
    let mut keys = toml::Table::new();
    keys.insert("sparsity".into(), sparsity.into());
    args.grid.keys(&mut keys);
    let stages = vec![stage(&args.method, keys)?];
    run(&args.common, RecipeFile::default(), stages, None)
}

pub fn lowrank(args: LowRankArgs) -> Result<()> {
    let mut keys = toml::Table::new();
    keys.insert("keep".into(), args.keep.into());
    let mut stages = vec![stage(&args.method, keys)?];
    if let Some(r) = args.eora_rank {
        let mut keys = toml::Table::new();
        put(&mut keys, "rank", Some(r as i64));
        stages.push(stage("eora", keys)?);
    }
    run(&args.common, RecipeFile::default(), stages, None)
}

pub fn compress(args: CompressArgs) -> Result<()> {
    let Some(recipe) = &args.recipe else {
        return crate::search::run(&args.common, &args.search);
    };
    let text = std::fs::read_to_string(recipe)
        .with_context(|| format!("{}: cannot read", recipe.display()))?;
    // A context, not a new message: the typed RecipeError stays in the chain (the Python
    // package raises RecipeError from it).
    let file = RecipeFile::parse(&text).with_context(|| recipe.display().to_string())?;
    let stages = file.stages.clone();
    run(&args.common, file, stages, None)
}

/// Calibration flags win over the recipe's table, field by field.
pub(crate) fn merged_calib(flags: &CalibArgs, file: Option<&CalibrationSpec>) -> CalibArgs {
    let mut c = flags.clone();
    if let Some(f) = file {
        c.calib = c.calib.or_else(|| Some(PathBuf::from(&f.data)));
        c.calib_samples = c.calib_samples.or(f.samples);
        c.calib_len = c.calib_len.or(f.len);
        c.seed = c.seed.or(Some(f.seed));
    }
    c
}

/// The output layout: `--format`, else the recipe's, else crunch's own.
pub(crate) fn output_format(flag: Option<Format>, recipe: &RecipeFile) -> Result<Format> {
    match (flag, &recipe.format) {
        (Some(f), _) => Ok(f),
        (None, Some(name)) => name.parse().map_err(|e| anyhow!("recipe: {e}")),
        (None, None) => Ok(Format::Crunch),
    }
}

/// The embeddings' encoding: `--embeddings`, else the recipe's, else keep; recorded in the
/// recipe, and refused (before anything runs) for layouts other than crunch's own.
fn output_embeddings(c: &OutputArgs, file: &mut RecipeFile) -> Result<Embeddings> {
    if let Some(e) = &c.embeddings {
        file.embeddings = Some(e.clone());
    }
    let Some(name) = &file.embeddings else {
        return Ok(Embeddings::Keep);
    };
    let e: Embeddings = name.parse().map_err(|e| anyhow!("--embeddings: {e}"))?;
    let format = output_format(c.format, file)?;
    if e != Embeddings::Keep && format != Format::Crunch {
        bail!(
            "--embeddings {name} applies to crunch's format, not {}{}",
            format.name(),
            if format == Format::Gguf {
                " (there: --tensor-type token_embd.weight=TYPE)"
            } else {
                ""
            }
        );
    }
    // Written out as parsed, so the recipe names it one way.
    file.embeddings = (e != Embeddings::Keep).then(|| e.name());
    Ok(e)
}

/// Loads the calibration windows (flags over the recipe's table) for `who`, and records in
/// `file` what was used: the path as given (not just its file name), so the recipe can be run
/// again.
pub(crate) fn load_calibration(
    c: &OutputArgs,
    file: &mut RecipeFile,
    ckpt: &Checkpoint,
    who: &str,
) -> Result<(Vec<Vec<u32>>, Calibration)> {
    let calib = merged_calib(&c.calib, file.calibration.as_ref());
    let (w, cal) = calib.load(ckpt, c.device, who)?;
    note_calibration(&calib, file, &cal);
    Ok((w, cal))
}

/// Records in `file` the calibration `cal` that `calib` (the flags over the recipe's table)
/// made: the path as given, so the recipe can be run again.
fn note_calibration(calib: &CalibArgs, file: &mut RecipeFile, cal: &Calibration) {
    let data = match &calib.calib {
        Some(p) if !cal.data.starts_with("self:") => p.display().to_string(),
        _ => cal.data.clone(),
    };
    file.calibration = Some(CalibrationSpec {
        data,
        samples: Some(cal.samples),
        len: Some(cal.tokens_per_sample),
        seed: cal.seed,
    });
}

/// What a budget search hands the writer: the calibration windows it loaded from the flags
/// (so that a `--calib self:N×L` is sampled once, not again for the write: at 8B shapes on
/// the H200 that is 88 s) and its record for `--json` (`search`).
pub(crate) struct Searched {
    pub windows: Vec<Vec<u32>>,
    pub calibration: Calibration,
    pub record: serde_json::Value,
}

/// Checks, calibrates, compresses and writes; `search`: what a budget search already loaded
/// (its windows, used instead of loading them again from the flags, which `file` must not
/// override) and its record, added to the `--json` object as `search`.
pub(crate) fn run(
    c: &OutputArgs,
    mut file: RecipeFile,
    stages: Vec<Stage>,
    search: Option<Searched>,
) -> Result<()> {
    file.stages = stages;
    let embeddings = output_embeddings(c, &mut file)?;
    if output_format(c.format, &file)? == Format::Gguf {
        return crate::gguf_out::run(c, file, &crate::gguf_out::GgufArgs::default());
    }
    let kind = crunch_export::OutputKind::Dir;
    let inputs: [&Path; 1] = [&c.model];
    crate::output_notes(crunch_export::prepare_output(
        &c.out, &inputs, kind, c.force,
    )?);
    file.skip.extend(c.skip.iter().cloned());
    let format = output_format(c.format, &file)?;
    file.format = (format != Format::Crunch).then(|| format.name().to_string());
    let ckpt = Checkpoint::open(&c.model)?;
    // Everything that can be refused is refused here, before any calibration.
    let notes = check_recipe(&ckpt, &file)?;
    format.check(&ckpt, &planned(&ckpt, &file)?)?;
    crate::output_notes(notes);
    let start = Instant::now();
    let (given, search) = match search {
        Some(s) => (Some((s.windows, s.calibration)), Some(s.record)),
        None => (None, None),
    };
    // Where the calibration windows came from, for `--json` (`calibration_windows`).
    let mut windows_from = None;
    let (windows, calibration) = match first_calibrated(&file).map(|m| m.name()) {
        Some(method) => {
            let (w, cal) = match given {
                Some((w, cal)) if file.calibration.is_none() => {
                    note_calibration(&c.calib, &mut file, &cal);
                    windows_from = Some("search");
                    (w, cal)
                }
                _ => {
                    windows_from = Some("loaded");
                    load_calibration(c, &mut file, &ckpt, method)?
                }
            };
            (Some(w), Some(cal))
        }
        None => {
            file.calibration = None;
            (None, None)
        }
    };

    let bar = progress::bar(ckpt.config.layers, "compressing");
    let layers = with_backend!(c.device, b => compress_model(
        &b,
        &ckpt,
        &file,
        windows.as_deref(),
        &mut Bars(bar.clone()),
    )?);
    bar.finish_and_clear();
    let compress_seconds = start.elapsed().as_secs_f64();

    let recipe = output_recipe(&file, file_name(&c.model), calibration, &layers)?;
    let sp = progress::spinner("writing");
    let recipe_toml = file.to_toml();
    let extra = [("recipe.toml", recipe_toml.as_str())];
    let to = Target::new(&c.out)
        .overwrite(c.force)
        .beside(&extra)
        .embeddings(embeddings);
    format.write(&ckpt, &layers, &recipe, &to)?;
    sp.finish_and_clear();

    let report = summarize(&layers);
    let size = crunch_export::size_on_disk(&c.out);
    let total_seconds = start.elapsed().as_secs_f64();
    if c.json {
        let mut v = serde_json::to_value(&report)?;
        v["out"] = serde_json::json!(c.out);
        v["format"] = serde_json::json!(format.name());
        v["stages"] = serde_json::json!(recipe.stages);
        v["size_on_disk"] = serde_json::json!(size);
        v["compress_seconds"] = serde_json::json!(compress_seconds);
        v["total_seconds"] = serde_json::json!(total_seconds);
        // "search": the windows a budget search already loaded (a `self:` calibration is
        // not sampled again); "loaded": read or sampled here, from the flags or the recipe.
        if let Some(from) = windows_from {
            v["calibration_windows"] = serde_json::json!(from);
        }
        if let Some(s) = search {
            v["search"] = s;
        }
        crate::report::json(v);
    } else {
        println!(
            "{}: {} layers compressed ({}), {:.3} bits per weight, {:.1}% of weights zero, \
             {:.1}% of linear parameters kept, {:.1} MB on disk ({format}), {total_seconds:.1} s",
            c.out.display(),
            report.layers_compressed,
            recipe.stages.join(" → "),
            report.bits_per_weight,
            100.0 * report.sparsity,
            100.0 * report.params_kept,
            size as f64 / 1e6
        );
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct Summary {
    layers_compressed: usize,
    /// Original weights of the compressed layers.
    weights: usize,
    /// Average storage bits per original weight of the compressed layers.
    bits_per_weight: f64,
    /// Fraction of those weights that are structural zeros (pruned).
    sparsity: f64,
    /// Parameters stored (values, factors, corrections) over original weights.
    params_kept: f64,
    methods: BTreeMap<String, usize>,
}

fn summarize(layers: &BTreeMap<String, CompressedLayer>) -> Summary {
    let (mut weights, mut bits, mut zeros, mut params) = (0usize, 0f64, 0f64, 0f64);
    let mut methods = BTreeMap::new();
    for l in layers.values() {
        let (rows, cols) = l.shape();
        let n = rows * cols;
        weights += n;
        bits += l.bits_per_weight() * n as f64;
        let stored = match &l.main {
            Compressed::Quantized(_) | Compressed::Lut(_) => n as f64,
            Compressed::Pruned(p) => {
                zeros += (n - p.mask.count_kept()) as f64;
                p.mask.count_kept() as f64
            }
            Compressed::Factored(f) => f.params() as f64,
        };
        params += stored + l.correction.as_ref().map_or(0.0, |c| c.params() as f64);
        *methods.entry(l.method.clone()).or_insert(0) += 1;
    }
    let w = weights.max(1) as f64;
    Summary {
        layers_compressed: layers.len(),
        weights,
        bits_per_weight: bits / w,
        sparsity: zeros / w,
        params_kept: params / w,
        methods,
    }
}
