//! Packed-weight CUDA kernels (issue 17, decision 117; run on the GPU machine through
//! bench/gpu/packed_kernels.sh). JSON lines on stdout. Built with
//! `cargo build --release -p crunch-generate --features cuda --example gpu_packed`
//! (an example of this crate rather than a bench binary: it needs only the model and runtime).
//!
//!   gpu_packed check [--model GGUF] [--tokens 32]
//!       every kernel against the CPU packed kernel (`PackedMatrix::matmul`): random Q4_0
//!       (int4 g128 and g32), Q4_1, Q8_0, Q4_K, Q5_K and Q6_K weights of odd shapes (embedding
//!       rows bit for bit), 1–32 activation rows, f32
//!       and bf16 activations, with the default kernels (tensor cores for one row of int4
//!       g128, decision 132), with decision 139's one-row variants (`wide2`, `wide4`) and
//!       with decision 117's dp4a kernels alone; `Backend::linears` (q/k/v-like and
//!       gate/up-like groups of 1–3 matrices sharing an input) with every variant, grouped
//!       ones in one launch;
//!       max |GPU − CPU| / max |CPU| must be ≤ 1e-3. With --model
//!       (SmolLM2): every linear layer of the file the same way (and those whose rows are a
//!       multiple of 128 again as int4 g128, for the tensor-core kernels), then greedy
//!       generation of --tokens tokens on the CPU (`Host`) and on the GPU with packed weights
//!       (f32 mode), which must be identical. Exits non-zero when a check fails.
//!   gpu_packed bench [--layers 4] [--repeats 20] [--only attention]
//!       (`--only attention`: the decode-attention tables alone.)
//!       Llama-3-8B's linear shapes (q, o 4096×4096; k, v 1024×4096; gate, up 14336×4096;
//!       down 4096×14336), random int4 g128 weights (and GGUF Q4_K and Q6_K, decision 140:
//!       `q4_k`, `q6_k`), --layers distinct copies (so the
//!       weights do not sit in L2): device time per decoder layer at 1, 2, 4, 8, 16 and 32
//!       activation rows, per token (× 32 layers), achieved bandwidth (weight bytes ÷ time),
//!       the device's streaming-read bandwidth measured in the same run, for the default
//!       kernels (`int4_g128`), decision 139's one-row variants on the same weights
//!       (`int4_g128_wide2`, `_wide4`, `_wide2+grouped`, `_wide4+grouped`: 2 or 4 groups of
//!       codes per register buffer; `+grouped`: q/k/v and gate/up as one launch each, so 4
//!       launches per block at 1–16 rows (decision 144 at 2–16, after one split of each
//!       input; every `wide*` variant takes 2–16 rows with that kernel), decision 151's
//!       CUDA-core one-row kernel (`_cc`, `_cc+pdl`: grouped, with programmatic dependent
//!       launch) — the pass issues the products as the model does,
//!       through `Backend::linears`), decision 117's dp4a kernels alone (`int4_g128_dp4a`) and
//!       cuBLAS bf16 on the same shapes; at 1 and 16 rows also each product alone (its
//!       --layers copies back to back: µs and GB/s per product); markdown tables of the
//!       same on stderr. Times are device time behind a busy kernel (launch costs hidden, as
//!       a CUDA graph would); the host's enqueue time is printed beside them.
//!       Then the same through crunch-generate's `Engine` (`examples/gpu/engine.rs`): greedy
//!       generation of --tokens tokens and a batch of three decoded together, `Engine<Host>`
//!       against `Engine<Cuda>` (what `crunch generate|chat|serve --device cuda` run).
//!   gpu_packed kvfit [--budget-mib 8192] [--layers 2] [--decode 4] [--modes f16,kivi2]
//!       [--device cuda|cpu]
//!       issue 17's fixed-memory point (`examples/gpu/kvfit.rs`): the longest context of
//!       Llama-3-8B's 32-block key/value cache within the budget in each mode, allocated and
//!       filled on the backend, then decoding steps at that length.
//!   gpu_packed truncate --in GGUF --out GGUF --layers N
//!       the first N decoder blocks of a GGUF model (real weights, every other tensor kept),
//!       to carry a smaller SmolLM2 to the GPU machine. Runs anywhere.

