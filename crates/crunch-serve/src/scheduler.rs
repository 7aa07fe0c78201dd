//! Continuous batching: one thread owns the model and runs a loop of decoding steps, each a
//! single forward pass over every active sequence (one new token each). Requests wait in a
//! bounded queue; between steps, queued requests are admitted (their prompts prefilled)
//! while there is a free slot and key/value memory for them, so a new request joins the
//! running batch at the next step instead of waiting for it to drain. A request whose client
//! has gone (its event channel closed) is dropped at the next step.
//!
//! Key/value memory is either a paged pool (decision 141, f32 caches on a backend that has
//! one): a request is admitted when the pool has pages for its prompt and one more token,
//! sequences grow a page at a time before each step, and when the pool runs out the newest
//! sequence is preempted (its pages freed, to be re-prefilled with its prompt and the tokens
//! generated so far when pages free up: vLLM's recompute policy); or, for the compressed
//! modes, a store per sequence allocated for its whole context, admitted against a byte
//! budget.

use crunch_generate::detok::TextStream;
use crunch_generate::{
    Engine, Finish, PagedCache, PagedSequence, Runtime, Sampler, SamplingParams, Sequence,
};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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
    /// Bytes of key/value cache all active sequences may hold together (per-sequence stores;
    /// a paged pool is sized when it is made).
    pub kv_budget: usize,
}

/// Counters the HTTP side reads (for /health).
#[derive(Default)]
pub struct Stats {
    pub active: AtomicUsize,
    pub queued: AtomicUsize,
    /// Sequences preempted and waiting to resume.
    pub preempted: AtomicUsize,
    /// Preemptions so far.
    pub preemptions: AtomicUsize,
    /// Pages of the paged pool in use (0 without one).
    pub pages_used: AtomicUsize,
}

/// Where a sequence's keys and values live.
enum Cache<B: Runtime> {
    Own(Sequence<B>),
    Paged(PagedSequence),
}

struct Active<'e, B: Runtime> {
    job: Job,
    cache: Cache<B>,
    sampler: Sampler,
    stream: TextStream<'e>,
    history: Vec<u32>,
    generated: usize,
    last: u32,
    /// Bytes of a per-sequence store, counted against the budget (0 when paged).
    kv: usize,
    /// Most positions the sequence may reach (prompt and reply).
    capacity: usize,
}

impl<B: Runtime> Active<'_, B> {
    fn cached(&self) -> usize {
        match &self.cache {
            Cache::Own(s) => s.tokens().len(),
            Cache::Paged(s) => s.tokens().len(),
        }
    }
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
    if a.generated >= a.job.max_tokens || a.cached() + 1 >= a.capacity {
        return done(a, Finish::Length);
    }
    Outcome::Continue
}

/// Key/value memory: a budget of bytes for per-sequence stores, or a paged pool.
enum Memory<B: Runtime> {
    Budget { in_use: usize, limit: usize },
    Paged(PagedCache<B>),
}

impl<B: Runtime> Memory<B> {
    /// Gives back what `a` held (finished, failed, preempted or dropped).
    fn free(&mut self, a: &mut Active<B>) {
        match (self, &mut a.cache) {
            (Memory::Budget { in_use, .. }, _) => *in_use -= a.kv,
            (Memory::Paged(pool), Cache::Paged(s)) => s.release(pool),
            (Memory::Paged(_), Cache::Own(_)) => {}
        }
        a.kv = 0;
    }

    fn pages_used(&self) -> usize {
        match self {
            Memory::Paged(p) => p.pool().used_pages(),
            Memory::Budget { .. } => 0,
        }
    }
}

/// What waits for a slot: a new request, or a preempted sequence to resume.
enum Candidate<'e, B: Runtime> {
    New(Job),
    Resume(Box<Active<'e, B>>),
}

