//! Dense f64 decompositions shared by the low-rank methods: thin SVD, symmetric
//! eigendecomposition, and the split of a truncated SVD into two factors.
//!
//! The O(n³) steps go through [`DenseLinAlg`]: [`Host`] (faer, below) by default, a GPU
//! (cuSOLVER/cuBLAS, `cuda/dense.rs`, feature `cuda`) when calibration runs there.
//!
//! Everything runs in f64 and, on the host, with `Par::Seq`. f64 because the whitening matrices are
//! ill-conditioned (activation second moments span many orders of magnitude) and the f32 inputs
//! convert exactly; sequential because faer's parallel kernels split work by thread count, and
//! the output must be bit-identical on any number of threads. Callers parallelize over layers.

use crate::error::{CompressError, Result};
use crunch_repr::Factored;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::{self_adjoint_evd, self_adjoint_evd_scratch, ComputeEigenvectors};
use faer::linalg::svd::{svd, svd_scratch, ComputeSvdVectors};
use faer::{Mat, MatRef, Par};

/// Row-major f32 [rows, cols] as an f64 matrix (exact).
pub(crate) fn to_f64(values: &[f32], rows: usize, cols: usize) -> Mat<f64> {
    Mat::from_fn(rows, cols, |i, j| values[i * cols + j] as f64)
}

