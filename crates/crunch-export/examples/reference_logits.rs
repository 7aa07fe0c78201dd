//! Logits crunch computes for a model on given token ids, as JSON, for `scripts/check_export.py`
//! to compare an exported copy of the same quantized model against.
//!
//! `cargo run --release -p crunch-export --example reference_logits -- MODEL IDS_JSON OUT_JSON`
//!
//! MODEL is anything `crunch_model::Checkpoint::open` reads (crunch's own format, so the
//! quantized layers are dequantized exactly as crunch does); IDS_JSON holds a JSON array of
//! token ids, or an object with one under `input_ids` (the `input.json` that
//! `crunch-model`'s `make_tiny_models` example writes). OUT_JSON gets `{"model", "ids", "vocab", "logits": [[f32; vocab]; len(ids)]}`.

use crunch_model::Checkpoint;
use crunch_runtime::{Backend, Cpu};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, ids_path, out_path] = args.as_slice() else {
        return Err("usage: reference_logits MODEL IDS_JSON OUT_JSON".into());
    };
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ids_path)?)?;
    let ids: Vec<u32> = serde_json::from_value(v.get("input_ids").cloned().unwrap_or(v))?;
    let ckpt = Checkpoint::open(model)?;
    let vocab = ckpt.config.vocab;
    if ids.is_empty() || ids.iter().any(|&i| i as usize >= vocab) {
        return Err(format!("{ids_path}: need a non-empty array of ids below {vocab}").into());
    }
    let m = ckpt.load(Cpu, |_| {})?;
    let logits = Cpu.to_f32(&m.forward(&ids)?)?;
    let rows: Vec<&[f32]> = logits.chunks(vocab).collect();
    let out = json!({"model": model, "ids": ids, "vocab": vocab, "logits": rows});
    std::fs::write(out_path, serde_json::to_string(&out)? + "\n")?;
    eprintln!("{out_path}: logits of {} tokens × {vocab}", ids.len());
    Ok(())
}
