//! bf16 matrix products through cuBLAS's `GemmEx`: bf16 inputs, f32 output and accumulation
//! (cudarc's typed `Gemm` would make the output bf16 too), and the host-side rounding used
//! when weights are uploaded.

use crate::{Error, Result};
use cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_N;
use cudarc::cublas::sys::{
    self, cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cublasStatus_t, cudaDataType,
};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use std::ffi::c_void;

/// f32 → bf16 bit pattern, round to nearest even (NaN stays NaN): the kernels' `to_bf16`.
pub(crate) fn bf16_bits(f: f32) -> u16 {
    let u = f.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 0x40) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

pub(crate) fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// Column-major operands as cuBLAS sees them: `m×n = op(A)·op(B)`, `k` the inner size.
#[derive(Clone, Copy)]
pub(crate) struct Shape {
    pub ta: cublasOperation_t,
    pub tb: cublasOperation_t,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
}

/// Strides (in elements) between the matrices of a batch.
#[derive(Clone, Copy)]
pub(crate) struct Batch {
    pub count: usize,
    pub a: usize,
    pub b: usize,
    pub c: usize,
}

impl Batch {
    /// A single product (no batch strides).
    pub const ONE: Batch = Batch {
        count: 1,
        a: 0,
        b: 0,
        c: 0,
    };
}

pub(crate) struct Bf16Gemm<'a> {
    pub blas: &'a CudaBlas,
    pub stream: &'a CudaStream,
}

fn check(status: cublasStatus_t, what: &str) -> Result<()> {
    if status == cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(Error(format!("cuda {what}: {status:?}")))
    }
}

impl Bf16Gemm<'_> {
    /// C = op(A)·op(B) + beta·C over a strided batch ([`Batch::ONE`] for one product), A and B
    /// bf16 (bit patterns), C f32.
    #[allow(clippy::too_many_arguments)]
    pub fn batched<A, B, C>(
        &self,
        s: Shape,
        batch: Batch,
        a: &A,
        b: &B,
        beta: f32,
        c: &mut C,
        what: &str,
    ) -> Result<()>
    where
        A: DevicePtr<u16>,
        B: DevicePtr<u16>,
        C: DevicePtrMut<f32>,
    {
        let alpha = 1.0f32;
        let (pa, _ga) = a.device_ptr(self.stream);
        let (pb, _gb) = b.device_ptr(self.stream);
        let (pc, _gc) = c.device_ptr_mut(self.stream);
        let i = |v: usize| v as i32;
        // SAFETY: the pointers are live device buffers of this stream; callers size them for
        // the shapes and strides given.
        let status = unsafe {
            sys::cublasGemmStridedBatchedEx(
                *self.blas.handle(),
                s.ta,
                s.tb,
                i(s.m),
                i(s.n),
                i(s.k),
                &alpha as *const f32 as *const c_void,
                pa as *const c_void,
                cudaDataType::CUDA_R_16BF,
                i(s.lda),
                batch.a as i64,
                pb as *const c_void,
                cudaDataType::CUDA_R_16BF,
                i(s.ldb),
                batch.b as i64,
                &beta as *const f32 as *const c_void,
                pc as *mut c_void,
                cudaDataType::CUDA_R_32F,
                i(s.ldc),
                batch.c as i64,
                i(batch.count),
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        };
        check(status, what)
    }
}

impl super::Cuda {
    /// Measured throughput (FLOP/s) of this GPU's bf16 matrix product with f32 accumulation
    /// and output — the one every linear layer runs in bf16 mode — for `m×k · k×n`, on
    /// pseudo-random operands, after warm-up: the ceiling benchmarks compare against.
    pub fn gemm_bf16_flops(&self, m: usize, n: usize, k: usize, reps: usize) -> Result<f64> {
        let fill = |len: usize, seed: u32| -> Result<CudaSlice<u16>> {
            let bits: Vec<u16> = (0..len as u32)
                .map(|i| {
                    bf16_bits((i.wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 - 0.5)
                })
                .collect();
            self.stream
                .clone_htod(&bits)
                .map_err(|e| Error(format!("cuda upload: {e:?}")))
        };
        let (a, b) = (fill(m * k, 1)?, fill(k * n, 2)?);
        let mut c = self.alloc(m * n)?;
        let shape = Shape {
            ta: CUBLAS_OP_N,
            tb: CUBLAS_OP_N,
            m,
            n,
            k,
            lda: m,
            ldb: k,
            ldc: m,
        };
        for _ in 0..3 {
            self.gemm_bf16()
                .batched(shape, Batch::ONE, &a, &b, 0.0, &mut c, "gemm benchmark")?;
        }
        self.synchronize()?;
        let start = std::time::Instant::now();
        for _ in 0..reps {
            self.gemm_bf16()
                .batched(shape, Batch::ONE, &a, &b, 0.0, &mut c, "gemm benchmark")?;
        }
        self.synchronize()?;
        let secs = start.elapsed().as_secs_f64();
        Ok(2.0 * (m * n * k * reps) as f64 / secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_matches_round_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is half-way between bf16 1.0 and 1.0078125: ties to even (1.0).
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3·2^-8 is half-way between 1.0078125 (odd) and 1.015625 (even): up.
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert!(bf16_to_f32(bf16_bits(f32::NAN)).is_nan());
        assert_eq!(bf16_to_f32(bf16_bits(-2.5)), -2.5);
        assert_eq!(bf16_bits(f32::INFINITY), 0x7f80);
    }
}
