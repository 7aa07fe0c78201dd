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

    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: AttentionMask,
        scale: f32,
    ) -> Result<Tensor> {
        let (tokens, heads, d) = q.dims3()?;
        let kv_heads = k.dim(1)?;
        let group = heads / kv_heads;
        // [heads, tokens, d] and [kv_heads, tokens, d]: per-head contiguous rows.
        let q = q.transpose(0, 1)?.contiguous()?;
        let k = k.transpose(0, 1)?.contiguous()?;
        let v = v.transpose(0, 1)?.contiguous()?;
        let mut blocks = Vec::with_capacity(tokens.div_ceil(QUERY_BLOCK));
        for start in (0..tokens).step_by(QUERY_BLOCK) {
            let len = QUERY_BLOCK.min(tokens - start);
            let end = start + len;
            // Keys this block can see: [first, end).
            let first = mask.window.map_or(0, |w| (start + 1).saturating_sub(w));
            let keys = end - first;
            // Query heads sharing a kv head are stacked so one matmul serves the group.
            let qb = q
                .narrow(1, start, len)?
                .contiguous()?
                .reshape((kv_heads, group * len, d))?;
            let kb = k.narrow(1, first, keys)?.contiguous()?;
            let vb = v.narrow(1, first, keys)?.contiguous()?;
            let scores = (qb.matmul(&kb.t()?)? * scale as f64)?;
            let bias = mask_block(start, len, first, keys, mask.window)?;
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
}

/// Additive mask `[len, keys]` for queries `start..start+len` against keys `first..first+keys`.
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

    /// Direct attention, one query at a time, for comparison.
    #[allow(clippy::too_many_arguments)]
    fn naive_attention(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        t: usize,
        h: usize,
        kvh: usize,
        d: usize,
        window: Option<usize>,
    ) -> Vec<f32> {
        let scale = 1.0 / (d as f32).sqrt();
        let mut out = vec![0f32; t * h * d];
        for head in 0..h {
            let kv = head / (h / kvh);
            for i in 0..t {
                let lo = window.map_or(0, |w| (i + 1).saturating_sub(w));
                let scores: Vec<f32> = (lo..=i)
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
                for (n, j) in (lo..=i).enumerate() {
                    for x in 0..d {
                        out[(i * h + head) * d + x] += e[n] / z * v[(j * kvh + kv) * d + x];
                    }
                }
            }
        }
        out
    }

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let x = (i as u32)
                    .wrapping_mul(2654435761)
                    .wrapping_add(seed.wrapping_mul(40503));
                ((x >> 8) as f32 / (1u32 << 24) as f32) - 0.5
            })
            .collect()
    }

    #[test]
    fn blocked_attention_matches_direct() {
        let (t, h, kvh, d) = (600, 4, 2, 8); // > QUERY_BLOCK, uneven last block
        for window in [None, Some(5), Some(300)] {
            let q = pseudo_random(t * h * d, 1);
            let k = pseudo_random(t * kvh * d, 2);
            let v = pseudo_random(t * kvh * d, 3);
            let cpu = Cpu;
            let got = cpu
                .attention(
                    &cpu.upload(q.clone(), &[t, h, d]).unwrap(),
                    &cpu.upload(k.clone(), &[t, kvh, d]).unwrap(),
                    &cpu.upload(v.clone(), &[t, kvh, d]).unwrap(),
                    AttentionMask { window },
                    1.0 / (d as f32).sqrt(),
                )
                .unwrap();
            let got = cpu.to_f32(&got).unwrap();
            let want = naive_attention(&q, &k, &v, t, h, kvh, d, window);
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 1e-5, "window {window:?}: max error {err}");
        }
    }
}
