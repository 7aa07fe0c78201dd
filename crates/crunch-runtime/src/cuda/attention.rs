//! Scaled dot-product attention on the GPU: two strided-batched GEMMs (scores, then
//! probabilities × V) around the masked-softmax kernel, in f32 or, in bf16 mode, with bf16
//! operands and f32 accumulation. For query head h = kv·group + g, a fixed g makes the kv heads
//! one strided batch, which handles grouped-query attention with no copies. A decode step (one
//! query row, up to 2,048 keys) takes every g in the same GEMM as its n columns (decision 162):
//! one GEMM per side instead of one per group member, which at one row costs the host more
//! than the device.

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
    let members = dims.members(!c.attention_per_member);
    if c.precision == Precision::Bf16 {
        let (qb, kb, vb) = (c.to_bf16(&qv)?, c.to_bf16(kv)?, c.to_bf16(vv)?);
        for g in 0..members {
            let (shape, batch) = dims.scores(members);
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
        for g in 0..members {
            let (shape, batch) = dims.values(members);
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
    for g in 0..members {
        let (sh, b) = dims.scores(members);
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
    for g in 0..members {
        let (sh, b) = dims.values(members);
        let cfg = strided(sh, b);
        let sg = s.slice(g * t * tk..);
        let mut og = out.slice_mut(g * d..);
        unsafe { c.blas.gemm_strided_batched(cfg, vv, &sg, &mut og) }
            .map_err(err("attention output"))?;
    }
    Ok(CudaTensor::owned(out, &[t, heads * d]))
}

/// Most keys for which a decode step's attention runs one GEMM per side (decision 162). On the
/// H200 (8 kv heads of 128, group 4) one GEMM took 17 against 35 µs of device time at 512 keys,
/// the same at 2,048, and 321 against 126 at 8,192, where cuBLAS's kernel for n = 4 reads the
/// keys far more slowly; its host time was lower at every length.
const ONE_GEMM_KEYS: usize = 2048;

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

    /// GEMMs per side: one per group member, or (decision 162) one for a single query row
    /// against at most [`ONE_GEMM_KEYS`] keys: its group members' query heads, score rows and
    /// output heads are each evenly spaced (d, tk and d apart), so they are the GEMM's n
    /// columns.
    fn members(&self, one_gemm: bool) -> usize {
        if self.t == 1 && self.tk <= ONE_GEMM_KEYS && one_gemm {
            1
        } else {
            self.group()
        }
    }

    /// Scores [heads, t, tk] of group member g: column-major Sᵀ[tk, t] = K_h[tk, d]·Q_hᵀ
    /// (K's column-major view is Kᵀ). With `members` 1 (one query row): all members at once,
    /// Sᵀ[tk, group] (member g's query head d·g after the first, its scores tk·g).
    fn scores(&self, members: usize) -> (bf16::Shape, bf16::Batch) {
        let (t, tk, d, kvh, group) = (self.t, self.tk, self.d, self.kv_heads, self.group());
        let (n, ldb) = if members == 1 {
            (group, d)
        } else {
            (t, self.heads * d)
        };
        (
            bf16::Shape {
                ta: CUBLAS_OP_T,
                tb: CUBLAS_OP_N,
                m: tk,
                n,
                k: d,
                lda: kvh * d,
                ldb,
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
    /// With `members` 1 (one query row): O_hᵀ[d, group], member g's output head d·g after the
    /// first.
    fn values(&self, members: usize) -> (bf16::Shape, bf16::Batch) {
        let (t, tk, d, kvh, group) = (self.t, self.tk, self.d, self.kv_heads, self.group());
        let (n, ldc) = if members == 1 {
            (group, d)
        } else {
            (t, self.heads * d)
        };
        (
            bf16::Shape {
                ta: CUBLAS_OP_N,
                tb: CUBLAS_OP_N,
                m: d,
                n,
                k: tk,
                lda: kvh * d,
                ldb: tk,
                ldc,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// cuBLAS's column-major strided-batched GEMM, transcribed: C_b = op(A_b)·op(B_b) with
    /// A_b = a[b·stride_a..], op T reading A(i, l) at i·lda + l.
    fn gemm(s: bf16::Shape, bt: bf16::Batch, a: &[f32], b: &[f32], c: &mut [f32]) {
        for n in 0..bt.count {
            let (a, b) = (&a[n * bt.a..], &b[n * bt.b..]);
            let c = &mut c[n * bt.c..];
            for i in 0..s.m {
                for j in 0..s.n {
                    let mut acc = 0f32;
                    for l in 0..s.k {
                        let x = if s.ta == CUBLAS_OP_T {
                            a[i * s.lda + l]
                        } else {
                            a[i + l * s.lda]
                        };
                        let y = if s.tb == CUBLAS_OP_T {
                            b[j + l * s.ldb]
                        } else {
                            b[l + j * s.ldb]
                        };
                        acc += x * y;
                    }
                    c[i + j * s.ldc] = acc;
                }
            }
        }
    }

    /// Decision 162: at one query row the one-GEMM shapes give every head the scores and
    /// outputs the per-member GEMMs give (the same sums), and those are the direct ones:
    /// S[h][j] = q_h·k_j and O_h = Σ_j P[h][j]·v_j for kv head h / group.
    #[test]
    fn one_gemm_per_side_matches_one_per_member() {
        let (heads, kvh, d, tk) = (8usize, 2usize, 4usize, 5usize);
        let val = |i: usize, k: f32| ((i * 7919 % 23) as f32 - 11.0) * k;
        let q: Vec<f32> = (0..heads * d).map(|i| val(i, 0.1)).collect();
        let k: Vec<f32> = (0..tk * kvh * d).map(|i| val(i + 3, 0.2)).collect();
        let v: Vec<f32> = (0..tk * kvh * d).map(|i| val(i + 5, 0.3)).collect();
        let dims = AttnDims {
            t: 1,
            tk,
            heads,
            kv_heads: kvh,
            d,
        };
        let group = dims.group();
        let run = |members: usize| {
            let mut s = vec![f32::NAN; heads * tk];
            for g in 0..members {
                let (sh, b) = dims.scores(members);
                gemm(sh, b, &k, &q[g * d..], &mut s[g * tk..]);
            }
            // Stand-in probabilities (any values: the second GEMM only mixes them).
            let p: Vec<f32> = s.iter().map(|x| x * 0.5).collect();
            let mut o = vec![f32::NAN; heads * d];
            for g in 0..members {
                let (sh, b) = dims.values(members);
                gemm(sh, b, &v, &p[g * tk..], &mut o[g * d..]);
            }
            (s, p, o)
        };
        assert_eq!(dims.members(true), 1);
        assert_eq!(dims.members(false), group);
        let (s1, p1, o1) = run(1);
        let (sg, _, og) = run(group);
        assert_eq!(s1, sg);
        assert_eq!(o1, og);
        for h in 0..heads {
            let kv = h / group;
            for j in 0..tk {
                let want: f32 = (0..d)
                    .map(|c| q[h * d + c] * k[(j * kvh + kv) * d + c])
                    .sum();
                assert!((s1[h * tk + j] - want).abs() <= 1e-5 * want.abs().max(1.0));
            }
            for c in 0..d {
                let want: f32 = (0..tk)
                    .map(|j| p1[h * tk + j] * v[(j * kvh + kv) * d + c])
                    .sum();
                assert!((o1[h * d + c] - want).abs() <= 1e-5 * want.abs().max(1.0));
            }
        }
        // Past ONE_GEMM_KEYS, or more than one query row: one GEMM per member.
        let long = AttnDims {
            tk: ONE_GEMM_KEYS + 1,
            ..dims
        };
        assert_eq!(long.members(true), group);
        let rows = AttnDims { t: 2, ..dims };
        assert_eq!(rows.members(true), group);
    }
}
