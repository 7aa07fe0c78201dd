//! A persistent team of threads for the many small operations of decoding.
//!
//! Decoding one token of a small model runs a few hundred products of a few hundred
//! microseconds or less each (SmolLM2's layers are 576 wide). Handing each one to rayon's
//! pool costs a wake-up through the kernel (a futex) whenever a worker has gone to sleep, and
//! with `--threads 1` every product still crossed from the calling thread to the pool's one
//! worker and back: a third of a decode step went to scheduling (`perf`, decision 105).
//!
//! Here the calling thread takes part in every job, so a team of one runs inline, and the
//! other members spin on an atomic counter for a while after each job (they are usually
//! needed again within microseconds) before parking. A job is `tasks` numbered pieces of
//! work claimed one at a time from a shared ticket; the caller returns when all are done. A
//! member that is slow to wake (the machine is busy) does not hold the others up: the
//! caller and the other members claim its share.
//!
//! Only one job runs at a time: a caller that finds the team busy (another thread's product,
//! or a job started from inside a task) runs its tasks itself, which is always correct.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long an idle member spins before it parks: longer than the gap between two products
/// of a decode step (norms, attention, rotary embeddings run between them), short enough not
/// to burn a core for long after generation stops.
const SPIN: Duration = Duration::from_millis(2);

/// A job's tasks, shared with the members for the job's duration.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
}

struct Shared {
    /// `generation << 40 | tasks << 20 | next task`: members claim tasks with a
    /// compare-and-swap, so a member still looking at a finished job (an older generation)
    /// claims nothing.
    ticket: AtomicU64,
    /// The current job (a `*const Job` of the current generation), valid while its tasks
    /// are not all done.
    job: AtomicPtr<()>,
    /// Tasks of the current job finished.
    done: AtomicUsize,
    /// A task panicked in a member.
    panicked: AtomicBool,
    /// Members parked (or about to), with their handles for `unpark`.
    sleeping: Vec<AtomicBool>,
    /// A [`run_ranges`] job's tasks per participant (0 the caller, `i + 1` member `i`):
    /// `generation << 40 | end << 20 | next`, claimed from the front with a
    /// compare-and-swap (by the owner, and by the others once theirs are done).
    ranges: Vec<AtomicU64>,
    threads: OnceLock<Vec<Thread>>,
}

/// The team: `size - 1` member threads plus whoever calls [`run`].
struct Team {
    size: usize,
    shared: Arc<Shared>,
    lock: Mutex<()>,
}

static TEAM: OnceLock<Team> = OnceLock::new();

thread_local! {
    /// Set on member threads and while a caller runs a job: a nested job runs inline.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Threads the team uses (the caller included): rayon's thread count at first use, which
/// the command line sets with `--threads`.
pub fn threads() -> usize {
    team().size
}

fn team() -> &'static Team {
    TEAM.get_or_init(|| Team::new(rayon::current_num_threads().max(1)))
}

impl Team {
    fn new(size: usize) -> Team {
        let members = size - 1;
        let shared = Arc::new(Shared {
            ticket: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleeping: (0..members).map(|_| AtomicBool::new(false)).collect(),
            ranges: (0..=members).map(|_| AtomicU64::new(0)).collect(),
            threads: OnceLock::new(),
        });
        let mut handles = Vec::with_capacity(members);
        for i in 0..members {
            let s = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("crunch-team-{}", i + 1))
                .spawn(move || member(&s, i));
            match spawned {
                Ok(h) => handles.push(h.thread().clone()),
                // Fewer threads than asked for still compute the same result.
                Err(_) => break,
            }
        }
        let size = handles.len() + 1;
        let _ = shared.threads.set(handles);
        Team {
            size,
            shared,
            lock: Mutex::new(()),
        }
    }
}

/// Tasks of one job at most (the ticket's field width).
const MAX_TASKS: usize = (1 << 20) - 1;
const FIELD: u64 = (1 << 20) - 1;

/// Claims the next task of generation `gen`, if any is left.
#[inline]
fn claim(s: &Shared, gen: u64) -> Option<usize> {
    let mut t = s.ticket.load(Acquire);
    loop {
        if t >> 40 != gen || t & FIELD >= (t >> 20) & FIELD {
            return None;
        }
        match s.ticket.compare_exchange_weak(t, t + 1, AcqRel, Acquire) {
            Ok(_) => return Some((t & FIELD) as usize),
            Err(now) => t = now,
        }
    }
}

