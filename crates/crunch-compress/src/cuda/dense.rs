//! The low-rank methods' dense f64 linear algebra ([`DenseLinAlg`]) on an NVIDIA GPU: cuSOLVER
//! for the SVD (`gesvd`), the symmetric eigendecomposition (`syevd`) and Cholesky (`potrf`),
//! cuBLAS for products and triangular solves. Each call uploads its operands, computes in f64
//! and downloads the result; calls are serialised (one stream, one solver handle).
//!
//! `gesvd` needs rows ≥ columns; a wide matrix is decomposed through its transpose
//! (Aᵀ = U'·Σ·V'ᵀ gives A = V'·Σ·U'ᵀ).

use super::solver::{dev, open_solver, potrf_lower, trsm_lower, with_workspace};
use crate::error::{CompressError, Result};
use crate::lowrank::{DenseLinAlg, ThinSvd};
use crunch_runtime::Cuda;
use cudarc::cublas::sys as blas_sys;
use cudarc::cublas::{Gemm, GemmConfig};
use cudarc::cusolver::{safe::DnHandle, sys as solver_sys};
use cudarc::driver::{CudaSlice, DevicePtrMut};
use faer::{Mat, MatRef};
use std::sync::Mutex;

/// [`DenseLinAlg`] on one GPU.
pub struct CudaDense {
    cuda: Cuda,
    solver: Mutex<DnHandle>,
}

fn col_major(a: MatRef<'_, f64>) -> Vec<f64> {
    let (m, n) = a.shape();
    let mut v = Vec::with_capacity(m * n);
    for j in 0..n {
        v.extend((0..m).map(|i| a[(i, j)]));
    }
    v
}

fn from_col_major(v: &[f64], m: usize, n: usize) -> Mat<f64> {
    Mat::from_fn(m, n, |i, j| v[j * m + i])
}

/// Singular values, and (U [m, n], Vᵀ [n, n]) column-major when asked for.
type Gesvd = (Vec<f64>, Option<(Vec<f64>, Vec<f64>)>);

impl CudaDense {
    pub fn new(cuda: &Cuda) -> Result<Self> {
        let solver = open_solver(cuda)?;
        Ok(Self {
            cuda: cuda.clone(),
            solver: Mutex::new(solver),
        })
    }

    fn upload(&self, v: &[f64]) -> Result<CudaSlice<f64>> {
        self.cuda.stream().clone_htod(v).map_err(dev("upload"))
    }

    fn download(&self, d: &CudaSlice<f64>) -> Result<Vec<f64>> {
        self.cuda.stream().clone_dtoh(d).map_err(dev("download"))
    }

    fn alloc(&self, n: usize) -> Result<CudaSlice<f64>> {
        self.cuda
            .stream()
            .alloc_zeros::<f64>(n.max(1))
            .map_err(dev("alloc"))
    }

    /// gesvd of a tall (m ≥ n) column-major matrix: (s, U [m, n], Vᵀ [n, n]) or only s.
    fn gesvd_tall(&self, a: Vec<f64>, m: usize, n: usize, vectors: bool) -> Result<Gesvd> {
        let handle = self.solver.lock().expect("solver lock");
        let stream = self.cuda.stream();
        let mut da = self.upload(&a)?;
        let mut s = self.alloc(n)?;
        let (mut u, mut vt) = if vectors {
            (self.alloc(m * n)?, self.alloc(n * n)?)
        } else {
            (self.alloc(1)?, self.alloc(1)?)
        };
        let (mi, ni) = (m as i32, n as i32);
        let mut rwork = self.alloc(n)?;
        let job = if vectors { b'S' } else { b'N' } as i8;
        let (ldu, ldvt) = if vectors { (mi, ni) } else { (1, 1) };
        let (pa, _a) = da.device_ptr_mut(stream);
        let (ps, _s) = s.device_ptr_mut(stream);
        let (pu, _u) = u.device_ptr_mut(stream);
        let (pv, _v) = vt.device_ptr_mut(stream);
        let (pr, _r) = rwork.device_ptr_mut(stream);
        let (pa, ps, pu, pv, pr) = (pa as _, ps as _, pu as _, pv as _, pr as _);
        // SAFETY: every buffer has the size gesvd reads for (m, n, job), held while it runs.
        let converged = with_workspace(
            stream,
            "gesvd",
            |lwork| unsafe { solver_sys::cusolverDnDgesvd_bufferSize(handle.cu(), mi, ni, lwork) },
            |work, lwork, info| unsafe {
                solver_sys::cusolverDnDgesvd(
                    handle.cu(),
                    job,
                    job,
                    mi,
                    ni,
                    pa,
                    mi,
                    ps,
                    pu,
                    ldu,
                    pv,
                    ldvt,
                    work,
                    lwork,
                    pr,
                    info,
                )
            },
        )?;
        drop((_a, _s, _u, _v, _r));
        if !converged {
            return Err(CompressError::NoConvergence("SVD"));
        }
        let s = self.download(&s)?;
        let vecs = if vectors {
            Some((self.download(&u)?, self.download(&vt)?))
        } else {
            None
        };
        Ok((s, vecs))
    }
}

