//! `gpu_packed check`'s device key/value caches (decision 138): for every `--kv-cache` mode,
//! the same random keys and values appended to the host's store and to the CUDA backend's
//! device store, in a prefill chunk, single tokens across group boundaries and a long run of
//! decoding; after each append the new positions' queries attend on both. The device store
//! holds the host quantizer's codes, so the outputs differ only by float rounding (the
//! kernel's online softmax and summation order), relative to the bound of the channel's values
//! (2, or 16 for every 16th channel: an output is a convex combination of them). Required:
//! issue 17's 1e-3 for every GPU kernel against the CPU. The host transcription meets 1e-5
//! against the same host attention (`cuda::kvdev::tests`); on the H200 (s29) 20 of the 22
//! cases were within 1e-5 and the largest was 1.11e-5 (summation order), so `max_rel_diff` is
//! printed for each. Queries have no large channels, so scores stay a few units, as a
//! model's do.

use anyhow::Result;
use crunch_runtime::kvq::{attend, QuantKv};
use crunch_runtime::{AttentionMask, Backend, Cuda, Host, KvMode, KvSpec};
use serde_json::json;

const MODES: [&str; 13] = [
    // Decision 162: the f32 cache (cuBLAS; one GEMM per side at one query row), against the
    // host backend's own f32 store.
    "f32",
    "f16",
    "q8",
    "q4",
    "kivi4",
    "kivi2",
    "kivi2:s1",
    "kivi2:s1:pre",
    "kivi2:vg64:s1:pre:h",
    "kivi2:s1:pre:h",
    "kivi2:r20",
    // Decision 142: codes on the Lloyd–Max levels (keys and values; values, scales widened).
    "kivi2:vg64:s1:pre:h:lm",
    "kivi2:vg64:s1:pre:h:lmv:u",
];

/// Runs the comparison for heads of 64 and 128 channels; returns how many failed.
pub fn check_kv_device(gpu: &Cuda) -> Result<usize> {
    let mut failed = 0;
    for d in [64usize, 128] {
        for mode in MODES {
            let mode = KvMode::parse(mode).map_err(anyhow::Error::msg)?;
            let (worst, on_device) = compare(gpu, mode, d)?;
            let pass = worst <= 1e-3 && on_device;
            failed += usize::from(!pass);
            println!(
                "{}",
                json!({"check": "kv_device_attention", "kv_cache": mode.to_string(),
                       "head_dim": d, "on_device": on_device,
                       "max_rel_diff": worst, "tolerance": 1e-3, "pass": pass})
            );
        }
    }
    Ok(failed)
}

fn compare(gpu: &Cuda, mode: KvMode, d: usize) -> Result<(f64, bool)> {
    let (kvh, heads) = (4usize, 16usize);
    let freqs: Vec<f64> = (0..d / 2)
        .map(|i| 500_000f64.powf(-((2 * i) as f64) / d as f64))
        .collect();
    let chunks: Vec<usize> = [300, 1, 1, 26, 1, 70]
        .into_iter()
        .chain(std::iter::repeat_n(1, 40))
        .chain([600, 1, 1])
        .collect();
    let cap: usize = chunks.iter().sum();
    let spec = KvSpec {
        capacity: cap,
        kv_heads: kvh,
        head_dim: d,
        mode,
        inv_freq: Some(&freqs),
    };
    // The reference: the host's quantizer, or for f32 the host backend's own store.
    let hb = Host;
    let (mut host, mut hkv) = if mode.is_full() {
        (None, Some(hb.kv_alloc(spec)?))
    } else {
        (Some(QuantKv::from_spec(spec)?), None)
    };
    let mut dev = gpu.kv_alloc(spec)?;
    let on_device = dev.on_device();
    let mut rng = super::Rng(7 + d as u64);
    let mut draw = |n: usize, big: f32| -> Vec<f32> {
        (0..n)
            .map(|i| rng.unit() * 2.0 * if i % 16 == 3 { big } else { 1.0 })
            .collect()
    };
    let scale = (d as f32).powf(-0.5);
    let mut worst = 0f64;
    for &t in &chunks {
        let (k, v) = (draw(t * kvh * d, 8.0), draw(t * kvh * d, 8.0));
        let offset = gpu.kv_len(&dev);
        let shape = [t, kvh, d];
        match (&mut host, &mut hkv) {
            (Some(h), _) => h.append(&k, &v, t)?,
            (None, Some(h)) => hb.kv_append(
                h,
                &hb.upload(k.clone(), &shape)?,
                &hb.upload(v.clone(), &shape)?,
            )?,
            (None, None) => unreachable!("one reference store"),
        }
        gpu.kv_append(&mut dev, &gpu.upload(k, &shape)?, &gpu.upload(v, &shape)?)?;
        let q = draw(t * heads * d, 1.0);
        for window in [None, Some(200)] {
            let mask = AttentionMask {
                window,
                query_offset: offset,
            };
            let want = match (&host, &hkv) {
                (Some(h), _) => attend(&q, t, heads, h, mask, scale)?,
                (None, Some(h)) => {
                    let qh = hb.upload(q.clone(), &[t, heads, d])?;
                    hb.to_f32(&hb.kv_attention(&qh, h, mask, scale)?)?
                }
                (None, None) => unreachable!("one reference store"),
            };
            let qt = gpu.upload(q.clone(), &[t, heads, d])?;
            let got = gpu.to_f32(&gpu.kv_attention(&qt, &dev, mask, scale)?)?;
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                let bound = if i % d % 16 == 3 { 16.0 } else { 2.0 };
                let e = ((a - b).abs() / bound) as f64;
                worst = worst.max(if e.is_nan() { f64::INFINITY } else { e });
            }
        }
    }
    Ok((worst, on_device))
}
