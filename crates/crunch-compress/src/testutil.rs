//! Deterministic random data for tests (no `rand` dependency: splitmix64 + Box–Muller).

pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
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
