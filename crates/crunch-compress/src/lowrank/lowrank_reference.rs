//! Tests pinning the low-rank methods (plain SVD, SVD-LLM, EoRA) against direct, slow f64
//! implementations that share no code with them: a one-sided Jacobi SVD, a cyclic Jacobi
//! eigensolver, a Cholesky factorization by the textbook loops, and an explicit inverse of the
//! Cholesky factor by forward substitution. They read the same f32 inputs (weights, the f32
//! Hessian), so the two sides differ only by the algorithms' f64 rounding and the final rounding
//! of the factors to f32.
//!
//! Pinned, on small random layers (8–48 rows × 16–96 columns, several seeds, correlated inputs
//! with column scales spread over ~30×):
//! - reconstructions A·B equal the reference's within [`RECON_TOL`] (relative Frobenius), and
//!   spectra within [`SPECTRUM_TOL`]·σ_1;
//! - SVD-LLM's truncation loss Σ_{i>r} σ_i² equals the output error (2/N)·‖(W − Ŵ)·Xᵀ‖_F²
//!   measured on the calibration inputs themselves, within [`LOSS_TOL`]·(loss + 10⁻³·energy);
//! - SVD-LLM's output error ≤ plain SVD's at the same rank (Eckart–Young in the whitened norm);
//! - EoRA reduces the output error, its loss equals the measured error, it is no worse than a
//!   plain SVD of ΔW at the same rank, and it equals SVD-LLM applied to ΔW (two square roots of
//!   the same H give the same optimum).
//!
//! Observed on these cases (x86-64): reconstructions within 1.6e-7, spectra within 3e-14·σ_1, loss
//! identities within 1.5e-6; SVD-LLM's output error is 0.07% to 80% of plain SVD's.
//!
//! A truncated SVD is only well defined when σ_r > σ_{r+1}; ranks whose relative gap
//! (σ_r − σ_{r+1})/σ_1 is below [`MIN_GAP`] are skipped (and counted, so the test cannot pass
//! vacuously).

use crate::testutil::{correlated_inputs, Rng};
use crate::{eora, rtn, truncated_svd, whitened_svd, EoraOptions, Hessian, Host, WhitenOptions};
use crunch_repr::QuantSpec;

/// ‖fast − reference‖_F ≤ RECON_TOL·‖reference‖_F. Both compute in f64; the fast factors are
/// rounded to f32 and multiplied in f32 (≈1e-7 relative), amplified by σ_1/(σ_r − σ_{r+1}).
const RECON_TOL: f64 = 1e-4;
/// |σ_fast − σ_ref| ≤ SPECTRUM_TOL·σ_1 (both f64 from the same f64 matrix up to rounding).
const SPECTRUM_TOL: f64 = 1e-9;
/// Relative tolerance on loss identities (f32 Hessian and f32 factors against f64 X).
const LOSS_TOL: f64 = 1e-4;
/// Smallest relative singular gap at a truncation point.
const MIN_GAP: f64 = 1e-3;

/// Whether `got` is `want` within [`SPECTRUM_TOL`]·σ_1, value by value.
fn same_spectrum(got: &[f64], want: &[f64]) -> bool {
    got.iter()
        .zip(want)
        .all(|(a, b)| (a - b).abs() <= SPECTRUM_TOL * want[0])
}

/// Row-major f64 matrix.
#[derive(Clone)]
struct M {
    r: usize,
    c: usize,
    v: Vec<f64>,
}

impl M {
    fn zeros(r: usize, c: usize) -> Self {
        Self {
            r,
            c,
            v: vec![0.0; r * c],
        }
    }
    fn from_f32(v: &[f32], r: usize, c: usize) -> Self {
        Self {
            r,
            c,
            v: v.iter().map(|x| *x as f64).collect(),
        }
    }
    fn at(&self, i: usize, j: usize) -> f64 {
        self.v[i * self.c + j]
    }
    fn set(&mut self, i: usize, j: usize, x: f64) {
        self.v[i * self.c + j] = x;
    }
    fn t(&self) -> M {
        let mut out = M::zeros(self.c, self.r);
        for i in 0..self.r {
            for j in 0..self.c {
                out.set(j, i, self.at(i, j));
            }
        }
        out
    }
    fn mul(&self, o: &M) -> M {
        assert_eq!(self.c, o.r);
        let mut out = M::zeros(self.r, o.c);
        for i in 0..self.r {
            for k in 0..self.c {
                let a = self.at(i, k);
                for j in 0..o.c {
                    out.v[i * o.c + j] += a * o.at(k, j);
                }
            }
        }
        out
    }
    fn sub(&self, o: &M) -> M {
        M {
            r: self.r,
            c: self.c,
            v: self.v.iter().zip(&o.v).map(|(a, b)| a - b).collect(),
        }
    }
    fn norm2(&self) -> f64 {
        self.v.iter().map(|x| x * x).sum()
    }
}

