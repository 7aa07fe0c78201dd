//! Preparing a Hessian for GPTQ: dead columns, the act-order permutation, dampening, and the
//! upper Cholesky factor U of the inverse (UᵀU = (H + λI)⁻¹) whose rows drive the updates.
//!
//! The factorizations run in f64 (H is converted from its f32 storage) and sequentially: they
//! are O(n³) but small next to the updates for the layer sizes crunch sees, f64 keeps U accurate
//! for ill-conditioned Hessians, and `Par::Seq` keeps the result independent of the thread count.
//! U is handed to the column loop in f32, like the reference implementation's.

use crate::error::{CompressError, Result};
use crate::hessian::Hessian;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor;
use faer::linalg::triangular_inverse::invert_lower_triangular;
use faer::{Mat, MatRef, Par};

/// Factorization attempts, each with 10× the previous dampening, before giving up.
pub(crate) const CHOLESKY_ATTEMPTS: usize = 5;

pub(crate) struct PreparedHessian {
    /// Per original column: no calibration signal (H_ii = 0). Its weights are zeroed and H_ii
    /// set to 1, so the column is quantized exactly (to 0) and decoupled from the others.
    pub dead: Vec<bool>,
    /// Processing order: perm[i] is the original column quantized i-th. Identity without
    /// act-order; by descending diag(H) with it (a stable sort, so ties keep column order).
    pub perm: Vec<usize>,
    /// U, n×n row-major, upper triangular, in processing order.
    pub hinv_u: Vec<f32>,
}

pub(crate) fn prepare(hessian: &Hessian, act_order: bool, damp: f32) -> Result<PreparedHessian> {
    let n = hessian.n;
    let dead: Vec<bool> = (0..n).map(|i| hessian.get(i, i) == 0.0).collect();
    let diag: Vec<f64> = (0..n)
        .map(|i| {
            if dead[i] {
                1.0
            } else {
                hessian.get(i, i) as f64
            }
        })
        .collect();
    let mut perm: Vec<usize> = (0..n).collect();
    if act_order {
        perm.sort_by(|&a, &b| diag[b].total_cmp(&diag[a]));
    }
    let permuted = Mat::<f64>::from_fn(n, n, |i, j| {
        if i == j {
            diag[perm[i]]
        } else {
            hessian.get(perm[i], perm[j]) as f64
        }
    });
    let mean_diag = diag.iter().sum::<f64>() / n as f64;

    let hinv_u = dampened(damp, mean_diag, |lambda| {
        let mut damped = permuted.clone();
        for i in 0..n {
            damped[(i, i)] += lambda;
        }
        Ok(inverse_upper_factor(damped.as_ref()))
    })?;
    Ok(PreparedHessian { dead, perm, hinv_u })
}

/// Calls `attempt(λ)` with λ = damp · `mean_diag`, then with 10× the dampening (0.01 if `damp`
/// is 0), up to [`CHOLESKY_ATTEMPTS`] times, until it returns a factorization.
pub(crate) fn dampened<T>(
    damp: f32,
    mean_diag: f64,
    mut attempt: impl FnMut(f64) -> Result<Option<T>>,
) -> Result<T> {
    let mut frac = damp;
    for i in 0..CHOLESKY_ATTEMPTS {
        if i > 0 {
            frac = if frac > 0.0 { frac * 10.0 } else { 0.01 };
        }
        if let Some(t) = attempt(frac as f64 * mean_diag)? {
            return Ok(t);
        }
    }
    Err(CompressError::CholeskyFailed {
        attempts: CHOLESKY_ATTEMPTS,
        damp: frac,
    })
}

/// U with UᵀU = A⁻¹, row-major f32, or `None` if A is not (numerically) positive definite.
///
/// With J the reversal permutation and J·A·J = L·Lᵀ its Cholesky factorization,
/// A⁻¹ = J·L⁻ᵀ·L⁻¹·J = (J·L⁻¹·J)ᵀ·(J·L⁻¹·J), and J·L⁻¹·J is upper triangular with a positive
/// diagonal, so by uniqueness it is the upper Cholesky factor of A⁻¹. One factorization and one
/// triangular inverse (2n³/3 flops) replace factorize, invert, factorize again (4n³/3).
fn inverse_upper_factor(a: MatRef<'_, f64>) -> Option<Vec<f32>> {
    let n = a.nrows();
    let l = cholesky_lower(Mat::from_fn(n, n, |i, j| a[(n - 1 - i, n - 1 - j)]))?;
    let mut l_inv = Mat::<f64>::zeros(n, n);
    invert_lower_triangular(l_inv.as_mut(), l.as_ref(), Par::Seq);
    let mut u = vec![0.0f32; n * n];
    for i in 0..n {
        for j in i..n {
            u[i * n + j] = l_inv[(n - 1 - i, n - 1 - j)] as f32;
        }
    }
    u.iter().all(|v| v.is_finite()).then_some(u)
}

