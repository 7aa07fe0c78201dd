//! `crunch eval MODEL --data FILE`

use crate::device::{with_backend, Device};
use crate::progress;
use anyhow::{bail, Context, Result};
use clap::Args;
use crunch_eval::{evaluate, windows, EvalOptions};
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
    };
    crunch_eval::check_enough_tokens(&tokens, &opts)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.data.display()))?;
    let n_windows = windows(&tokens, &opts).len();
    drop(ckpt);
    let report = with_backend!(args.device, b => {
        let model = load(b.clone(), &args.model, "loading")?;
        let base = args
            .base
            .as_deref()
            .map(|p| load(b.clone(), p, "loading base"))
            .transpose()?;
        let pb = progress::bar(n_windows, "evaluating");
        let report = evaluate(&model, base.as_ref(), &tokens, &opts, |done, _| {
            pb.set_position(done as u64)
        })?;
        pb.finish_and_clear();
        report
    });

    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["model"] = serde_json::json!(args.model);
        v["data"] = serde_json::json!(args.data);
        v["tokens_in_file"] = serde_json::json!(tokens.len());
        v["device"] = serde_json::json!(args.device.to_string());
        if let Some(b) = &args.base {
            v["base"] = serde_json::json!(b);
        }
        crate::report::json(v);
    } else {
        println!(
            "{}: perplexity {:.4} (mean NLL {:.4}) over {} tokens in {} windows of {}",
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
            "  {:.1} tokens/s ({:.1} s)",
            report.tokens_per_second, report.seconds
        );
    }
    Ok(())
}
