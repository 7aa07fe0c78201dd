//! `gpu_packed bench`: Llama-3-8B's linear layers (random int4 g128, GGUF Q4_K/Q6_K, dp4a and
//! cuBLAS bf16 on the same shapes) at 1–32 activation rows, per token as the runtime launches
//! them, against the streaming-read bandwidth measured in the same run (see gpu_packed.rs's
//! usage for the output).

use super::{random_blocks, random_kblocks, tensor_cores, Args, Rng};
use anyhow::{anyhow, Result};
use crunch_formats::DType;
use crunch_runtime::{Backend, Cuda, Epilogue, Gemv, KvMode, Precision, Prologue};
use serde_json::json;

/// Llama-3-8B's linear layers: (name, rows, cols, which input they read).
const SHAPES: [(&str, usize, usize, usize); 7] = [
    ("q", 4096, 4096, 0),
    ("k", 1024, 4096, 0),
    ("v", 1024, 4096, 0),
    ("o", 4096, 4096, 1),
    ("gate", 14336, 4096, 2),
    ("up", 14336, 4096, 2),
    ("down", 4096, 14336, 3),
];
const MODEL_LAYERS: usize = 32;

pub(crate) fn bench(args: &Args) -> Result<()> {
    let layers = args.num("--layers", 4)?;
    let repeats = args.num("--repeats", 20)?;
    let int4 = Cuda::new(0)?.with_packed_weights()?;
    if args.get("--only") == Some("attention") {
        // The decode-attention tables alone (seconds, not the minutes of the products).
        let name = int4.device_name().to_string();
        let mut table = attention_bench(&name, &int4, repeats)?;
        table.extend(compressed_attention_bench(&name, &int4, repeats)?);
        eprintln!("{}", table.join("\n"));
        return Ok(());
    }
    let dp4a = Cuda::new(0)?.with_dp4a_packed_weights()?;
    let bf16 = Cuda::with_precision(0, Precision::Bf16)?.with_packed_weights()?;
    let name = int4.device_name().to_string();
    let hbm = int4.read_bandwidth(4 << 30, 10)?;
    println!(
        "{}",
        json!({"bench": "hbm_read", "device": name, "bytes": 4u64 << 30, "gb_per_s": hbm / 1e9,
               "tensor_core_kernels": tensor_cores(&int4),
               "gemv_from_environment": int4.gemv().name()})
    );
    // One host matrix per shape, uploaded `layers` times (distinct device buffers).
    let mut w_int4 = Vec::new();
    let mut w_dp4a = Vec::new();
    let mut w_bf16 = Vec::new();
    // GGUF Q4_K and Q6_K (decision 140): every product of the layer in that type, as a
    // Q4_K_S / Q6_K file holds them (a Q4_K_M file mixes the two).
    let mut w_q4k = Vec::new();
    let mut w_q6k = Vec::new();
    let (mut bytes_int4, mut bytes_q4k, mut bytes_q6k) = (0usize, 0usize, 0usize);
    for (i, &(_, rows, cols, _)) in SHAPES.iter().enumerate() {
        let w = random_blocks(DType::Q4_0, rows, cols, 4, 100 + i as u64);
        let dense: Vec<f32> = w.dequantize();
        let wq4k = random_kblocks(DType::Q4K, rows, cols, 200 + i as u64);
        let wq6k = random_kblocks(DType::Q6K, rows, cols, 300 + i as u64);
        let mut a = Vec::new();
        let mut d = Vec::new();
        let mut b = Vec::new();
        let mut q4 = Vec::new();
        let mut q6 = Vec::new();
        for _ in 0..layers {
            let t = int4.upload_packed(w.clone())?;
            bytes_int4 += t.packed_bytes().ok_or_else(|| anyhow!("not packed"))?;
            a.push(t);
            d.push(dp4a.upload_packed(w.clone())?);
            b.push(bf16.upload_weight(dense.clone(), &[rows, cols])?);
            let t = int4.upload_packed(wq4k.clone())?;
            bytes_q4k += t.packed_bytes().ok_or_else(|| anyhow!("Q4_K not packed"))?;
            q4.push(t);
            let t = int4.upload_packed(wq6k.clone())?;
            bytes_q6k += t.packed_bytes().ok_or_else(|| anyhow!("Q6_K not packed"))?;
            q6.push(t);
        }
        w_int4.push(a);
        w_dp4a.push(d);
        w_bf16.push(b);
        w_q4k.push(q4);
        w_q6k.push(q6);
    }
    let per_layer_int4 = bytes_int4 / layers;
    let (per_layer_q4k, per_layer_q6k) = (bytes_q4k / layers, bytes_q6k / layers);
    let per_layer_bf16: usize = SHAPES.iter().map(|s| 2 * s.1 * s.2).sum();
    // The int4 g128 kernels: every one-row variant of decision 139 on the same backend (same
    // stream, same uploaded weights), then decision 117's dp4a kernels and cuBLAS bf16.
    let mut kinds: Vec<(String, &Cuda, _, usize)> = Vec::new();
    let variants: Vec<Cuda> = Gemv::ALL
        .iter()
        .map(|&g| int4.clone().with_gemv(g))
        .collect();
    for gpu in &variants {
        let kind = match gpu.gemv() {
            Gemv::Reference => "int4_g128".to_string(),
            g => format!("int4_g128_{}", g.name()),
        };
        kinds.push((kind, gpu, &w_int4, per_layer_int4));
    }
    kinds.push(("int4_g128_dp4a".into(), &dp4a, &w_dp4a, per_layer_int4));
    kinds.push(("bf16_cublas".into(), &bf16, &w_bf16, per_layer_bf16));
    let bf16_at = kinds.len() - 1;
    kinds.push(("q4_k".into(), &int4, &w_q4k, per_layer_q4k));
    kinds.push(("q6_k".into(), &int4, &w_q6k, per_layer_q6k));
    let mut base = vec![0f64; kinds.len()];
    let mut table = vec![
        format!(
            "streaming-read bandwidth {:.0} GB/s ({name}); int4_g128 tensor-core kernels: {}",
            hbm / 1e9,
            tensor_cores(&int4)
        ),
        String::new(),
        "Per token = 32 blocks of what the runtime launches for one block: q/k/v and gate/up \
         through `Backend::linears` (one launch each with a `+grouped` variant at 1–16 rows: 4 \
         launches per block, and the `cc` variants' at 17–32 rows too; otherwise 7; at 2–32 \
         rows each launch also splits its input first)."
            .into(),
        String::new(),
        "| batch | kernels | launches / block | ms / token | tokens/s | GB/s | % of measured | vs batch 1 | vs bf16 tokens/s |".into(),
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|".into(),
    ];
    let mut shape_md = vec![
        String::new(),
        format!(
            "Each product alone (grouped products as launched), {layers} copies back to back \
             (k and v, 2 MB each, may sit in L2):"
        ),
        String::new(),
        "| batch | kernels | product | µs | GB/s | % of measured |".into(),
        "|---:|---|---|---:|---:|---:|".into(),
    ];
    for n in [1usize, 2, 4, 8, 16, 32] {
        let mut row_tok = vec![0f64; kinds.len()];
        let mut rows_md = Vec::new();
        for (k, (kind, gpu, weights, per_layer)) in kinds.iter().enumerate() {
            let (gpu, weights, per_layer) = (*gpu, *weights, *per_layer);
            // Four inputs per layer, as a decoder block has (q/k/v, o, gate/up, down), new ones
            // for every layer: products sharing an input quantize it once (dp4a).
            let mut rng = Rng(n as u64);
            let inputs: Vec<Vec<_>> = (0..layers)
                .map(|_| {
                    [4096, 4096, 4096, 14336]
                        .iter()
                        .map(|&c| {
                            let x: Vec<f32> = (0..n * c).map(|_| rng.unit()).collect();
                            gpu.upload(x, &[n, c])
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .collect::<Result<_, _>>()?;
            // The block's products as crunch-model's forward pass issues them: q/k/v and
            // gate/up through `linears` (`Linear::forward_all`), o and down alone.
            let products: [(&str, &[usize]); 4] = [
                ("q+k+v", &[0, 1, 2]),
                ("o", &[3]),
                ("gate+up", &[4, 5]),
                ("down", &[6]),
            ];
            // Only the int4 g128 tensor-core variants group products (dp4a, cuBLAS and the
            // K-quant kernels run one launch per matrix whatever the backend's variant).
            let tensor_core = kind.starts_with("int4_g128") && kind != "int4_g128_dp4a";
            // The `cc` variants' int8 kernels also group at 17–32 rows (decision 155).
            let cc = matches!(gpu.gemv(), Gemv::Cc { .. });
            let launches = if tensor_core && gpu.gemv().grouped() && (n <= 16 || cc && n <= 32) {
                4
            } else {
                7
            };
            let pass = || -> crunch_runtime::Result<()> {
                for l in 0..layers {
                    for (_, ids) in &products {
                        let ws: Vec<_> = ids.iter().map(|&s| &weights[s][l]).collect();
                        gpu.linears(&inputs[l][SHAPES[ids[0]].3], &ws)?;
                    }
                }
                Ok(())
            };
            let (best, host) = best_time(gpu, repeats, pass)?;
            // Each product alone (its `layers` copies back to back): which fall short. With
            // a grouped variant at one row, the grouped products as launched.
            if n == 1 || n == 16 {
                let grouped = gpu.gemv().grouped() && n == 1;
                let singles: Vec<(String, Vec<usize>)> = SHAPES
                    .iter()
                    .enumerate()
                    .map(|(s, sh)| (sh.0.to_string(), vec![s]))
                    .collect();
                let list: Vec<(String, Vec<usize>)> = if grouped {
                    products
                        .iter()
                        .map(|(p, ids)| (p.to_string(), ids.to_vec()))
                        .collect()
                } else {
                    singles
                };
                for (product, ids) in list {
                    let one = || -> crunch_runtime::Result<()> {
                        for l in 0..layers {
                            let ws: Vec<_> = ids.iter().map(|&s| &weights[s][l]).collect();
                            gpu.linears(&inputs[l][SHAPES[ids[0]].3], &ws)?;
                        }
                        Ok(())
                    };
                    let t = best_time(gpu, repeats, one)?.0 / layers as f64;
                    let bytes: usize = ids
                        .iter()
                        .map(|&s| {
                            let (_, rows, cols, _) = SHAPES[s];
                            weights[s][0].packed_bytes().unwrap_or(2 * rows * cols)
                        })
                        .sum();
                    let (rows, cols): (usize, usize) =
                        (ids.iter().map(|&s| SHAPES[s].1).sum(), SHAPES[ids[0]].2);
                    let bw = bytes as f64 / t;
                    shape_md.push(format!(
                        "| {n} | {kind} | {product} {rows}×{cols} | {:.2} | {:.0} | {:.0}% |",
                        t * 1e6,
                        bw / 1e9,
                        100.0 * bw / hbm
                    ));
                    println!(
                        "{}",
                        json!({"bench": "packed_8b_shape", "device": name, "weights": kind,
                               "n": n, "shape": product, "rows": rows, "cols": cols,
                               "us_per_product": t * 1e6, "weight_bytes": bytes,
                               "gb_per_s": bw / 1e9, "vs_hbm": bw / hbm,
                               "copies": layers, "repeats": repeats})
                    );
                }
            }
            let layer_s = best / layers as f64;
            let token_s = layer_s * MODEL_LAYERS as f64;
            let tok_per_s = n as f64 / token_s;
            if n == 1 {
                base[k] = tok_per_s;
            }
            row_tok[k] = tok_per_s;
            let bw = per_layer as f64 / layer_s;
            rows_md.push((kind, launches, token_s, tok_per_s, bw, tok_per_s / base[k]));
            println!(
                "{}",
                json!({"bench": "packed_8b_linears", "device": name, "weights": kind, "n": n,
                       "launches_per_layer": launches,
                       "layer_ms": layer_s * 1e3, "token_ms": token_s * 1e3,
                       "tokens_per_s": tok_per_s, "vs_batch1": tok_per_s / base[k],
                       "weight_bytes_per_layer": per_layer,
                       "gb_per_s": bw / 1e9, "vs_hbm": bw / hbm,
                       "host_enqueue_ms_per_pass": host * 1e3,
                       "layers_timed": layers, "repeats": repeats})
            );
        }
        for (kind, launches, token_s, tok, bw, vs1) in rows_md {
            table.push(format!(
                "| {n} | {kind} | {launches} | {:.3} | {tok:.0} | {:.0} | {:.0}% | {vs1:.2}× | {:.2}× |",
                token_s * 1e3,
                bw / 1e9,
                100.0 * bw / hbm,
                tok / row_tok[bf16_at]
            ));
        }
    }
    table.extend(shape_md);
    // Blocks with their producers (decision 159): the `cc` variants with and without the
    // producers writing the int8 planes, and cuBLAS bf16 for scale.
    // `cc+pdl` also with the short kernels launched without PDL (decision 160's comparison).
    let products_only = int4
        .clone()
        .with_gemv(Gemv::default())
        .with_pdl_between(false);
    let mut block_kinds: Vec<(String, &Cuda, _)> = variants
        .iter()
        .filter(|g| matches!(g.gemv(), Gemv::Cc { .. }))
        .map(|g| (format!("int4_g128_{}", g.gemv().name()), g, &w_int4))
        .collect();
    if matches!(products_only.gemv(), Gemv::Cc { pdl: true }) {
        let kind = format!("int4_g128_{}_products_only", products_only.gemv().name());
        block_kinds.push((kind, &products_only, &w_int4));
    }
    block_kinds.push(("bf16_cublas".into(), &bf16, &w_bf16));
    table.extend(block_bench(&name, layers, repeats, &block_kinds)?);
    table.extend(attention_bench(&name, &int4, repeats)?);
    table.extend(compressed_attention_bench(&name, &int4, repeats)?);
    eprintln!("{}", table.join("\n"));
    Ok(())
}

/// One decoder block's launches besides attention, per layer: rms_norm → q/k/v, o (on a
/// prepared input), add, rms_norm → gate/up → silu_mul → down, add; with the producers told
/// which products read them (`rms_norm_for`, `silu_mul_for`: under `cc` at 2–32 rows they
/// write the int8 planes and the products skip their split, at one row they stage x for
/// `cc_u4_fed`, decision 159) and without.
/// Returns the table's lines.
fn block_bench(
    name: &str,
    layers: usize,
    repeats: usize,
    kinds: &[(String, &Cuda, &Vec<Vec<crunch_runtime::CudaTensor>>)],
) -> Result<Vec<String>> {
    let mut md = vec![
        String::new(),
        "A block with its producers (rms_norm, silu_mul, adds; no attention), µs per block:".into(),
        String::new(),
        "| batch | kernels | split per product | producers write planes | ratio | fused (decision 161) | vs producers |".into(),
        "|---:|---|---:|---:|---:|---:|---:|".into(),
    ];
    for n in [1usize, 2, 4, 8, 16, 32] {
        for (kind, gpu, weights) in kinds {
            let gpu = *gpu;
            let mut rng = Rng(1000 + n as u64);
            let mut up = |c: usize| {
                let x: Vec<f32> = (0..n * c).map(|_| rng.unit()).collect();
                gpu.upload(x, &[n, c])
            };
            let inputs: Vec<[_; 2]> = (0..layers)
                .map(|_| Ok([up(4096)?, up(4096)?]))
                .collect::<crunch_runtime::Result<_>>()?;
            let norm_w = gpu.upload(vec![1.0f32; 4096], &[4096])?;
            let w = |s: usize, l: usize| &weights[s][l];
            let (inputs, norm_w) = (&inputs, &norm_w);
            // 0: each step on its own; 1: the producers told their readers (decision 159);
            // 2: through `linears_fused` (decision 161: at one row under `cc`, rms_norm → q/k/v,
            // o → add, rms_norm → gate/up → silu_mul and down → add are one launch each).
            let pass = |mode: u8| {
                move || -> crunch_runtime::Result<()> {
                    let feed = mode == 1;
                    for (l, [x, a]) in inputs.iter().enumerate() {
                        let qkv = [w(0, l), w(1, l), w(2, l)];
                        let gu = [w(4, l), w(5, l)];
                        if mode == 2 {
                            let rms = || Prologue::RmsNorm {
                                weight: norm_w,
                                eps: 1e-5,
                            };
                            gpu.linears_fused(x, &qkv, rms(), Epilogue::None)?;
                            let o = [w(3, l)];
                            let x2 = gpu
                                .linears_fused(a, &o, Prologue::None, Epilogue::Add(x))?
                                .remove(0);
                            let down = [w(6, l)];
                            let silu = Epilogue::SiluMul { next: &down };
                            let m = gpu.linears_fused(&x2, &gu, rms(), silu)?.remove(0);
                            gpu.linears_fused(&m, &down, Prologue::None, Epilogue::Add(&x2))?;
                            continue;
                        }
                        let h = if feed {
                            gpu.rms_norm_for(x, norm_w, 1e-5, &qkv)?
                        } else {
                            gpu.rms_norm(x, norm_w, 1e-5)?
                        };
                        gpu.linears(&h, &qkv)?;
                        let o = gpu.linear(a, w(3, l), None)?;
                        let x2 = gpu.add(x, &o)?;
                        let h2 = if feed {
                            gpu.rms_norm_for(&x2, norm_w, 1e-5, &gu)?
                        } else {
                            gpu.rms_norm(&x2, norm_w, 1e-5)?
                        };
                        let y = gpu.linears(&h2, &gu)?;
                        let m = if feed {
                            gpu.silu_mul_for(&y[0], &y[1], &[w(6, l)])?
                        } else {
                            gpu.silu_mul(&y[0], &y[1])?
                        };
                        let d = gpu.linear(&m, w(6, l), None)?;
                        gpu.add(&x2, &d)?;
                    }
                    Ok(())
                }
            };
            let split = best_time(gpu, repeats, pass(0))?.0 / layers as f64;
            let fed = best_time(gpu, repeats, pass(1))?.0 / layers as f64;
            let before = gpu.fused_launches();
            let fused = best_time(gpu, repeats, pass(2))?.0 / layers as f64;
            // Whether the fused pass did fuse (one row under `cc`): launches per pass.
            let fused_launches = (gpu.fused_launches() - before) / (repeats as u64 + 1);
            println!(
                "{}",
                json!({"bench": "packed_8b_block", "device": name, "weights": kind, "n": n,
                       "us_per_block_split": split * 1e6, "us_per_block_fed": fed * 1e6,
                       "us_per_block_fused": fused * 1e6, "fused_launches_per_pass": fused_launches,
                       "fed_vs_split": fed / split, "fused_vs_fed": fused / fed,
                       "layers_timed": layers, "repeats": repeats})
            );
            md.push(format!(
                "| {n} | {kind} | {:.2} | {:.2} | {:.3} | {:.2} | {:.3} |",
                split * 1e6,
                fed * 1e6,
                fed / split,
                fused * 1e6,
                fused / fed
            ));
        }
    }
    Ok(md)
}

/// One decode step's attention of a Llama-3-8B-shaped block (32 query heads, 8 key/value
/// heads of 128, one query at the last position) over an f32 cache of 512–8,192 positions:
/// one GEMM per side (decision 162) against one per group member (4 per side), device and
/// host time per call. Returns the table's lines.
fn attention_bench(name: &str, gpu: &Cuda, repeats: usize) -> Result<Vec<String>> {
    let mut md = vec![
        String::new(),
        "Decode attention, one block (32 heads, 8 kv heads of 128, f32 cache), µs per call:"
            .into(),
        String::new(),
        "| positions | one GEMM per side: device | host | one per member: device | host | device ratio | host ratio |"
            .into(),
        "|---:|---:|---:|---:|---:|---:|---:|".into(),
    ];
    let per_member = gpu.clone().with_attention_per_member(true);
    let one = gpu.clone().with_attention_per_member(false);
    for ctx in [512usize, 2048, 8192] {
        let Some([(kd, kh), (cd, ch)]) =
            decode_attention(gpu, [&one, &per_member], KvMode::F32, ctx, 77, repeats)?
        else {
            continue;
        };
        println!(
            "{}",
            json!({"bench": "decode_attention_f32", "device": name, "positions": ctx,
                   "heads": ATTN.1, "kv_heads": ATTN.0, "head_dim": ATTN.2,
                   "one_gemm_us": kd, "one_gemm_host_us": kh,
                   "per_member_us": cd, "per_member_host_us": ch, "repeats": repeats})
        );
        md.push(format!(
            "| {ctx} | {kd:.2} | {kh:.2} | {cd:.2} | {ch:.2} | {:.2} | {:.2} |",
            cd / kd,
            ch / kh
        ));
    }
    Ok(md)
}

/// One decode step's attention of a Llama-3-8B-shaped block over compressed caches on the
/// device (`kv_attend`, decision 138) of 512–8,192 positions: the positions split into blocks of
/// at least one chunk of 32 (the default, decision 163) against at least 8 (decision 138's),
/// device and host time per call.
/// Returns the table's lines.
fn compressed_attention_bench(name: &str, gpu: &Cuda, repeats: usize) -> Result<Vec<String>> {
    let mut md = vec![
        String::new(),
        "Decode attention over compressed caches on the device (`kv_attend`), one block, µs per call:"
            .into(),
        String::new(),
        "| cache | positions | splits ≥ 1 chunk: device | host | ≥ 8 chunks: device | host | device ratio |"
            .into(),
        "|---|---:|---:|---:|---:|---:|---:|".into(),
    ];
    let fine = gpu.clone().with_kv_split_chunks(1);
    let coarse = gpu.clone().with_kv_split_chunks(8);
    for mode in ["q8", "kivi2"] {
        let kv_mode = KvMode::parse(mode).map_err(anyhow::Error::msg)?;
        for ctx in [512usize, 2048, 8192] {
            let Some([(fd, fh), (cd, ch)]) =
                decode_attention(gpu, [&fine, &coarse], kv_mode, ctx, 91, repeats)?
            else {
                continue;
            };
            println!(
                "{}",
                json!({"bench": "decode_attention_compressed", "device": name, "kv_cache": mode,
                       "positions": ctx, "heads": ATTN.1, "kv_heads": ATTN.0, "head_dim": ATTN.2,
                       "split_1_us": fd, "split_1_host_us": fh,
                       "split_8_us": cd, "split_8_host_us": ch, "repeats": repeats})
            );
            md.push(format!(
                "| {mode} | {ctx} | {fd:.2} | {fh:.2} | {cd:.2} | {ch:.2} | {:.2} |",
                cd / fd
            ));
        }
    }
    Ok(md)
}

/// (kv heads, query heads, head size) of the decode-attention tables: Llama-3-8B's.
const ATTN: (usize, usize, usize) = (8, 32, 128);

/// A cache in `mode` of `ctx` random positions (seeded by `seed + ctx`), made on `gpu`, and one
/// query at its last position: the µs of device and host time per attention call on each of
/// `backends` (clones of `gpu` with other options), best of `repeats` runs of 8 calls. `None`
/// when the cache is not held on the device.
fn decode_attention(
    gpu: &Cuda,
    backends: [&Cuda; 2],
    mode: KvMode,
    ctx: usize,
    seed: u64,
    repeats: usize,
) -> Result<Option<[(f64, f64); 2]>> {
    let (kvh, heads, d) = ATTN;
    let mut rng = Rng(seed + ctx as u64);
    let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.unit()).collect() };
    let freqs: Vec<f64> = (0..d / 2)
        .map(|i| 500_000f64.powf(-((2 * i) as f64) / d as f64))
        .collect();
    let spec = crunch_runtime::KvSpec {
        capacity: ctx,
        kv_heads: kvh,
        head_dim: d,
        mode,
        inv_freq: Some(&freqs),
    };
    let mut kv = gpu.kv_alloc(spec)?;
    let shape = [ctx, kvh, d];
    gpu.kv_append(
        &mut kv,
        &gpu.upload(draw(ctx * kvh * d), &shape)?,
        &gpu.upload(draw(ctx * kvh * d), &shape)?,
    )?;
    if !kv.on_device() {
        return Ok(None);
    }
    let q = gpu.upload(draw(heads * d), &[1, heads, d])?;
    let mask = crunch_runtime::AttentionMask {
        window: None,
        query_offset: ctx - 1,
    };
    let scale = (d as f32).powf(-0.5);
    let mut out = [(0.0, 0.0); 2];
    for (o, b) in out.iter_mut().zip(backends) {
        let (dev, host) = best_time(b, repeats, || {
            for _ in 0..8 {
                b.kv_attention(&q, &kv, mask, scale)?;
            }
            Ok(())
        })?;
        *o = (dev * 1e6 / 8.0, host * 1e6 / 8.0);
    }
    Ok(Some(out))
}

/// The best of `repeats` device times of `enqueue` after one warm-up (and the first
/// NVRTC/cuBLAS calls), with the host's enqueue time of that run.
fn best_time(
    gpu: &Cuda,
    repeats: usize,
    enqueue: impl Fn() -> crunch_runtime::Result<()>,
) -> Result<(f64, f64)> {
    enqueue()?;
    let mut best = (f64::INFINITY, 0f64);
    for _ in 0..repeats.max(1) {
        let (t, h) = gpu.device_seconds(&enqueue)?;
        if t < best.0 {
            best = (t, h);
        }
    }
    Ok(best)
}
