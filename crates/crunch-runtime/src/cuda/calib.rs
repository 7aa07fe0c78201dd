//! What calibration and the search ask of the device (the `Backend` methods of the same names
//! call these): Gram sums XᵀX accumulated in place by cuBLAS, a weight rewritten in its own
//! buffer, and per-row log-softmax scores against targets and a base model's logits.

use super::bf16::{self, bf16_bits, Batch};
use super::{dims2, err, Cuda, CudaTensor, Store};
use crate::{Error, Precision, Result};
use cudarc::cublas::sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
use cudarc::cublas::{Gemm, GemmConfig};
use cudarc::driver::{CudaSlice, PushKernelArg};
use std::sync::Arc;

impl Cuda {
    pub(super) fn gram_accumulate_impl(
        &self,
        acc: &mut Option<CudaTensor>,
        x: &CudaTensor,
    ) -> Result<bool> {
        let (rows, n) = dims2(x, "gram")?;
        let sum = acc.get_or_insert(CudaTensor::from_f32(
            self.stream
                .alloc_zeros::<f32>(n * n)
                .map_err(err("allocating"))?,
            &[n, n],
        ));
        if sum.shape != [n, n] || sum.offset != 0 {
            return Err(Error(format!(
                "cuda gram: accumulator {:?} for inputs of width {n}",
                sum.shape
            )));
        }
        let Store::F32(buf) = &mut sum.store else {
            return Err(Error("cuda gram: bf16 accumulator".into()));
        };
        let g: &mut CudaSlice<f32> =
            Arc::get_mut(buf).ok_or_else(|| Error("cuda gram: shared accumulator".into()))?;
        let xv = x.view("gram")?;
        // Column-major X is Xᵀ [n, rows]: XᵀX = A·Aᵀ with A that view; beta = 1 adds.
        if self.precision == Precision::Bf16 {
            let xb = self.to_bf16(&xv)?;
            let shape = bf16::Shape {
                ta: CUBLAS_OP_N,
                tb: CUBLAS_OP_T,
                m: n,
                n,
                k: rows,
                lda: n,
                ldb: n,
                ldc: n,
            };
            self.gemm_bf16()
                .batched(shape, Batch::ONE, &xb, &xb, 1.0, g, "gram gemm (bf16)")?;
        } else {
            let cfg = GemmConfig {
                transa: CUBLAS_OP_N,
                transb: CUBLAS_OP_T,
                m: n as i32,
                n: n as i32,
                k: rows as i32,
                alpha: 1.0f32,
                lda: n as i32,
                ldb: n as i32,
                beta: 1.0f32,
                ldc: n as i32,
            };
            unsafe { self.blas.gemm(cfg, &xv, &xv, g) }.map_err(err("gram gemm"))?;
        }
        Ok(true)
    }

    pub(super) fn write_weight_impl(&self, weight: &mut CudaTensor, data: &[f32]) -> Result<bool> {
        // Only a whole buffer of this exact size that nothing else shares, stored as
        // `upload_weight` stores it in this precision (f32 or bf16, never packed).
        let whole = weight.offset == 0 && weight.shape.len() == 2 && weight.len() == data.len();
        if !whole {
            return Ok(false);
        }
        match (&mut weight.store, self.precision) {
            (Store::F32(buf), Precision::F32) => match Arc::get_mut(buf) {
                Some(b) if b.len() == data.len() => {
                    self.stream
                        .memcpy_htod(data, &mut **b)
                        .map_err(err("upload"))?;
                    Ok(true)
                }
                _ => Ok(false),
            },
            (Store::Bf16(buf), Precision::Bf16) => match Arc::get_mut(buf) {
                Some(b) if b.len() == data.len() => {
                    use rayon::prelude::*;
                    let bits: Vec<u16> = data.par_iter().map(|&v| bf16_bits(v)).collect();
                    self.stream.memcpy_htod(&bits, b).map_err(err("upload"))?;
                    Ok(true)
                }
                _ => Ok(false),
            },
            _ => Ok(false),
        }
    }

    pub(super) fn score_rows_impl(
        &self,
        logits: &CudaTensor,
        base: Option<&CudaTensor>,
        targets: &[u32],
    ) -> Result<Option<Vec<[f64; 4]>>> {
        let (rows, vocab) = dims2(logits, "score_rows")?;
        if rows != targets.len() || base.is_some_and(|b| b.shape != logits.shape) {
            return Err(Error(format!(
                "cuda score_rows: logits {:?}, {} targets",
                logits.shape,
                targets.len()
            )));
        }
        if let Some(&bad) = targets.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error(format!(
                "cuda score_rows: target {bad} ≥ vocab {vocab}"
            )));
        }
        let lv = logits.view("score_rows")?;
        let bv = match base {
            Some(b) => b.view("score_rows")?,
            None => logits.view("score_rows")?,
        };
        let present = base.is_some() as i32;
        let tv = self
            .stream
            .clone_htod(targets)
            .map_err(err("upload targets"))?;
        let mut out = self
            .stream
            .alloc_zeros::<f64>(rows * 4)
            .map_err(err("allocating"))?;
        let vocab_i = vocab as i32;
        let mut l = self.stream.launch_builder(&self.k.score_rows);
        l.arg(&lv)
            .arg(&bv)
            .arg(&present)
            .arg(&tv)
            .arg(&mut out)
            .arg(&vocab_i);
        unsafe { l.launch(self.rows_cfg(rows)) }.map_err(err("score_rows"))?;
        let flat = self.stream.clone_dtoh(&out).map_err(err("download"))?;
        Ok(Some(
            flat.chunks_exact(4)
                .map(|c| [c[0], c[1], c[2], c[3]])
                .collect(),
        ))
    }
}
