//! The worker-thread count a user may ask for, and how candle's own pool is sized.

/// `--threads` may ask for at most this many threads per core. More only adds scheduling
/// overhead to compute-bound work, and a typo like `--threads 100000` used to spawn
/// thousands of threads and hang.
pub const MAX_THREADS_PER_CORE: usize = 8;

/// Checks a requested thread count against the machine's cores: at most
/// [`MAX_THREADS_PER_CORE`] per core (0 keeps its meaning, one per core).
pub fn check_threads(n: usize) -> Result<usize, String> {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let max = cores * MAX_THREADS_PER_CORE;
    if n > max {
        return Err(format!(
            "--threads {n} is more than {MAX_THREADS_PER_CORE} per core ({max} on this \
             machine's {cores} cores); compute-bound work gains nothing from more"
        ));
    }
    Ok(n)
}

/// The environment variable that sizes candle's element-wise pool (its "barrier pool").
pub const CANDLE_THREADS_ENV: &str = "CANDLE_NUM_THREADS";

/// Runs candle's element-wise CPU ops (adds, multiplies, activations over ≥ 64 K values) on
/// the calling thread instead of on candle's barrier pool, unless the user sized that pool
/// with `CANDLE_NUM_THREADS`. Call it before any other thread exists (it sets an environment
/// variable) and so before the first candle op (the pool is made once, from the variable).
///
/// Why: the CPU backend's matrix products run on rayon's pool (`RAYON_NUM_THREADS` threads)
/// while the element-wise ops run on candle's barrier pool of `CANDLE_NUM_THREADS − 1` more
/// threads, which spin (25,000 rounds) after every op before they sleep. In a calibration
/// pass — a forward per window, products and element-wise ops alternating, and rayon's
/// Hessian sums and solves — those spinning threads take cores from rayon's work, and the
/// caller spins waiting for a parked one (`BarrierGuard::drop`, ~8% of the samples of a
/// `quantize --method gptq` on 2 cores). The split of an element-wise op never changes its
/// values, so the outputs are the same bits (decision 119).
pub fn serial_elementwise_ops() {
    if std::env::var_os(CANDLE_THREADS_ENV).is_none() {
        std::env::set_var(CANDLE_THREADS_ENV, "1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_counts_are_capped_by_the_cores() {
        assert_eq!(check_threads(0), Ok(0));
        assert_eq!(check_threads(1), Ok(1));
        let e = check_threads(100_000).unwrap_err();
        assert!(
            e.contains("--threads 100000") && e.contains("per core"),
            "{e}"
        );
    }
}
