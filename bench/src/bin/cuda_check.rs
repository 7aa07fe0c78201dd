//! Correctness of the CUDA backend on the GPU machine (`--features cuda`; see docs/cuda.md).
//!
//! 1. Every tiny reference model (crunch_model::testing): CUDA logits against CPU logits and
//!    against the transformers fixture, relative error (max |Δ| / max |ref|) < 1e-4.
//! 2. Attention alone, long sequences with GQA and sliding windows: CUDA against CPU.
//! 3. GPTQ through the sequential calibration on each tiny model, on CPU and on CUDA with the same
//!    windows, per channel, groups with and without act-order: the fraction of identical codes
//!    (equal "up to ties": Hessians and updates summed in a different order may round a weight
//!    sitting on a grid midpoint the other way), which must exceed 99%.
//! 4. SparseGPT (50%, 2:4, 2:4 with 4-bit g32) on CPU and CUDA: identical mask bits (> 99%)
//!    and the largest relative weight difference.
//! 5. Plain SVD, whitened SVD and EoRA with the GPU's dense linear algebra against the host's:
//!    the factors' product (< 1e-5 relative) and the spectrum (< 1e-9 of σ₁).
//! 6. bf16 mode against the CPU in f32 (tolerance 5e-2), and scoring logits on the device
//!    against the host's scoring.
//! 7. `write_weight` (the budget search's in-place swap, decision 129), f32 and bf16: a weight
//!    written over holds exactly what `upload_weight` of the same values holds; a shared one is
//!    refused.
//! 8. `device_variants` (the budget search's variants kept on the GPU as codes, decision 137),
//!    f32 and bf16: codes of every width 2–8 (groups of 128, 32 with a short last group, one
//!    per row) expanded on the device (`Backend::dequantize_codes`) hold exactly the bits
//!    `upload_weight` of `QuantizedWeight::dequantize` holds; a shared weight, a weight of
//!    another shape and codes with a NaN scale are refused; and the time of one expansion of
//!    Llama-3-8B's MLP shape (14336 × 4096, 4-bit g128).
//!
//! Prints one JSON object; exits non-zero if a check fails. Run from the repository root.

use crunch_calib::{compress_model, windows, RecipeFile};
use crunch_compress::{
    eora, truncated_svd, whitened_svd, CudaDense, DenseLinAlg, EoraOptions, Hessian, Host, LowRank,
    WhitenOptions,
};
use crunch_eval::score_rows;
use crunch_model::testing::{reference_ids, relative_error, tiny_specs, write_tiny_model};
use crunch_model::Checkpoint;
use crunch_repr::Compressed;
use crunch_runtime::{AttentionMask, Backend, Cpu, Cuda, Precision};
use serde_json::{json, Value};

const TOLERANCE: f32 = 1e-4;
const BF16_TOLERANCE: f32 = 5e-2;

fn pseudo(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = crunch_model::testing::SplitMix64(seed);
    (0..n).map(|_| rng.uniform() * 2.0 - 1.0).collect()
}

