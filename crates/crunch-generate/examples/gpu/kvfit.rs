//! `gpu_packed kvfit`: issue 17's fixed-memory point — at a given key/value budget, how long
//! a context Llama-3-8B's cache holds in each `--kv-cache` mode, measured on the backend.
//!
//! For each mode: the longest context N within the budget for the **full 32-block** cache
//! (`KvGeometry::LLAMA3_8B`: 8 key/value heads of 128 per block); 32 stores of N positions
//! allocated through the backend (`Backend::kv_alloc`), the `--layers` first of them filled to
//! N positions with random keys and values (compressed stores hold their whole capacity from
//! allocation; an f32 store on the GPU grows as it is appended to, so the others get N zero
//! rows in one append); the bytes every store holds (`Runtime::kv_store_bytes`) and the
//! device memory in use before and after; then `--decode` decoding steps at that length
//! through `--layers` decoder blocks of the 8B shape (random int4 g128 weights, packed on the
//! backend: q/k/v/o, gate/up/down, RMS norms, RoPE, append and attention over the filled
//! store). The step time of those blocks is measured; the 32-block figure is that times
//! 32 / `--layers` (no embedding or LM head).
//!
//! Where the cache lives: on the CUDA backend every mode is device memory (decision 138: f32
//! rows, or the compressed modes' codes, f16 scales/minima, KIVI's tail and sink, attended by
//! `kvdev.cu`), so `device_bytes_added` is the cache's GPU footprint; `kv_memory` says where
//! each line's cache is (`host` only for heads the device kernel does not take, and on
//! `--device cpu`).

use super::{random_blocks, Args};
use anyhow::{anyhow, Result};
use crunch_formats::DType;
use crunch_generate::memory::KvGeometry;
use crunch_generate::Runtime;
use crunch_runtime::{AttentionMask, KvMode, KvSpec};
use serde_json::json;
use std::time::Instant;

/// Llama-3-8B's decoder block: hidden 4096, 32 query heads, FFN 14336, RoPE θ 500000.
const HIDDEN: usize = 4096;
const HEADS: usize = 32;
const FFN: usize = 14336;
const THETA: f64 = 500_000.0;
/// Positions appended per call while filling.
const FILL_CHUNK: usize = 1024;

pub fn kvfit(args: &Args) -> Result<()> {
    let budget = (args.num("--budget-mib", 8192)? as u64) << 20;
    let layers = args
        .num("--layers", 2)?
        .clamp(1, KvGeometry::LLAMA3_8B.layers);
    let steps = args.num("--decode", 4)?.max(1);
    let modes = args.get("--modes").unwrap_or("f16,kivi2");
    let modes: Vec<KvMode> = modes
        .split(',')
        .map(KvMode::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("--modes: {e}"))?;
    let fit = Fit {
        budget,
        layers,
        steps,
    };
    match args.get("--device").unwrap_or("cuda") {
        "cpu" => fit.run(crunch_runtime::Host, &modes),
        "cuda" => fit.run(crunch_runtime::Cuda::new(0)?.with_packed_weights()?, &modes),
        d => Err(anyhow!("--device {d}: cpu or cuda")),
    }
}

struct Fit {
    budget: u64,
    layers: usize,
    steps: usize,
}

/// One decoder block's weights on the backend.
struct Block<T> {
    norms: [T; 2],
    /// q, k, v, o, gate, up, down.
    w: Vec<T>,
}