/// Runs until the queue's senders are all gone and nothing is active. With `paged`, keys and
/// values live in its pages; without, each sequence has its own store, admitted against
/// `cfg.kv_budget`.
pub fn run<B: Runtime>(
    engine: Arc<Engine<B>>,
    mut queue: mpsc::Receiver<Job>,
    cfg: SchedulerConfig,
    paged: Option<PagedCache<B>>,
    stats: Arc<Stats>,
) {
    let engine = &*engine;
    let mut mem = match paged {
        Some(p) => Memory::Paged(p),
        None => Memory::Budget {
            in_use: 0,
            limit: cfg.kv_budget,
        },
    };
    let mut active: Vec<Active<B>> = Vec::new();
    // Preempted sequences, oldest first; they resume before new requests are taken.
    let mut preempted: VecDeque<Active<B>> = VecDeque::new();
    let mut waiting: Option<Job> = None;
    loop {
        stats.active.store(active.len(), Ordering::Relaxed);
        stats.preempted.store(preempted.len(), Ordering::Relaxed);
        stats.pages_used.store(mem.pages_used(), Ordering::Relaxed);
        // Admit while there is room (the first request always fits: it was checked against
        // the context when queued, and an empty batch frees the whole budget or pool).
        while active.len() < cfg.max_batch {
            let cand = if let Some(a) = preempted.pop_front() {
                Candidate::Resume(Box::new(a))
            } else {
                match waiting.take() {
                    Some(j) => {
                        stats.queued.fetch_sub(1, Ordering::Relaxed);
                        Candidate::New(j)
                    }
                    None if active.is_empty() => match queue.blocking_recv() {
                        Some(j) => {
                            stats.queued.fetch_sub(1, Ordering::Relaxed);
                            Candidate::New(j)
                        }
                        None => return,
                    },
                    None => match queue.try_recv() {
                        Ok(j) => {
                            stats.queued.fetch_sub(1, Ordering::Relaxed);
                            Candidate::New(j)
                        }
                        Err(_) => break,
                    },
                }
            };
            match admit(engine, &mut mem, cand, active.is_empty()) {
                Admit::Running(a) => active.push(*a),
                Admit::Done => {}
                Admit::NoRoom(Candidate::New(j)) => {
                    stats.queued.fetch_add(1, Ordering::Relaxed);
                    waiting = Some(j);
                    break;
                }
                Admit::NoRoom(Candidate::Resume(a)) => {
                    preempted.push_front(*a);
                    break;
                }
            }
        }
        stats.active.store(active.len(), Ordering::Relaxed);
        if active.is_empty() {
            continue;
        }
        // Drop sequences whose clients left while others decoded.
        active.retain_mut(|a| {
            let keep = !a.job.events.is_closed();
            if !keep {
                mem.free(a);
            }
            keep
        });
        if let Memory::Paged(pool) = &mut mem {
            // Room for this step's token in every sequence, preempting the newest until
            // there is (a sequence alone always fits: its capacity is at most the pool).
            let mut i = 0;
            while i < active.len() {
                let Cache::Paged(s) = &mut active[i].cache else {
                    unreachable!("a paged pool holds paged sequences only")
                };
                let need = s.tokens().len() + 1;
                if pool.reserve(&mut s.table, need).is_ok() {
                    i += 1;
                    continue;
                }
                let mut victim = active.pop().expect("sequence i is there");
                if let Cache::Paged(s) = &mut victim.cache {
                    s.release(pool);
                }
                stats.preemptions.fetch_add(1, Ordering::Relaxed);
                preempted.push_front(victim);
            }
        }
        stats.preempted.store(preempted.len(), Ordering::Relaxed);
        stats.pages_used.store(mem.pages_used(), Ordering::Relaxed);
        if active.is_empty() {
            continue;
        }
        let ids: Vec<u32> = active.iter().map(|a| a.last).collect();
        let result = match &mut mem {
            Memory::Paged(pool) => {
                let mut seqs: Vec<&mut PagedSequence> = active
                    .iter_mut()
                    .map(|a| match &mut a.cache {
                        Cache::Paged(s) => s,
                        Cache::Own(_) => unreachable!("a paged pool holds paged sequences only"),
                    })
                    .collect();
                engine.decode_paged(pool, &mut seqs, &ids)
            }
            Memory::Budget { .. } => {
                let mut seqs: Vec<&mut Sequence<B>> = active
                    .iter_mut()
                    .map(|a| match &mut a.cache {
                        Cache::Own(s) => s,
                        Cache::Paged(_) => unreachable!("a budget holds own stores only"),
                    })
                    .collect();
                engine.decode(&mut seqs, &ids)
            }
        };
        match result {
            Ok(logits) => {
                let keep: Vec<bool> = active
                    .iter_mut()
                    .zip(&logits)
                    .map(|(a, l)| matches!(advance(engine, a, l), Outcome::Continue))
                    .collect();
                let mut it = keep.iter();
                active.retain_mut(|a| {
                    let k = *it.next().expect("one flag per sequence");
                    if !k {
                        mem.free(a);
                    }
                    k
                });
            }
            Err(e) => {
                // A failed step leaves the caches unusable: end every sequence in it.
                for mut a in active.drain(..) {
                    mem.free(&mut a);
                    let _ = a.job.events.send(Event::Error(e.to_string()));
                }
            }
        }
    }
}

