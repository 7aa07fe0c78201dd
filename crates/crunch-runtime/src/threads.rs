//! The worker-thread count a user may ask for.

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
