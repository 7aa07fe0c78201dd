//! Where chunks are coded: on the calling thread (one thread: no pool, no hand-offs), or on a
//! rayon pool of N threads. Results always come back in input order, so the output does not
//! depend on the thread count.

use crate::error::{PackError, Result};
use rayon::prelude::*;

/// Threads per core a caller may ask for.
pub const MAX_THREADS_PER_CORE: usize = 8;

pub enum Workers {
    Current,
    Pool(rayon::ThreadPool),
}

impl Workers {
    /// `threads` workers; 0 means one per core.
    pub fn new(threads: usize) -> Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let n = match threads {
            0 => cores,
            n => n,
        };
        // The same cap as `crunch_runtime::threads` (crunch-pack stands alone): a typo like
        // `--threads 100000` must not spawn thousands of threads.
        if n > cores * MAX_THREADS_PER_CORE {
            return Err(PackError::invalid(
                ".",
                format!(
                    "--threads {n} is more than {MAX_THREADS_PER_CORE} per core ({} on this \
                     machine's {cores} cores)",
                    cores * MAX_THREADS_PER_CORE
                ),
            ));
        }
        if n == 1 {
            return Ok(Workers::Current);
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map(Workers::Pool)
            .map_err(|e| PackError::invalid(".", format!("cannot start worker threads: {e}")))
    }

    pub fn threads(&self) -> usize {
        match self {
            Workers::Current => 1,
            Workers::Pool(p) => p.current_num_threads(),
        }
    }

    /// `f` over `items`, results in order.
    pub fn map<I: Sync, T: Send>(&self, items: &[I], f: impl Fn(&I) -> T + Sync + Send) -> Vec<T> {
        match self {
            Workers::Current => items.iter().map(f).collect(),
            Workers::Pool(p) => p.install(|| items.par_iter().map(f).collect()),
        }
    }

    /// `f` over owned `items` until the first error.
    pub fn try_for_each<I: Send>(
        &self,
        items: Vec<I>,
        f: impl Fn(I) -> Result<()> + Sync + Send,
    ) -> Result<()> {
        match self {
            Workers::Current => items.into_iter().try_for_each(f),
            Workers::Pool(p) => p.install(|| items.into_par_iter().try_for_each(f)),
        }
    }

    /// Runs `work` on the pool while `here` runs on the calling thread (which may hold
    /// things that cannot leave it, such as the output sink). Lets restoring hash and write
    /// one batch while the next is decoded. Without a pool `here` runs first: it reads the
    /// batch just decoded, which is then still in cache.
    pub fn overlap<A: Send, B>(
        &self,
        work: impl FnOnce() -> A + Send,
        here: impl FnOnce() -> B,
    ) -> (A, B) {
        match self {
            Workers::Current => {
                let b = here();
                (work(), b)
            }
            Workers::Pool(p) => {
                let mut a = None;
                let b = p.in_place_scope(|s| {
                    s.spawn(|_| a = Some(work()));
                    here()
                });
                (a.expect("the scope waits for its task"), b)
            }
        }
    }
}
