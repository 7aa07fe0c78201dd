//! `crunch prune`, `crunch lowrank` and `crunch compress --recipe FILE`. The first two build a
//! one-stage recipe from their flags; all three then run the same path, and every output
//! carries the recipe that made it (`recipe.toml`), which `crunch compress --recipe` accepts.

use crate::calib_args::{file_name, CalibArgs};
use crate::device::{with_backend, Device};
use crate::progress;
use crate::quantize::{dir_size, Bars};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use crunch_calib::{compress_model, CalibrationSpec, RecipeFile, StageSpec};
use crunch_compress::{Compressed, CompressedLayer};
use crunch_formats::recipe::{Calibration, Recipe, FORMAT_VERSION};
use crunch_model::Checkpoint;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// What every compressing command shares.
#[derive(Args)]
pub struct Common {
    /// Model directory or GGUF file to compress.
    pub model: PathBuf,
    /// Output directory (crunch's format; `crunch eval` and `crunch info` load it).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub calib: CalibArgs,
    /// Leave layers matching this pattern as they are (repeatable; `*` wildcards, else a
    /// substring of names like model.layers.3.mlp.down_proj).
    #[arg(long, value_name = "PATTERN")]
    pub skip: Vec<String>,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PruneMethod {
    /// Smallest |W| in the whole layer (no data needed).
    Magnitude,
    /// Wanda: smallest |W|·‖X‖ per output row, no weight update.
    Wanda,
    /// SparseGPT: OBS-style pruning that updates the remaining weights.
    Sparsegpt,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("amount").required(true).args(["sparsity", "pattern"])))]
pub struct PruneArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, value_enum, default_value_t = PruneMethod::Sparsegpt)]
    pub method: PruneMethod,
    /// Fraction of weights removed, unstructured (e.g. 0.5).
    #[arg(long)]
    pub sparsity: Option<f32>,
    /// N:M pattern: at most N non-zeros in every M consecutive inputs (2:4, 4:8).
    #[arg(long, value_name = "N:M")]
    pub pattern: Option<String>,
    /// SparseGPT only: quantize the kept weights to this many bits in the same pass.
    #[arg(long)]
    pub bits: Option<u8>,
    /// With --bits: input columns per scale (0 = one per output row).
    #[arg(long, default_value_t = 128)]
    pub group_size: usize,
    /// With --bits: symmetric grid.
    #[arg(long)]
    pub sym: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LowRankMethod {
    /// Truncated SVD of the weights (no data needed).
    Svd,
    /// SVD-LLM: truncation in the whitened space of the calibration inputs.
    WhitenedSvd,
}

#[derive(Args)]
pub struct LowRankArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, value_enum, default_value_t = LowRankMethod::WhitenedSvd)]
    pub method: LowRankMethod,
    /// Fraction of the linear layers' parameters to keep; ranks per layer come from this one
    /// global budget.
    #[arg(long)]
    pub keep: f64,
    /// Add an EoRA correction of this rank to every factored layer.
    #[arg(long, value_name = "R")]
    pub eora_rank: Option<usize>,
}

#[derive(Args)]
pub struct CompressArgs {
    #[command(flatten)]
    pub common: Common,
    /// TOML recipe: stages of methods per layer pattern (see `docs/recipes.md`). Calibration
    /// flags given here override the recipe's [calibration] table.
    #[arg(long, value_name = "FILE")]
    pub recipe: PathBuf,
}

/// The name clap shows for a value, which is also the recipe's method name.
fn value_name(v: impl ValueEnum) -> String {
    v.to_possible_value()
        .expect("every variant is named")
        .get_name()
        .to_string()
}

pub fn prune(args: PruneArgs) -> Result<()> {
    let sparsity = match (&args.sparsity, &args.pattern) {
        (Some(f), None) => f.to_string(),
        (None, Some(p)) => p.clone(),
        _ => bail!("give exactly one of --sparsity and --pattern"),
    };
    if args.bits.is_some() && args.method != PruneMethod::Sparsegpt {
        bail!("--bits (joint quantization) needs --method sparsegpt");
    }
    let stage = StageSpec {
        method: value_name(args.method),
        sparsity: Some(sparsity),
        bits: args.bits,
        group_size: args.bits.map(|_| args.group_size),
        symmetric: args.bits.map(|_| args.sym),
        ..Default::default()
    };
    run(&args.common, vec![stage], None)
}

