//! What every GPU solver shares: errors from the CUDA libraries, cuSOLVER's handle, the
//! Cholesky factorization and triangular solves in f64, and kernel launch shapes. The GPTQ and
//! SparseGPT column loops (`gptq.rs`, `sparsegpt.rs`) and the low-rank decompositions
//! (`dense.rs`) all build on it; none of them depends on another.

use crate::error::{CompressError, Result};
use crunch_runtime::Cuda;
use cudarc::cublas::sys as blas_sys;
use cudarc::cusolver::{safe::DnHandle, sys as solver_sys};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig};
use std::sync::Arc;

/// Threads per block of the element-wise kernels.
const THREADS: u32 = 256;
/// Threads per block of the column-loop kernels: small, so that a few thousand rows still
/// spread over every SM.
const LOOP_THREADS: u32 = 32;

/// Maps a CUDA library error to [`CompressError::Device`], naming the step.
pub(crate) fn dev<E: std::fmt::Debug>(what: &'static str) -> impl FnOnce(E) -> CompressError {
    move |e| CompressError::Device(format!("{what}: {e:?}"))
}

/// A cuSOLVER handle on `cuda`'s stream (`libcusolver.so`, found like cuBLAS).
pub(crate) fn open_solver(cuda: &Cuda) -> Result<DnHandle> {
    // SAFETY: only probes whether the library can be opened.
    if !unsafe { solver_sys::is_culib_present() } {
        return Err(CompressError::Device(
            "libcusolver not found (set LD_LIBRARY_PATH to the CUDA libraries)".into(),
        ));
    }
    DnHandle::new(cuda.stream().clone()).map_err(dev("cuSOLVER"))
}

pub(crate) fn solver_ok(s: solver_sys::cusolverStatus_t, what: &str) -> Result<()> {
    if s == solver_sys::cusolverStatus_t::CUSOLVER_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(CompressError::Device(format!("{what}: {s:?}")))
    }
}

pub(crate) fn blas_ok(s: blas_sys::cublasStatus_t, what: &str) -> Result<()> {
    if s == blas_sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(CompressError::Device(format!("{what}: {s:?}")))
    }
}

/// Runs a cuSOLVER routine that needs a workspace: `query` sets the workspace size (in f64s),
/// `call` runs the routine with (workspace, its size, the device `info`). Returns whether `info`
/// came back 0 (success; what a non-zero value means is the routine's).
pub(crate) fn with_workspace(
    stream: &Arc<CudaStream>,
    what: &'static str,
    query: impl FnOnce(&mut i32) -> solver_sys::cusolverStatus_t,
    call: impl FnOnce(*mut f64, i32, *mut i32) -> solver_sys::cusolverStatus_t,
) -> Result<bool> {
    let mut lwork = 0i32;
    solver_ok(query(&mut lwork), what)?;
    let mut work = stream
        .alloc_zeros::<f64>(lwork.max(1) as usize)
        .map_err(dev("alloc"))?;
    let mut info = stream.alloc_zeros::<i32>(1).map_err(dev("alloc"))?;
    {
        let (pw, _w) = work.device_ptr_mut(stream);
        let (pi, _i) = info.device_ptr_mut(stream);
        solver_ok(call(pw as *mut f64, lwork, pi as *mut i32), what)?;
    }
    Ok(stream.clone_dtoh(&info).map_err(dev("download"))?[0] == 0)
}

/// Cholesky factorization in place of the column-major n×n `a` (lower triangle; the upper is
/// left as it was). `false` if `a` is not positive definite.
pub(crate) fn potrf_lower(
    handle: &DnHandle,
    stream: &Arc<CudaStream>,
    a: &mut CudaSlice<f64>,
    n: usize,
) -> Result<bool> {
    let ni = n as i32;
    let lower = solver_sys::cublasFillMode_t::CUBLAS_FILL_MODE_LOWER;
    let (pa, _a) = a.device_ptr_mut(stream);
    let pa = pa as *mut f64;
    with_workspace(
        stream,
        "potrf",
        // SAFETY: `a` is an n×n device buffer, held by `_a` while the calls run.
        |lwork| unsafe {
            solver_sys::cusolverDnDpotrf_bufferSize(handle.cu(), lower, ni, pa, ni, lwork)
        },
        |work, lwork, info| unsafe {
            solver_sys::cusolverDnDpotrf(handle.cu(), lower, ni, pa, ni, work, lwork, info)
        },
    )
}

/// B ← L⁻¹·B (or L⁻ᵀ·B with `transpose`) for a lower-triangular column-major L [n, n] and a
/// column-major B [n, r].
pub(crate) fn trsm_lower(
    cuda: &Cuda,
    transpose: bool,
    l: &CudaSlice<f64>,
    b: &mut CudaSlice<f64>,
    n: usize,
    r: usize,
) -> Result<()> {
    let stream = cuda.stream();
    let one = 1.0f64;
    let (pl, _l) = l.device_ptr(stream);
    let (pb, _b) = b.device_ptr_mut(stream);
    let op = if transpose {
        blas_sys::cublasOperation_t::CUBLAS_OP_T
    } else {
        blas_sys::cublasOperation_t::CUBLAS_OP_N
    };
    blas_ok(
        unsafe {
            blas_sys::cublasDtrsm_v2(
                *cuda.blas().handle(),
                blas_sys::cublasSideMode_t::CUBLAS_SIDE_LEFT,
                blas_sys::cublasFillMode_t::CUBLAS_FILL_MODE_LOWER,
                op,
                blas_sys::cublasDiagType_t::CUBLAS_DIAG_NON_UNIT,
                n as i32,
                r as i32,
                &one,
                pl as *const f64,
                n.max(1) as i32,
                pb as *mut f64,
                n.max(1) as i32,
            )
        },
        "trsm",
    )
}

/// One thread per weight row, in small blocks so that a few thousand rows still spread over
/// every SM.
pub(crate) fn row_loop_cfg(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((rows as u32).div_ceil(LOOP_THREADS), 1, 1),
        block_dim: (LOOP_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

pub(crate) fn grid_cfg(total: usize) -> LaunchConfig {
    let blocks = total.div_ceil(THREADS as usize).clamp(1, 65_535 * 8) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}
