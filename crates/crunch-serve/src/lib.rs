//! `crunch serve`: an OpenAI-compatible HTTP server over the host runtime or a GPU (any
//! [`Runtime`]: the scheduler's batched decoding is `Engine::decode` on that backend).
//!
//! - `POST /v1/chat/completions`, `POST /v1/completions`: streaming (server-sent events,
//!   `data: {...}` chunks then `data: [DONE]`) and non-streaming;
//! - `GET /v1/models`, `GET /health`.
//!
//! HTTP is axum on a small tokio runtime; the model runs on one scheduler thread
//! (`scheduler.rs`) that batches every active request into the same forward passes. Requests
//! are checked before they queue (`api.rs`): malformed ones get a 4xx with an OpenAI-style
//! JSON error, a full queue a 503, an oversized body a 413; none of them reaches the model,
//! and the server keeps serving.

pub mod api;
pub mod scheduler;

use api::{ApiError, GenRequest, Kind, Limits, Prompt};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use crunch_generate::{Engine, Finish, Runtime};
use futures_util::stream::{self, StreamExt};
use scheduler::{Event, Job, SchedulerConfig, Stats};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The name `/v1/models` lists and requests may give as `model`.
    pub model_name: String,
    /// Requests waiting for a slot before new ones get 503.
    pub max_queue: usize,
    /// Sequences decoded together.
    pub max_batch: usize,
    /// Bytes of key/value cache for all active sequences together (the compressed
    /// `--kv-cache` modes, whose stores are per sequence).
    pub kv_budget: usize,
    /// Pages of the paged key/value pool (f32 caches, decision 141); `None`: [`kv_pages`]'s
    /// default.
    pub kv_pages: Option<usize>,
    /// Positions per page.
    pub page_size: usize,
    /// Largest request body in bytes (413 above).
    pub max_body: usize,
    /// `max_tokens` when a request gives none.
    pub default_max_tokens: usize,
    pub limits: Limits,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            model_name: "crunch".into(),
            max_queue: 64,
            max_batch: 32,
            kv_budget: 2 << 30,
            kv_pages: None,
            page_size: crunch_runtime::paged::DEFAULT_PAGE_SIZE,
            max_body: 1 << 20,
            default_max_tokens: 256,
            limits: Limits::default(),
        }
    }
}

struct AppState<B: Runtime> {
    engine: Arc<Engine<B>>,
    cfg: ServeConfig,
    queue: mpsc::Sender<Job>,
    stats: Arc<Stats>,
    ids: AtomicU64,
    /// The paged pool's pages and page size, if the cache is paged.
    pool: Option<(usize, usize)>,
}

type Shared<B> = Arc<AppState<B>>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut r = (status, Json(self.body())).into_response();
        if self.status == 503 {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The paged pool's size when `cfg.kv_pages` does not say: room for `max_batch` sequences
/// of the whole context, and on a GPU at most 80% of its free memory now (the rest for
/// activations and the runtime), at least one page. `None` when the engine's cache is not
/// paged (a compressed `--kv-cache` mode, or a backend without pages).
pub fn kv_pages<B: Runtime>(engine: &Engine<B>, cfg: &ServeConfig) -> Option<usize> {
    if !engine.kv_mode().is_full() || cfg.page_size == 0 {
        return None;
    }
    if let Some(n) = cfg.kv_pages {
        return Some(n);
    }
    let full = engine.context().div_ceil(cfg.page_size) * cfg.max_batch.max(1);
    let page = engine.page_bytes(cfg.page_size).max(1) as u64;
    let fits = match engine.backend().free_memory() {
        Ok(Some(free)) => (free / 10 * 8 / page) as usize,
        _ => usize::MAX,
    };
    Some(full.min(fits).max(1))
}

/// Starts the scheduler thread and serves on `listener` until `shutdown` completes.
pub async fn serve<B: Runtime>(
    engine: Arc<Engine<B>>,
    cfg: ServeConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel(cfg.max_queue.max(1));
    let stats = Arc::new(Stats::default());
    let paged = match kv_pages(engine.as_ref(), &cfg) {
        Some(pages) => engine
            .paged_cache(pages, cfg.page_size)
            .map_err(|e| std::io::Error::other(format!("the key/value page pool: {e}")))?,
        None => None,
    };
    let pool = paged
        .as_ref()
        .map(|p| (p.pool().pages(), p.pool().page_size()));
    let sched_cfg = SchedulerConfig {
        max_batch: cfg.max_batch.max(1),
        kv_budget: cfg.kv_budget,
    };
    let worker = {
        let (engine, stats) = (engine.clone(), stats.clone());
        std::thread::Builder::new()
            .name("crunch-scheduler".into())
            .spawn(move || scheduler::run(engine, rx, sched_cfg, paged, stats))?
    };
    let state = Arc::new(AppState {
        engine,
        cfg: cfg.clone(),
        queue: tx,
        stats,
        ids: AtomicU64::new(0),
        pool,
    });
    let app = Router::new()
        .route("/health", get(health::<B>))
        .route("/v1/models", get(models::<B>))
        .route("/v1/completions", post(completions::<B>))
        .route("/v1/chat/completions", post(chat_completions::<B>))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(cfg.max_body))
        .with_state(state.clone());
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    // Dropping the last queue sender lets the scheduler finish its work and stop.
    drop(state);
    let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    result
}

