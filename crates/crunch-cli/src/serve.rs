//! `crunch serve MODEL --host 127.0.0.1 --port 8080`: the OpenAI-compatible server
//! (crunch-serve) on the host runtime or (`--device cuda`) a GPU, until Ctrl-C. On the GPU the
//! scheduler's batched decoding runs there too (one forward pass for every active request).

use crate::device::with_runtime;
use crate::generate::{load_on, note_kv_location, ModelArgs};
use anyhow::{Context, Result};
use clap::Args;
use crunch_generate::Runtime;
use crunch_serve::{api::Limits, ServeConfig};
use std::sync::Arc;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on (127.0.0.1: this machine only).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// The model's name in the API [default: the file or directory name].
    #[arg(long)]
    pub name: Option<String>,
    /// Requests decoded together in each forward pass.
    #[arg(long, default_value_t = 32)]
    pub max_batch: usize,
    /// Requests allowed to wait for a slot; more get 503.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// Largest max_tokens a request may ask for.
    #[arg(long, default_value_t = 2048)]
    pub max_tokens_limit: usize,
    /// max_tokens of requests that give none.
    #[arg(long, default_value_t = 256)]
    pub default_max_tokens: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body: usize,
    /// Key/value cache memory for all active requests together, in MB, with a compressed
    /// --kv-cache mode (each request's store allocated for its whole context). f32 caches are
    /// paged instead (--kv-pages).
    #[arg(long, default_value_t = 2048)]
    pub kv_budget_mb: usize,
    /// Pages of 16 positions in the paged key/value pool (f32 caches): requests are admitted
    /// when it has pages for their prompt, grow a page at a time, and the newest is
    /// preempted (and later re-prefilled) when it runs out. Default: room for --max-batch
    /// requests of the whole context, and on a GPU at most 80% of its free memory.
    #[arg(long)]
    pub kv_pages: Option<usize>,
    #[arg(long, default_value = "f32", value_name = "MODE", value_parser = crate::kv::parse,
          help = crate::kv::HELP)]
    pub kv_cache: crunch_runtime::KvMode,
}

pub fn run(args: ServeArgs) -> Result<()> {
    with_runtime!(args.model.device, b => run_on(b, args))
}

fn run_on<B: Runtime>(backend: B, args: ServeArgs) -> Result<()> {
    let mut engine = load_on(backend, &args.model.path, args.model.ctx, false)?;
    engine.set_kv_cache(args.kv_cache);
    note_kv_location(
        engine.backend(),
        args.kv_cache,
        engine.model.config.head_dim,
    );
    let engine = Arc::new(engine);
    // The file (or directory) name: what users type, unlike GGUF's free-form general.name.
    let name = args.name.clone().unwrap_or_else(|| {
        let p = args.model.path.as_path();
        let stem = if p.is_dir() {
            p.file_name()
        } else {
            p.file_stem()
        };
        stem.map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| engine.meta.name.clone())
    });
    let mut cfg = ServeConfig {
        model_name: name.clone(),
        max_queue: args.max_queue,
        max_batch: args.max_batch,
        kv_budget: args.kv_budget_mb << 20,
        kv_pages: args.kv_pages,
        page_size: crunch_runtime::paged::DEFAULT_PAGE_SIZE,
        max_body: args.max_body,
        default_max_tokens: args.default_max_tokens,
        limits: Limits {
            max_tokens: args.max_tokens_limit,
            ..Limits::default()
        },
    };
    if args.kv_pages == Some(0) {
        anyhow::bail!("--kv-pages must be at least 1");
    }
    // Fixed now, so that the line below reports the pool serve() allocates.
    cfg.kv_pages = crunch_serve::kv_pages(engine.as_ref(), &cfg);
    let kv_line = match cfg.kv_pages {
        Some(pages) => format!(
            "key/value cache paged: {pages} pages of {} positions ({} MB, {} full contexts)",
            cfg.page_size,
            pages * engine.page_bytes(cfg.page_size) / 1_000_000,
            pages * cfg.page_size / engine.context().max(1)
        ),
        None => format!(
            "key/value cache {:?} per request (compressed modes are not paged), {} MB budget",
            args.kv_cache, args.kv_budget_mb
        ),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    rt.block_on(async move {
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        eprintln!(
            "serving {name} on http://{} ({} MB of weights, context {}, {}; {kv_line})",
            listener.local_addr()?,
            engine.weight_bytes() / 1_000_000,
            engine.context(),
            engine.backend().describe()
        );
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("shutting down");
        };
        crunch_serve::serve(engine, cfg, listener, shutdown)
            .await
            .context("serving")
    })
}
