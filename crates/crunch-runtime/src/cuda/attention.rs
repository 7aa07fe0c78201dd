//! Scaled dot-product attention on the GPU: two strided-batched GEMMs (scores, then
//! probabilities × V) around the masked-softmax kernel, in f32 or, in bf16 mode, with bf16
//! operands and f32 accumulation. For query head h = kv·group + g, a fixed g makes the kv heads
//! one strided batch, which handles grouped-query attention with no copies.

use super::bf16;
use super::{dims3, err, Cuda, CudaTensor, Precision};
use crate::{AttentionMask, Error, Result};
use cudarc::cublas::sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
use cudarc::cublas::{Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{CudaView, PushKernelArg};

pub(super) fn attention(
    c: &Cuda,
    q: &CudaTensor,
    k: &CudaTensor,
    v: &CudaTensor,
    mask: AttentionMask,
    scale: f32,
) -> Result<CudaTensor> {
    if v.shape != k.shape {
        return Err(Error(format!(
            "cuda attention: q {:?}, k {:?}, v {:?}",
            q.shape, k.shape, v.shape
        )));
    }
    dims3(k, "attention k")?;
    attention_views(
        c,
        q,
        (&k.view("attention")?, &v.view("attention")?, &k.shape),
        mask,
        scale,
    )
}

/// [`attention`] with keys and values given as device views `[tk, kv_heads, d]` of `shape`
/// (a cache's filled rows).
pub(super) fn attention_views(
    c: &Cuda,
    q: &CudaTensor,
    (kv, vv, shape): (&CudaView<f32>, &CudaView<f32>, &[usize]),
    mask: AttentionMask,
    scale: f32,
) -> Result<CudaTensor> {
    let (t, heads, d) = dims3(q, "attention q")?;
    let &[tk, kv_heads, dk] = shape else {
        return Err(Error(format!("cuda attention: keys of shape {shape:?}")));
    };
    if dk != d || kv_heads == 0 || heads % kv_heads != 0 || kv.len() != tk * kv_heads * d {
        return Err(Error(format!(
            "cuda attention: q {:?}, keys {shape:?}",
            q.shape
        )));
    }
    if mask.query_offset + t > tk {
        return Err(Error(format!(
            "cuda attention: queries at {}..{} against {tk} keys",
            mask.query_offset,
            mask.query_offset + t
        )));
    }
    let dims = AttnDims {
        t,
        tk,
        heads,
        kv_heads,
        d,
    };
    let qv = q.view("attention")?;
    let offset = mask.query_offset as i32;
    let window = mask.window.map_or(0, |w| w.min(i32::MAX as usize) as i32);
    let (t_i, tk_i) = (t as i32, tk as i32);
    let mut s = c.alloc(heads * t * tk)?;
    let mut out = c.alloc(t * heads * d)?;
    if c.precision == Precision::Bf16 {
        let (qb, kb, vb) = (c.to_bf16(&qv)?, c.to_bf16(kv)?, c.to_bf16(vv)?);
        for g in 0..dims.group() {
            let (shape, batch) = dims.scores();
            c.gemm_bf16().batched(
                shape,
                batch,
                &kb,
                &qb.slice(g * d..),
                0.0,
                &mut s.slice_mut(g * t * tk..),
                "attention scores (bf16)",
            )?;
        }
        let mut p = unsafe { c.stream.alloc::<u16>(heads * t * tk) }.map_err(err("allocating"))?;
        let mut l = c.stream.launch_builder(&c.k.masked_softmax_bf16);
        l.arg(&s)
            .arg(&mut p)
            .arg(&t_i)
            .arg(&tk_i)
            .arg(&scale)
            .arg(&offset)
            .arg(&window);
        unsafe { l.launch(c.rows_cfg(heads * t)) }.map_err(err("softmax"))?;
        for g in 0..dims.group() {
            let (shape, batch) = dims.values();
            c.gemm_bf16().batched(
                shape,
                batch,
                &vb,
                &p.slice(g * t * tk..),
                0.0,
                &mut out.slice_mut(g * d..),
                "attention output (bf16)",
            )?;
        }
        return Ok(CudaTensor::owned(out, &[t, heads * d]));
    }
    for g in 0..dims.group() {
        let (sh, b) = dims.scores();
        let cfg = strided(sh, b);
        let qg = qv.slice(g * d..);
        let mut sg = s.slice_mut(g * t * tk..);
        unsafe { c.blas.gemm_strided_batched(cfg, kv, &qg, &mut sg) }
            .map_err(err("attention scores"))?;
    }
    let mut l = c.stream.launch_builder(&c.k.masked_softmax);
    l.arg(&mut s)
        .arg(&t_i)
        .arg(&tk_i)
        .arg(&scale)
        .arg(&offset)
        .arg(&window);
    unsafe { l.launch(c.rows_cfg(heads * t)) }.map_err(err("softmax"))?;
    for g in 0..dims.group() {
        let (sh, b) = dims.values();
        let cfg = strided(sh, b);
        let sg = s.slice(g * t * tk..);
        let mut og = out.slice_mut(g * d..);
        unsafe { c.blas.gemm_strided_batched(cfg, vv, &sg, &mut og) }
            .map_err(err("attention output"))?;
    }
    Ok(CudaTensor::owned(out, &[t, heads * d]))
}

/// Sizes of one attention call. Head h = kv·group + g reads kv head kv; for a fixed g the kv
/// heads are one strided batch.
struct AttnDims {
    t: usize,
    tk: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
}

impl AttnDims {
    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// Scores [heads, t, tk] of group member g: column-major Sᵀ[tk, t] = K_h[tk, d]·Q_hᵀ
    /// (K's column-major view is Kᵀ).
    fn scores(&self) -> (bf16::Shape, bf16::Batch) {
        let (t, tk, d, kvh, group) = (self.t, self.tk, self.d, self.kv_heads, self.group());
        (
            bf16::Shape {
                ta: CUBLAS_OP_T,
                tb: CUBLAS_OP_N,
                m: tk,
                n: t,
                k: d,
                lda: kvh * d,
                ldb: self.heads * d,
                ldc: tk,
            },
            bf16::Batch {
                count: kvh,
                a: d,
                b: group * d,
                c: group * t * tk,
            },
        )
    }

    /// Output [t, heads·d] of group member g: column-major O_hᵀ[d, t] = V_hᵀ[d, tk]·P_hᵀ[tk, t].
    fn values(&self) -> (bf16::Shape, bf16::Batch) {
        let (t, tk, d, kvh, group) = (self.t, self.tk, self.d, self.kv_heads, self.group());
        (
            bf16::Shape {
                ta: CUBLAS_OP_N,
                tb: CUBLAS_OP_N,
                m: d,
                n: t,
                k: tk,
                lda: kvh * d,
                ldb: tk,
                ldc: self.heads * d,
            },
            bf16::Batch {
                count: kvh,
                a: d,
                b: group * t * tk,
                c: group * d,
            },
        )
    }
}

fn strided(s: bf16::Shape, b: bf16::Batch) -> StridedBatchedConfig<f32> {
    StridedBatchedConfig {
        gemm: GemmConfig {
            transa: s.ta,
            transb: s.tb,
            m: s.m as i32,
            n: s.n as i32,
            k: s.k as i32,
            alpha: 1.0f32,
            lda: s.lda as i32,
            ldb: s.ldb as i32,
            beta: 0.0f32,
            ldc: s.ldc as i32,
        },
        batch_size: b.count as i32,
        stride_a: b.a as i64,
        stride_b: b.b as i64,
        stride_c: b.c as i64,
    }
}