use anyhow::{anyhow, bail, Context, Result};
use crunch_formats::DType;
use crunch_model::{Checkpoint, Model};
use crunch_runtime::kernels::Bytes;
use crunch_runtime::{Backend, Cuda, Gemv, Host, KvMode, PackedMatrix, Precision};
use half::f16;
use rayon::prelude::*;
use serde_json::json;

#[path = "gpu/bench.rs"]
mod bench;
#[path = "gpu/chain.rs"]
mod chain;
#[path = "gpu/engine.rs"]
mod engine;
#[path = "gpu/kvdev.rs"]
mod kvdev;
#[path = "gpu/kvfit.rs"]
mod kvfit;
#[path = "gpu/kvpaged.rs"]
mod kvpaged;

/// `--flag value` arguments.
struct Args(Vec<String>);

impl Args {
    fn get(&self, flag: &str) -> Option<&str> {
        let i = self.0.iter().position(|a| a == flag)?;
        self.0.get(i + 1).map(String::as_str)
    }
    fn path(&self, flag: &str) -> Result<std::path::PathBuf> {
        Ok(self
            .get(flag)
            .ok_or_else(|| anyhow!("{flag} is required"))?
            .into())
    }
    fn num(&self, flag: &str, default: usize) -> Result<usize> {
        self.get(flag).map_or(Ok(default), |v| {
            v.parse().map_err(|e| anyhow!("{flag} {v}: {e}"))
        })
    }
}

fn main() -> Result<()> {
    let args = Args(std::env::args().skip(1).collect());
    match args.0.first().map(String::as_str) {
        Some("check") => check(&args),
        Some("bench") => bench::bench(&args),
        Some("truncate") => truncate(&args),
        Some("kvfit") => kvfit::kvfit(&args),
        _ => bail!(
            "usage: gpu_packed check [--model GGUF] [--tokens 32] | bench [--layers 4] | \
             kvfit [--budget-mib 8192] [--layers 2] | truncate --in GGUF --out GGUF --layers N"
        ),
    }
}

