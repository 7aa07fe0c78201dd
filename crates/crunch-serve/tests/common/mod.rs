//! What the server's tests share: a tiny model with a tokenizer.

use crunch_model::testing::{tiny_dir, tiny_specs};
use serde_json::json;

/// A tiny Llama with a word-level tokenizer over its 128 ids and a ChatML-like template.
pub fn model_dir() -> tempfile::TempDir {
    let spec = tiny_specs()
        .into_iter()
        .find(|s| s.name == "llama")
        .unwrap();
    let dir = tiny_dir(&spec);
    let mut vocab: Vec<(String, u32)> =
        vec![("<unk>".into(), 0), ("<s>".into(), 1), ("</s>".into(), 2)];
    vocab.extend((3..128).map(|i| (format!("w{i}"), i)));
    let tok = json!({
        "version": "1.0",
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab.into_iter().map(|(k, v)| (k, json!(v))).collect::<serde_json::Map<_, _>>(), "unk_token": "<unk>"},
    });
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
    let template = "{% for m in messages %}<s> {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}w5 {% endif %}";
    let tc = json!({"chat_template": template, "bos_token": "<s>", "eos_token": "</s>"});
    std::fs::write(dir.path().join("tokenizer_config.json"), tc.to_string()).unwrap();
    dir
}
