//! `crunch generate MODEL --prompt TEXT`: one completion on the host runtime (weights kept
//! packed) or, `--device cuda`, on a GPU with the linear layers packed there, streamed to
//! stdout, with prompt and generation speed at the end.

use crate::device::{with_runtime, Device};
use crate::progress;
use anyhow::{bail, Context, Result};
use clap::Args;
use crunch_generate::memory::peak_rss_bytes;
use crunch_generate::{Engine, Generation, Message, Request, Runtime, SamplingParams};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The model and the longest sequence it runs, shared by `generate`, `chat` and `serve`.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// Model directory or GGUF file.
    #[arg(value_name = "MODEL")]
    pub path: PathBuf,
    /// Longest sequence (prompt and reply) in tokens [default: the model's, at most 4096].
    #[arg(long, value_name = "TOKENS")]
    pub ctx: Option<usize>,
    /// Where the model runs: cpu (the host runtime), or cuda[:N] / cuda-bf16[:N] (linear
    /// layers kept packed on the GPU; needs a build with the `cuda` feature, scripts/build-cuda).
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: Device,
}

/// Sampling flags shared by `generate`, `chat` (and the server's defaults).
#[derive(Args, Clone, Debug)]
pub struct SamplingArgs {
    /// 0 picks the most likely token (greedy); higher values sample more freely.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample among the K most likely tokens only (0: all).
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub top_k: usize,
    /// Sample among the most likely tokens that together reach probability P.
    #[arg(long, default_value_t = 1.0, value_name = "P")]
    pub top_p: f32,
    /// Drop tokens less likely than P times the most likely one.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub min_p: f32,
    /// Penalise tokens already in the text (1: off; 1.1 is a common choice).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Random seed: the same seed gives the same text.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when this text appears (repeatable); it is not printed.
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,
    #[arg(long, default_value = "f32", value_name = "MODE", value_parser = crate::kv::parse,
          help = crate::kv::HELP)]
    pub kv_cache: crunch_runtime::KvMode,
}

impl SamplingArgs {
    pub fn params(&self) -> Result<SamplingParams> {
        let p = SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
        };
        p.validate().map_err(anyhow::Error::msg)?;
        Ok(p)
    }
}

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt.
    #[arg(
        long,
        required_unless_present = "prompt_file",
        conflicts_with = "prompt_file"
    )]
    pub prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(long, value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub max_tokens: usize,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// Keep generating past end-of-sequence tokens (for benchmarks).
    #[arg(long)]
    pub ignore_eos: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Print one JSON record at the end (text, token counts, speeds, peak memory) instead of
    /// streaming the text.
    #[arg(long)]
    pub json: bool,
}

pub fn load(model: &Path, ctx: Option<usize>, json: bool) -> Result<Engine> {
    load_on(crunch_runtime::Host, model, ctx, json)
}

/// [`load`] onto `backend`.
pub fn load_on<B: Runtime>(
    backend: B,
    model: &Path,
    ctx: Option<usize>,
    json: bool,
) -> Result<Engine<B>> {
    let bar = (!json).then(|| progress::spinner("loading"));
    let engine = Engine::load_on(backend, model, ctx, |_| {})
        .with_context(|| format!("loading {}", model.display()))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(engine)
}

pub fn speed(tokens: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        tokens as f64 / seconds
    } else {
        0.0
    }
}

/// The one-line speed summary both `generate` and `chat` print.
pub fn summary(g: &Generation) -> String {
    format!(
        "prompt: {} tokens, {:.1} tokens/s | generation: {} tokens, {:.1} tokens/s",
        g.prefill_tokens,
        speed(g.prefill_tokens, g.prefill_seconds),
        g.generated_tokens,
        speed(g.decode_steps, g.decode_seconds),
    )
}

/// `crunch generate`'s flags on their own, for [`parse_args`].
#[derive(clap::Parser)]
#[command(name = "generate")]
struct GenerateOnly {
    #[command(flatten)]
    args: GenerateArgs,
}

/// Parses `crunch generate`'s arguments (without the program name): how the Python package's
/// `Model.generate` reads its keyword arguments, so that they are the CLI's, defaults included.
pub fn parse_args(args: Vec<String>) -> Result<GenerateArgs, clap::Error> {
    use clap::Parser;
    let argv = std::iter::once("generate".to_string()).chain(args);
    GenerateOnly::try_parse_from(argv).map(|g| g.args)
}

impl GenerateArgs {
    /// The completion these flags ask for, of `prompt`.
    pub fn completion<'a>(&'a self, prompt: &'a str) -> Completion<'a> {
        Completion {
            prompt,
            max_tokens: self.max_tokens,
            chat: self.chat,
            ignore_eos: self.ignore_eos,
            sampling: &self.sampling,
        }
    }
}