enum Admit<'e, B: Runtime> {
    Running(Box<Active<'e, B>>),
    /// Finished at its first token, failed, or its client left.
    Done,
    /// Not enough key/value memory now.
    NoRoom(Candidate<'e, B>),
}

/// Prefills a candidate if the memory has room for it (always when `alone`): a new request's
/// prompt, or a preempted sequence's prompt and generated tokens; samples its next token.
fn admit<'e, B: Runtime>(
    engine: &'e Engine<B>,
    mem: &mut Memory<B>,
    cand: Candidate<'e, B>,
    alone: bool,
) -> Admit<'e, B> {
    let mut a = match cand {
        Candidate::Resume(a) => *a,
        Candidate::New(job) => {
            let mut capacity = (job.prompt.len() + job.max_tokens).min(engine.context());
            let (cache, kv) = match mem {
                Memory::Paged(pool) => {
                    // A sequence never outgrows the pool, so one alone always fits.
                    capacity = capacity.min(pool.pool().slots());
                    (Cache::Paged(PagedSequence::default()), 0)
                }
                Memory::Budget { .. } => {
                    let kv = engine.kv_bytes(capacity);
                    (Cache::Own(engine.sequence(capacity)), kv)
                }
            };
            Active {
                sampler: Sampler::new(job.sampling.clone()),
                stream: TextStream::new(&engine.tokenizer, job.stop.clone()),
                history: job.prompt.clone(),
                generated: 0,
                last: 0,
                kv,
                capacity,
                cache,
                job,
            }
        }
    };
    if a.job.events.is_closed() {
        return Admit::Done;
    }
    // A resumed sequence re-runs everything it had: its prompt and the tokens generated so
    // far (the last of which it had not yet fed), and goes on from the logits after them.
    let tokens = a.history.clone();
    if tokens.len() >= a.capacity {
        let _ = a.job.events.send(Event::Error(format!(
            "the prompt has {} tokens; the key/value pool holds {} positions (prompt and reply)",
            tokens.len(),
            a.capacity
        )));
        return Admit::Done;
    }
    let logits = match (&mut *mem, &mut a.cache) {
        (Memory::Budget { in_use, limit }, Cache::Own(seq)) => {
            if !alone && *in_use + a.kv > *limit {
                return Admit::NoRoom(Candidate::New(a.job));
            }
            *in_use += a.kv;
            engine.prefill(seq, &tokens)
        }
        (Memory::Paged(pool), Cache::Paged(seq)) => {
            // Pages for the prompt and the first decoded token, so that the step after
            // admission does not preempt what was just prefilled.
            if pool.reserve(&mut seq.table, tokens.len() + 1).is_err() {
                return match a.generated {
                    0 => Admit::NoRoom(Candidate::New(a.job)),
                    _ => Admit::NoRoom(Candidate::Resume(Box::new(a))),
                };
            }
            engine.prefill_paged(pool, seq, &tokens)
        }
        _ => unreachable!("a sequence's cache matches the scheduler's memory"),
    };
    match logits {
        Ok(l) => match advance(engine, &mut a, &l) {
            Outcome::Continue => Admit::Running(Box::new(a)),
            Outcome::Finished => {
                mem.free(&mut a);
                Admit::Done
            }
        },
        Err(e) => {
            mem.free(&mut a);
            let _ = a.job.events.send(Event::Error(e.to_string()));
            Admit::Done
        }
    }
}