/// A = U·diag(s)·Vᵀ by one-sided Jacobi (Hestenes) on the columns, s non-increasing, thin.
fn jacobi_svd(a: &M) -> (M, Vec<f64>, M) {
    if a.r < a.c {
        let (u, s, v) = jacobi_svd(&a.t());
        return (v, s, u);
    }
    let (m, n) = (a.r, a.c);
    let mut cols: Vec<Vec<f64>> = (0..n)
        .map(|j| (0..m).map(|i| a.at(i, j)).collect())
        .collect();
    let mut vcols: Vec<Vec<f64>> = (0..n)
        .map(|j| (0..n).map(|i| (i == j) as u8 as f64).collect())
        .collect();
    let rotate = |x: &mut Vec<Vec<f64>>, p: usize, q: usize, c: f64, s: f64| {
        for k in 0..x[p].len() {
            let (xp, xq) = (x[p][k], x[q][k]);
            x[p][k] = c * xp - s * xq;
            x[q][k] = s * xp + c * xq;
        }
    };
    for _sweep in 0..100 {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let alpha: f64 = cols[p].iter().map(|x| x * x).sum();
                let beta: f64 = cols[q].iter().map(|x| x * x).sum();
                let gamma: f64 = cols[p].iter().zip(&cols[q]).map(|(x, y)| x * y).sum();
                if gamma.abs() <= 1e-15 * (alpha * beta).sqrt() || gamma == 0.0 {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                rotate(&mut cols, p, q, c, c * t);
                rotate(&mut vcols, p, q, c, c * t);
            }
        }
        if !rotated {
            break;
        }
    }
    let mut order: Vec<(f64, usize)> = cols
        .iter()
        .enumerate()
        .map(|(j, c)| (c.iter().map(|x| x * x).sum::<f64>().sqrt(), j))
        .collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut u, mut v) = (M::zeros(m, n), M::zeros(n, n));
    for (k, &(s, j)) in order.iter().enumerate() {
        for (i, x) in cols[j].iter().enumerate() {
            u.set(i, k, if s > 0.0 { x / s } else { 0.0 });
        }
        for (i, x) in vcols[j].iter().enumerate() {
            v.set(i, k, *x);
        }
    }
    (u, order.iter().map(|o| o.0).collect(), v)
}

/// Symmetric A = Q·diag(λ)·Qᵀ by cyclic two-sided Jacobi rotations.
fn jacobi_eigen(a: &M) -> (Vec<f64>, M) {
    let n = a.r;
    let mut a = a.clone();
    let mut q = M::zeros(n, n);
    for i in 0..n {
        q.set(i, i, 1.0);
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a.at(i, j).powi(2))
            .sum();
        let diag: f64 = (0..n).map(|i| a.at(i, i).powi(2)).sum();
        if off <= 1e-30 * diag {
            break;
        }
        for p in 0..n {
            for r in p + 1..n {
                let apr = a.at(p, r);
                if apr == 0.0 {
                    continue;
                }
                let theta = (a.at(r, r) - a.at(p, p)) / (2.0 * apr);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (kp, kr) = (a.at(k, p), a.at(k, r));
                    a.set(k, p, c * kp - s * kr);
                    a.set(k, r, s * kp + c * kr);
                    let (kp, kr) = (q.at(k, p), q.at(k, r));
                    q.set(k, p, c * kp - s * kr);
                    q.set(k, r, s * kp + c * kr);
                }
                for k in 0..n {
                    let (pk, rk) = (a.at(p, k), a.at(r, k));
                    a.set(p, k, c * pk - s * rk);
                    a.set(r, k, s * pk + c * rk);
                }
            }
        }
    }
    ((0..n).map(|i| a.at(i, i)).collect(), q)
}

/// Lower L with L·Lᵀ = A (textbook loops).
fn cholesky(a: &M) -> M {
    let n = a.r;
    let mut l = M::zeros(n, n);
    for j in 0..n {
        let d = a.at(j, j) - (0..j).map(|k| l.at(j, k).powi(2)).sum::<f64>();
        assert!(d > 0.0, "not positive definite at {j}");
        l.set(j, j, d.sqrt());
        for i in j + 1..n {
            let s = a.at(i, j) - (0..j).map(|k| l.at(i, k) * l.at(j, k)).sum::<f64>();
            l.set(i, j, s / l.at(j, j));
        }
    }
    l
}