impl Fit {
    fn run<B: Runtime>(&self, b: B, modes: &[KvMode]) -> Result<()> {
        let g = KvGeometry::LLAMA3_8B;
        let blocks = (0..self.layers)
            .map(|l| block(&b, l as u64))
            .collect::<Result<Vec<_>>>()?;
        let mut f16_tokens = None;
        for &mode in modes {
            let mut tokens = g.max_context(mode, self.budget) as usize;
            let (per, fixed) = g.bytes(mode);
            let before = b.device_memory();
            let t0 = Instant::now();
            let freqs = inverse_frequencies(g.head_dim);
            let spec = KvSpec {
                capacity: tokens,
                kv_heads: g.kv_heads,
                head_dim: g.head_dim,
                mode,
                inv_freq: mode.needs_rope().then_some(&freqs[..]),
            };
            // A store may hold more than the arithmetic's fixed bytes (the device store's f16
            // tail grows to the largest chunk appended, decision 138): if the filled stores
            // exceed the budget, N shrinks by the excess and they are made again, so every
            // line's N is one whose stores were measured within the budget.
            let (mut stores, mut filled);
            let mut attempts = 0;
            loop {
                let spec = KvSpec {
                    capacity: tokens,
                    ..spec
                };
                stores = (0..g.layers)
                    .map(|_| b.kv_alloc(spec))
                    .collect::<Result<Vec<_>, _>>()?;
                // The attended stores are filled to `steps` short of N: decoding takes them to N.
                filled = tokens.saturating_sub(self.steps);
                for (l, store) in stores.iter_mut().enumerate() {
                    let real = l < self.layers;
                    self.fill(&b, store, if real { filled } else { tokens }, real)?;
                }
                let held: usize = stores.iter().map(B::kv_store_bytes).sum();
                attempts += 1;
                if held as u64 <= self.budget || attempts == 3 {
                    break;
                }
                let excess = (held as u64 - self.budget) as f64;
                tokens -= (excess / per).ceil() as usize + self.steps;
                drop(stores);
            }
            let fill_s = t0.elapsed().as_secs_f64();
            let (step_s, finite) = self.decode(&b, &blocks, &mut stores, filled)?;
            let held: usize = stores.iter().map(B::kv_store_bytes).sum();
            let after = b.device_memory();
            let per_32 = step_s * g.layers as f64 / self.layers as f64;
            if mode == KvMode::F16 {
                f16_tokens = Some(tokens);
            }
            println!(
                "{}",
                json!({"bench": "kv_fixed_memory", "device": b.describe(), "model": "llama3-8b",
                       "mode": mode.to_string(), "budget_bytes": self.budget, "tokens": tokens,
                       "bytes_per_token": per, "fixed_bytes": fixed,
                       "held_bytes": held, "held_bytes_per_token": held as f64 / tokens.max(1) as f64,
                       "within_budget": held as u64 <= self.budget,
                       "next_token_exceeds": per * (tokens + 1) as f64 + fixed as f64 > self.budget as f64,
                       "kv_memory": b.kv_memory(mode, g.head_dim),
                       "device_bytes_in_use_before": before.map(|m| m.0),
                       "device_bytes_in_use_after": after.map(|m| m.0),
                       "device_bytes_added": before.zip(after).map(|(a, z)| z.0 as i64 - a.0 as i64),
                       "device_bytes_total": after.map(|m| m.1),
                       "peak_rss_bytes": crunch_generate::memory::peak_rss_bytes(),
                       "fill_seconds": fill_s, "layers_timed": self.layers,
                       "decode_steps": self.steps, "step_ms_timed_layers": step_s * 1e3,
                       "step_ms_32_layers_estimate": per_32 * 1e3,
                       "tokens_per_s_32_layers_estimate": 1.0 / per_32,
                       "output_finite": finite, "fit_attempts": attempts,
                       "tokens_vs_f16": f16_tokens.map(|f| tokens as f64 / f.max(1) as f64)})
            );
        }
        Ok(())
    }

    /// Appends `tokens` positions: random keys and values when the store is attended
    /// (`real`), else what makes it hold its size (nothing for a store allocated at its
    /// capacity; zero rows for one that grows).
    fn fill<B: Runtime>(
        &self,
        b: &B,
        store: &mut B::KvStore,
        tokens: usize,
        real: bool,
    ) -> Result<()> {
        let g = KvGeometry::LLAMA3_8B;
        let width = g.kv_heads * g.head_dim;
        let grows = B::kv_store_bytes(store) == 0;
        if !real && !grows {
            return Ok(());
        }
        let chunk = if real { FILL_CHUNK } else { tokens };
        let mut rng = super::Rng(0x5eed);
        let data: Vec<f32> = (0..chunk * width)
            .map(|_| if real { rng.unit() } else { 0.0 })
            .collect();
        let mut done = 0;
        while done < tokens {
            let n = chunk.min(tokens - done);
            let shape = [n, g.kv_heads, g.head_dim];
            let k = b.upload(data[..n * width].to_vec(), &shape)?;
            let v = b.upload(data[..n * width].iter().map(|x| -x).collect(), &shape)?;
            b.kv_append(store, &k, &v)?;
            done += n;
        }
        Ok(())
    }

