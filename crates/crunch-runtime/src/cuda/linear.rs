//! One linear layer on the CUDA backend ([`Backend::linear`](crate::Backend::linear)): packed
//! weights through their kernels (`packed.rs`), bf16-stored weights through cuBLAS's bf16 GEMM
//! with f32 accumulation (decision 071), f32 weights through cuBLAS's f32 GEMM; then the bias.

use super::bf16::{self, Batch};
use super::{dims2, err, Cuda, CudaTensor, Store};
use crate::{Error, Result};
use cudarc::cublas::sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
use cudarc::cublas::{Gemm, GemmConfig};
use cudarc::driver::{LaunchConfig, PushKernelArg};

impl Cuda {
    /// `x [n, in] · weightᵀ (+ bias)` -> `[n, out]`.
    pub(super) fn linear_one(
        &self,
        x: &CudaTensor,
        weight: &CudaTensor,
        bias: Option<&CudaTensor>,
    ) -> Result<CudaTensor> {
        let (n, inp) = dims2(x, "linear")?;
        let (out_f, w_in) = dims2(weight, "linear weight")?;
        if w_in != inp {
            return Err(Error(format!(
                "cuda linear: input {:?} against weight {:?}",
                x.shape, weight.shape
            )));
        }
        let mut y = match &weight.store {
            Store::Packed(p) => self.packed_matmul(x, p)?,
            _ => self.alloc(n * out_f)?,
        };
        let xv = x.view("linear input")?;
        // Row-major y[n, out] = x[n, in]·Wᵀ is column-major yᵀ[out, n] = W·xᵀ, where the
        // column-major view of row-major W [out, in] is Wᵀ: so op(A) = transpose.
        match weight.bf16_view() {
            _ if weight.is_packed() => {}
            Some(w) => {
                let xb = self.to_bf16(&xv)?;
                let shape = bf16::Shape {
                    ta: CUBLAS_OP_T,
                    tb: CUBLAS_OP_N,
                    m: out_f,
                    n,
                    k: inp,
                    lda: inp,
                    ldb: inp,
                    ldc: out_f,
                };
                self.gemm_bf16().batched(
                    shape,
                    Batch::ONE,
                    &w,
                    &xb,
                    0.0,
                    &mut y,
                    "linear gemm (bf16)",
                )?;
            }
            None => {
                let cfg = GemmConfig {
                    transa: CUBLAS_OP_T,
                    transb: CUBLAS_OP_N,
                    m: out_f as i32,
                    n: n as i32,
                    k: inp as i32,
                    alpha: 1.0f32,
                    lda: inp as i32,
                    ldb: inp as i32,
                    beta: 0.0f32,
                    ldc: out_f as i32,
                };
                unsafe { self.blas.gemm(cfg, &weight.view("linear")?, &xv, &mut y) }
                    .map_err(err("linear gemm"))?;
            }
        }
        if let Some(bias) = bias {
            let total = (n * out_f) as i64;
            let cols = out_f as i32;
            let bv = bias.view("bias")?;
            let mut b = self.stream.launch_builder(&self.k.add_bias);
            b.arg(&mut y).arg(&bv).arg(&total).arg(&cols);
            unsafe { b.launch(LaunchConfig::for_num_elems((n * out_f) as u32)) }
                .map_err(err("bias"))?;
        }
        let mut shape = x.shape.clone();
        *shape.last_mut().expect("2-D") = out_f;
        Ok(CudaTensor::owned(y, &shape))
    }
}
