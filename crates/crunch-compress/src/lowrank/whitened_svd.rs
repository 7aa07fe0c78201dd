//! SVD-LLM (Wang et al., 2024, "SVD-LLM: Truncation-aware Singular Value Decomposition for
//! Large Language Model Compression"): truncate the SVD of the *whitened* weight W·S, where
//! S·Sᵀ = XᵀX is the Cholesky factor of the layer's input second moment, so that truncation
//! minimizes the output error instead of the weight error.
//!
//! Why it works: for any E, ‖E·Xᵀ‖_F² = tr(E·XᵀX·Eᵀ) = ‖E·S‖_F². With W·S = U·Σ·Vᵀ and
//! Ŵ = U_r·Σ_r·V_rᵀ·S⁻¹, (W − Ŵ)·S is the SVD tail, so the output error of dropping σ_i is
//! exactly σ_i², the truncation loss is Σ_{i>r} σ_i², and Ŵ is the best rank-r weight for this
//! calibration set (Eckart–Young in the whitened norm). Here XᵀX is the [`Hessian`]
//! H = 2·XᵀX/N, so every σ² carries the factor 2/N. (Equivalently Ŵ = U_r·U_rᵀ·W: whitening
//! only chooses which r-dimensional output subspace W is projected on.)
//!
//! Factors: A = U_r·Σ_r^{1/2}, B = Σ_r^{1/2}·V_rᵀ·S⁻¹, B by a triangular solve with Sᵀ (no
//! explicit inverse). Everything in f64 and sequential ([`crate::decomp`]).
//!
//! Singular H (fewer tokens than inputs, collinear features, f32 rounding) is handled as GPTQ
//! does (decision 050), with a smaller default:
//! - **dead columns** (H_ii = 0, the input is always zero): the weight column is zeroed and
//!   H_ii set to 1. The column then contributes nothing to W·S, spends no rank, and Ŵ is exactly
//!   zero there; on the calibration data the output is unchanged.
//! - **dampening** H + λI, λ = `damp`·mean(diag H), retried with 10× the fraction (0 → 0.01) up
//!   to 5 attempts if the Cholesky factorization still fails. The paper has none; its code shifts
//!   the spectrum only when the factorization fails. Since λ_max(H) ≤ tr(H) = n·mean(diag H),
//!   cond(H + λI) ≤ n/damp + 1, which bounds the error of the triangular solve, while λ only
//!   reweights directions carrying less than about `damp` of the average input energy. The loss
//!   identity then holds for the dampened matrix: Σ_{i>r} σ_i² = tr(E·H·Eᵀ) + λ‖E‖_F².

use super::decomp::{assemble, balanced_split, to_f64, DenseLinAlg};
use super::svd::LowRank;
use crate::error::{check_option, Result};
use crate::hessian::Hessian;
use crate::inverse::dampened;
use crunch_repr::{check_rank, validate_weight};
use faer::Mat;

/// SVD-LLM settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WhitenOptions {
    /// Dampening λ = damp · mean(diag H) added to the diagonal before the Cholesky
    /// factorization (raised 10× per failed attempt).
    pub damp: f32,
}

impl Default for WhitenOptions {
    /// damp = 1e-4: cond(H + λI) ≤ 10⁴·n, so S is well conditioned in f64 for any layer width,
    /// while the weighting of every direction above 10⁻⁴ of the average energy is unchanged.
    fn default() -> Self {
        Self { damp: 1e-4 }
    }
}

/// SVD-LLM at rank `rank`: Ŵ = A·B minimizing tr((W − Ŵ)·(H + λI)·(W − Ŵ)ᵀ), and the spectrum
/// of W·S (its squares sum to tr(W·(H + λI)·Wᵀ); the loss is the tail past `rank`); the dense
/// linear algebra done by `la`.
pub fn whitened_svd(
    la: &dyn DenseLinAlg,
    weight: &[f32],
    rows: usize,
    cols: usize,
    hessian: &Hessian,
    rank: usize,
    opts: &WhitenOptions,
) -> Result<LowRank> {
    check_rank(rank, rows, cols)?;
    let Whitened { ws, s } = whiten(la, weight, rows, cols, hessian, opts)?;
    let svd = la.thin_svd(ws.as_ref())?;
    let (a, mut bt) = balanced_split(&svd, rank);
    // Bᵀ = S⁻ᵀ·V_r·Σ_r^{1/2}: solve Sᵀ·X = V_r·Σ_r^{1/2}, Sᵀ upper triangular.
    la.solve_lower_transposed(s.as_ref(), &mut bt)?;
    // A dead column of W·S is exactly zero, so its rows of V_r are zero up to the SVD's
    // rounding; make that exact.
    for j in (0..cols).filter(|&j| hessian.get(j, j) == 0.0) {
        bt.row_mut(j).fill(0.0);
    }
    Ok(LowRank {
        factored: assemble(rows, cols, a, bt.as_ref()),
        spectrum: svd.s,
    })
}

/// W·S and S, S the lower Cholesky factor of the prepared, dampened H.
pub struct Whitened {
    ws: Mat<f64>,
    s: Mat<f64>,
}

impl Whitened {
    /// The singular values of W·S (non-increasing), without factors: for rank allocation.
    pub fn singular_values(&self, la: &dyn DenseLinAlg) -> Result<Vec<f64>> {
        la.singular_values(self.ws.as_ref())
    }
}

