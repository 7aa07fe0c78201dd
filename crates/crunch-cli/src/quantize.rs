//! `crunch quantize MODEL --out DIR --method rtn|gptq --bits B --group-size G ...`

use crate::calib_args::{file_name, CalibArgs};
use crate::device::{with_backend, Device};
use crate::progress;
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use crunch_calib::{quantize_model, Method, QuantizePlan};
use crunch_compress::{GptqOptions, QuantSpec};
use crunch_formats::recipe::{LayerRecipe, Recipe, FORMAT_VERSION};
use crunch_model::Checkpoint;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// Round to nearest (no calibration data needed).
    Rtn,
    /// GPTQ: error-correcting quantization with the calibration Hessian.
    Gptq,
}

/// The layout `--out` is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// crunch's own (loads with `crunch eval` and `crunch info`).
    Crunch,
    /// compressed-tensors pack-quantized (transformers, vLLM).
    CompressedTensors,
    /// GPTQ v1: qweight/qzeros/scales/g_idx (AutoGPTQ, GPTQModel, vLLM).
    Gptq,
    /// GPTQ v2 (GPTQModel): zero points stored as they are, so a zero point of 0 is allowed.
    GptqV2,
}

#[derive(Args)]
pub struct QuantizeArgs {
    /// Model directory or GGUF file to quantize.
    pub model: PathBuf,
    /// Output directory, in the layout `--format` names.
    #[arg(long)]
    pub out: PathBuf,
    /// Layout of the output directory.
    #[arg(long, value_enum, default_value_t = FormatArg::Crunch)]
    pub format: FormatArg,
    #[arg(long, value_enum, default_value_t = MethodArg::Gptq)]
    pub method: MethodArg,
    /// Bits per weight: 2, 3, 4 or 8.
    #[arg(long, default_value_t = 4)]
    pub bits: u8,
    /// Input columns sharing one scale and zero point; `channel` (or 0) for one per output row.
    #[arg(long, default_value = "128", value_parser = parse_group)]
    pub group_size: GroupArg,
    /// Symmetric grid (zero point fixed at the middle).
    #[arg(long, conflicts_with = "asym")]
    pub sym: bool,
    /// Asymmetric grid (the default).
    #[arg(long)]
    pub asym: bool,
    /// GPTQ: quantize columns in order of decreasing Hessian diagonal (groups stay static).
    #[arg(long)]
    pub act_order: bool,
    /// Search the clipping range that minimises the quantization error (RTN and GPTQ grids).
    #[arg(long)]
    pub mse: bool,
    /// GPTQ dampening, as a fraction of the mean Hessian diagonal.
    #[arg(long, default_value_t = 0.01)]
    pub damp: f32,
    #[command(flatten)]
    pub calib: CalibArgs,
    /// Leave layers matching this pattern unquantized (repeatable; `*` wildcards, else a
    /// substring of names like model.layers.3.mlp.down_proj). Embeddings and lm_head are
    /// never quantized.
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

#[derive(Clone, Copy, Debug)]
pub struct GroupArg(Option<usize>);

fn parse_group(s: &str) -> Result<GroupArg, String> {
    match s {
        "channel" | "0" | "-1" => Ok(GroupArg(None)),
        _ => s
            .parse::<usize>()
            .map(|g| GroupArg(Some(g)))
            .map_err(|_| format!("`{s}` is not a group size (a number, or `channel`)")),
    }
}

pub(crate) struct Bars(pub(crate) indicatif::ProgressBar);

impl crunch_calib::Progress for Bars {
    fn block(&mut self, layer: usize, _layers: usize) {
        self.0.set_position(layer as u64);
    }
    fn step(&mut self, what: &str) {
        self.0.set_message(what.to_string());
    }
}

pub(crate) fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

pub fn run(args: QuantizeArgs) -> Result<()> {
    if ![2, 3, 4, 8].contains(&args.bits) {
        bail!("--bits must be 2, 3, 4 or 8 (got {})", args.bits);
    }
    crate::output_notes(crunch_export::prepare_output(
        &args.out,
        &[&args.model],
        crunch_export::OutputKind::Dir,
        args.force,
    )?);
    let spec = QuantSpec::new(args.bits, args.group_size.0, args.sym);
    let gptq_opts = GptqOptions {
        block_size: 128,
        damp: args.damp,
        act_order: args.act_order,
        mse_clip: args.mse,
    };
    let method = match args.method {
        MethodArg::Rtn => Method::Rtn,
        MethodArg::Gptq => Method::Gptq(gptq_opts),
    };
    let plan = QuantizePlan {
        method,
        spec,
        mse_clip: args.mse,
        skip: args.skip.clone(),
    };
    let ckpt = Checkpoint::open(&args.model)?;
    // Group sizes against every layer before any calibration: exports whose consumers refuse
    // a shorter last group get exact groups only.
    let fit = match args.format {
        FormatArg::Crunch => crunch_compress::GroupFit::ShortLastGroup,
        _ => crunch_compress::GroupFit::Exact,
    };
    crate::output_notes(plan.check(&ckpt.config, fit)?);
    let start = Instant::now();

    let (calib_windows, calibration) = match args.method {
        MethodArg::Gptq => {
            let (w, c) = args.calib.load(&ckpt, args.device, "--method gptq")?;
            (Some(w), Some(c))
        }
        MethodArg::Rtn => (None, None),
    };

    let bar = progress::bar(ckpt.config.layers, "quantizing");
    let layers = with_backend!(args.device, b => quantize_model(
        &b,
        &ckpt,
        &plan,
        calib_windows.as_deref(),
        &mut Bars(bar.clone()),
    )?);
    bar.finish_and_clear();
    let quantize_seconds = start.elapsed().as_secs_f64();

    let method_name = match args.method {
        MethodArg::Rtn => "rtn",
        MethodArg::Gptq => "gptq",
    };
    let stage = format!(
        "{method_name} bits={} group_size={} {}{}{}",
        args.bits,
        spec.group_size.map_or("channel".into(), |g| g.to_string()),
        if args.sym { "sym" } else { "asym" },
        if args.act_order { " act_order" } else { "" },
        if args.mse { " mse_clip" } else { "" },
    );
    let recipe = Recipe {
        format: "crunch".into(),
        format_version: FORMAT_VERSION,
        crunch_version: env!("CARGO_PKG_VERSION").into(),
        source: file_name(&args.model),
        stages: vec![stage],
        calibration,
        layers: layers
            .iter()
            .map(|(name, q)| {
                let r = LayerRecipe {
                    method: method_name.into(),
                    bits: q.spec.bits,
                    group_size: q.spec.group_size,
                    symmetric: q.spec.symmetric,
                    act_order: args.act_order && args.method == MethodArg::Gptq,
                    mse_clip: args.mse,
                    damp: (args.method == MethodArg::Gptq).then_some(args.damp),
                    rows: q.rows,
                    cols: q.cols,
                    sparsity: None,
                    rank: None,
                    correction_rank: None,
                };
                (name.clone(), r)
            })
            .collect(),
    };
    let sp = progress::spinner("writing");
    {
        use crunch_export::{compressed_tensors, crunch_dir, gptq_layout};
        let (out, force) = (&args.out, args.force);
        match args.format {
            FormatArg::Crunch => {
                use crunch_compress::{Compressed, CompressedLayer};
                let wrap = |q: &crunch_compress::QuantizedWeight| {
                    CompressedLayer::new(method_name, Compressed::Quantized(q.clone()))
                };
                let layers = layers.iter().map(|(n, q)| (n.clone(), wrap(q))).collect();
                crunch_dir::write(&ckpt, &layers, &recipe, out, force)?
            }
            FormatArg::CompressedTensors => {
                compressed_tensors::write(&ckpt, &layers, &recipe, out, force)?
            }
            FormatArg::Gptq => gptq_layout::write(&ckpt, &layers, &recipe, out, force)?,
            FormatArg::GptqV2 => {
                let v2 = gptq_layout::CheckpointFormat::V2;
                gptq_layout::write_with(&ckpt, &layers, &recipe, out, force, v2)?
            }
        }
    }
    sp.finish_and_clear();

    let weights: usize = layers.values().map(|q| q.rows * q.cols).sum();
    let bits: f64 = layers
        .values()
        .map(|q| q.bits_per_weight() * (q.rows * q.cols) as f64)
        .sum();
    let bpw = bits / weights.max(1) as f64;
    let size = dir_size(&args.out);
    let total_seconds = start.elapsed().as_secs_f64();
    if args.json {
        let v = serde_json::json!({
            "out": args.out,
            "format": args.format.to_possible_value().map(|v| v.get_name().to_string()),
            "method": method_name,
            "bits": args.bits,
            "group_size": spec.group_size,
            "symmetric": args.sym,
            "act_order": args.act_order,
            "layers_quantized": layers.len(),
            "weights_quantized": weights,
            "bits_per_weight": bpw,
            "size_on_disk": size,
            "quantize_seconds": quantize_seconds,
            "total_seconds": total_seconds,
        });
        println!("{v}");
    } else {
        println!(
            "{}: {} layers quantized ({}), {bpw:.3} bits per weight, {:.1} MB on disk, {total_seconds:.1} s",
            args.out.display(),
            layers.len(),
            recipe.stages[0],
            size as f64 / 1e6
        );
    }
    Ok(())
}