/// Claims the next task of a [`run_ranges`] job of generation `gen` for participant `me`:
/// the front of its own range, else the front of another's. (Taking another's tasks from
/// the front, not the back, keeps them in address order too: when a member is descheduled
/// on a busy machine, whoever takes its range over streams it in order, prefetches across
/// its tasks included.)
#[inline]
fn claim_range(s: &Shared, gen: u64, me: usize) -> Option<usize> {
    let n = s.ranges.len();
    for i in 0..n {
        let word = &s.ranges[(me + i) % n];
        let mut t = word.load(Acquire);
        while t >> 40 == gen && t & FIELD < (t >> 20) & FIELD {
            match word.compare_exchange_weak(t, t + 1, AcqRel, Acquire) {
                Ok(_) => return Some((t & FIELD) as usize),
                Err(now) => t = now,
            }
        }
    }
    None
}

fn member(s: &Shared, me: usize) {
    INSIDE.with(|c| c.set(true));
    let mut seen = s.ticket.load(Acquire) >> 40;
    loop {
        // Wait for a new generation: spin, then park.
        let start = Instant::now();
        let mut spins = 0u32;
        let gen = loop {
            let g = s.ticket.load(Acquire) >> 40;
            if g != seen {
                break g;
            }
            spins += 1;
            if spins.is_multiple_of(1024) && start.elapsed() > SPIN {
                s.sleeping[me].store(true, SeqCst);
                if s.ticket.load(SeqCst) >> 40 == seen {
                    std::thread::park();
                }
                s.sleeping[me].store(false, SeqCst);
                spins = 0;
                continue;
            }
            if spins.is_multiple_of(1024) {
                // On a busy machine, let whoever waits for this core run (often the caller).
                std::thread::yield_now();
            }
            std::hint::spin_loop();
        };
        seen = gen;
        let mut mine = 0;
        while let Some(t) = claim(s, gen).or_else(|| claim_range(s, gen, me + 1)) {
            // The job is read only after a claim succeeds: a claimed task of generation
            // `gen` is not done, so the caller is still waiting and `job` is still its job
            // (stored before the ticket that published the generation).
            // SAFETY: see above.
            let f = unsafe { (*(s.job.load(Acquire) as *const Job)).f };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(t))).is_err() {
                s.panicked.store(true, SeqCst);
            }
            mine += 1;
        }
        if mine > 0 {
            s.done.fetch_add(mine, AcqRel);
        }
    }
}

/// Runs `f(0)`, …, `f(tasks - 1)` on the team (the calling thread included) and returns
/// when all are done. Tasks must be independent; their order is unspecified.
pub fn run(tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    run_with(tasks, f, false)
}

/// As [`run`], but the tasks are dealt out in contiguous ranges, one per thread, each taken
/// in order by its thread (a thread that finishes its range takes the others' next tasks).
/// For products whose tasks are consecutive slices of one matrix: each thread then reads
/// one stream of memory in address order, and a task's prefetch past its end serves the
/// same thread's next task (decision 128).
pub fn run_ranges(tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    run_with(tasks, f, true)
}

fn run_with(tasks: usize, f: &(dyn Fn(usize) + Sync), split: bool) {
    if tasks == 0 {
        return;
    }
    if tasks > MAX_TASKS {
        // More tasks than a ticket counts: batches of them.
        let per = tasks.div_ceil(MAX_TASKS);
        return run(tasks.div_ceil(per), &|b| {
            (b * per..((b + 1) * per).min(tasks)).for_each(f)
        });
    }
    let team = team();
    let inside = INSIDE.with(|c| c.get());
    let guard = if team.size > 1 && tasks > 1 && !inside {
        team.lock.try_lock().ok()
    } else {
        None
    };
    let Some(_guard) = guard else {
        (0..tasks).for_each(f);
        return;
    };
    INSIDE.with(|c| c.set(true));
    let s = &*team.shared;
    let job = Job { f };
    s.done.store(0, SeqCst);
    s.job.store(&job as *const Job as *mut (), SeqCst);
    let gen = ((s.ticket.load(SeqCst) >> 40) + 1) & 0xFF_FFFF;
    let shared_next = if split {
        let n = s.ranges.len();
        for (i, word) in s.ranges.iter().enumerate() {
            let (a, b) = ((tasks * i / n) as u64, (tasks * (i + 1) / n) as u64);
            word.store(gen << 40 | b << 20 | a, SeqCst);
        }
        // Nothing left in the shared ticket: every task is in a range.
        tasks as u64
    } else {
        0
    };
    // The ticket published last: members that see the new generation see the job.
    s.ticket
        .store(gen << 40 | (tasks as u64) << 20 | shared_next, SeqCst);
    if let Some(threads) = s.threads.get() {
        for (sleeping, t) in s.sleeping.iter().zip(threads) {
            if sleeping.load(SeqCst) {
                t.unpark();
            }
        }
    }
    let mut mine = 0;
    let mut panic = None;
    while let Some(t) = claim(s, gen).or_else(|| claim_range(s, gen, 0)) {
        if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(t))) {
            panic = Some(p);
        }
        mine += 1;
    }
    s.done.fetch_add(mine, AcqRel);
    let mut spins = 0u32;
    while s.done.load(Acquire) < tasks {
        // A member still running a task it claimed: spin, yielding now and then so that a
        // descheduled member gets the core back on a busy machine.
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(256) {
            std::thread::yield_now();
        }
        std::hint::spin_loop();
    }
    s.job.store(std::ptr::null_mut(), SeqCst);
    INSIDE.with(|c| c.set(false));
    if let Some(p) = panic {
        std::panic::resume_unwind(p);
    }
    if s.panicked.swap(false, SeqCst) {
        panic!("a task of a parallel product panicked on a worker thread");
    }
}

