//! crunch's logits for a real checkpoint against reference logits from transformers
//! (`scripts/reference_gguf_logits.py`), on the same token ids.
//!
//!   real_logits MODEL REF_DIR
//!
//! Prints one JSON line: max |crunch − transformers| / max |transformers| over all logits (the
//! tolerance stated for the tiny models is 1e-4), the largest per-row relative error, the
//! largest difference of per-position negative log-likelihood of the next token, and the share
//! of positions whose arg-max agrees.

use anyhow::{Context, Result};
use crunch_model::testing::relative_error;
use crunch_model::Checkpoint;
use crunch_runtime::{Backend, Cpu};
use serde_json::{json, Value};
use std::time::Instant;

fn log_softmax_at(row: &[f32], i: usize) -> f64 {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
    row[i] as f64 - m - z.ln()
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (model_path, dir) = match &args[..] {
        [_, m, d] => (m, std::path::Path::new(d)),
        _ => anyhow::bail!("usage: real_logits MODEL REF_DIR"),
    };
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("ids.json"))?)?;
    let ids: Vec<u32> = meta["input_ids"]
        .as_array()
        .context("ids.json: input_ids")?
        .iter()
        .map(|v| v.as_u64().unwrap_or(0) as u32)
        .collect();
    let bytes = std::fs::read(dir.join("logits.f32"))?;
    let want: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let t0 = Instant::now();
    let ckpt = Checkpoint::open(model_path)?;
    let model = ckpt.load(Cpu, |_| {})?;
    let got = Cpu.to_f32(&model.forward(&ids)?)?;
    let seconds = t0.elapsed().as_secs_f64();
    let vocab = ckpt.config.vocab;
    anyhow::ensure!(
        got.len() == want.len(),
        "crunch gives {} logits, the reference {} ({} ids × vocab {vocab})",
        got.len(),
        want.len(),
        ids.len()
    );
    let rows = ids.len();
    let (mut worst_row, mut nll_diff, mut agree) = (0f32, 0f64, 0usize);
    for r in 0..rows {
        let (g, w) = (
            &got[r * vocab..(r + 1) * vocab],
            &want[r * vocab..(r + 1) * vocab],
        );
        worst_row = worst_row.max(relative_error(g, w));
        agree += usize::from(argmax(g) == argmax(w));
        if r + 1 < rows {
            let next = ids[r + 1] as usize;
            nll_diff = nll_diff.max((log_softmax_at(g, next) - log_softmax_at(w, next)).abs());
        }
    }
    println!(
        "{}",
        json!({
            "bench": "real_logits",
            "model": model_path,
            "arch": ckpt.config.arch.name(),
            "tokens": rows,
            "vocab": vocab,
            "relative_error": relative_error(&got, &want),
            "max_row_relative_error": worst_row,
            "max_nll_difference": nll_diff,
            "argmax_agreement": agree as f64 / rows as f64,
            "crunch_seconds": seconds,
            "reference": {"transformers": meta["transformers"], "torch": meta["torch"]},
        })
    );
    Ok(())
}