fn main() -> anyhow::Result<()> {
    let gpu = Cuda::new(0)?;
    let gpu_bf16 = Cuda::with_precision(0, Precision::Bf16)?;
    let mut ok = true;
    let mut models = Vec::new();
    for spec in tiny_specs() {
        let dir = tempfile::tempdir()?;
        write_tiny_model(&spec, dir.path(), 0)?;
        let fixture: Value = serde_json::from_str(&std::fs::read_to_string(format!(
            "tests/fixtures/reference/{}.json",
            spec.name
        ))?)?;
        let ids: Vec<u32> = serde_json::from_value(fixture["input_ids"].clone()).unwrap();
        let want: Vec<f32> = serde_json::from_value(fixture["logits"].clone()).unwrap();
        let ckpt = Checkpoint::open(dir.path())?;
        let cpu_model = ckpt.load(Cpu, |_| {})?;
        let gpu_model = ckpt.load(gpu.clone(), |_| {})?;
        let cpu_logits = Cpu.to_f32(&cpu_model.forward(&ids)?)?;
        let gpu_logits = gpu.to_f32(&gpu_model.forward(&ids)?)?;
        let vs_cpu = relative_error(&gpu_logits, &cpu_logits);
        let vs_hf = relative_error(&gpu_logits, &want);
        ok &= vs_cpu < TOLERANCE && vs_hf < TOLERANCE;

        // bf16 mode: weights and matrix-product inputs rounded to bf16 (reported; the
        // tolerance is bf16's, 2^-8 relative per operand, compounded over the layers).
        let bf16_model = ckpt.load(gpu_bf16.clone(), |_| {})?;
        let bf16_logits = gpu_bf16.to_f32(&bf16_model.forward(&ids)?)?;
        let bf16_vs_cpu = relative_error(&bf16_logits, &cpu_logits);
        ok &= bf16_vs_cpu < BF16_TOLERANCE;

        // Scoring on the device against the host's scoring of the same logits.
        let rows = ids.len() - 1;
        let vocab = ckpt.config.vocab;
        let targets = &ids[1..];
        let base: Vec<f32> = cpu_logits[..rows * vocab].iter().map(|v| v * 0.9).collect();
        let host = score_rows(&cpu_logits[..rows * vocab], Some(&base), targets, vocab);
        let dev_rows = gpu
            .score_rows(
                &gpu.upload(cpu_logits[..rows * vocab].to_vec(), &[rows, vocab])?,
                Some(&gpu.upload(base, &[rows, vocab])?),
                targets,
            )?
            .expect("the GPU scores rows");
        let dev_nll: f64 = dev_rows.iter().map(|r| r[0]).sum();
        let dev_kl: f64 = dev_rows.iter().map(|r| r[2]).sum();
        let dev_correct = dev_rows.iter().filter(|r| r[1] == 1.0).count();
        let dev_agree = dev_rows.iter().filter(|r| r[3] == 1.0).count();
        let score_err = ((dev_nll - host.nll).abs() / host.nll.abs())
            .max((dev_kl - host.kl).abs() / host.kl.abs().max(1e-12));
        ok &= score_err < 1e-9 && dev_correct == host.top1_correct && dev_agree == host.top1_agree;

        // GPTQ on both backends from the same windows (on the GPU, the GPU implementation).
        let text = reference_ids(ckpt.config.vocab, 4096);
        let wins = windows(&text, 16, 64, 0)?;
        let mut gptq = Vec::new();
        for (bits, group, act_order) in
            [(4, Some(32), true), (4, Some(32), false), (3, None, false)]
        {
            let plan = RecipeFile::parse(&format!(
                "[[stage]]\nmethod = \"gptq\"\nbits = {bits}\ngroup_size = {}\n\
                 act_order = {act_order}\n",
                group.unwrap_or(0)
            ))?;
            let qc = compress_model(&Cpu, &ckpt, &plan, Some(&wins), &mut ())?;
            let qg = compress_model(&gpu, &ckpt, &plan, Some(&wins), &mut ())?;
            let (mut same, mut total, mut off_by_more) = (0usize, 0usize, 0usize);
            for (name, a) in &qc {
                let (Some(a), Some(b)) = (a.main.quantized(), qg[name].main.quantized()) else {
                    anyhow::bail!("{name}: GPTQ did not quantize");
                };
                for (x, y) in a.codes.iter().zip(&b.codes) {
                    same += (x == y) as usize;
                    off_by_more += (x.abs_diff(*y) > 1) as usize;
                }
                total += a.codes.len();
            }
            let agree = same as f64 / total as f64;
            ok &= agree > 0.99;
            gptq.push(json!({
                "bits": bits, "group_size": group, "act_order": act_order,
                "codes_equal": agree, "codes": total, "codes_off_by_more_than_one": off_by_more,
            }));
        }
        // SparseGPT on both backends (on the GPU, the GPU implementation): masks and weights.
        let mut sgpt = Vec::new();
        for (sparsity, quant) in [
            ("0.5", ""),
            ("2:4", ""),
            ("2:4", "bits = 4\ngroup_size = 32\n"),
        ] {
            let plan = RecipeFile::parse(&format!(
                "[[stage]]\nmethod = \"sparsegpt\"\nsparsity = \"{sparsity}\"\n{quant}"
            ))?;
            let lc = compress_model(&Cpu, &ckpt, &plan, Some(&wins), &mut ())?;
            let lg = compress_model(&gpu, &ckpt, &plan, Some(&wins), &mut ())?;
            let (mut same, mut total, mut max_err) = (0usize, 0usize, 0f32);
            for (name, a) in &lc {
                let (Compressed::Pruned(a), Compressed::Pruned(b)) = (&a.main, &lg[name].main)
                else {
                    anyhow::bail!("{name}: SparseGPT did not prune");
                };
                let (ma, mb) = (a.mask.to_bools(), b.mask.to_bools());
                same += ma.iter().zip(&mb).filter(|(x, y)| x == y).count();
                total += ma.len();
                max_err = max_err.max(relative_error(&b.weight, &a.weight));
            }
            let agree = same as f64 / total as f64;
            ok &= agree > 0.99;
            sgpt.push(json!({
                "sparsity": sparsity, "quant_bits": (!quant.is_empty()).then_some(4),
                "mask_equal": agree, "weights": total, "weight_rel_err": max_err,
            }));
        }
        models.push(json!({
            "model": spec.name,
            "sparsegpt_cpu_vs_gpu": sgpt,
            "logits_rel_err_vs_cpu": vs_cpu,
            "logits_rel_err_vs_transformers": vs_hf,
            "bf16_logits_rel_err_vs_cpu_f32": bf16_vs_cpu,
            "device_scoring_rel_err": score_err,
            "gptq_cpu_vs_gpu": gptq,
        }));
    }

    let mut attention = Vec::new();
    for (t, h, kvh, d, window) in [
        (600, 8, 2, 64, None),
        (600, 8, 2, 64, Some(100)),
        (2048, 4, 4, 128, None),
        (37, 6, 1, 32, Some(5)),
    ] {
        let q = pseudo(t * h * d, 1);
        let k = pseudo(t * kvh * d, 2);
        let v = pseudo(t * kvh * d, 3);
        let mask = AttentionMask::causal(window);
        let scale = 1.0 / (d as f32).sqrt();
        let cpu = Cpu.to_f32(&Cpu.attention(
            &Cpu.upload(q.clone(), &[t, h, d])?,
            &Cpu.upload(k.clone(), &[t, kvh, d])?,
            &Cpu.upload(v.clone(), &[t, kvh, d])?,
            mask,
            scale,
        )?)?;
        let g = gpu.to_f32(&gpu.attention(
            &gpu.upload(q, &[t, h, d])?,
            &gpu.upload(k, &[t, kvh, d])?,
            &gpu.upload(v, &[t, kvh, d])?,
            mask,
            scale,
        )?)?;
        let e = relative_error(&g, &cpu);
        ok &= e < TOLERANCE;
        attention.push(
            json!({"tokens": t, "heads": h, "kv_heads": kvh, "head_dim": d,
            "window": window, "rel_err_vs_cpu": e}),
        );
    }
    // Low-rank decompositions: GPU (cuSOLVER/cuBLAS) against the host (faer), tall and wide.
    let dense = CudaDense::new(&gpu)?;
    let mut lowrank = Vec::new();
    for (rows, cols, rank) in [(96, 64, 16), (48, 160, 20)] {
        let w = pseudo(rows * cols, 7);
        let mut h = Hessian::new(cols);
        h.add_batch(&pseudo(4 * cols * cols, 8)[..]);
        let approx = w.iter().map(|v| v * 0.9).collect::<Vec<_>>();
        let (whiten, eora_opts) = (WhitenOptions::default(), EoraOptions::default());
        // Each decomposition on the host and on the GPU.
        let both = |f: &dyn Fn(&dyn DenseLinAlg) -> crunch_compress::Result<LowRank>| {
            Ok::<_, crunch_compress::CompressError>((f(&Host)?, f(&dense)?))
        };
        let (svd_host, svd_dev) = both(&|la| truncated_svd(la, &w, rows, cols, rank))?;
        let (white_host, white_dev) =
            both(&|la| whitened_svd(la, &w, rows, cols, &h, rank, &whiten))?;
        let (eora_host, eora_dev) =
            both(&|la| eora(la, &w, &approx, rows, cols, &h, rank, &eora_opts))?;
        let pairs = [
            ("svd", svd_host, svd_dev),
            ("whitened-svd", white_host, white_dev),
            ("eora", eora_host, eora_dev),
        ];
        for (name, host, dev) in pairs {
            let product = relative_error(&dev.factored.dense(), &host.factored.dense());
            let spectrum = host
                .spectrum
                .iter()
                .zip(&dev.spectrum)
                .map(|(a, b)| (a - b).abs() / host.spectrum[0])
                .fold(0f64, f64::max);
            ok &= product < 1e-5 && spectrum < 1e-9;
            lowrank.push(
                json!({"method": name, "rows": rows, "cols": cols, "rank": rank,
                "product_rel_err": product, "spectrum_rel_err": spectrum}),
            );
        }
    }
    let mut write_weight = Vec::new();
    for dev in [&gpu, &gpu_bf16] {
        let (rows, cols) = (96, 160);
        let (a, b) = (pseudo(rows * cols, 11), pseudo(rows * cols, 12));
        let mut w = dev.upload_weight(a.clone(), &[rows, cols])?;
        let written = dev.write_weight(&mut w, &b)?;
        let want = dev.to_f32(&dev.upload_weight(b.clone(), &[rows, cols])?)?;
        let same = dev.to_f32(&w)? == want;
        let shared = w.clone();
        let refused = !dev.write_weight(&mut w, &a)? && dev.to_f32(&shared)? == want;
        ok &= written && same && refused;
        write_weight.push(json!({"precision": format!("{:?}", dev.precision()),
            "written": written, "same_as_upload": same, "shared_refused": refused}));
    }
    let device_variants = check_device_variants(&gpu, &gpu_bf16)?;
    ok &= device_variants["passed"] == json!(true);
    let out = json!({
        "device": gpu.device_name(),
        "write_weight": write_weight,
        "device_variants": device_variants,
        "lowrank_gpu_vs_host": lowrank,
        "tolerance": TOLERANCE,
        "bf16_tolerance": BF16_TOLERANCE,
        "models": models,
        "attention": attention,
        "passed": ok,
    });
    println!("{out}");
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

/// Item 8: quantized codes expanded on the device against the host's dequantization and upload,
/// bit for bit.
fn check_device_variants(gpu: &Cuda, gpu_bf16: &Cuda) -> anyhow::Result<Value> {
    use crunch_repr::{QuantSpec, QuantizedWeight, SUPPORTED_BITS};
    use half::f16;
    let mut rng = crunch_model::testing::SplitMix64(137);
    let mut quantized = |rows: usize, cols: usize, bits: u8, group: Option<usize>| {
        let spec = QuantSpec::new(bits, group, false);
        let groups = rows * spec.n_groups(cols);
        let max = (1u64 << bits) - 1;
        let mut next = || rng.next_u64();
        QuantizedWeight {
            spec,
            rows,
            cols,
            codes: (0..rows * cols)
                .map(|_| (next() % (max + 1)) as u8)
                .collect(),
            scales: (0..groups)
                .map(|_| f16::from_f32((next() % 2000) as f32 * 1e-5 - 0.01))
                .collect(),
            zeros: (0..groups).map(|_| (next() % (max + 1)) as u8).collect(),
            g_idx: None,
        }
    };
    use crunch_search::swap::quant_codes as codes_of;
    let bits_of = |v: Vec<f32>| -> Vec<u32> { v.into_iter().map(f32::to_bits).collect() };
    let mut cases = Vec::new();
    let mut ok = true;
    for dev in [gpu, gpu_bf16] {
        for bits in SUPPORTED_BITS {
            for (rows, cols, group) in [(96, 256, Some(128)), (67, 300, Some(32)), (33, 75, None)] {
                let q = quantized(rows, cols, bits, group);
                let c = dev
                    .upload_codes(&codes_of(&q))?
                    .ok_or_else(|| anyhow::anyhow!("{bits}-bit codes not kept"))?;
                let mut w = dev.upload_weight(pseudo(rows * cols, 13), &[rows, cols])?;
                let written = dev.dequantize_codes(&c, &mut w)?;
                let want = bits_of(dev.to_f32(&dev.upload_weight(q.dequantize(), &[rows, cols])?)?);
                let got = bits_of(dev.to_f32(&w)?);
                let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
                let pass = written && differ == 0;
                ok &= pass;
                cases.push(
                    json!({"precision": format!("{:?}", dev.precision()), "bits": bits,
                    "rows": rows, "cols": cols, "group": group, "written": written,
                    "values_differing": differ, "passed": pass}),
                );
            }
        }
    }
    // Refusals: a shared weight (left unchanged), another shape, a NaN scale.
    let q = quantized(16, 64, 4, Some(32));
    let c = gpu.upload_codes(&codes_of(&q))?.expect("kept");
    let mut w = gpu.upload_weight(pseudo(16 * 64, 14), &[16, 64])?;
    let before = bits_of(gpu.to_f32(&w)?);
    let shared = w.clone();
    let shared_refused =
        !gpu.dequantize_codes(&c, &mut w)? && bits_of(gpu.to_f32(&shared)?) == before;
    drop(shared);
    let mut other = gpu.upload_weight(pseudo(64 * 16, 15), &[64, 16])?;
    let shape_refused = !gpu.dequantize_codes(&c, &mut other)?;
    let mut nan = q.clone();
    nan.scales[3] = f16::NAN;
    let nan_refused = gpu.upload_codes(&codes_of(&nan))?.is_none();
    ok &= shared_refused && shape_refused && nan_refused;
    // One expansion at Llama-3-8B's MLP shape, after a warm-up: the search's swap.
    let q = quantized(14336, 4096, 4, Some(128));
    let c = gpu.upload_codes(&codes_of(&q))?.expect("kept");
    let mut w = gpu.upload_weight(vec![0.0; 14336 * 4096], &[14336, 4096])?;
    gpu.dequantize_codes(&c, &mut w)?;
    gpu.synchronize()?;
    let reps = 20;
    let t0 = std::time::Instant::now();
    for _ in 0..reps {
        gpu.dequantize_codes(&c, &mut w)?;
    }
    gpu.synchronize()?;
    let expand_ms = t0.elapsed().as_secs_f64() * 1e3 / reps as f64;
    let big_same = bits_of(gpu.to_f32(&w)?) == bits_of(q.dequantize());
    ok &= big_same;
    Ok(
        json!({"cases": cases, "shared_refused": shared_refused, "shape_refused": shape_refused,
        "nan_scale_refused": nan_refused, "mlp_8b_4bit_g128_same": big_same,
        "mlp_8b_4bit_g128_bytes": c.bytes(), "mlp_8b_4bit_g128_expand_ms": expand_ms,
        "passed": ok}),
    )
}
