//! The real SmolLM2-135M-Instruct Q4_1 GGUF (fetched by scripts/fetch-smollm2): its metadata
//! and tensor shapes agree with the model's Hugging Face config.json, and every tensor
//! dequantizes. Bit-exactness of the kernels is checked in gguf_dequant.rs.

mod common;

use crunch_formats::gguf::GgufFile;
use crunch_formats::{DType, TensorSource};

#[test]
fn smollm2_metadata_and_shapes_agree_with_config_json() {
    let file = GgufFile::open(common::smollm2_gguf()).unwrap();
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo_root().join("tests/fixtures/smollm2/config.json"))
            .unwrap(),
    )
    .unwrap();
    let cfg = |k: &str| config[k].as_u64().unwrap();
    let meta = |k: &str| file.get(k).and_then(|v| v.as_u64()).unwrap();
    assert!(matches!(file.version(), 2 | 3));
    assert_eq!(
        file.architecture(),
        Some(config["model_type"].as_str().unwrap())
    );
    assert_eq!(meta("llama.embedding_length"), cfg("hidden_size"));
    assert_eq!(meta("llama.feed_forward_length"), cfg("intermediate_size"));
    assert_eq!(meta("llama.block_count"), cfg("num_hidden_layers"));
    assert_eq!(
        meta("llama.attention.head_count"),
        cfg("num_attention_heads")
    );
    assert_eq!(
        meta("llama.attention.head_count_kv"),
        cfg("num_key_value_heads")
    );
    assert_eq!(meta("tokenizer.ggml.bos_token_id"), cfg("bos_token_id"));
    let eps = file
        .get("llama.attention.layer_norm_rms_epsilon")
        .unwrap()
        .as_f64()
        .unwrap();
    assert!((eps - config["rms_norm_eps"].as_f64().unwrap()).abs() < 1e-9);

    let (hidden, ffn, vocab) = (
        cfg("hidden_size") as usize,
        cfg("intermediate_size") as usize,
        cfg("vocab_size") as usize,
    );
    let kv = hidden / cfg("num_attention_heads") as usize * cfg("num_key_value_heads") as usize;
    let shape = |name: &str| file.info(name).unwrap().shape;
    // Row-major, [out_features, in_features], as in the safetensors checkpoint.
    assert_eq!(shape("token_embd.weight"), [vocab, hidden]);
    assert_eq!(shape("blk.0.attn_q.weight"), [hidden, hidden]);
    assert_eq!(shape("blk.0.attn_k.weight"), [kv, hidden]);
    assert_eq!(shape("blk.0.ffn_up.weight"), [ffn, hidden]);
    assert_eq!(shape("blk.0.ffn_down.weight"), [hidden, ffn]);
    assert_eq!(shape("blk.0.attn_norm.weight"), [hidden]);
    let layers = cfg("num_hidden_layers") as usize;
    // 9 tensors per layer, embedding, final norm; the output head is tied to the embedding.
    assert_eq!(file.tensors().len(), 9 * layers + 2);

    let mut by_type = std::collections::BTreeMap::<String, usize>::new();
    for t in file.tensors() {
        *by_type.entry(format!("{:?}", t.dtype)).or_default() += 1;
        let values = file.read_f32(&t.name).unwrap();
        assert_eq!(values.len(), t.numel());
        assert!(
            values.iter().all(|v| v.is_finite()),
            "{} has non-finite values",
            t.name
        );
        // Quantized weights are not all equal; a wrong block stride would smear them.
        if t.dtype != DType::F32 {
            let mean = values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64;
            let var = values
                .iter()
                .map(|&v| (v as f64 - mean).powi(2))
                .sum::<f64>()
                / values.len() as f64;
            assert!(var > 1e-8 && var < 1.0, "{}: variance {var}", t.name);
        }
    }
    // Q4_1 linear weights, a Q8_0 embedding, F32 norms.
    assert_eq!(file.info("token_embd.weight").unwrap().dtype, DType::Q8_0);
    assert_eq!(by_type.get("Q4_1"), Some(&(7 * layers)));
    assert_eq!(by_type.get("F32"), Some(&(2 * layers + 1)));
}