/// L⁻¹ explicitly, by forward substitution on each unit vector.
fn lower_inverse(l: &M) -> M {
    let n = l.r;
    let mut inv = M::zeros(n, n);
    for j in 0..n {
        for i in j..n {
            let rhs = (i == j) as u8 as f64;
            let s = rhs - (j..i).map(|k| l.at(i, k) * inv.at(k, j)).sum::<f64>();
            inv.set(i, j, s / l.at(i, i));
        }
    }
    inv
}

/// U_r·diag(s_r)·V_rᵀ.
fn truncate(u: &M, s: &[f64], v: &M, rank: usize) -> M {
    let mut out = M::zeros(u.r, v.r);
    for (k, sk) in s[..rank].iter().enumerate() {
        for i in 0..u.r {
            for j in 0..v.r {
                out.v[i * v.r + j] += u.at(i, k) * sk * v.at(j, k);
            }
        }
    }
    out
}

/// The Hessian as f64, with SVD-LLM's preparation: dead diagonal → 1, plus damp·mean(diag).
fn prepared_hessian(h: &Hessian, damp: f64) -> M {
    let n = h.n;
    let mut m = M::zeros(n, n);
    for i in 0..n {
        for j in 0..n {
            m.set(i, j, h.get(i, j) as f64);
        }
        if h.get(i, i) == 0.0 {
            m.set(i, i, 1.0);
        }
    }
    let mean = (0..n).map(|i| m.at(i, i)).sum::<f64>() / n as f64;
    for i in 0..n {
        m.set(i, i, m.at(i, i) + damp * mean);
    }
    m
}

/// SVD-LLM directly: Ŵ = trunc_r(W·L)·L⁻¹ with an explicit L⁻¹; returns Ŵ and the spectrum.
fn whitened_reference(w: &M, h: &Hessian, damp: f64, rank: usize) -> (M, Vec<f64>) {
    let l = cholesky(&prepared_hessian(h, damp));
    let (u, s, v) = jacobi_svd(&w.mul(&l));
    (truncate(&u, &s, &v, rank).mul(&lower_inverse(&l)), s)
}

/// EoRA directly: C = trunc_r(ΔW·Q·Λ^{1/2})·Λ^{-1/2}·Qᵀ; returns C and the spectrum.
fn eora_reference(delta: &M, h: &Hessian, floor: f64, rank: usize) -> (M, Vec<f64>) {
    let (lambda, q) = jacobi_eigen(&prepared_hessian(h, 0.0));
    let max = lambda.iter().fold(0.0f64, |m, l| m.max(*l));
    let root: Vec<f64> = lambda.iter().map(|l| l.max(floor * max).sqrt()).collect();
    let mut scale = M::zeros(h.n, h.n);
    let mut unscale = M::zeros(h.n, h.n);
    for (i, r) in root.iter().enumerate() {
        scale.set(i, i, *r);
        unscale.set(i, i, 1.0 / r);
    }
    let (u, s, v) = jacobi_svd(&delta.mul(&q).mul(&scale));
    (truncate(&u, &s, &v, rank).mul(&unscale).mul(&q.t()), s)
}

/// (2/N)·‖E·Xᵀ‖_F², the output error on the calibration inputs, in f64.
fn output_error(e: &M, x: &[f32]) -> f64 {
    let n = e.c;
    let tokens = x.len() / n;
    let mut sum = 0.0;
    for t in 0..tokens {
        let row = &x[t * n..(t + 1) * n];
        for i in 0..e.r {
            let y: f64 = (0..n).map(|j| e.at(i, j) * row[j] as f64).sum();
            sum += y * y;
        }
    }
    2.0 * sum / tokens as f64
}

fn rel_diff(got: &M, want: &M) -> f64 {
    (got.sub(want).norm2() / want.norm2().max(f64::MIN_POSITIVE)).sqrt()
}

fn gap_ok(s: &[f64], rank: usize) -> bool {
    rank == 0 || rank >= s.len() || (s[rank - 1] - s[rank]) > MIN_GAP * s[0]
}

struct Case {
    w: Vec<f32>,
    x: Vec<f32>,
    h: Hessian,
}