/// The dense f64 operations of the low-rank methods (SVD-LLM, EoRA, plain SVD), so that they can
/// run where the data is. Results agree between implementations to f64 rounding, except that
/// singular and eigen vectors may differ in sign (the factors' product does not).
pub trait DenseLinAlg: Sync {
    fn thin_svd(&self, a: MatRef<'_, f64>) -> Result<ThinSvd>;
    /// Singular values only, non-increasing.
    fn singular_values(&self, a: MatRef<'_, f64>) -> Result<Vec<f64>>;
    /// Eigenvalues (non-decreasing) and eigenvectors (columns) of a symmetric matrix.
    fn symmetric_eigen(&self, a: MatRef<'_, f64>) -> Result<(Vec<f64>, Mat<f64>)>;
    /// Lower Cholesky factor, or `None` if not (numerically) positive definite.
    fn cholesky_lower(&self, a: Mat<f64>) -> Result<Option<Mat<f64>>>;
    /// a·b.
    fn matmul(&self, a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Result<Mat<f64>>;
    /// Solves Lᵀ·X = B for X in place of `b`, L lower triangular.
    fn solve_lower_transposed(&self, l: MatRef<'_, f64>, b: &mut Mat<f64>) -> Result<()>;
}

/// faer on the host, sequential (bit-identical on any thread count).
pub struct Host;

impl DenseLinAlg for Host {
    fn thin_svd(&self, a: MatRef<'_, f64>) -> Result<ThinSvd> {
        thin_svd(a)
    }
    fn singular_values(&self, a: MatRef<'_, f64>) -> Result<Vec<f64>> {
        singular_values(a)
    }
    fn symmetric_eigen(&self, a: MatRef<'_, f64>) -> Result<(Vec<f64>, Mat<f64>)> {
        symmetric_eigen(a)
    }
    fn cholesky_lower(&self, a: Mat<f64>) -> Result<Option<Mat<f64>>> {
        Ok(crate::inverse::cholesky_lower(a))
    }
    fn matmul(&self, a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Result<Mat<f64>> {
        let mut c = Mat::<f64>::zeros(a.nrows(), b.ncols());
        faer::linalg::matmul::matmul(c.as_mut(), faer::Accum::Replace, a, b, 1.0, Par::Seq);
        Ok(c)
    }
    fn solve_lower_transposed(&self, l: MatRef<'_, f64>, b: &mut Mat<f64>) -> Result<()> {
        faer::linalg::triangular_solve::solve_upper_triangular_in_place(
            l.transpose(),
            b.as_mut(),
            Par::Seq,
        );
        Ok(())
    }
}

/// Thin SVD A = U·diag(s)·Vᵀ, s non-increasing; U is [m, k] and V [n, k], k = min(m, n).
pub struct ThinSvd {
    pub s: Vec<f64>,
    pub u: Mat<f64>,
    pub v: Mat<f64>,
}

pub(crate) fn thin_svd(a: MatRef<'_, f64>) -> Result<ThinSvd> {
    let (m, n) = a.shape();
    let k = m.min(n);
    let mut u = Mat::<f64>::zeros(m, k);
    let mut v = Mat::<f64>::zeros(n, k);
    let s = faer_svd(a, Some((&mut u, &mut v)))?;
    Ok(ThinSvd { s, u, v })
}

/// Singular values only (non-increasing), much cheaper than [`thin_svd`].
pub(crate) fn singular_values(a: MatRef<'_, f64>) -> Result<Vec<f64>> {
    faer_svd(a, None)
}

/// faer's SVD of `a`: the singular values, non-increasing, and, when `uv` is given, the thin
/// U [m, k] and V [n, k] written into it, k = min(m, n).
fn faer_svd(a: MatRef<'_, f64>, uv: Option<(&mut Mat<f64>, &mut Mat<f64>)>) -> Result<Vec<f64>> {
    let (m, n) = a.shape();
    let mut s = faer::diag::Diag::<f64>::zeros(m.min(n));
    let compute = match uv {
        Some(_) => ComputeSvdVectors::Thin,
        None => ComputeSvdVectors::No,
    };
    let mut mem = MemBuffer::new(svd_scratch::<f64>(
        m,
        n,
        compute,
        compute,
        Par::Seq,
        Default::default(),
    ));
    let (u, v) = match uv {
        Some((u, v)) => (Some(u.as_mut()), Some(v.as_mut())),
        None => (None, None),
    };
    svd(
        a,
        s.as_mut(),
        u,
        v,
        Par::Seq,
        MemStack::new(&mut mem),
        Default::default(),
    )
    .map_err(|_| CompressError::NoConvergence("SVD"))?;
    Ok(s.column_vector().iter().copied().collect())
}

/// Eigendecomposition of a symmetric matrix (lower triangle read): eigenvalues non-decreasing,
/// eigenvectors as the columns of Q.
pub(crate) fn symmetric_eigen(a: MatRef<'_, f64>) -> Result<(Vec<f64>, Mat<f64>)> {
    let n = a.nrows();
    let mut s = faer::diag::Diag::<f64>::zeros(n);
    let mut q = Mat::<f64>::zeros(n, n);
    let mut mem = MemBuffer::new(self_adjoint_evd_scratch::<f64>(
        n,
        ComputeEigenvectors::Yes,
        Par::Seq,
        Default::default(),
    ));
    self_adjoint_evd(
        a,
        s.as_mut(),
        Some(q.as_mut()),
        Par::Seq,
        MemStack::new(&mut mem),
        Default::default(),
    )
    .map_err(|_| CompressError::NoConvergence("symmetric eigendecomposition"))?;
    let s = s.column_vector().iter().copied().collect();
    Ok((s, q))
}

/// Splits the rank-r truncation of M = U·diag(s)·Vᵀ evenly: A = U_r·Σ_r^{1/2} (returned in f32)
/// and Bᵀ = V_r·Σ_r^{1/2} (returned in f64, [n, r], for the caller to map back to weight space).
pub(crate) fn balanced_split(svd: &ThinSvd, rank: usize) -> (Vec<f32>, Mat<f64>) {
    let m = svd.u.nrows();
    let root: Vec<f64> = svd.s[..rank].iter().map(|s| s.sqrt()).collect();
    let mut a = vec![0.0f32; m * rank];
    for i in 0..m {
        for k in 0..rank {
            a[i * rank + k] = (svd.u[(i, k)] * root[k]) as f32;
        }
    }
    let bt = Mat::from_fn(svd.v.nrows(), rank, |j, k| svd.v[(j, k)] * root[k]);
    (a, bt)
}

/// Builds the [`Factored`] from A (f32, [rows, rank]) and Bᵀ (f64, [cols, rank]).
pub(crate) fn assemble(rows: usize, cols: usize, a: Vec<f32>, bt: MatRef<'_, f64>) -> Factored {
    let rank = bt.ncols();
    let mut b = vec![0.0f32; rank * cols];
    for k in 0..rank {
        for j in 0..cols {
            b[k * cols + j] = bt[(j, k)] as f32;
        }
    }
    Factored {
        rows,
        cols,
        rank,
        a,
        b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svd_and_eigen_reconstruct() {
        let a = Mat::from_fn(5, 3, |i, j| {
            ((i * 7 + j * 3) % 5) as f64 - 1.5 + (i == j) as u8 as f64
        });
        let d = thin_svd(a.as_ref()).unwrap();
        assert!(d.s.windows(2).all(|w| w[0] >= w[1]));
        let back =
            &d.u * Mat::from_fn(3, 3, |i, j| if i == j { d.s[i] } else { 0.0 }) * d.v.transpose();
        assert!((&back - &a).norm_max() < 1e-12);
        let sv = singular_values(a.as_ref()).unwrap();
        assert!(sv.iter().zip(&d.s).all(|(x, y)| (x - y).abs() < 1e-12));

        let h = a.transpose() * &a;
        let (l, q) = symmetric_eigen(h.as_ref()).unwrap();
        assert!(l.windows(2).all(|w| w[0] <= w[1]));
        let back = &q * Mat::from_fn(3, 3, |i, j| if i == j { l[i] } else { 0.0 }) * q.transpose();
        assert!((&back - &h).norm_max() < 1e-10);
    }
}
