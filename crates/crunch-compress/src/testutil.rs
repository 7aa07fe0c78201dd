//! Deterministic random data for tests (no `rand` dependency: splitmix64 + Box–Muller).

use crunch_model::testing::SplitMix64;

pub(crate) struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(SplitMix64(
            seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03,
        ))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }
}

/// Calibration-like inputs [tokens, n] with correlated columns: each column mixes a few shared
/// latent factors (weight `shared`) with its own noise, and has its own scale, as activations do.
pub(crate) fn correlated_inputs(rng: &mut Rng, tokens: usize, n: usize, shared: f32) -> Vec<f32> {
    let latents = 4;
    let mix: Vec<f32> = rng.normals(latents * n);
    let col_scale: Vec<f32> = (0..n).map(|_| 0.3 + 2.0 * rng.uniform()).collect();
    let mut x = vec![0.0f32; tokens * n];
    for t in 0..tokens {
        let z = rng.normals(latents);
        for j in 0..n {
            let common: f32 = (0..latents).map(|l| z[l] * mix[l * n + j]).sum();
            x[t * n + j] = col_scale[j] * (shared * common + rng.normal());
        }
    }
    x
}

/// A Hessian with these n×n `values`, counted as one sample.
pub(crate) fn hessian(n: usize, values: Vec<f32>) -> crate::hessian::Hessian {
    crate::hessian::Hessian {
        n,
        samples: 1,
        h: values,
    }
}

/// The random problem of the `*_reference.rs` tests: a [rows, cols] weight (normal + 0.2) and
/// [3·cols, cols] correlated inputs, with column `dead` of the inputs zeroed if given.
pub(crate) fn reference_problem(
    seed: u64,
    rows: usize,
    cols: usize,
    dead: Option<usize>,
) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let w: Vec<f32> = (0..rows * cols).map(|_| rng.normal() + 0.2).collect();
    let tokens = 3 * cols;
    let mut x = correlated_inputs(&mut rng, tokens, cols, 1.0);
    if let Some(d) = dead {
        for t in 0..tokens {
            x[t * cols + d] = 0.0;
        }
    }
    (w, x)
}

/// Runs `compare` on seeds 0, 1, … (at most 40) until it has accepted `wanted` of them;
/// `compare` returns `false` for a seed it rejects (a case too close to a tie to compare), so a
/// reference test cannot pass vacuously.
pub(crate) fn on_seeds(name: &str, wanted: usize, mut compare: impl FnMut(u64) -> bool) {
    let (mut accepted, mut rejected) = (0, 0);
    for seed in 0..40u64 {
        if !compare(seed) {
            rejected += 1;
            continue;
        }
        accepted += 1;
        if accepted == wanted {
            break;
        }
    }
    eprintln!("{name}: {accepted} compared, {rejected} rejected for near-ties");
    assert_eq!(
        accepted, wanted,
        "{name}: only {accepted} cases without near-ties ({rejected} rejected)"
    );
}

/// Removes column q from a dense f64 inverse Hessian [n, n] of the columns after it (the
/// OBS downdate of the GPTQ and SparseGPT papers).
pub(crate) fn eliminate(hinv: &mut [f64], n: usize, q: usize) {
    let d = hinv[q * n + q];
    for i in q + 1..n {
        let f = hinv[i * n + q] / d;
        for j in q + 1..n {
            hinv[i * n + j] -= f * hinv[q * n + j];
        }
    }
}

/// tr((W − Ŵ) H (W − Ŵ)ᵀ): the layer's squared output error over the calibration inputs (up to
/// the factor 2/N), which GPTQ and SparseGPT minimize. `approx` is Ŵ, row-major like `w`.
pub(crate) fn output_error(w: &[f32], approx: &[f32], h: &crate::hessian::Hessian) -> f64 {
    let n = h.n;
    let mut total = 0.0;
    for (row, arow) in w.chunks(n).zip(approx.chunks(n)) {
        let d: Vec<f64> = row.iter().zip(arow).map(|(a, b)| (a - b) as f64).collect();
        for i in 0..n {
            let hd: f64 = (0..n).map(|j| h.get(i, j) as f64 * d[j]).sum();
            total += d[i] * hd;
        }
    }
    total
}

/// A random weight and the Hessian of correlated inputs (`shared`: correlation strength).
pub(crate) fn problem(
    seed: u64,
    rows: usize,
    cols: usize,
    shared: f32,
) -> (Vec<f32>, crate::hessian::Hessian) {
    let mut rng = Rng::new(seed);
    let w = rng.normals(rows * cols);
    let mut h = crate::hessian::Hessian::new(cols);
    h.add_batch(&correlated_inputs(&mut rng, 4 * cols, cols, shared));
    (w, h)
}

/// Runs `f` on rayon pools of 1, 2 and 3 threads, checks that every run gives the same result
/// (the row chunks are fixed, so the thread count must not matter), and returns it.
pub(crate) fn same_on_any_thread_count<T: PartialEq + std::fmt::Debug + Send>(
    f: impl Fn() -> T + Send + Sync,
) -> T {
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(&f)
    };
    let first = run(1);
    assert_eq!(first, run(1));
    assert_eq!(first, run(2));
    assert_eq!(first, run(3));
    first
}
