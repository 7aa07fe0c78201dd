//! The server end to end on a tiny model, over real sockets on 127.0.0.1: the endpoints,
//! streaming and whole responses, concurrent requests batched together, malformed requests
//! answered with JSON 4xx errors while the server keeps serving.

use crunch_generate::{Engine, Request, SamplingParams};
use crunch_serve::{serve, ServeConfig};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::model_dir;

struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start(engine: Arc<Engine>, cfg: ServeConfig) -> Server {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (atx, arx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            atx.send(listener.local_addr().unwrap()).unwrap();
            serve(engine, cfg, listener, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
    });
    Server {
        addr: arx.recv().unwrap(),
        stop: Some(tx),
        thread: Some(thread),
    }
}

/// One HTTP/1.1 request; returns the status and the (de-chunked) body.
fn http(addr: SocketAddr, raw: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(raw).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || tail.len() < n {
                break;
            }
            out.push_str(&tail[..n]);
            rest = tail[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_string()
    };
    (status, body)
}

fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    http(addr, raw.as_bytes())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// The texts of an SSE stream's chunks; panics unless it ends with `[DONE]`.
fn sse_text(body: &str, chat: bool) -> (String, String) {
    let datas: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(
        datas.last(),
        Some(&"[DONE]"),
        "stream did not end with [DONE]: {body}"
    );
    let mut text = String::new();
    let mut finish = String::new();
    for d in &datas[..datas.len() - 1] {
        let v: Value = serde_json::from_str(d).unwrap();
        let c = &v["choices"][0];
        let piece = if chat {
            &c["delta"]["content"]
        } else {
            &c["text"]
        };
        text.push_str(piece.as_str().unwrap_or(""));
        if let Some(f) = c["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    (text, finish)
}

#[test]
fn endpoints_streams_batches_and_bad_requests() {
    let dir = model_dir();
    let engine = Arc::new(Engine::load(dir.path(), Some(64), |_| {}).unwrap());
    // What one greedy generation gives, straight from the engine.
    let prompt = engine.encode("w10 w11 w12", true).unwrap();
    let mut seq = engine.sequence(64);
    let want = engine
        .generate(
            &mut seq,
            &Request {
                prompt,
                max_tokens: 12,
                sampling: SamplingParams::default(),
                stop: vec![],
                ignore_eos: true,
            },
            &mut |_| {},
        )
        .unwrap();
    let cfg = ServeConfig {
        model_name: "tiny".into(),
        max_batch: 4,
        max_queue: 16,
        max_body: 4096,
        ..ServeConfig::default()
    };
    let srv = start(engine.clone(), cfg);
    let addr = srv.addr;

    let (status, body) = get(addr, "/health");
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(addr, "/v1/models");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["data"][0]["id"],
        "tiny"
    );

    // Whole and streamed completions agree with the engine (EOS may end them sooner).
    let req = json!({"model": "tiny", "prompt": "w10 w11 w12", "max_tokens": 12, "temperature": 0});
    let (status, body) = post(addr, "/v1/completions", &req.to_string());
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let text = v["choices"][0]["text"].as_str().unwrap().to_string();
    assert!(
        want.text.starts_with(text.trim_end()),
        "{text:?} vs {:?}",
        want.text
    );
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    let (status, body) = post(addr, "/v1/completions", &sreq.to_string());
    assert_eq!(status, 200);
    let (streamed, finish) = sse_text(&body, false);
    assert_eq!(streamed, text);
    assert!(finish == "stop" || finish == "length");

    // Concurrent streaming chat requests, batched.
    let handles: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let body = json!({"messages": [{"role": "user", "content": format!("w{}", 20 + i)}], "max_tokens": 10, "stream": true, "seed": i});
                post(addr, "/v1/chat/completions", &body.to_string())
            })
        })
        .collect();
    for h in handles {
        let (status, body) = h.join().unwrap();
        assert_eq!(status, 200, "{body}");
        sse_text(&body, true);
    }

    // Malformed requests: the right status, a JSON error, and the server goes on.
    let big = format!("{{\"prompt\": \"{}\"}}", "w3 ".repeat(2000));
    let cases: Vec<(&str, String, u16)> = vec![
        ("/v1/completions", "{not json".into(), 400),
        ("/v1/completions", "[]".into(), 400),
        ("/v1/completions", r#"{"prompt": 5}"#.into(), 400),
        (
            "/v1/completions",
            r#"{"prompt": "w3", "max_tokens": 100000}"#.into(),
            400,
        ),
        (
            "/v1/completions",
            r#"{"prompt": "w3", "model": "other"}"#.into(),
            404,
        ),
        ("/v1/completions", big, 413),
        (
            "/v1/chat/completions",
            r#"{"messages": [{"role": "user"}], "temperature": "hot"}"#.into(),
            400,
        ),
        (
            "/v1/chat/completions",
            r#"{"messages": [{"content": "w3"}]}"#.into(),
            400,
        ),
        ("/v1/nowhere", "{}".into(), 404),
    ];
    for (path, body, code) in cases {
        let (status, resp) = post(addr, path, &body);
        assert_eq!(status, code, "{path} {body:.60}: {resp}");
        let v: Value = serde_json::from_str(&resp).unwrap_or_else(|_| panic!("not JSON: {resp}"));
        assert!(v["error"]["message"].is_string(), "{resp}");
    }
    // A prompt longer than the context (64).
    let long = json!({"prompt": "w3 ".repeat(100)}).to_string();
    let (status, resp) = post(addr, "/v1/completions", &long);
    assert_eq!(status, 400, "{resp}");
    assert!(resp.contains("context_length_exceeded"));
    // A client that sends half a request and leaves.
    {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"pro")
            .unwrap();
    }
    let (status, _) = get(addr, "/health");
    assert_eq!(status, 200);
}