impl DenseLinAlg for CudaDense {
    fn thin_svd(&self, a: MatRef<'_, f64>) -> Result<ThinSvd> {
        let (m, n) = a.shape();
        let tall = m >= n;
        let (rows, cols) = if tall { (m, n) } else { (n, m) };
        let data = if tall {
            col_major(a)
        } else {
            col_major(a.transpose())
        };
        let (s, vecs) = self.gesvd_tall(data, rows, cols, true)?;
        let (u, vt) = vecs.expect("vectors requested");
        let k = cols;
        // Tall: U [rows, k], V = (Vᵀ)ᵀ [cols, k].
        let uu = from_col_major(&u, rows, k);
        let vv = Mat::from_fn(cols, k, |j, t| vt[j * k + t]);
        Ok(if tall {
            ThinSvd { s, u: uu, v: vv }
        } else {
            ThinSvd { s, u: vv, v: uu }
        })
    }

    fn singular_values(&self, a: MatRef<'_, f64>) -> Result<Vec<f64>> {
        let (m, n) = a.shape();
        if m >= n {
            Ok(self.gesvd_tall(col_major(a), m, n, false)?.0)
        } else {
            Ok(self.gesvd_tall(col_major(a.transpose()), n, m, false)?.0)
        }
    }

    fn symmetric_eigen(&self, a: MatRef<'_, f64>) -> Result<(Vec<f64>, Mat<f64>)> {
        let n = a.nrows();
        let handle = self.solver.lock().expect("solver lock");
        let stream = self.cuda.stream();
        let mut da = self.upload(&col_major(a))?;
        let mut w = self.alloc(n)?;
        let ni = n as i32;
        let (jobz, lower) = (
            solver_sys::cusolverEigMode_t::CUSOLVER_EIG_MODE_VECTOR,
            solver_sys::cublasFillMode_t::CUBLAS_FILL_MODE_LOWER,
        );
        let (pa, _a) = da.device_ptr_mut(stream);
        let (pw, _w) = w.device_ptr_mut(stream);
        let (pa, pw, h) = (pa as *mut f64, pw as *mut f64, handle.cu());
        use solver_sys::{cusolverDnDsyevd as syevd, cusolverDnDsyevd_bufferSize as size};
        // SAFETY: `da` is n×n and `w` holds n values, both held while syevd runs.
        let converged = with_workspace(
            stream,
            "syevd",
            |lwork| unsafe { size(h, jobz, lower, ni, pa, ni, pw, lwork) },
            |work, lwork, info| unsafe { syevd(h, jobz, lower, ni, pa, ni, pw, work, lwork, info) },
        )?;
        drop((_a, _w));
        if !converged {
            return Err(CompressError::NoConvergence("symmetric eigendecomposition"));
        }
        let q = from_col_major(&self.download(&da)?, n, n);
        Ok((self.download(&w)?, q))
    }

    fn cholesky_lower(&self, a: Mat<f64>) -> Result<Option<Mat<f64>>> {
        let n = a.nrows();
        let handle = self.solver.lock().expect("solver lock");
        let mut da = self.upload(&col_major(a.as_ref()))?;
        if !potrf_lower(&handle, self.cuda.stream(), &mut da, n)? {
            return Ok(None);
        }
        let v = self.download(&da)?;
        let l = Mat::from_fn(n, n, |i, j| if i >= j { v[j * n + i] } else { 0.0 });
        Ok((0..n)
            .all(|i| l[(i, i)].is_finite() && l[(i, i)] > 0.0)
            .then_some(l))
    }

    fn matmul(&self, a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Result<Mat<f64>> {
        let (m, k) = a.shape();
        let n = b.ncols();
        let _guard = self.solver.lock().expect("solver lock");
        let (da, db) = (self.upload(&col_major(a))?, self.upload(&col_major(b))?);
        let mut dc = self.alloc(m * n)?;
        let cfg = GemmConfig {
            transa: blas_sys::cublasOperation_t::CUBLAS_OP_N,
            transb: blas_sys::cublasOperation_t::CUBLAS_OP_N,
            m: m as i32,
            n: n as i32,
            k: k as i32,
            alpha: 1.0f64,
            lda: m.max(1) as i32,
            ldb: k.max(1) as i32,
            beta: 0.0f64,
            ldc: m.max(1) as i32,
        };
        unsafe { self.cuda.blas().gemm(cfg, &da, &db, &mut dc) }.map_err(dev("dgemm"))?;
        Ok(from_col_major(&self.download(&dc)?, m, n))
    }

    fn solve_lower_transposed(&self, l: MatRef<'_, f64>, b: &mut Mat<f64>) -> Result<()> {
        let (n, r) = b.shape();
        let _guard = self.solver.lock().expect("solver lock");
        let dl = self.upload(&col_major(l))?;
        let mut db = self.upload(&col_major(b.as_ref()))?;
        trsm_lower(&self.cuda, true, &dl, &mut db, n, r)?;
        *b = from_col_major(&self.download(&db)?, n, r);
        Ok(())
    }
}