fn case(seed: u64, rows: usize, cols: usize) -> Case {
    let mut rng = Rng::new(seed);
    let tokens = 3 * cols + 16;
    let mut x = correlated_inputs(&mut rng, tokens, cols, 1.5);
    // Spread the column scales further (×0.22 … ×4.5 on top of correlated_inputs' own).
    let extra: Vec<f32> = (0..cols)
        .map(|_| (3.0 * rng.uniform() - 1.5).exp())
        .collect();
    for (k, v) in x.iter_mut().enumerate() {
        *v *= extra[k % cols];
    }
    let mut h = Hessian::new(cols);
    h.add_batch(&x);
    let row_scale: Vec<f32> = (0..rows).map(|_| 0.5 + rng.uniform()).collect();
    let w = (0..rows * cols)
        .map(|k| row_scale[k / cols] * rng.normal())
        .collect();
    Case { w, x, h }
}

const SHAPES: [(usize, usize); 6] = [(8, 16), (16, 40), (24, 64), (48, 96), (40, 24), (32, 32)];

fn ranks(k: usize) -> Vec<usize> {
    let mut r = vec![1, k / 4, k / 2, k - 1];
    r.dedup();
    r
}

#[test]
fn reference_helpers_decompose() {
    let mut rng = Rng::new(1);
    let a = M::from_f32(&rng.normals(7 * 11), 7, 11);
    for a in [a.clone(), a.t()] {
        let (u, s, v) = jacobi_svd(&a);
        assert!(rel_diff(&truncate(&u, &s, &v, s.len()), &a) < 1e-13);
        assert!(s.windows(2).all(|p| p[0] >= p[1]));
    }
    let h = a.t().mul(&a);
    let (lambda, q) = jacobi_eigen(&h);
    assert!(rel_diff(&truncate(&q, &lambda, &q, 11), &h) < 1e-12);
    let spd = a.mul(&a.t());
    let l = cholesky(&spd);
    assert!(rel_diff(&l.mul(&l.t()), &spd) < 1e-13);
    let eye = l.mul(&lower_inverse(&l));
    assert!((0..7).all(|i| (0..7).all(|j| (eye.at(i, j) - (i == j) as u8 as f64).abs() < 1e-12)));
}

