//! `crunch eval MODEL --data FILE`

use crate::device::{with_backend, Device};
use crate::progress;
use anyhow::{bail, Context, Result};
use clap::Args;
use crunch_eval::{evaluate, evaluate_kv_modes, windows, EvalOptions, EvalReport};
use crunch_model::{Checkpoint, Model};
use crunch_runtime::Backend;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct EvalArgs {
    /// Model directory or GGUF file to evaluate.
    pub model: PathBuf,
    /// Uncompressed model to compare against: adds mean KL(base‖model) and top-1 agreement.
    #[arg(long, value_name = "MODEL")]
    pub base: Option<PathBuf>,
    /// Plain-text file to score (for example wikitext-2-raw's wiki.test.raw).
    #[arg(long)]
    pub data: PathBuf,
    /// Window length in tokens: the text is cut into non-overlapping windows of this size and
    /// every position but the first of each window is scored.
    #[arg(long, default_value_t = 2048)]
    pub ctx: usize,
    /// Evaluate only the first N tokens of the text.
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<usize>,
    /// Where the model runs: cpu; cuda[:N] (f32, needs a build with the `cuda` feature);
    /// or cuda-bf16[:N] (weights and matrix products in bf16, accumulated in f32).
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// The key/value cache the model attends through (see `crunch generate --help`); several,
    /// comma-separated (`f16,q8,kivi2`), evaluate each against the model's own f32 cache in one
    /// pass (no --base), one report per mode.
    #[arg(long, default_value = "f32", value_name = "MODE[,MODE...]", value_delimiter = ',',
          value_parser = crate::kv::parse)]
    pub kv_cache: Vec<crunch_runtime::KvMode>,
    /// Memory for the key/value cache, in MB, for the longest context the report gives.
    #[arg(long, default_value_t = 1024, value_name = "MB")]
    pub kv_memory_mb: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn load<B: Backend>(backend: B, path: &Path, what: &str) -> Result<Model<B>> {
    let ckpt = Checkpoint::open(path)?;
    let pb = progress::bar(ckpt.config.layers, what);
    let model = ckpt.load(backend, |_| pb.inc(1))?;
    pb.finish_and_clear();
    Ok(model)
}

pub fn run(args: EvalArgs) -> Result<()> {
    if args.ctx < 2 {
        bail!("--ctx must be at least 2 (got {})", args.ctx);
    }
    let several = args.kv_cache.len() > 1;
    if several && args.base.is_some() {
        bail!(
            "--kv-cache with several modes measures each against the model's own f32 cache; \
             give one mode to compare with --base"
        );
    }
    let text = std::fs::read_to_string(&args.data)
        .with_context(|| format!("{}: cannot read as UTF-8 text", args.data.display()))?;
    let ckpt = Checkpoint::open(&args.model)?;
    let tokenizer = ckpt.tokenizer()?;
    let sp = progress::spinner("tokenizing");
    let encoding = tokenizer
        .encode(text.as_str(), false)
        .map_err(|e| anyhow::anyhow!("{}: tokenizing failed: {e}", args.data.display()))?;
    let tokens = encoding.get_ids().to_vec();
    sp.finish_and_clear();
    let opts = EvalOptions {
        ctx: args.ctx,
        max_tokens: args.max_tokens,
        kv_cache: args.kv_cache[0],
    };
    crunch_eval::check_enough_tokens(&tokens, &opts)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.data.display()))?;
    let n_windows = windows(&tokens, &opts).len();
    let kv_budget = args.kv_memory_mb << 20;
    let config = ckpt.config.clone();
    drop(ckpt);
    let reports: Vec<EvalReport> = with_backend!(args.device, b => {
        let model = load(b.clone(), &args.model, "loading")?;
        let base = args
            .base
            .as_deref()
            .map(|p| load(b.clone(), p, "loading base"))
            .transpose()?;
        let pb = progress::bar(n_windows, "evaluating");
        let tick = |done: usize, _| pb.set_position(done as u64);
        let reports = if several {
            evaluate_kv_modes(&model, &tokens, &opts, &args.kv_cache, tick)?
        } else {
            vec![evaluate(&model, base.as_ref(), &tokens, &opts, tick)?]
        };
        pb.finish_and_clear();
        reports
    });
    for (report, &mode) in reports.iter().zip(&args.kv_cache) {
        let kv = crate::kv::record(&config, mode, args.ctx, kv_budget);
        if args.json {
            let mut v = serde_json::to_value(report)?;
            v["model"] = serde_json::json!(args.model);
            v["data"] = serde_json::json!(args.data);
            v["tokens_in_file"] = serde_json::json!(tokens.len());
            v["device"] = serde_json::json!(args.device.to_string());
            v["kv_cache"] = kv;
            match &args.base {
                Some(b) => v["base"] = serde_json::json!(b),
                None if several => v["base"] = serde_json::json!("the model with its f32 cache"),
                None => {}
            }
            crate::report::json(v);
        } else {
            print_report(&args, report, mode, &kv);
        }
    }
    Ok(())
}

fn print_report(
    args: &EvalArgs,
    report: &EvalReport,
    mode: crunch_runtime::KvMode,
    kv: &serde_json::Value,
) {
    println!(
        "{} ({mode} cache): perplexity {:.4} (mean NLL {:.4}) over {} tokens in {} windows of {}",
        args.model.display(),
        report.ppl,
        report.nll,
        report.tokens_scored,
        report.windows,
        report.ctx
    );
    println!(
        "  top-1 next-token accuracy {:.2}%",
        100.0 * report.top1_accuracy
    );
    if let (Some(kl), Some(agree)) = (report.kl, report.top1_agreement) {
        println!(
            "  vs base: KL {kl:.5} nats/token, top-1 agreement {:.2}% (flips {:.2}%)",
            100.0 * agree,
            100.0 * (1.0 - agree)
        );
    }
    println!(
        "  key/value cache: {:.0} bytes per token ({:.1}% of f16); {} tokens fit in {} MB",
        kv["bytes_per_token"].as_f64().unwrap_or(0.0),
        100.0 * kv["bytes_per_token_vs_f16"].as_f64().unwrap_or(0.0),
        kv["max_context_in_budget"],
        args.kv_memory_mb
    );
    println!(
        "  {:.1} tokens/s ({:.1} s)",
        report.tokens_per_second, report.seconds
    );
}
