//! Writes the tiny reference models (config.json + model.safetensors per architecture, and
//! the same model as `tiny.gguf`) and their input ids into a directory, for
//! `scripts/reference_logits.py` to run transformers on.
//!
//! cargo run -p crunch-model --example make_tiny_models -- OUT_DIR

use crunch_model::testing::{gguf_arch, reference_ids, tiny_gguf, tiny_specs, write_tiny_model};

fn main() -> std::io::Result<()> {
    let out = std::env::args()
        .nth(1)
        .expect("usage: make_tiny_models OUT_DIR");
    for spec in tiny_specs() {
        let dir = std::path::Path::new(&out).join(spec.name);
        let hash = write_tiny_model(&spec, &dir, 0)?;
        let vocab = spec.config["vocab_size"].as_u64().unwrap() as usize;
        let meta = serde_json::json!({
            "arch": spec.name,
            "weights_fnv1a": format!("{hash:016x}"),
            "input_ids": reference_ids(vocab, 40),
        });
        std::fs::write(dir.join("input.json"), meta.to_string())?;
        // The same model as the GGUF the GGUF tests load (for checking it with other readers).
        let gguf = tiny_gguf(&spec, gguf_arch(spec.name)).to_bytes();
        std::fs::write(dir.join("tiny.gguf"), gguf)?;
        println!("{}", dir.display());
    }
    Ok(())
}