/// xorshift64*, enough for test data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Random blocks of `dtype` (Q4_0, Q4_1 or Q8_0) with codes uniform and scales around 0.01;
/// `share` consecutive blocks of a row repeat one scale (4: crunch's int4 g128 as Q4_0).
fn random_blocks(dtype: DType, rows: usize, cols: usize, share: usize, seed: u64) -> PackedMatrix {
    let (_, bb) = dtype.block();
    let head = if dtype == DType::Q4_1 { 4 } else { 2 };
    let blocks = rows * cols / 32;
    // Rows in parallel: the 8B shapes hold 58M weights each.
    let per_row = cols / 32;
    let mut bytes = vec![0u8; blocks * bb];
    bytes
        .par_chunks_mut(per_row * bb)
        .enumerate()
        .for_each(|(r, row)| {
            let mut rng = Rng((seed ^ (r as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
            let mut scale = [0u8; 4];
            for (b, block) in row.chunks_exact_mut(bb).enumerate() {
                if b % share == 0 {
                    let d = f16::from_f32(0.005 + 0.01 * rng.unit().abs());
                    let m = f16::from_f32(-0.08 * rng.unit().abs());
                    scale[..2].copy_from_slice(&d.to_le_bytes());
                    scale[2..].copy_from_slice(&m.to_le_bytes());
                }
                block[..head].copy_from_slice(&scale[..head]);
                for chunk in block[head..].chunks_mut(8) {
                    let v = rng.next().to_le_bytes();
                    chunk.copy_from_slice(&v[..chunk.len()]);
                }
            }
        });
    PackedMatrix::new(dtype, rows, cols, Bytes::owned(bytes)).expect("sizes")
}

/// Random GGUF K-quant blocks (Q4_K, Q5_K or Q6_K: 256 weights each): codes and 6-bit (or
/// i8) sub-block scales uniform, f16 super-scales d around 1e-3 (and dmin of either sign).
fn random_kblocks(dtype: DType, rows: usize, cols: usize, seed: u64) -> PackedMatrix {
    let (per, bb) = dtype.block();
    let f16_at: &[usize] = if dtype == DType::Q6K { &[208] } else { &[0, 2] };
    let mut bytes = vec![0u8; rows * cols / per * bb];
    bytes
        .par_chunks_mut(cols / per * bb)
        .enumerate()
        .for_each(|(r, row)| {
            let mut rng = Rng((seed ^ (r as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
            for block in row.chunks_exact_mut(bb) {
                for chunk in block.chunks_mut(8) {
                    let v = rng.next().to_le_bytes();
                    chunk.copy_from_slice(&v[..chunk.len()]);
                }
                for (i, &at) in f16_at.iter().enumerate() {
                    let mag = 0.0005 + 0.001 * rng.unit().abs();
                    let v = if i == 1 {
                        mag * rng.unit().signum()
                    } else {
                        mag
                    };
                    block[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
                }
            }
        });
    PackedMatrix::new(dtype, rows, cols, Bytes::owned(bytes)).expect("sizes")
}

/// `w` (rows × cols, cols a multiple of 128) as crunch's int4 g128 symmetric codes in Q4_0
/// blocks: one f16 scale per 128 weights, repeated over its 4 blocks, codes
/// round(x / d) + 8 clamped to 0..15 with d = max |x| / 7.
fn int4_g128(w: &[f32], rows: usize, cols: usize) -> PackedMatrix {
    let mut bytes = Vec::with_capacity(rows * cols / 32 * 18);
    for g in w.chunks_exact(128) {
        let d = f16::from_f32(g.iter().fold(0f32, |m, v| m.max(v.abs())) / 7.0);
        let inv = if d.to_f32() > 0.0 {
            1.0 / d.to_f32()
        } else {
            0.0
        };
        let q = |x: f32| ((x * inv).round() + 8.0).clamp(0.0, 15.0) as u8;
        for b in g.chunks_exact(32) {
            bytes.extend_from_slice(&d.to_le_bytes());
            bytes.extend((0..16).map(|j| q(b[j]) | q(b[j + 16]) << 4));
        }
    }
    PackedMatrix::new(DType::Q4_0, rows, cols, Bytes::owned(bytes)).expect("sizes")
}

fn bf16_round(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

/// max |a − b| / max |b|.
fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    let scale = b
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    if a.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    (diff / scale) as f64
}

const TOL: f64 = 1e-3;

fn check(args: &Args) -> Result<()> {
    let f32_gpu = Cuda::new(0)?.with_packed_weights()?;
    let bf16_gpu = Cuda::with_precision(0, Precision::Bf16)?.with_packed_weights()?;
    let f32_dp4a = Cuda::new(0)?.with_dp4a_packed_weights()?;
    let bf16_dp4a = Cuda::with_precision(0, Precision::Bf16)?.with_dp4a_packed_weights()?;
    println!(
        "{}",
        json!({"check": "device", "name": f32_gpu.device_name(),
               "tensor_core_kernels": tensor_cores(&f32_gpu)})
    );
    let mut failed = 0;
    let mut report = |rec: serde_json::Value, rel: f64| {
        let ok = rel <= TOL;
        if !ok {
            failed += 1;
        }
        let mut rec = rec;
        rec["rel_diff"] = json!(rel);
        rec["pass"] = json!(ok);
        println!("{rec}");
    };
    // Random weights, odd shapes (share 0: a K-quant, random_kblocks, decision 140).
    let cases = [
        (DType::Q4_0, 4, "int4 g128 (Q4_0, shared scales)"),
        (DType::Q4_0, 1, "Q4_0"),
        (DType::Q4_1, 4, "int4 g128 asymmetric (Q4_1, shared)"),
        (DType::Q4_1, 1, "Q4_1"),
        (DType::Q8_0, 4, "int8 g128 (Q8_0, shared)"),
        (DType::Q8_0, 1, "Q8_0"),
        (DType::Q4K, 0, "Q4_K"),
        (DType::Q5K, 0, "Q5_K"),
        (DType::Q6K, 0, "Q6_K"),
    ];
    // 4224 = 33 groups of 128 (uneven warp ranges), 14336 (57 KiB of staged activations),
    // 9001 rows (two tiles per block), 128 (one group).
    let shapes = [
        (1, 32),
        (3, 160),
        (37, 4224),
        (301, 1056),
        (130, 128),
        (515, 14336),
        (9001, 384),
    ];
    // K-quants need rows of 256: 17 super-blocks (4352: a row's units not a multiple of the
    // warp's 32 lanes), 14336 (Llama-3-8B's down_proj), 9001 rows.
    let kshapes = [
        (1, 256),
        (3, 512),
        (37, 4352),
        (301, 1280),
        (130, 256),
        (515, 14336),
        (9001, 768),
    ];
    // Decision 139's one-row variants (2 and 4 groups per buffer; grouping only changes
    // `linears`, checked below) and decision 151's CUDA-core kernel (with and without PDL),
    // f32 and bf16.
    let wide: Vec<(Cuda, Cuda)> = Gemv::ALL
        .into_iter()
        .filter(|g| !matches!(g, Gemv::Reference | Gemv::Wide { grouped: true, .. }))
        .map(|g| (f32_gpu.clone().with_gemv(g), bf16_gpu.clone().with_gemv(g)))
        .collect();
    let mut seed = 1;
    for (dtype, share, label) in cases {
        for (rows, cols) in if share == 0 { kshapes } else { shapes } {
            seed += 1;
            let w = if share == 0 {
                random_kblocks(dtype, rows, cols, seed)
            } else {
                random_blocks(dtype, rows, cols, share, seed)
            };
            let mut runs = vec![
                (&f32_gpu, false, "default".to_string()),
                (&bf16_gpu, true, "default".to_string()),
                (&f32_dp4a, false, "dp4a".to_string()),
                (&bf16_dp4a, true, "dp4a".to_string()),
            ];
            for (gpu, bf16) in wide.iter().flat_map(|(f, b)| [(f, false), (b, true)]) {
                runs.push((gpu, bf16, format!("gemv_{}", gpu.gemv().name())));
            }
            for (gpu, bf16, kernels) in runs {
                let wt = gpu.upload_packed(w.clone())?;
                if !wt.is_packed() {
                    bail!("{label}: not kept packed on the GPU");
                }
                for n in [1usize, 2, 3, 4, 5, 8, 9, 17, 32] {
                    let mut rng = Rng(seed * 1000 + n as u64);
                    let mut x: Vec<f32> = (0..n * cols).map(|_| rng.unit()).collect();
                    if bf16 {
                        x.iter_mut().for_each(|v| *v = bf16_round(*v));
                    }
                    let mut want = vec![0f32; n * rows];
                    w.matmul(&x, n, &mut want);
                    let xt = gpu.upload(x, &[n, cols])?;
                    let got = gpu.to_f32(&gpu.linear(&xt, &wt, None)?)?;
                    let rec = json!({"check": "random", "weights": label, "rows": rows,
                        "cols": cols, "n": n, "activations": if bf16 {"bf16"} else {"f32"},
                        "kernels": &kernels});
                    report(rec, rel_diff(&got, &want));
                }
            }
            // Embedding lookups read the same layout.
            let wt = f32_gpu.upload_packed(w.clone())?;
            let ids: Vec<u32> = (0..rows as u32).rev().collect();
            let got = f32_gpu.to_f32(&f32_gpu.embedding(&wt, &ids)?)?;
            let all = w.dequantize();
            let want: Vec<f32> = ids
                .iter()
                .flat_map(|&i| all[i as usize * cols..(i as usize + 1) * cols].to_vec())
                .collect();
            let exact = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            report(
                json!({"check": "rows", "weights": label, "rows": rows, "cols": cols, "exact": exact}),
                if exact { 0.0 } else { rel_diff(&got, &want) },
            );
        }
    }
    // `linears` (products sharing an input) with every variant: one launch for 1–3 int4
    // g128 matrices with a grouped variant at one row, one product each otherwise; each
    // output against its own `PackedMatrix::matmul`.
    for (dtype, label) in [
        (DType::Q4_0, "int4 g128"),
        (DType::Q4_1, "int4 g128 asymmetric"),
    ] {
        for (cols, rows) in [
            (4224, vec![301, 37, 37]),
            (14336, vec![515, 130]),
            (128, vec![9001]),
            (1024, vec![33, 1, 16]),
        ] {
            seed += 1;
            let ws: Vec<PackedMatrix> = rows
                .iter()
                .enumerate()
                .map(|(i, &r)| random_blocks(dtype, r, cols, 4, seed * 10 + i as u64))
                .collect();
            for g in Gemv::ALL {
                for (base, bf16) in [(&f32_gpu, false), (&bf16_gpu, true)] {
                    let gpu = base.clone().with_gemv(g);
                    let wts: Vec<_> = ws
                        .iter()
                        .map(|w| gpu.upload_packed(w.clone()))
                        .collect::<Result<_, _>>()?;
                    let refs: Vec<_> = wts.iter().collect();
                    for n in [1usize, 3, 7, 12, 20, 32] {
                        let mut rng = Rng(seed * 1000 + n as u64);
                        let mut x: Vec<f32> = (0..n * cols).map(|_| rng.unit()).collect();
                        if bf16 {
                            x.iter_mut().for_each(|v| *v = bf16_round(*v));
                        }
                        let xt = gpu.upload(x.clone(), &[n, cols])?;
                        let ys = gpu.linears(&xt, &refs)?;
                        for (j, (w, y)) in ws.iter().zip(&ys).enumerate() {
                            let mut want = vec![0f32; n * w.rows()];
                            w.matmul(&x, n, &mut want);
                            let got = gpu.to_f32(y)?;
                            let rec = json!({"check": "linears", "weights": label,
                                "rows": rows, "cols": cols, "matrix": j, "n": n,
                                "activations": if bf16 {"bf16"} else {"f32"},
                                "kernels": format!("gemv_{}", g.name())});
                            report(rec, rel_diff(&got, &want));
                        }
                    }
                }
            }
        }
    }
    // A row's output must not depend on how many rows share the launch within one kernel
    // family: 5–32 rows of symmetric int4 g128 run `mma_i8x_g8/g16/g32` (decisions 156–157),
    // which split a tile's groups over the same 8 warps, so the first n rows of a 32-row
    // product are bit for bit the n-row product (s39: s38's 12 warps at 9–16 rows summed in
    // another f32 order and flipped a near-tie token under `serve`). 4224 = 33 groups: uneven
    // warp ranges. Any difference fails (the recorded rel_diff is then 1).
    let cc = f32_gpu.clone().with_gemv(Gemv::default());
    for (rows, cols) in [(301usize, 4224usize), (130, 14336)] {
        seed += 1;
        let w = random_blocks(DType::Q4_0, rows, cols, 4, seed);
        let wt = cc.upload_packed(w)?;
        let mut rng = Rng(seed * 1000);
        let x: Vec<f32> = (0..32 * cols).map(|_| rng.unit()).collect();
        let full = cc.to_f32(&cc.linear(&cc.upload(x.clone(), &[32, cols])?, &wt, None)?)?;
        for n in 5..32usize {
            let xt = cc.upload(x[..n * cols].to_vec(), &[n, cols])?;
            let got = cc.to_f32(&cc.linear(&xt, &wt, None)?)?;
            let want = &full[..n * rows];
            let differ = got
                .iter()
                .zip(want)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            let rec = json!({"check": "row_invariance", "weights": "int4 g128", "rows": rows,
                "cols": cols, "n": n, "against_n": 32, "values_differing": differ,
                "kernels": format!("gemv_{}", cc.gemv().name())});
            report(rec, if differ == 0 { 0.0 } else { 1.0 });
        }
    }
    chain::check_chain(&f32_gpu, &bf16_gpu, &mut report)?;
    let mut extra = kvdev::check_kv_device(&f32_gpu)?;
    extra += kvpaged::check_kv_paged(&f32_gpu)?;
    if let Some(path) = args.get("--model") {
        let tokens = args.num("--tokens", 32)?;
        extra += check_model(path, tokens, &f32_gpu, &mut report)?;
        extra += engine::check_engine(path, tokens, &f32_gpu)?;
    }
    let failed = failed + extra;
    println!("{}", json!({"check": "summary", "failed": failed}));
    if failed > 0 {
        bail!("{failed} checks failed");
    }
    Ok(())
}

/// Every linear layer of `path` on both backends, then greedy generation. Returns the number
/// of failed checks besides those `report` counts.
fn check_model(
    path: &str,
    tokens: usize,
    gpu: &Cuda,
    report: &mut impl FnMut(serde_json::Value, f64),
) -> Result<usize> {
    let ckpt = Checkpoint::open(path).with_context(|| format!("opening {path}"))?;
    let host = ckpt.load(Host, |_| {})?;
    let dev = ckpt.load(gpu.clone(), |_| {})?;
    let (mut packed, mut total) = (0, 0);
    let mut rng = Rng(7);
    for (b, (hb, db)) in host.blocks.iter().zip(&dev.blocks).enumerate() {
        for (i, (hl, dl)) in hb.linears().into_iter().zip(db.linears()).enumerate() {
            total += 1;
            packed += dl.weight.is_packed() as usize;
            let [_, cols] = Host.shape(&hl.weight)[..] else {
                bail!("weight is not 2-D");
            };
            for n in [1usize, 7] {
                let x: Vec<f32> = (0..n * cols).map(|_| rng.unit()).collect();
                let want = Host.to_f32(&Host.linear(
                    &Host.upload(x.clone(), &[n, cols])?,
                    &hl.weight,
                    hl.bias.as_ref(),
                )?)?;
                let got = gpu.to_f32(&gpu.linear(
                    &gpu.upload(x, &[n, cols])?,
                    &dl.weight,
                    dl.bias.as_ref(),
                )?)?;
                report(
                    json!({"check": "model_linear", "block": b, "linear": i, "n": n,
                           "packed": dl.weight.is_packed()}),
                    rel_diff(&got, &want),
                );
            }
            // The same real weights as int4 g128 (the file's groups of 32 do not reach the
            // tensor-core kernels): rows of a multiple of 128 only (SmolLM2's down projection).
            let Some(pm) = hl.weight.packed() else {
                continue;
            };
            if !cols.is_multiple_of(128) {
                continue;
            }
            let rows = pm.rows();
            let w = int4_g128(&pm.dequantize(), rows, cols);
            let wt = gpu.upload_packed(w.clone())?;
            for n in [1usize, 7, 16] {
                let x: Vec<f32> = (0..n * cols).map(|_| rng.unit()).collect();
                let mut want = vec![0f32; n * rows];
                w.matmul(&x, n, &mut want);
                let got = gpu.to_f32(&gpu.linear(&gpu.upload(x, &[n, cols])?, &wt, None)?)?;
                report(
                    json!({"check": "model_linear_int4_g128", "block": b, "linear": i, "n": n,
                           "rows": rows, "cols": cols}),
                    rel_diff(&got, &want),
                );
            }
        }
    }
    println!(
        "{}",
        json!({"check": "model_packed_layers", "packed": packed, "linear_layers": total,
               "lm_head_packed": dev.lm_head.is_packed()})
    );
    let tok = ckpt.tokenizer()?;
    let prompt = "The three most important inventions of the twentieth century are";
    let mut ids: Vec<u32> = ckpt.bos_token().into_iter().collect();
    ids.extend(
        tok.encode(prompt, false)
            .map_err(|e| anyhow!("{e}"))?
            .get_ids(),
    );
    let (a, la) = greedy(&host, &Host, &ids, tokens)?;
    let (b, lb) = greedy(&dev, gpu, &ids, tokens)?;
    let same = a == b;
    let first_difference = a.iter().zip(&b).position(|(x, y)| x != y);
    let logit_rel = la
        .iter()
        .zip(&lb)
        .take(first_difference.map_or(tokens, |i| i + 1))
        .map(|(x, y)| rel_diff(y, x))
        .fold(0f64, f64::max);
    println!(
        "{}",
        json!({"check": "greedy", "tokens": tokens, "identical": same,
               "first_difference": first_difference,
               "cpu_text": tok.decode(&a, false).unwrap_or_default(),
               "gpu_text": tok.decode(&b, false).unwrap_or_default(),
               "max_logit_rel_diff_while_identical": logit_rel})
    );
    Ok(usize::from(!same))
}

/// Greedy continuation of `ids` by `n` tokens through the KV cache (prefill, then one token
/// per step); the tokens and each step's logits.
fn greedy<B: Backend>(
    model: &Model<B>,
    b: &B,
    ids: &[u32],
    n: usize,
) -> Result<(Vec<u32>, Vec<Vec<f32>>)> {
    let rope = model.rope_tables(ids.len() + n + 1)?;
    let mut cache = model.kv_cache_with(ids.len() + n + 1, KvMode::F32);
    let mut out = Vec::new();
    let mut logits = Vec::new();
    let mut feed = ids.to_vec();
    for _ in 0..n {
        let h = model.hidden_states_batch(&feed, &mut [&mut cache], &rope, &mut ())?;
        let last = b.rows(&h, feed.len() - 1, 1)?;
        let l = b.to_f32(&model.logits(&last, &mut ())?)?;
        let next = l
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |m, (i, &v)| if v > m.1 { (i, v) } else { m },
            )
            .0 as u32;
        out.push(next);
        logits.push(l);
        feed = vec![next];
    }
    Ok((out, logits))
}

/// "in use", or why the default kernels fell back to dp4a (printed, so a fallback is seen).
fn tensor_cores(gpu: &Cuda) -> String {
    match gpu.packed_mma_unavailable() {
        None => "in use".into(),
        Some(why) => {
            eprintln!("warning: tensor-core kernels not used: {why}");
            format!("not used: {why}")
        }
    }
}

/// The first `--layers` decoder blocks of a GGUF file, written to `--out`.
fn truncate(args: &Args) -> Result<()> {
    use crunch_formats::gguf::{self, GgufFile, GgufValue};
    use crunch_formats::TensorSource;
    let (src, dst) = (args.path("--in")?, args.path("--out")?);
    let keep = args.num("--layers", 8)?;
    let f = GgufFile::open(&src)?;
    let arch = f
        .architecture()
        .ok_or_else(|| anyhow!("{}: no general.architecture", src.display()))?
        .to_string();
    let count_key = format!("{arch}.block_count");
    let meta: Vec<(&str, GgufValue)> = f
        .metadata()
        .iter()
        .map(|(k, v)| match k == &count_key {
            true => (k.as_str(), GgufValue::U32(keep as u32)),
            false => (k.as_str(), v.clone()),
        })
        .collect();
    let infos: Vec<_> = f
        .tensors()
        .into_iter()
        .filter(|t| {
            t.name
                .strip_prefix("blk.")
                .and_then(|r| r.split('.').next())
                .and_then(|i| i.parse::<usize>().ok())
                .is_none_or(|i| i < keep)
        })
        .collect();
    let mut specs = Vec::new();
    for t in &infos {
        specs.push((t.name.as_str(), &t.shape[..], t.dtype, f.raw(&t.name)?));
    }
    let bytes = gguf::serialize(&meta, &specs).map_err(|e| anyhow!("{e}"))?;
    let tmp = dst.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, &dst)?;
    println!(
        "{}",
        json!({"truncate": src, "out": dst, "layers": keep, "tensors": infos.len()})
    );
    Ok(())
}