/// `(start, len)` pieces of `0..n` for `run`: about `per_thread` pieces per thread, each at
/// least `min` long (the last may be shorter).
pub fn pieces(n: usize, per_thread: usize, min: usize) -> (usize, usize) {
    let want = threads() * per_thread;
    let len = n.div_ceil(want.max(1)).max(min.max(1));
    (len, n.div_ceil(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_task_runs_once() {
        for tasks in [0, 1, 2, 3, 17, 1000] {
            let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            run(tasks, &|t| {
                hits[t].fetch_add(1, Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Relaxed) == 1), "{tasks}");
        }
    }

    #[test]
    fn every_ranged_task_runs_once() {
        // Ranged and shared jobs alternate on the same team (a ranged job's words must not
        // leak into the next shared one, nor the other way).
        for round in 0..50 {
            for tasks in [1, 2, 3, 5, 8, 17, 64] {
                let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                let f = |t: usize| {
                    hits[t].fetch_add(1, Relaxed);
                };
                if (round + tasks) % 2 == 0 {
                    run_ranges(tasks, &f);
                } else {
                    run(tasks, &f);
                }
                assert!(hits.iter().all(|h| h.load(Relaxed) == 1), "{tasks}");
            }
        }
    }

    #[test]
    fn ranges_are_taken_in_order_own_range_first() {
        let s = Shared {
            ticket: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleeping: Vec::new(),
            ranges: vec![AtomicU64::new(0), AtomicU64::new(0)],
            threads: OnceLock::new(),
        };
        let gen = 5u64;
        // Tasks 0..4 for participant 0, 4..8 for participant 1.
        s.ranges[0].store(gen << 40 | 4 << 20, SeqCst);
        s.ranges[1].store(gen << 40 | 8 << 20 | 4, SeqCst);
        assert_eq!(claim_range(&s, gen, 1), Some(4));
        let mine: Vec<_> = std::iter::from_fn(|| claim_range(&s, gen, 0)).collect();
        // Its own range in order, then what is left of the other's, in order.
        assert_eq!(mine, [0, 1, 2, 3, 5, 6, 7]);
        assert_eq!(claim_range(&s, gen, 1), None);
        // Another generation's words give nothing.
        s.ranges[0].store(gen << 40 | 4 << 20, SeqCst);
        assert_eq!(claim_range(&s, gen + 1, 0), None);
    }

    #[test]
    fn concurrent_and_nested_jobs() {
        std::thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| {
                    for _ in 0..200 {
                        let sum = AtomicUsize::new(0);
                        run(8, &|t| {
                            let inner = AtomicUsize::new(0);
                            run(3, &|u| {
                                inner.fetch_add(u, Relaxed);
                            });
                            sum.fetch_add(t + inner.load(Relaxed), Relaxed);
                        });
                        assert_eq!(sum.load(Relaxed), 28 + 8 * 3);
                    }
                });
            }
        });
    }

    #[test]
    fn a_panicking_task_reaches_the_caller() {
        let r = std::panic::catch_unwind(|| {
            run(64, &|t| {
                if t == 63 {
                    panic!("task {t}");
                }
            })
        });
        assert!(r.is_err());
        // The team still works afterwards.
        let n = AtomicUsize::new(0);
        run(10, &|_| {
            n.fetch_add(1, Relaxed);
        });
        assert_eq!(n.load(Relaxed), 10);
    }
}
