//! Continuous batching: one thread owns the model and runs a loop of decoding steps, each a
//! single forward pass over every active sequence (one new token each). Requests wait in a
//! bounded queue; between steps, queued requests are admitted (their prompts prefilled)
//! while there is a free slot and key/value memory for them, so a new request joins the
//! running batch at the next step instead of waiting for it to drain. A request whose client
//! has gone (its event channel closed) is dropped at the next step.

use crunch_generate::detok::TextStream;
use crunch_generate::{Engine, Finish, Runtime, Sampler, SamplingParams, Sequence};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// One admitted request's work.
pub struct Job {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub events: mpsc::UnboundedSender<Event>,
}

/// What a request's handler receives.
#[derive(Debug)]
pub enum Event {
    /// Text that is now final.
    Text(String),
    Done {
        finish: Finish,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    /// The model failed on this request (the server goes on).
    Error(String),
}

#[derive(Clone, Copy, Debug)]
pub struct SchedulerConfig {
    /// Most sequences decoded together.
    pub max_batch: usize,
    /// Bytes of key/value cache all active sequences may hold together.
    pub kv_budget: usize,
}

/// Counters the HTTP side reads (for /health).
#[derive(Default)]
pub struct Stats {
    pub active: AtomicUsize,
    pub queued: AtomicUsize,
}

struct Active<'e, B: Runtime> {
    job: Job,
    seq: Sequence<B>,
    sampler: Sampler,
    stream: TextStream<'e>,
    history: Vec<u32>,
    generated: usize,
    last: u32,
    kv: usize,
}

enum Outcome {
    Continue,
    Finished,
}

/// Samples the next token for `a` from `logits` and reports it; says whether it goes on.
fn advance<B: Runtime>(engine: &Engine<B>, a: &mut Active<B>, logits: &[f32]) -> Outcome {
    let tok = a.sampler.sample(logits, &a.history);
    a.history.push(tok);
    a.generated += 1;
    a.last = tok;
    let done = |a: &mut Active<B>, finish: Finish| {
        let tail = a.stream.finish();
        if !tail.is_empty() {
            let _ = a.job.events.send(Event::Text(tail));
        }
        let _ = a.job.events.send(Event::Done {
            finish,
            prompt_tokens: a.job.prompt.len(),
            completion_tokens: a.generated,
        });
        Outcome::Finished
    };
    if engine.meta.eos.contains(&tok) {
        return done(a, Finish::Stop);
    }
    match a.stream.push(tok) {
        Ok(step) => {
            if !step.text.is_empty() && a.job.events.send(Event::Text(step.text)).is_err() {
                return Outcome::Finished; // the client is gone
            }
            if step.stopped {
                return done(a, Finish::Stop);
            }
        }
        Err(e) => {
            let _ = a.job.events.send(Event::Error(e));
            return Outcome::Finished;
        }
    }
    if a.generated >= a.job.max_tokens || a.seq.tokens().len() + 1 >= a.seq.capacity() {
        return done(a, Finish::Length);
    }
    Outcome::Continue
}

/// Runs until the queue's senders are all gone and nothing is active.
pub fn run<B: Runtime>(
    engine: Arc<Engine<B>>,
    mut queue: mpsc::Receiver<Job>,
    cfg: SchedulerConfig,
    stats: Arc<Stats>,
) {
    let engine = &*engine;
    let mut active: Vec<Active<B>> = Vec::new();
    let mut kv_in_use = 0usize;
    let mut waiting: Option<Job> = None;
    loop {
        stats.active.store(active.len(), Ordering::Relaxed);
        // Admit while there is room (the first request always fits: it was checked against
        // the context when queued, and an empty batch frees the whole budget).
        while active.len() < cfg.max_batch {
            let job = match waiting.take() {
                Some(j) => j,
                None if active.is_empty() => match queue.blocking_recv() {
                    Some(j) => j,
                    None => return,
                },
                None => match queue.try_recv() {
                    Ok(j) => j,
                    Err(_) => break,
                },
            };
            stats.queued.fetch_sub(1, Ordering::Relaxed);
            if job.events.is_closed() {
                continue;
            }
            let capacity = (job.prompt.len() + job.max_tokens).min(engine.context());
            let kv = engine.kv_bytes(capacity);
            if !active.is_empty() && kv_in_use + kv > cfg.kv_budget {
                stats.queued.fetch_add(1, Ordering::Relaxed);
                waiting = Some(job);
                break;
            }
            let mut seq = engine.sequence(capacity);
            let t0 = Instant::now();
            let logits = match engine.prefill(&mut seq, &job.prompt) {
                Ok(l) => l,
                Err(e) => {
                    let _ = job.events.send(Event::Error(e.to_string()));
                    continue;
                }
            };
            let _prefill = t0.elapsed();
            let mut a = Active {
                sampler: Sampler::new(job.sampling.clone()),
                stream: TextStream::new(&engine.tokenizer, job.stop.clone()),
                history: job.prompt.clone(),
                generated: 0,
                last: 0,
                kv,
                seq,
                job,
            };
            if let Outcome::Continue = advance(engine, &mut a, &logits) {
                kv_in_use += a.kv;
                active.push(a);
            }
        }
        stats.active.store(active.len(), Ordering::Relaxed);
        if active.is_empty() {
            continue;
        }
        // Drop sequences whose clients left while others decoded.
        active.retain(|a| {
            let keep = !a.job.events.is_closed();
            if !keep {
                kv_in_use -= a.kv;
            }
            keep
        });
        if active.is_empty() {
            continue;
        }
        let ids: Vec<u32> = active.iter().map(|a| a.last).collect();
        let mut seqs: Vec<&mut Sequence<B>> = active.iter_mut().map(|a| &mut a.seq).collect();
        match engine.decode(&mut seqs, &ids) {
            Ok(logits) => {
                let keep: Vec<bool> = active
                    .iter_mut()
                    .zip(&logits)
                    .map(|(a, l)| matches!(advance(engine, a, l), Outcome::Continue))
                    .collect();
                let mut it = keep.iter();
                active.retain(|a| {
                    let k = *it.next().expect("one flag per sequence");
                    if !k {
                        kv_in_use -= a.kv;
                    }
                    k
                });
            }
            Err(e) => {
                // A failed step leaves the caches unusable: end every sequence in it.
                for a in active.drain(..) {
                    let _ = a.job.events.send(Event::Error(e.to_string()));
                }
                kv_in_use = 0;
            }
        }
    }
}
