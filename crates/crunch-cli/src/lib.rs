//! `crunch`: the thin command-line front end. Each subcommand parses its flags here and calls
//! into the library crates; no algorithm lives in this crate.
//!
//! It is a library as well as the `crunch` binary so that the Python package (`crunch-py`)
//! runs the very same commands: keyword arguments become these flags, parsed by this parser,
//! and [`run_captured`] hands back the object `--json` would print (decision 110).

pub mod calib_args;
mod chat;
mod compress;
pub mod device;
mod eval;
pub mod generate;
mod gguf_out;
mod info;
pub mod kv;
mod pack;
pub mod progress;
pub mod report;
mod search;
mod search_args;
mod search_gguf;
mod search_report;
mod search_timing;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "crunch",
    version,
    about = "Make large language models smaller and faster, and measure the damage.",
    long_about = "Make large language models smaller and faster, and measure the damage.\n\n\
        MODEL arguments take a Hugging Face directory (config.json, model.safetensors or a \
        sharded index, tokenizer.json) or a single GGUF file, which carries its own tokenizer.",
    after_help = "Examples:\n  \
        crunch info model.gguf\n  \
        crunch eval model.gguf --data wiki.test.raw --ctx 2048 --max-tokens 65536\n  \
        crunch eval quantized/ --base original/ --data wiki.test.raw --json\n  \
        crunch quantize model/ --out q4/ --method gptq --calib wiki.train.raw\n  \
        crunch quantize model/ --out q4/ --method gptq --calib self:128x512"
)]
pub struct Cli {
    /// Worker threads for matrix products and scoring (default: all cores).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a model's architecture, size, dtypes and bytes on disk.
    Info(info::InfoArgs),
    /// Measure perplexity on a text file, and KL divergence / top-1 agreement against a base model.
    Eval(eval::EvalArgs),
    /// Quantize weights to 2-8 bits (round-to-nearest or GPTQ), in crunch's format or a layout
    /// transformers and vLLM load.
    Quantize(compress::QuantizeArgs),
    /// Prune weights: magnitude, Wanda or SparseGPT; unstructured or N:M (2:4), optionally
    /// quantizing the kept weights in the same pass (SparseGPT).
    Prune(compress::PruneArgs),
    /// Factor linear layers into two low-rank matrices (SVD or whitened SVD) under one global
    /// parameter budget, optionally with an EoRA correction.
    Lowrank(compress::LowRankArgs),
    /// Apply a TOML recipe: stages of methods per layer pattern (quantize, prune, factor,
    /// correct), the same recipe every output carries as recipe.toml; or search each layer's
    /// level for a target size, bits per weight or KL (--target-size/--target-bpw/--target-kl).
    Compress(compress::CompressArgs),
    /// Pack a checkpoint file or directory losslessly.
    Pack(pack::PackArgs),
    /// Restore a packed checkpoint bit for bit.
    Unpack(pack::UnpackArgs),
    /// Generate text from a prompt with the weights kept in their compressed encoding.
    Generate(generate::GenerateArgs),
    /// Chat with a model in its chat template (one line per message; /reset, /exit).
    Chat(chat::ChatArgs),
    /// Serve a model over an OpenAI-compatible HTTP API (chat and text completions,
    /// streaming), batching concurrent requests.
    Serve(serve::ServeArgs),
}

/// Prints the notes a check returned (stale temporaries removed, short last groups).
pub(crate) fn output_notes(notes: Vec<String>) {
    for n in notes {
        eprintln!("note: {n}");
    }
}

/// The `crunch` binary: parse, run, print the error and exit non-zero on failure.
pub fn main() {
    let cli = Cli::parse();
    let threads = cli.threads.map(|n| {
        crunch_runtime::threads::check_threads(n).unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(1);
        })
    });
    // The environment is set first, while this is the process's only thread: `set_var` races
    // with any other thread reading the environment (glibc's getenv is not synchronized with
    // setenv; Rust 2024 makes `set_var` unsafe for that reason), and the threads start below
    // (the Ctrl-C handler's, rayon's pool) or at the first candle op (its barrier pool, which
    // reads CANDLE_NUM_THREADS once). candle 0.11 has no API to size that pool (`BarrierPool`'s
    // constructor is private; `barrier_pool()` builds it from the variable on first use), so
    // the variable it is.
    if let Some(n) = threads {
        // candle's matmul reads RAYON_NUM_THREADS; rayon's global pool is set to match below.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    if matches!(
        cli.command,
        Command::Quantize(_) | Command::Prune(_) | Command::Lowrank(_) | Command::Compress(_)
    ) {
        // Calibration forwards alternate rayon's products with candle's element-wise ops:
        // one pool, not two competing for the cores (decision 119).
        crunch_runtime::threads::serial_elementwise_ops();
    }
    // Ctrl-C removes the unfinished output; a truncated input is named, not a silent SIGBUS.
    crunch_export::interrupt::install();
    if let Some(n) = threads {
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
    if let Err(err) = run(cli.command) {
        eprintln!("error: {}", message(&err));
        std::process::exit(1);
    }
}

/// Parses `args` (the program name first, as `std::env::args` gives them) and runs the
/// command with its `--json` object captured instead of printed: what the Python package
/// calls. A parse error (unknown flag, bad value, `--help`) is returned as clap's error.
pub fn run_captured<I, T>(args: I) -> Result<Vec<serde_json::Value>, RunError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::try_parse_from(args).map_err(RunError::Usage)?;
    let (result, records) = report::capture(|| run(cli.command));
    result.map_err(RunError::Failed)?;
    Ok(records)
}

/// Why [`run_captured`] failed: the arguments did not parse, or the command failed.
#[derive(Debug)]
pub enum RunError {
    Usage(clap::Error),
    Failed(anyhow::Error),
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Info(args) => info::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Quantize(args) => compress::quantize(args),
        Command::Prune(args) => compress::prune(args),
        Command::Lowrank(args) => compress::lowrank(args),
        Command::Compress(args) => compress::compress(args),
        Command::Pack(args) => pack::pack(args),
        Command::Unpack(args) => pack::unpack(args),
        Command::Generate(args) => generate::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Serve(args) => serve::run(args),
    }
}

/// The text a panic carried (`panic!` with a literal or a formatted message), if any.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
}

/// The error and its causes, each once: crunch's error types name their cause in their own
/// message (as `FormatError` does), so a cause already in the text is not repeated.
pub fn message(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text = format!("{text}: {c}");
        }
    }
    text
}
