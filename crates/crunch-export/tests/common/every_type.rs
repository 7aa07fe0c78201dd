//! What the GGUF export's test and `examples/gguf_check_files.rs` share: a tiny Llama wide
//! enough for every type, and a mix that gives one tensor each type crunch writes. Included
//! with `#[path]` by both.

use crunch_export::gguf::{Mix, Preset};
use crunch_formats::DType;
use crunch_model::testing::{tiny_specs, TinySpec};
use serde_json::json;

/// A tiny Llama whose rows are long enough for the 256-value types.
pub fn wide_llama() -> TinySpec {
    let mut spec = tiny_specs()
        .into_iter()
        .find(|s| s.name == "llama")
        .unwrap();
    let c = &mut spec.config;
    c["hidden_size"] = json!(256);
    c["intermediate_size"] = json!(512);
    c["vocab_size"] = json!(256);
    c["tie_word_embeddings"] = json!(false);
    c["attention_bias"] = json!(false);
    c["mlp_bias"] = json!(false);
    c.as_object_mut().unwrap().remove("rope_scaling");
    spec
}

/// One tensor of each type crunch writes.
pub fn every_type_mix() -> Mix {
    let o = |p: &str, t: DType| (p.to_string(), t);
    Mix {
        overrides: vec![
            o("blk.0.attn_q.", DType::Q2K),
            o("blk.0.attn_k.", DType::Q3K),
            o("blk.0.attn_v.", DType::Q4K),
            o("blk.0.attn_output.", DType::Q5K),
            o("blk.0.ffn_gate.", DType::Q6K),
            o("blk.0.ffn_up.", DType::IQ4XS),
            o("blk.0.ffn_down.", DType::IQ4NL),
            o("blk.1.attn_q.", DType::Q4_0),
            o("blk.1.attn_k.", DType::Q4_1),
            o("blk.1.attn_v.", DType::Q5_0),
            o("blk.1.attn_output.", DType::Q5_1),
            o("blk.1.ffn_gate.", DType::Q8_0),
            o("blk.1.ffn_up.", DType::F16),
            o("blk.1.ffn_down.", DType::BF16),
        ],
        ..Mix::preset(Preset::Q4_K_M)
    }
}
