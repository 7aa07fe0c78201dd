//! `crunch quantize MODEL --out DIR --method rtn|gptq --bits B --group-size G ...`

use crate::device::{with_backend, Device};
use crate::progress;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use crunch_calib::{
    default_batch, quantize_model, sample_windows, windows, Method, QuantizePlan, SelfSpec,
};
use crunch_compress::{GptqOptions, QuantSpec};
use crunch_formats::recipe::{Calibration, LayerRecipe, Recipe, FORMAT_VERSION};
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
    /// Calibration data (GPTQ): a text file to draw windows from, or `self:N×L` (also
    /// `self:NxL`, e.g. `self:128x512`) to sample N sequences of L tokens from the model itself
    /// when you have no data: each starts at the BOS token (else a random token) and continues
    /// by plain sampling at temperature 1, reproducible from --seed. Name a file that really is
    /// called `self:...` as `./self:...`.
    #[arg(long, value_name = "FILE|self:NxL")]
    pub calib: Option<PathBuf>,
    /// Calibration windows to draw from FILE [default: 128] (`self:N×L` sets N itself).
    #[arg(long, value_name = "N")]
    pub calib_samples: Option<usize>,
    /// Tokens per calibration window [default: 512] (`self:N×L` sets L itself).
    #[arg(long, value_name = "L")]
    pub calib_len: Option<usize>,
    /// Seed for drawing (or, with `self:`, sampling) the windows: the same seed gives
    /// byte-identical output.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Leave layers matching this pattern unquantized (repeatable; `*` wildcards, else a
    /// substring of names like model.layers.3.mlp.down_proj). Embeddings and lm_head are
    /// never quantized.
    #[arg(long, value_name = "PATTERN")]
    pub skip: Vec<String>,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// Where calibration runs: cpu, or cuda[:N] (needs a build with the `cuda` feature).
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

struct Bars(indicatif::ProgressBar);

impl crunch_calib::Progress for Bars {
    fn block(&mut self, layer: usize, _layers: usize) {
        self.0.set_position(layer as u64);
    }
    fn step(&mut self, what: &str) {
        self.0.set_message(what.to_string());
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn dir_size(dir: &Path) -> u64 {
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

/// Windows drawn from a text file (`--calib FILE`).
fn file_windows(
    args: &QuantizeArgs,
    ckpt: &Checkpoint,
    path: &Path,
) -> Result<(Vec<Vec<u32>>, Calibration)> {
    let samples = args.calib_samples.unwrap_or(DEFAULT_SAMPLES);
    let len = args.calib_len.unwrap_or(DEFAULT_LEN);
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read as UTF-8 text", path.display()))?;
    let tokenizer = ckpt.tokenizer()?;
    let ids = tokenizer
        .encode(text.as_str(), false)
        .map_err(|e| anyhow::anyhow!("{}: tokenizing failed: {e}", path.display()))?
        .get_ids()
        .to_vec();
    let w = windows(&ids, samples, len, args.seed)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let c = Calibration {
        data: file_name(path),
        samples,
        tokens_per_sample: len,
        seed: args.seed,
    };
    Ok((w, c))
}

/// Windows sampled from the model itself (`--calib self:N×L`).
fn self_windows(
    args: &QuantizeArgs,
    ckpt: &Checkpoint,
    spec: SelfSpec,
) -> Result<(Vec<Vec<u32>>, Calibration)> {
    let label = spec.label();
    let given = [
        ("--calib-samples", args.calib_samples, spec.samples, "N"),
        ("--calib-len", args.calib_len, spec.len, "L"),
    ];
    for (flag, value, from_spec, letter) in given {
        if let Some(v) = value.filter(|&v| v != from_spec) {
            bail!(
                "{flag} {v} conflicts with --calib {label}, which sets {letter} = {from_spec} \
                 (leave {flag} out)"
            );
        }
    }
    let w = with_backend!(args.device, b => {
        let sp = progress::spinner("loading model");
        let model = ckpt.load(b, |_| {})?;
        sp.finish_and_clear();
        let bar = progress::bar(spec.samples * spec.len, "sampling");
        let batch = default_batch(&ckpt.config, spec.len);
        let w = sample_windows(
            &model,
            spec,
            ckpt.bos_token(),
            args.seed,
            batch,
            &mut |done, _| bar.set_position(done as u64),
        )
        .map_err(|e| anyhow::anyhow!("--calib {label}: {e}"))?;
        bar.finish_and_clear();
        w
    });
    let c = Calibration {
        data: label,
        samples: spec.samples,
        tokens_per_sample: spec.len,
        seed: args.seed,
    };
    Ok((w, c))
}

const DEFAULT_SAMPLES: usize = 128;
const DEFAULT_LEN: usize = 512;

pub fn run(args: QuantizeArgs) -> Result<()> {
    if ![2, 3, 4, 8].contains(&args.bits) {
        bail!("--bits must be 2, 3, 4 or 8 (got {})", args.bits);
    }
    if args.out.exists() && !args.force {
        bail!(
            "{}: already exists (pass --force to replace it)",
            args.out.display()
        );
    }
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
    let start = Instant::now();

    let (calib_windows, calibration) = match (args.method, &args.calib) {
        (MethodArg::Gptq, None) => bail!(
            "--method gptq needs --calib FILE (text to calibrate on) or --calib self:NxL \
             (text sampled from the model)"
        ),
        (MethodArg::Gptq, Some(path)) => {
            let spec = match path.to_str() {
                Some(s) => SelfSpec::parse(s).map_err(|e| anyhow::anyhow!("--calib {e}"))?,
                None => None,
            };
            let (w, c) = match spec {
                Some(spec) => self_windows(&args, &ckpt, spec)?,
                None => file_windows(&args, &ckpt, path)?,
            };
            (Some(w), Some(c))
        }
        (MethodArg::Rtn, _) => (None, None),
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