/// One completion: what `crunch generate` (and the Python package's `Model.generate`) asks.
pub struct Completion<'a> {
    pub prompt: &'a str,
    pub max_tokens: usize,
    /// Wrap the prompt as a user message in the model's chat template.
    pub chat: bool,
    pub ignore_eos: bool,
    pub sampling: &'a SamplingArgs,
}

/// Runs `job` on `engine`, passing each piece of text to `on_text` as it is decoded. Returns
/// the generation and the context it was given (prompt and reply only: the cache is
/// allocated up front).
pub fn complete<B: Runtime>(
    engine: &Engine<B>,
    job: &Completion,
    on_text: &mut dyn FnMut(&str),
) -> Result<(Generation, usize)> {
    let sampling = job.sampling.params()?;
    if job.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    let ids = if job.chat {
        let text = engine.render_chat(&[Message::new("user", job.prompt)])?;
        engine.encode(&text, false)?
    } else {
        engine.encode(job.prompt, true)?
    };
    let capacity = (ids.len() + job.max_tokens).min(engine.context());
    let mut seq = engine.sequence_with(capacity, job.sampling.kv_cache);
    let req = Request {
        prompt: ids,
        max_tokens: job.max_tokens,
        sampling,
        stop: job.sampling.stop.clone(),
        ignore_eos: job.ignore_eos,
    };
    let g = engine.generate(&mut seq, &req, &mut |t| {
        crate::progress::check_interrupt();
        on_text(t)
    })?;
    Ok((g, capacity))
}

/// The `--json` record of a generation.
pub fn record<B: Runtime>(
    engine: &Engine<B>,
    g: &Generation,
    capacity: usize,
    kv: crunch_runtime::KvMode,
) -> serde_json::Value {
    let cfg = &engine.model.config;
    serde_json::json!({
        "model": engine.path,
        "text": g.text,
        "token_ids": g.token_ids,
        "device": engine.backend().describe(),
        "finish_reason": g.finish,
        "prompt_tokens": g.prompt_tokens,
        "generated_tokens": g.generated_tokens,
        "prefill_tokens_per_second": speed(g.prefill_tokens, g.prefill_seconds),
        "decode_tokens_per_second": speed(g.decode_steps, g.decode_seconds),
        "prefill_seconds": g.prefill_seconds,
        "decode_seconds": g.decode_seconds,
        "decode_steps": g.decode_steps,
        "peak_rss_bytes": peak_rss_bytes(),
        "weight_bytes": engine.weight_bytes(),
        "kv_cache_bytes": engine.kv_bytes_in(kv, capacity),
        "kv_cache_memory": engine.backend().kv_memory(kv, cfg.head_dim),
        "kv_cache": crate::kv::record(cfg, kv, capacity, 1 << 30),
        "context": capacity,
        "threads": rayon::current_num_threads(),
        "kernels": crunch_runtime::kernels::Isa::detect().name(),
    })
}

pub fn run(args: GenerateArgs) -> Result<()> {
    args.sampling.params()?;
    let prompt = match (&args.prompt, &args.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("reading the prompt from {}", f.display()))?,
        (None, None) => bail!("give --prompt TEXT or --prompt-file FILE"),
    };
    if args.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    with_runtime!(args.model.device, b => run_on(b, &args, &prompt))
}

/// Tells (on stderr) that a GPU run keeps a compressed cache in host memory, since that is
/// not where a reader of `--device cuda` would expect it.
pub fn note_kv_location<B: Runtime>(backend: &B, kv: crunch_runtime::KvMode, head_dim: usize) {
    if backend.on_gpu() && backend.kv_memory(kv, head_dim) == "host" {
        eprintln!(
            "note: --kv-cache {kv} on {}: heads of {head_dim} channels keep the compressed \
             cache in host memory, attended on the host (the device kernel takes heads of \
             32-128 channels, decision 138)",
            backend.describe()
        );
    }
}

fn run_on<B: Runtime>(backend: B, args: &GenerateArgs, prompt: &str) -> Result<()> {
    let engine = load_on(backend, &args.model.path, args.model.ctx, args.json)?;
    if !args.json {
        note_kv_location(
            engine.backend(),
            args.sampling.kv_cache,
            engine.model.config.head_dim,
        );
    }
    let job = args.completion(prompt);
    if args.json {
        let (g, capacity) = complete(&engine, &job, &mut |_| {})?;
        crate::report::json(record(&engine, &g, capacity, args.sampling.kv_cache));
    } else {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let (g, _) = complete(&engine, &job, &mut |t| {
            let _ = out.write_all(t.as_bytes());
            let _ = out.flush();
        })?;
        let _ = writeln!(out);
        eprintln!("{}", summary(&g));
    }
    Ok(())
}
