//! CPU backend on candle tensors. Matrix products go through candle's gemm (multi-threaded by
//! rayon, `RAYON_NUM_THREADS`); the rest uses candle-nn's fused CPU kernels.

use crate::{AttentionMask, Backend, Result};
use candle_core::{DType, Device, Tensor};

/// Queries are processed in blocks of this many rows so that causal attention skips the keys
/// a block cannot see (about half the work) and the score matrix stays small.
const QUERY_BLOCK: usize = 256;

#[derive(Clone, Debug, Default)]
pub struct Cpu;

impl Backend for Cpu {
    type Tensor = Tensor;
    type Codes = crate::NoCodes;
    crate::kv::backend_kv_methods!(Tensor);

    fn upload(&self, data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
    }

    fn to_f32(&self, t: &Tensor) -> Result<Vec<f32>> {
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
    }

    fn shape(&self, t: &Tensor) -> Vec<usize> {
        t.dims().to_vec()
    }

    fn reshape(&self, t: &Tensor, shape: &[usize]) -> Result<Tensor> {
        Ok(t.reshape(shape)?)
    }

    fn rows(&self, t: &Tensor, start: usize, len: usize) -> Result<Tensor> {
        Ok(t.narrow(0, start, len)?)
    }

    fn embedding(&self, table: &Tensor, ids: &[u32]) -> Result<Tensor> {
        let ids = Tensor::from_slice(ids, ids.len(), &Device::Cpu)?;
        Ok(table.index_select(&ids, 0)?)
    }

    fn linear(&self, x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let y = x.matmul(&weight.t()?)?;
        Ok(match bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        Ok((a + b)?)
    }

    fn rms_norm(&self, x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(&x.contiguous()?, weight, eps)?)
    }

    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let x4 = x.contiguous()?.unsqueeze(0)?;
        Ok(candle_nn::rotary_emb::rope_thd(&x4, cos, sin)?.squeeze(0)?)
    }

    fn concat_rows(&self, parts: &[&Tensor]) -> Result<Tensor> {
        if parts.is_empty() {
            return Err(crate::Error(
                "concat_rows: no tensors to concatenate".into(),
            ));
        }
        Ok(Tensor::cat(parts, 0)?)
    }

    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: AttentionMask,
        scale: f32,
    ) -> Result<Tensor> {
        let (tokens, heads, d) = q.dims3()?;
        let (k_len, kv_heads, _) = k.dims3()?;
        let offset = mask.query_offset;
        if offset + tokens > k_len {
            return Err(crate::Error(format!(
                "attention: queries at positions {offset}..{} need keys up to there, \
                 but there are {k_len}",
                offset + tokens
            )));
        }
        let group = heads / kv_heads;
        // [heads, tokens, d] and [kv_heads, k_len, d]: per-head contiguous rows.
        let q = q.transpose(0, 1)?.contiguous()?;
        let k = k.transpose(0, 1)?.contiguous()?;
        let v = v.transpose(0, 1)?.contiguous()?;
        let mut blocks = Vec::with_capacity(tokens.div_ceil(QUERY_BLOCK));
        for start in (0..tokens).step_by(QUERY_BLOCK) {
            let len = QUERY_BLOCK.min(tokens - start);
            // Absolute positions of this block's queries: [pos, pos + len).
            let pos = offset + start;
            // Keys this block can see: [first, pos + len).
            let first = mask.window.map_or(0, |w| (pos + 1).saturating_sub(w));
            let keys = pos + len - first;
            // Query heads sharing a kv head are stacked so one matmul serves the group.
            let qb = q
                .narrow(1, start, len)?
                .contiguous()?
                .reshape((kv_heads, group * len, d))?;
            let kb = k.narrow(1, first, keys)?.contiguous()?;
            let vb = v.narrow(1, first, keys)?.contiguous()?;
            let scores = (qb.matmul(&kb.t()?)? * scale as f64)?;
            let bias = mask_block(pos, len, first, keys, mask.window)?;
            let scores = scores
                .reshape((kv_heads, group, len, keys))?
                .broadcast_add(&bias)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let out = probs
                .reshape((kv_heads, group * len, keys))?
                .matmul(&vb)?
                .reshape((heads, len, d))?;
            blocks.push(out);
        }
        let out = Tensor::cat(&blocks, 1)?; // [heads, tokens, d]
        Ok(out
            .transpose(0, 1)?
            .contiguous()?
            .reshape((tokens, heads * d))?)
    }

    fn silu_mul(&self, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        Ok((candle_nn::ops::silu(gate)? * up)?)
    }

    fn gelu_mul(&self, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        // candle's `gelu` is PyTorch's tanh approximation (`gelu_erf` is the exact one).
        Ok((gate.gelu()? * up)?)
    }

    fn scale_rows(&self, x: &Tensor, factors: &[f32]) -> Result<Tensor> {
        let rows = x.dims().first().copied().unwrap_or(0);
        if rows != factors.len() {
            return Err(crate::Error(format!(
                "scale_rows: {} factors for a tensor of shape {:?}",
                factors.len(),
                x.dims()
            )));
        }
        let mut shape = vec![1; x.rank()];
        shape[0] = rows;
        let f = Tensor::from_slice(factors, shape, &Device::Cpu)?;
        Ok(x.broadcast_mul(&f)?)
    }

    fn columns(&self, x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
        let (_, cols) = x.dims2()?;
        if start + len > cols || len == 0 {
            return Err(crate::Error(format!(
                "columns: {start}..{} of {cols} columns",
                start + len
            )));
        }
        Ok(x.narrow(1, start, len)?.contiguous()?)
    }
}