/// Lower Cholesky factor (upper triangle zeroed), or `None` on a non-positive pivot.
pub(crate) fn cholesky_lower(mut a: Mat<f64>) -> Option<Mat<f64>> {
    let n = a.nrows();
    let mut mem = MemBuffer::new(factor::cholesky_in_place_scratch::<f64>(
        n,
        Par::Seq,
        Default::default(),
    ));
    let stack = MemStack::new(&mut mem);
    factor::cholesky_in_place(
        a.as_mut(),
        Default::default(),
        Par::Seq,
        stack,
        Default::default(),
    )
    .ok()?;
    for j in 0..n {
        for i in 0..j {
            a[(i, j)] = 0.0;
        }
    }
    (0..n)
        .all(|i| a[(i, i)].is_finite() && a[(i, i)] > 0.0)
        .then_some(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{correlated_inputs, hessian, Rng};

    #[test]
    fn factor_inverts_the_dampened_hessian() {
        let mut rng = Rng::new(3);
        let n = 40;
        let mut h = Hessian::new(n);
        h.add_batch(&correlated_inputs(&mut rng, 200, n, 2.0));
        let prep = prepare(&h, true, 0.01).unwrap();
        assert!(prep
            .perm
            .windows(2)
            .all(|p| h.get(p[0], p[0]) >= h.get(p[1], p[1])));
        let mean = (0..n).map(|i| h.get(i, i) as f64).sum::<f64>() / n as f64;
        // (UᵀU)·(H_perm + λI) = I.
        let u = |i: usize, j: usize| prep.hinv_u[i * n + j] as f64;
        for i in 0..n {
            for j in 0..n {
                let mut s = 0.0;
                for k in 0..n {
                    let hinv_ik: f64 = (0..=i.min(k)).map(|m| u(m, i) * u(m, k)).sum();
                    let a_kj = h.get(prep.perm[k], prep.perm[j]) as f64
                        + if k == j { 0.01 * mean } else { 0.0 };
                    s += hinv_ik * a_kj;
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((s - want).abs() < 1e-4, "({i},{j}): {s}");
            }
        }
    }

    #[test]
    fn retries_with_more_dampening_then_fails() {
        // Indefinite (eigenvalues 3 and −1): λ = 0.01 and 0.1 fail, a later attempt succeeds.
        let h = hessian(2, vec![1.0, 2.0, 2.0, 1.0]);
        assert!(prepare(&h, false, 0.01).is_ok());
        // Off-diagonal 1e6 needs λ ≈ 1e6 × mean diagonal, beyond 0.01·10⁴: an error.
        let h = hessian(2, vec![1.0, 1e6, 1e6, 1.0]);
        match prepare(&h, false, 0.01).err() {
            Some(CompressError::CholeskyFailed { attempts, damp }) => {
                assert_eq!(attempts, CHOLESKY_ATTEMPTS);
                assert!((damp - 100.0).abs() < 1e-3, "{damp}");
            }
            other => panic!("expected a Cholesky failure, got {other:?}"),
        }
    }

    #[test]
    fn dead_columns_are_marked_and_decoupled() {
        let h = hessian(3, vec![2.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.5, 0.0, 3.0]);
        let prep = prepare(&h, true, 0.0).unwrap();
        assert_eq!(prep.dead, vec![false, true, false]);
        // diag after the fix: (2, 1, 3) → order 2, 0, 1.
        assert_eq!(prep.perm, vec![2, 0, 1]);
        // The dead column (last in processing order) has no coupling in U.
        assert_eq!((prep.hinv_u[2], prep.hinv_u[5]), (0.0, 0.0));
        assert_eq!(prep.hinv_u[8], 1.0);
    }
}
