//! Correctness of the CUDA backend on the GPU machine (`--features cuda`; see docs/cuda.md).
//!
//! 1. Every tiny reference model (crunch_model::testing): CUDA logits against CPU logits and
//!    against the transformers fixture, relative error (max |Δ| / max |ref|) < 1e-4.
//! 2. Attention alone, long sequences with GQA and sliding windows: CUDA against CPU.
//! 3. GPTQ through the sequential calibration on each tiny model, on CPU and on CUDA with the same
//!    windows: the fraction of identical codes (equal "up to ties": Hessians summed in a
//!    different order may round a weight sitting on a grid midpoint the other way).
//!
//! Prints one JSON object; exits non-zero if a check fails. Run from the repository root.

use crunch_calib::{quantize_model, windows, Method, QuantizePlan};
use crunch_compress::{GptqOptions, QuantSpec};
use crunch_model::testing::{reference_ids, tiny_specs, write_tiny_model};
use crunch_model::Checkpoint;
use crunch_runtime::{AttentionMask, Backend, Cpu, Cuda};
use serde_json::{json, Value};

const TOLERANCE: f32 = 1e-4;

fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let d = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    d / want.iter().map(|v| v.abs()).fold(0f32, f32::max)
}

fn pseudo(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = crunch_model::testing::SplitMix64(seed);
    (0..n).map(|_| rng.uniform() * 2.0 - 1.0).collect()
}

fn main() -> anyhow::Result<()> {
    let gpu = Cuda::new(0)?;
    let mut ok = true;
    let mut models = Vec::new();
    for spec in tiny_specs() {
        let dir = tempfile::tempdir()?;
        write_tiny_model(&spec, dir.path(), 0)?;
        let fixture: Value = serde_json::from_str(&std::fs::read_to_string(format!(
            "tests/fixtures/reference/{}.json",
            spec.name
        ))?)?;
        let ids: Vec<u32> = fixture["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let want: Vec<f32> = fixture["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let ckpt = Checkpoint::open(dir.path())?;
        let cpu_model = ckpt.load(Cpu, |_| {})?;
        let gpu_model = ckpt.load(gpu.clone(), |_| {})?;
        let cpu_logits = Cpu.to_f32(&cpu_model.forward(&ids)?)?;
        let gpu_logits = gpu.to_f32(&gpu_model.forward(&ids)?)?;
        let vs_cpu = rel_err(&gpu_logits, &cpu_logits);
        let vs_hf = rel_err(&gpu_logits, &want);
        ok &= vs_cpu < TOLERANCE && vs_hf < TOLERANCE;

        // GPTQ 4-bit g32 on both backends from the same windows.
        let text = reference_ids(ckpt.config.vocab, 4096);
        let wins = windows(&text, 16, 64, 0)?;
        let plan = QuantizePlan {
            method: Method::Gptq(GptqOptions::default()),
            spec: QuantSpec::new(4, Some(32), false),
            mse_clip: false,
            skip: vec![],
        };
        let qc = quantize_model(&Cpu, &ckpt, &plan, Some(&wins), &mut ())?;
        let qg = quantize_model(&gpu, &ckpt, &plan, Some(&wins), &mut ())?;
        let (mut same, mut total) = (0usize, 0usize);
        for (name, a) in &qc {
            let b = &qg[name];
            same += a.codes.iter().zip(&b.codes).filter(|(x, y)| x == y).count();
            total += a.codes.len();
        }
        let agree = same as f64 / total as f64;
        ok &= agree > 0.999;
        models.push(json!({
            "model": spec.name,
            "logits_rel_err_vs_cpu": vs_cpu,
            "logits_rel_err_vs_transformers": vs_hf,
            "gptq_codes_equal": agree,
            "gptq_codes": total,
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
        let e = rel_err(&g, &cpu);
        ok &= e < TOLERANCE;
        attention.push(
            json!({"tokens": t, "heads": h, "kv_heads": kvh, "head_dim": d,
            "window": window, "rel_err_vs_cpu": e}),
        );
    }
    let out = json!({
        "device": gpu.device_name(),
        "tolerance": TOLERANCE,
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