/// Additive mask `[len, keys]` for queries at absolute positions `start..start+len` against
/// keys `first..first+keys`.
fn mask_block(
    start: usize,
    len: usize,
    first: usize,
    keys: usize,
    window: Option<usize>,
) -> Result<Tensor> {
    let mut m = vec![0f32; len * keys];
    for r in 0..len {
        let i = start + r;
        for c in 0..keys {
            let j = first + c;
            let visible = j <= i && window.is_none_or(|w| i - j < w);
            if !visible {
                m[r * keys + c] = f32::NEG_INFINITY;
            }
        }
    }
    Ok(Tensor::from_vec(m, (len, keys), &Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Epilogue, Prologue};

    /// `linears_fused`'s default (decision 161) is the steps it names, value for value; an
    /// epilogue given the wrong number of weights is an error, not a panic.
    #[test]
    fn linears_fused_composes_the_steps() {
        let b = Cpu;
        let up = |v: Vec<f32>, s: &[usize]| b.upload(v, s).unwrap();
        let seq = |n: usize, k: f32| (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) * k).collect();
        let x = up(seq(2 * 8, 0.3), &[2, 8]);
        let nw = up(
            seq(8, 0.1).into_iter().map(|v: f32| v + 1.0).collect(),
            &[8],
        );
        let (g, u, d) = (
            up(seq(48, 0.2), &[6, 8]),
            up(seq(48, -0.1), &[6, 8]),
            up(seq(48, 0.05), &[8, 6]),
        );
        let res = up(seq(16, 0.7), &[2, 8]);
        let f = |t: &Tensor| b.to_f32(t).unwrap();
        let rms = || Prologue::RmsNorm {
            weight: &nw,
            eps: 1e-5,
        };
        let h = b.rms_norm(&x, &nw, 1e-5).unwrap();
        // Norm, then two products.
        let got = b
            .linears_fused(&x, &[&g, &u], rms(), Epilogue::None)
            .unwrap();
        assert_eq!(f(&got[0]), f(&b.linear(&h, &g, None).unwrap()));
        assert_eq!(f(&got[1]), f(&b.linear(&h, &u, None).unwrap()));
        // Norm, gate/up, silu_mul.
        let m = b.silu_mul(
            &b.linear(&h, &g, None).unwrap(),
            &b.linear(&h, &u, None).unwrap(),
        );
        let silu = Epilogue::SiluMul { next: &[&d] };
        let got = b.linears_fused(&x, &[&g, &u], rms(), silu).unwrap();
        assert_eq!((got.len(), f(&got[0])), (1, f(&m.unwrap())));
        // One product, + residual.
        let m = up(seq(12, 0.4), &[2, 6]);
        let got = b
            .linears_fused(&m, &[&d], Prologue::None, Epilogue::Add(&res))
            .unwrap();
        let want = b.add(&res, &b.linear(&m, &d, None).unwrap()).unwrap();
        assert_eq!(f(&got[0]), f(&want));
        // Wrong counts.
        assert!(b
            .linears_fused(&x, &[&g], Prologue::None, Epilogue::SiluMul { next: &[] })
            .is_err());
        assert!(b
            .linears_fused(&x, &[&g, &u], Prologue::None, Epilogue::Add(&res))
            .is_err());
        assert!(b
            .linears_fused(&x, &[], Prologue::None, Epilogue::None)
            .is_err());
    }

    /// Direct attention, one query at a time, for comparison. Queries sit at positions
    /// `offset..offset+t`, keys at `0..k_len`.
    #[allow(clippy::too_many_arguments)]
    fn naive_attention(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        t: usize,
        k_len: usize,
        h: usize,
        kvh: usize,
        d: usize,
        window: Option<usize>,
        offset: usize,
    ) -> Vec<f32> {
        assert!(offset + t <= k_len);
        let scale = 1.0 / (d as f32).sqrt();
        let mut out = vec![0f32; t * h * d];
        for head in 0..h {
            let kv = head / (h / kvh);
            for i in 0..t {
                let p = offset + i;
                let lo = window.map_or(0, |w| (p + 1).saturating_sub(w));
                let scores: Vec<f32> = (lo..=p)
                    .map(|j| {
                        (0..d)
                            .map(|x| q[(i * h + head) * d + x] * k[(j * kvh + kv) * d + x])
                            .sum::<f32>()
                            * scale
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f32 = e.iter().sum();
                for (n, j) in (lo..=p).enumerate() {
                    for x in 0..d {
                        out[(i * h + head) * d + x] += e[n] / z * v[(j * kvh + kv) * d + x];
                    }
                }
            }
        }
        out
    }

    /// `n` values uniform in [-0.5, 0.5), the same for the same seed.
    fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crunch_rng::SplitMix64(seed);
        (0..n).map(|_| 0.5 * rng.uniform()).collect()
    }

    /// Blocked attention against the direct formula for queries `t` rows starting at `offset`.
    fn check(t: usize, k_len: usize, offset: usize, window: Option<usize>) {
        let (h, kvh, d) = (4, 2, 8);
        let q = pseudo_random(t * h * d, 1);
        let k = pseudo_random(k_len * kvh * d, 2);
        let v = pseudo_random(k_len * kvh * d, 3);
        let cpu = Cpu;
        let got = cpu
            .attention(
                &cpu.upload(q.clone(), &[t, h, d]).unwrap(),
                &cpu.upload(k.clone(), &[k_len, kvh, d]).unwrap(),
                &cpu.upload(v.clone(), &[k_len, kvh, d]).unwrap(),
                AttentionMask {
                    window,
                    query_offset: offset,
                },
                1.0 / (d as f32).sqrt(),
            )
            .unwrap();
        let got = cpu.to_f32(&got).unwrap();
        let want = naive_attention(&q, &k, &v, t, k_len, h, kvh, d, window, offset);
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            err < 1e-5,
            "t {t} k_len {k_len} offset {offset} window {window:?}: max error {err}"
        );
    }

    #[test]
    fn blocked_attention_matches_direct() {
        for window in [None, Some(5), Some(300)] {
            check(600, 600, 0, window); // > QUERY_BLOCK, uneven last block
        }
    }

    #[test]
    fn offset_queries_match_direct() {
        for window in [None, Some(1), Some(5), Some(300)] {
            check(1, 40, 39, window); // one decoding step against a cache
            check(7, 40, 33, window); // a chunk of new tokens
            check(300, 620, 320, window); // several query blocks, offset
            check(3, 40, 10, window); // keys past the last query are masked
        }
    }

    #[test]
    fn offset_past_the_keys_is_an_error() {
        let cpu = Cpu;
        let q = cpu.upload(vec![0.0; 2 * 8], &[2, 1, 8]).unwrap();
        let k = cpu.upload(vec![0.0; 4 * 8], &[4, 1, 8]).unwrap();
        let mask = AttentionMask {
            window: None,
            query_offset: 3,
        };
        let err = cpu.attention(&q, &k, &k, mask, 1.0).unwrap_err();
        assert!(err.to_string().contains("attention"), "{err}");
    }

    /// The CPU's own `gelu_mul`, `scale_rows` and `columns` against the trait's defaults
    /// (host arithmetic and a row gather), which every other backend starts from.
    #[test]
    fn new_ops_match_their_defaults() {
        struct Plain;
        impl Backend for Plain {
            type Tensor = Tensor;
            type Codes = crate::NoCodes;
            crate::kv::backend_kv_methods!(Tensor);
            fn upload(&self, d: Vec<f32>, s: &[usize]) -> Result<Tensor> {
                Cpu.upload(d, s)
            }
            fn to_f32(&self, t: &Tensor) -> Result<Vec<f32>> {
                Cpu.to_f32(t)
            }
            fn shape(&self, t: &Tensor) -> Vec<usize> {
                Cpu.shape(t)
            }
            fn reshape(&self, t: &Tensor, s: &[usize]) -> Result<Tensor> {
                Cpu.reshape(t, s)
            }
            fn rows(&self, t: &Tensor, a: usize, n: usize) -> Result<Tensor> {
                Cpu.rows(t, a, n)
            }
            fn concat_rows(&self, p: &[&Tensor]) -> Result<Tensor> {
                Cpu.concat_rows(p)
            }
            fn embedding(&self, t: &Tensor, ids: &[u32]) -> Result<Tensor> {
                Cpu.embedding(t, ids)
            }
            fn linear(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
                Cpu.linear(x, w, b)
            }
            fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
                Cpu.add(a, b)
            }
            fn rms_norm(&self, x: &Tensor, w: &Tensor, e: f32) -> Result<Tensor> {
                Cpu.rms_norm(x, w, e)
            }
            fn rope(&self, x: &Tensor, c: &Tensor, s: &Tensor) -> Result<Tensor> {
                Cpu.rope(x, c, s)
            }
            fn attention(
                &self,
                q: &Tensor,
                k: &Tensor,
                v: &Tensor,
                m: AttentionMask,
                s: f32,
            ) -> Result<Tensor> {
                Cpu.attention(q, k, v, m, s)
            }
            fn silu_mul(&self, g: &Tensor, u: &Tensor) -> Result<Tensor> {
                Cpu.silu_mul(g, u)
            }
        }
        let x = pseudo_random(6 * 12, 4)
            .iter()
            .map(|v| v * 8.0)
            .collect::<Vec<_>>();
        let y = pseudo_random(6 * 12, 5);
        let (tx, ty) = (
            Cpu.upload(x.clone(), &[6, 12]).unwrap(),
            Cpu.upload(y, &[6, 12]).unwrap(),
        );
        let close = |a: Vec<f32>, b: Vec<f32>| {
            assert_eq!(a.len(), b.len());
            for (a, b) in a.iter().zip(&b) {
                assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
            }
        };
        let run = |t: Tensor| Cpu.to_f32(&t).unwrap();
        close(
            run(Cpu.gelu_mul(&tx, &ty).unwrap()),
            run(Plain.gelu_mul(&tx, &ty).unwrap()),
        );
        let f: Vec<f32> = (0..6).map(|i| i as f32 - 2.5).collect();
        close(
            run(Cpu.scale_rows(&tx, &f).unwrap()),
            run(Plain.scale_rows(&tx, &f).unwrap()),
        );
        for (start, len) in [(0, 12), (0, 4), (4, 4), (8, 4), (3, 6), (11, 1)] {
            let got = run(Plain.columns(&tx, start, len).unwrap());
            let want: Vec<f32> = x
                .chunks(12)
                .flat_map(|r| r[start..start + len].to_vec())
                .collect();
            assert_eq!(got, want, "{start}..+{len}");
            assert_eq!(run(Cpu.columns(&tx, start, len).unwrap()), want);
        }
        assert!(Plain.columns(&tx, 10, 4).is_err());
        assert!(Cpu.scale_rows(&tx, &[1.0]).is_err());
        // The tanh approximation, at a few points against values PyTorch prints.
        for (v, want) in [(1.0f32, 0.841_192), (-2.0, -0.045_402_3), (0.5, 0.345_714)] {
            assert!((crate::gelu_tanh(v) - want).abs() < 1e-5, "{v}");
        }
    }

    #[test]
    fn concat_rows_joins_the_token_axis() {
        let cpu = Cpu;
        let a = cpu.upload(vec![1.0, 2.0, 3.0, 4.0], &[1, 2, 2]).unwrap();
        let b = cpu
            .upload((5..13).map(|x| x as f32).collect(), &[2, 2, 2])
            .unwrap();
        let c = cpu.concat_rows(&[&a, &b]).unwrap();
        assert_eq!(cpu.shape(&c), vec![3, 2, 2]);
        assert_eq!(
            cpu.to_f32(&c).unwrap(),
            (1..13).map(|x| x as f32).collect::<Vec<_>>()
        );
        assert!(cpu.concat_rows(&[]).is_err());
    }
}