#[test]
fn plain_svd_matches_reference() {
    let mut checked = 0;
    for seed in 0..3 {
        for &(rows, cols) in &SHAPES {
            let c = case(seed, rows, cols);
            let w = M::from_f32(&c.w, rows, cols);
            let (u, s, v) = jacobi_svd(&w);
            for rank in ranks(rows.min(cols)) {
                if !gap_ok(&s, rank) {
                    continue;
                }
                let fast = truncated_svd(&Host, &c.w, rows, cols, rank).unwrap();
                assert!(same_spectrum(&fast.spectrum, &s));
                let got = M::from_f32(&fast.factored.dense(), rows, cols);
                let d = rel_diff(&got, &truncate(&u, &s, &v, rank));
                assert!(
                    d <= RECON_TOL,
                    "seed {seed} {rows}×{cols} rank {rank}: {d:e}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 60, "{checked}");
}

#[test]
fn whitened_svd_matches_reference_and_its_loss_is_the_output_error() {
    let mut checked = 0;
    for seed in 0..4 {
        for &(rows, cols) in &SHAPES {
            let c = case(10 + seed, rows, cols);
            let w = M::from_f32(&c.w, rows, cols);
            // No dampening, so the loss identity is for H itself; with dampening, for H + λI.
            for damp in [0.0f32, 1e-2] {
                let opts = WhitenOptions { damp };
                let energy_x = output_error(&w, &c.x);
                for rank in ranks(rows.min(cols)) {
                    let (want, s) = whitened_reference(&w, &c.h, damp as f64, rank);
                    if !gap_ok(&s, rank) {
                        continue;
                    }
                    let fast = whitened_svd(&Host, &c.w, rows, cols, &c.h, rank, &opts).unwrap();
                    assert!(same_spectrum(&fast.spectrum, &s));
                    let what = M::from_f32(&fast.factored.dense(), rows, cols);
                    let d = rel_diff(&what, &want);
                    assert!(
                        d <= RECON_TOL,
                        "seed {seed} {rows}×{cols} rank {rank}: {d:e}"
                    );

                    let e = w.sub(&what);
                    let plain = truncated_svd(&Host, &c.w, rows, cols, rank).unwrap();
                    let plain_err = output_error(
                        &w.sub(&M::from_f32(&plain.factored.dense(), rows, cols)),
                        &c.x,
                    );
                    let err = output_error(&e, &c.x);
                    let loss: f64 = fast.spectrum[rank..].iter().map(|s| s * s).sum();
                    if damp == 0.0 {
                        let diff = (loss - err).abs();
                        assert!(
                            diff <= LOSS_TOL * (loss + 1e-3 * energy_x),
                            "seed {seed} {rows}×{cols} rank {rank}: loss {loss:e} error {err:e}"
                        );
                    } else {
                        // Σ tail = tr(E·H·Eᵀ) + λ‖E‖².
                        let mean =
                            (0..cols).map(|i| c.h.get(i, i) as f64).sum::<f64>() / cols as f64;
                        let want_loss = err + damp as f64 * mean * e.norm2();
                        assert!((loss - want_loss).abs() <= LOSS_TOL * (loss + 1e-3 * energy_x));
                    }
                    // Eckart–Young in the whitened norm (exact for damp = 0; with λ the plain
                    // SVD can only win by the λ‖E‖² term, so compare only undampened).
                    if damp == 0.0 {
                        assert!(
                            err <= plain_err * (1.0 + 1e-6) + 1e-9 * energy_x,
                            "seed {seed} {rows}×{cols} rank {rank}: {err:e} > {plain_err:e}"
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 150, "{checked}");
}

/// A compressed version of `w`: 3-bit RTN (odd seeds) or 50% magnitude pruning per row, then
/// both (seeds divisible by 3).
fn compress(w: &[f32], rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut out = if seed % 2 == 1 {
        rtn(w, rows, cols, QuantSpec::new(3, Some(8), false), false)
            .unwrap()
            .dequantize()
    } else {
        w.to_vec()
    };
    if seed % 2 == 0 || seed % 3 == 0 {
        for row in out.chunks_mut(cols) {
            let mut mags: Vec<f32> = row.iter().map(|v| v.abs()).collect();
            mags.sort_by(|a, b| a.total_cmp(b));
            let cut = mags[cols / 2];
            row.iter_mut()
                .filter(|v| v.abs() < cut)
                .for_each(|v| *v = 0.0);
        }
    }
    out
}

#[test]
fn eora_matches_reference_and_is_optimal_in_the_activation_norm() {
    let mut checked = 0;
    let opts = EoraOptions::default();
    for seed in 0..4 {
        for &(rows, cols) in &SHAPES {
            let c = case(20 + seed, rows, cols);
            let compressed = compress(&c.w, rows, cols, seed);
            let w = M::from_f32(&c.w, rows, cols);
            let delta = w.sub(&M::from_f32(&compressed, rows, cols));
            let before = output_error(&delta, &c.x);
            for rank in ranks(rows.min(cols)) {
                let (want, s) = eora_reference(&delta, &c.h, opts.eig_floor, rank);
                if !gap_ok(&s, rank) {
                    continue;
                }
                let fast = eora(&Host, &c.w, &compressed, rows, cols, &c.h, rank, &opts).unwrap();
                assert!(fast
                    .spectrum
                    .iter()
                    .zip(&s)
                    .all(|(a, b)| (a - b).abs() <= 1e-8 * s[0]));
                let corr = M::from_f32(&fast.factored.dense(), rows, cols);
                let d = rel_diff(&corr, &want);
                assert!(
                    d <= RECON_TOL,
                    "seed {seed} {rows}×{cols} rank {rank}: {d:e}"
                );

                let after = output_error(&delta.sub(&corr), &c.x);
                assert!(after < before, "seed {seed} {rows}×{cols} rank {rank}");
                let loss: f64 = fast.spectrum[rank..].iter().map(|s| s * s).sum();
                assert!(
                    (loss - after).abs() <= LOSS_TOL * (loss + 1e-3 * before),
                    "seed {seed} {rows}×{cols} rank {rank}: loss {loss:e} error {after:e}"
                );
                // No worse than the plain rank-r SVD of ΔW (Eckart–Young in the H norm).
                let delta_f32: Vec<f32> = c.w.iter().zip(&compressed).map(|(a, b)| a - b).collect();
                let plain = truncated_svd(&Host, &delta_f32, rows, cols, rank).unwrap();
                let plain_after = output_error(
                    &delta.sub(&M::from_f32(&plain.factored.dense(), rows, cols)),
                    &c.x,
                );
                assert!(after <= plain_after * (1.0 + 1e-6) + 1e-9 * before);
                // SVD-LLM of ΔW (Cholesky square root, no dampening) gives the same correction.
                let chol = whitened_svd(
                    &Host,
                    &delta_f32,
                    rows,
                    cols,
                    &c.h,
                    rank,
                    &WhitenOptions { damp: 0.0 },
                )
                .unwrap();
                let d = rel_diff(&M::from_f32(&chol.factored.dense(), rows, cols), &corr);
                assert!(
                    d <= RECON_TOL,
                    "seed {seed} {rows}×{cols} rank {rank}: {d:e}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 60, "{checked}");
}