    /// `steps` decoding steps through the attended blocks from position `start` (the stores'
    /// length); the best step time in seconds and whether the output stayed finite.
    fn decode<B: Runtime>(
        &self,
        b: &B,
        blocks: &[Block<B::Tensor>],
        stores: &mut [B::KvStore],
        start: usize,
    ) -> Result<(f64, bool)> {
        let g = KvGeometry::LLAMA3_8B;
        let d = g.head_dim;
        let freqs = inverse_frequencies(d);
        let mut rng = super::Rng(42);
        let mut best = f64::INFINITY;
        let mut finite = true;
        for step in 0..self.steps {
            let pos = start + step;
            let cos: Vec<f32> = freqs
                .iter()
                .map(|f| (pos as f64 * f).cos() as f32)
                .collect();
            let sin: Vec<f32> = freqs
                .iter()
                .map(|f| (pos as f64 * f).sin() as f32)
                .collect();
            let (cos, sin) = (b.upload(cos, &[1, d / 2])?, b.upload(sin, &[1, d / 2])?);
            let x: Vec<f32> = (0..HIDDEN).map(|_| rng.unit()).collect();
            let t = Instant::now();
            let mut x = b.upload(x, &[1, HIDDEN])?;
            for (blk, store) in blocks.iter().zip(stores.iter_mut()) {
                let h = b.rms_norm(&x, &blk.norms[0], 1e-5)?;
                let q = b.reshape(&b.linear(&h, &blk.w[0], None)?, &[1, HEADS, d])?;
                let k = b.reshape(&b.linear(&h, &blk.w[1], None)?, &[1, g.kv_heads, d])?;
                let v = b.reshape(&b.linear(&h, &blk.w[2], None)?, &[1, g.kv_heads, d])?;
                let (q, k) = (b.rope(&q, &cos, &sin)?, b.rope(&k, &cos, &sin)?);
                let mask = AttentionMask {
                    window: None,
                    query_offset: b.kv_len(store),
                };
                b.kv_append(store, &k, &v)?;
                let a = b.kv_attention(&q, store, mask, (d as f32).powf(-0.5))?;
                x = b.add(&x, &b.linear(&a, &blk.w[3], None)?)?;
                let h = b.rms_norm(&x, &blk.norms[1], 1e-5)?;
                let m = b.silu_mul(
                    &b.linear(&h, &blk.w[4], None)?,
                    &b.linear(&h, &blk.w[5], None)?,
                )?;
                x = b.add(&x, &b.linear(&m, &blk.w[6], None)?)?;
            }
            let out = b.to_f32(&x)?; // waits for the device
            best = best.min(t.elapsed().as_secs_f64());
            finite &= out.iter().all(|v| v.is_finite());
        }
        Ok((best, finite))
    }
}

/// RoPE's inverse frequencies θ^(−2i/d), i < d/2.
fn inverse_frequencies(d: usize) -> Vec<f64> {
    (0..d / 2)
        .map(|i| THETA.powf(-((2 * i) as f64) / d as f64))
        .collect()
}

/// One decoder block of the 8B shape: random int4 g128 weights (`random_blocks`, Q4_0 blocks
/// sharing a scale per 128) handed to the backend packed, norms of ones.
fn block<B: Runtime>(b: &B, seed: u64) -> Result<Block<B::Tensor>> {
    let kv = KvGeometry::LLAMA3_8B.kv_heads * KvGeometry::LLAMA3_8B.head_dim;
    let shapes = [
        (HIDDEN, HIDDEN),
        (kv, HIDDEN),
        (kv, HIDDEN),
        (HIDDEN, HIDDEN),
        (FFN, HIDDEN),
        (FFN, HIDDEN),
        (HIDDEN, FFN),
    ];
    let w = shapes
        .iter()
        .enumerate()
        .map(|(i, &(rows, cols))| {
            b.upload_packed(random_blocks(
                DType::Q4_0,
                rows,
                cols,
                4,
                seed * 16 + i as u64,
            ))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ones = || b.upload(vec![1.0; HIDDEN], &[HIDDEN]);
    Ok(Block {
        norms: [ones()?, ones()?],
        w,
    })
}
