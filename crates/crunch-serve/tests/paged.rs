//! The scheduler on a paged key/value pool (decision 141), on a tiny model: a pool too small
//! for every request at once still serves them all, preempting and re-prefilling sequences,
//! and every request gets the same greedy text as a generation on its own.

mod common;

use crunch_generate::{Engine, Request, SamplingParams};
use crunch_serve::scheduler::{self, Event, Job, SchedulerConfig, Stats};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;

const PROMPTS: [&str; 4] = [
    "w10 w11 w12 w13 w14 w15",
    "w40 w7 w99 w3 w3 w61",
    "w20 w21 w22 w23 w24 w25",
    "w100 w90 w80 w70 w60 w50",
];
const MAX_TOKENS: usize = 10;

/// Runs the scheduler over a pool of `pages` pages of 4 positions with every prompt queued at
/// once; returns each request's text and the preemptions.
fn serve_all(engine: &Arc<Engine>, pages: usize) -> (Vec<String>, usize) {
    let cache = engine
        .paged_cache(pages, 4)
        .unwrap()
        .expect("the host pages");
    let (tx, rx) = mpsc::channel(16);
    let stats = Arc::new(Stats::default());
    let cfg = SchedulerConfig {
        max_batch: 4,
        kv_budget: 0,
    };
    let mut events = Vec::new();
    for p in PROMPTS {
        let (etx, erx) = mpsc::unbounded_channel();
        stats.queued.fetch_add(1, Ordering::Relaxed);
        tx.blocking_send(Job {
            prompt: engine.encode(p, true).unwrap(),
            max_tokens: MAX_TOKENS,
            sampling: SamplingParams::default(),
            stop: vec![],
            events: etx,
        })
        .unwrap();
        events.push(erx);
    }
    drop(tx);
    let worker = {
        let (engine, stats) = (engine.clone(), stats.clone());
        std::thread::spawn(move || scheduler::run(engine, rx, cfg, Some(cache), stats))
    };
    let texts = events
        .iter_mut()
        .map(|rx| {
            let mut text = String::new();
            while let Some(e) = rx.blocking_recv() {
                match e {
                    Event::Text(t) => text.push_str(&t),
                    Event::Done { .. } => break,
                    Event::Error(e) => panic!("{e}"),
                }
            }
            text
        })
        .collect();
    worker.join().unwrap();
    (texts, stats.preemptions.load(Ordering::Relaxed))
}

#[test]
fn preemption_gives_the_same_greedy_text() {
    let dir = common::model_dir();
    let engine = Arc::new(Engine::load(dir.path(), Some(64), |_| {}).unwrap());
    let alone: Vec<String> = PROMPTS
        .iter()
        .map(|p| {
            let prompt = engine.encode(p, true).unwrap();
            let mut seq = engine.sequence(prompt.len() + MAX_TOKENS);
            let req = Request {
                prompt,
                max_tokens: MAX_TOKENS,
                sampling: SamplingParams::default(),
                stop: vec![],
                ignore_eos: false,
            };
            engine.generate(&mut seq, &req, &mut |_| {}).unwrap().text
        })
        .collect();
    assert!(alone.iter().all(|t| !t.is_empty()), "{alone:?}");
    // Room for every request at once: no preemption.
    let (roomy, n) = serve_all(&engine, 64);
    assert_eq!(n, 0);
    assert_eq!(roomy, alone);
    // 5 pages of 4 positions for four requests that need 4 pages each (6 prompt tokens and 10
    // more):
    // admitted two at a time, then preempted as they grow.
    let (tight, n) = serve_all(&engine, 5);
    assert!(n > 0, "the small pool should have preempted");
    assert_eq!(tight, alone);
}