async fn health<B: Runtime>(State(s): State<Shared<B>>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "model": s.cfg.model_name,
        "active": s.stats.active.load(Ordering::Relaxed),
        "queued": s.stats.queued.load(Ordering::Relaxed),
        "preempted": s.stats.preempted.load(Ordering::Relaxed),
        "preemptions": s.stats.preemptions.load(Ordering::Relaxed),
        "kv_pages": s.pool.map(|(pages, page_size)| json!({
            "pages": pages,
            "page_size": page_size,
            "in_use": s.stats.pages_used.load(Ordering::Relaxed),
        })),
    }))
}

async fn models<B: Runtime>(State(s): State<Shared<B>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": s.cfg.model_name,
            "object": "model",
            "created": 0,
            "owned_by": "crunch",
            "context_length": s.engine.context(),
        }],
    }))
}

async fn not_found() -> ApiError {
    ApiError::new(404, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        405,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}

async fn completions<B: Runtime>(
    State(s): State<Shared<B>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    generate(s, Kind::Completion, body).await
}

async fn chat_completions<B: Runtime>(
    State(s): State<Shared<B>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    generate(s, Kind::Chat, body).await
}

/// The checked request turned into token ids and queued; `Err` before anything is queued.
fn admit<B: Runtime>(
    s: &AppState<B>,
    req: &GenRequest,
) -> Result<(mpsc::UnboundedReceiver<Event>, usize, usize), ApiError> {
    if let Some(m) = &req.model {
        if *m != s.cfg.model_name {
            return Err(ApiError::new(
                404,
                "model_not_found",
                format!(
                    "the model `{m}` does not exist; this server has `{}`",
                    s.cfg.model_name
                ),
            ));
        }
    }
    let engine = &s.engine;
    let ids = match &req.prompt {
        Prompt::Text(t) => engine.encode(t, true),
        Prompt::Messages(m) => engine
            .render_chat(m)
            .and_then(|text| engine.encode(&text, false)),
    }
    .map_err(|e| {
        ApiError::bad(
            if req.kind == Kind::Chat {
                "messages"
            } else {
                "prompt"
            },
            e.to_string(),
        )
    })?;
    if ids.is_empty() {
        return Err(ApiError::bad("prompt", "the prompt has no tokens"));
    }
    let context = engine.context();
    if ids.len() >= context {
        return Err(ApiError {
            status: 400,
            message: format!(
                "the prompt has {} tokens; this server's context holds {context} (prompt and reply)",
                ids.len()
            ),
            param: Some("messages".into()),
            code: "context_length_exceeded",
        });
    }
    let max_tokens = req
        .max_tokens
        .unwrap_or(s.cfg.default_max_tokens)
        .min(context - ids.len());
    let (tx, rx) = mpsc::unbounded_channel();
    let prompt_tokens = ids.len();
    let job = Job {
        prompt: ids,
        max_tokens,
        sampling: req.sampling.clone(),
        stop: req.stop.clone(),
        events: tx,
    };
    s.stats.queued.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = s.queue.try_send(job) {
        s.stats.queued.fetch_sub(1, Ordering::Relaxed);
        let msg = match e {
            mpsc::error::TrySendError::Full(_) => {
                "the server is busy: too many requests are waiting; retry shortly"
            }
            mpsc::error::TrySendError::Closed(_) => "the server is shutting down",
        };
        return Err(ApiError::new(503, "server_busy", msg));
    }
    Ok((rx, prompt_tokens, max_tokens))
}

fn finish_name(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

async fn generate<B: Runtime>(
    s: Shared<B>,
    kind: Kind,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            let status = e.status().as_u16();
            let code = if status == 413 {
                "request_too_large"
            } else {
                "invalid_body"
            };
            let msg = if status == 413 {
                format!("the request body is larger than {} bytes", s.cfg.max_body)
            } else {
                e.body_text()
            };
            return ApiError::new(status, code, msg).into_response();
        }
    };
    let req = match api::parse(kind, &body, &s.cfg.limits) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let (rx, _prompt_tokens, _) = match admit(&s, &req) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let n = s.ids.fetch_add(1, Ordering::Relaxed);
    let id = match kind {
        Kind::Chat => format!("chatcmpl-{n}"),
        Kind::Completion => format!("cmpl-{n}"),
    };
    let meta = ChunkMeta {
        id,
        created: now(),
        model: s.cfg.model_name.clone(),
        kind,
    };
    if req.stream {
        stream_response(meta, rx, req.stream_usage).into_response()
    } else {
        whole_response(meta, rx).await
    }
}