pub fn lowrank(args: LowRankArgs) -> Result<()> {
    let mut stages = vec![StageSpec {
        method: value_name(args.method),
        keep: Some(args.keep),
        ..Default::default()
    }];
    if let Some(r) = args.eora_rank {
        stages.push(StageSpec {
            method: "eora".into(),
            rank: Some(r),
            ..Default::default()
        });
    }
    run(&args.common, stages, None)
}

pub fn compress(args: CompressArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.recipe)
        .with_context(|| format!("{}: cannot read", args.recipe.display()))?;
    let file =
        RecipeFile::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", args.recipe.display()))?;
    run(&args.common, file.stages.clone(), Some(file))
}

/// Calibration flags win over the recipe's table, field by field.
fn merged_calib(flags: &CalibArgs, file: Option<&CalibrationSpec>) -> CalibArgs {
    let mut c = flags.clone();
    if let Some(f) = file {
        if c.calib.is_none() {
            c.calib = Some(PathBuf::from(&f.data));
            c.calib_samples = c.calib_samples.or(f.samples);
            c.calib_len = c.calib_len.or(f.len);
            if c.seed == 0 {
                c.seed = f.seed;
            }
        }
    }
    c
}

fn run(c: &Common, stages: Vec<StageSpec>, file: Option<RecipeFile>) -> Result<()> {
    crate::output_notes(crunch_export::prepare_output(
        &c.out,
        &[&c.model],
        crunch_export::OutputKind::Dir,
        c.force,
    )?);
    let mut file = file.unwrap_or_default();
    file.stages = stages;
    file.skip.extend(c.skip.iter().cloned());
    let plan = file.plan().map_err(|e| anyhow::anyhow!("recipe: {e}"))?;
    let ckpt = Checkpoint::open(&c.model)?;
    crate::output_notes(plan.check(&ckpt.config)?);
    let start = Instant::now();
    let (windows, calibration) = if plan.needs_calibration() {
        let calib = merged_calib(&c.calib, file.calibration.as_ref());
        let who = plan
            .stages
            .iter()
            .find(|s| s.method.needs_calibration())
            .map_or("this recipe", |s| s.method.name());
        let (w, cal) = calib.load(&ckpt, c.device, who)?;
        // The path as given (not just its file name), so the recipe can be run again.
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
        (Some(w), Some(cal))
    } else {
        file.calibration = None;
        (None, None::<Calibration>)
    };

    let bar = progress::bar(ckpt.config.layers, "compressing");
    let layers = with_backend!(c.device, b => compress_model(
        &b,
        &ckpt,
        &plan,
        windows.as_deref(),
        &mut Bars(bar.clone()),
    )?);
    bar.finish_and_clear();
    let compress_seconds = start.elapsed().as_secs_f64();

    let recipe = Recipe {
        format: "crunch".into(),
        format_version: FORMAT_VERSION,
        crunch_version: env!("CARGO_PKG_VERSION").into(),
        source: file_name(&c.model),
        stages: file
            .stages
            .iter()
            .map(|s| toml::to_string(s).map(|t| t.trim().replace('\n', ", ")))
            .collect::<Result<_, _>>()?,
        calibration,
        layers: layers
            .iter()
            .map(|(n, l)| (n.clone(), crunch_export::crunch_dir::layer_recipe(l)))
            .collect(),
    };
    let sp = progress::spinner("writing");
    let recipe_toml = file.to_toml();
    crunch_export::crunch_dir::write_with_recipe_file(
        &ckpt,
        &layers,
        &recipe,
        Some(&recipe_toml),
        &c.out,
        c.force,
    )?;
    sp.finish_and_clear();

    let report = summarize(&layers);
    let size = dir_size(&c.out);
    let total_seconds = start.elapsed().as_secs_f64();
    if c.json {
        let mut v = serde_json::to_value(&report)?;
        v["out"] = serde_json::json!(c.out);
        v["stages"] = serde_json::json!(recipe.stages);
        v["size_on_disk"] = serde_json::json!(size);
        v["compress_seconds"] = serde_json::json!(compress_seconds);
        v["total_seconds"] = serde_json::json!(total_seconds);
        println!("{v}");
    } else {
        println!(
            "{}: {} layers compressed ({}), {:.3} bits per weight, {:.1}% of weights zero, \
             {:.1}% of linear parameters kept, {:.1} MB on disk, {total_seconds:.1} s",
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
            Compressed::Quantized(_) => n as f64,
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