/// Whitens `weight` [rows, cols] by the Cholesky factor of `hessian` (its dead columns and
/// dampening prepared as the module describes).
pub fn whiten(
    la: &dyn DenseLinAlg,
    weight: &[f32],
    rows: usize,
    cols: usize,
    hessian: &Hessian,
    opts: &WhitenOptions,
) -> Result<Whitened> {
    validate_weight(weight, rows, cols)?;
    hessian.validate_for(cols)?;
    check_option("damp", opts.damp as f64, false)?;
    let dead: Vec<bool> = (0..cols).map(|i| hessian.get(i, i) == 0.0).collect();
    let h = Mat::<f64>::from_fn(cols, cols, |i, j| {
        if i == j && dead[i] {
            1.0
        } else {
            hessian.get(i, j) as f64
        }
    });
    let mean_diag = (0..cols).map(|i| h[(i, i)]).sum::<f64>() / cols as f64;
    let mut w = to_f64(weight, rows, cols);
    for (j, _) in dead.iter().enumerate().filter(|(_, &d)| d) {
        w.col_mut(j).fill(0.0);
    }

    let s = dampened(opts.damp, mean_diag, |lambda| {
        let mut damped = h.clone();
        for i in 0..cols {
            damped[(i, i)] += lambda;
        }
        la.cholesky_lower(damped)
    })?;
    let ws = la.matmul(w.as_ref(), s.as_ref())?;
    Ok(Whitened { ws, s })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{correlated_inputs, hessian, Rng};
    use crate::{CompressError, Host};

    /// tr(E·H·Eᵀ) in f64 for the row-major weights `w` and `what`.
    fn weighted_error(w: &[f32], what: &[f32], cols: usize, h: &Hessian) -> f64 {
        w.chunks(cols)
            .zip(what.chunks(cols))
            .map(|(a, b)| {
                let e: Vec<f64> = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| *x as f64 - *y as f64)
                    .collect();
                (0..cols)
                    .map(|i| {
                        (0..cols)
                            .map(|j| e[i] * h.get(i, j) as f64 * e[j])
                            .sum::<f64>()
                    })
                    .sum::<f64>()
            })
            .sum()
    }

    #[test]
    fn dead_columns_are_zero_and_singular_hessians_factor() {
        let mut rng = Rng::new(21);
        let (rows, cols) = (10, 24);
        // Fewer tokens than columns (rank-deficient H), and column 5 always zero.
        let mut x = correlated_inputs(&mut rng, 12, cols, 1.0);
        for t in 0..12 {
            x[t * cols + 5] = 0.0;
        }
        let mut h = Hessian::new(cols);
        h.add_batch(&x);
        let w = rng.normals(rows * cols);
        for damp in [0.0, 1e-4] {
            let opts = WhitenOptions { damp };
            let out = whitened_svd(&Host, &w, rows, cols, &h, 6, &opts).unwrap();
            let what = out.factored.dense();
            assert!(what.iter().all(|v| v.is_finite()));
            assert!((0..rows).all(|r| what[r * cols + 5] == 0.0));
            // Only 12 tokens: at most 12 directions carry output energy, so rank 10 (= rows)
            // reproduces W on the calibration data.
            let full = whitened_svd(&Host, &w, rows, cols, &h, rows, &opts).unwrap();
            let err = weighted_error(&w, &full.factored.dense(), cols, &h);
            assert!(err < 1e-8 * weighted_error(&w, &vec![0.0; w.len()], cols, &h));
            let sv = whiten(&Host, &w, rows, cols, &h, &opts)
                .and_then(|x| x.singular_values(&Host))
                .unwrap();
            assert!(sv
                .iter()
                .zip(&out.spectrum)
                .all(|(a, b)| (a - b).abs() <= 1e-9 * sv[0]));
        }
    }

    #[test]
    fn rejects_bad_inputs() {
        let h = hessian(2, vec![1.0, 0.0, 0.0, 1.0]);
        let w = [1.0f32; 4];
        let opts = WhitenOptions::default();
        assert!(matches!(
            whitened_svd(&Host, &w, 1, 4, &h, 1, &opts),
            Err(CompressError::HessianSize { .. })
        ));
        assert!(whitened_svd(&Host, &w, 2, 2, &h, 3, &opts).is_err());
        let bad = WhitenOptions { damp: -1.0 };
        assert!(whitened_svd(&Host, &w, 2, 2, &h, 1, &bad).is_err());
        let indefinite = hessian(2, vec![1.0, 1e6, 1e6, 1.0]);
        assert!(matches!(
            whitened_svd(&Host, &w, 2, 2, &indefinite, 1, &opts),
            Err(CompressError::CholeskyFailed { .. })
        ));
    }

    #[test]
    fn bit_identical_on_any_thread_count() {
        let mut rng = Rng::new(2);
        let (rows, cols) = (40, 72);
        let mut h = Hessian::new(cols);
        h.add_batch(&correlated_inputs(&mut rng, 300, cols, 1.5));
        let w = rng.normals(rows * cols);
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    whitened_svd(&Host, &w, rows, cols, &h, 9, &WhitenOptions::default()).unwrap()
                })
        };
        let first = run(1);
        assert_eq!(first, run(2));
        assert_eq!(first, run(3));
    }
}