struct ChunkMeta {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
}

impl ChunkMeta {
    fn usage(prompt: usize, completion: usize) -> Value {
        json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
    }

    /// One streamed chunk: `text` so far (chat: `delta`), or the end with its reason.
    fn chunk(&self, text: Option<&str>, first: bool, finish: Option<Finish>) -> Value {
        let finish = finish.map(finish_name);
        match self.kind {
            Kind::Completion => json!({
                "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish}],
            }),
            Kind::Chat => {
                let mut delta = serde_json::Map::new();
                if first {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(t) = text {
                    delta.insert("content".into(), json!(t));
                }
                json!({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
                })
            }
        }
    }

    fn usage_chunk(&self, usage: Value) -> Value {
        let object = match self.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        };
        json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": [], "usage": usage})
    }
}

fn sse(v: &Value) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default().data(v.to_string()))
}

/// Server-sent events: a chunk per piece of text, a last chunk with the finish reason, the
/// usage when asked, then `[DONE]`. Dropping the response (client gone) closes the channel,
/// which the scheduler notices.
fn stream_response(
    meta: ChunkMeta,
    rx: mpsc::UnboundedReceiver<Event>,
    with_usage: bool,
) -> impl IntoResponse {
    struct St {
        rx: mpsc::UnboundedReceiver<Event>,
        meta: ChunkMeta,
        first: bool,
        done: bool,
        with_usage: bool,
    }
    let st = St {
        rx,
        meta,
        first: true,
        done: false,
        with_usage,
    };
    let events = stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let out: Vec<Result<SseEvent, Infallible>> = match st.rx.recv().await {
            Some(Event::Text(t)) => {
                let v = st.meta.chunk(Some(&t), st.first, None);
                st.first = false;
                vec![sse(&v)]
            }
            Some(Event::Done { finish, prompt_tokens, completion_tokens }) => {
                st.done = true;
                let mut v = vec![sse(&st.meta.chunk(None, st.first, Some(finish)))];
                if st.with_usage {
                    v.push(sse(&st.meta.usage_chunk(ChunkMeta::usage(prompt_tokens, completion_tokens))));
                }
                v.push(Ok(SseEvent::default().data("[DONE]")));
                v
            }
            Some(Event::Error(e)) => {
                st.done = true;
                vec![
                    sse(&json!({"error": {"message": e, "type": "server_error", "param": null, "code": "generation_failed"}})),
                    Ok(SseEvent::default().data("[DONE]")),
                ]
            }
            None => return None,
        };
        Some((stream::iter(out), st))
    })
    .flatten();
    Sse::new(events).keep_alive(KeepAlive::default())
}

async fn whole_response(meta: ChunkMeta, mut rx: mpsc::UnboundedReceiver<Event>) -> Response {
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Text(t) => text.push_str(&t),
            Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            } => {
                let usage = ChunkMeta::usage(prompt_tokens, completion_tokens);
                let finish = finish_name(finish);
                let v = match meta.kind {
                    Kind::Completion => json!({
                        "id": meta.id, "object": "text_completion", "created": meta.created, "model": meta.model,
                        "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}],
                        "usage": usage,
                    }),
                    Kind::Chat => json!({
                        "id": meta.id, "object": "chat.completion", "created": meta.created, "model": meta.model,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": finish}],
                        "usage": usage,
                    }),
                };
                return Json(v).into_response();
            }
            Event::Error(e) => return ApiError::new(500, "generation_failed", e).into_response(),
        }
    }
    ApiError::new(
        500,
        "generation_failed",
        "the generation ended without a result",
    )
    .into_response()
}
