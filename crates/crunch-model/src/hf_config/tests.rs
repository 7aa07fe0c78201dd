use super::*;

/// `j`'s error from a file named `x/config.json`: it must name the file and hold `needle`
/// (`case` says which edit of the config failed, if one does).
fn refused(j: &Value, needle: &str, case: &str) -> String {
    let e = ModelConfig::from_hf_json(Path::new("x/config.json"), j)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(needle) && e.contains("x/config.json"),
        "{case}: {e}"
    );
    e
}

fn smollm2() -> Value {
    serde_json::from_str(include_str!(
        "../../../../tests/fixtures/smollm2/config.json"
    ))
    .unwrap()
}

#[test]
fn parses_smollm2() {
    let c = ModelConfig::from_hf_json(Path::new("config.json"), &smollm2()).unwrap();
    assert_eq!(c.arch, Arch::Llama);
    assert_eq!(
        (c.hidden, c.layers, c.heads, c.kv_heads, c.head_dim),
        (576, 30, 9, 3, 64)
    );
    assert!(c.tie_embeddings);
    assert_eq!(c.rope_theta, 100000.0);
}

#[test]
fn hf_json_round_trips() {
    for spec in crate::testing::tiny_specs() {
        let c = ModelConfig::from_hf_json(Path::new("c"), &spec.config).unwrap();
        let again = ModelConfig::from_hf_json(Path::new("c"), &c.to_hf_json()).unwrap();
        assert_eq!(c, again, "{}", spec.name);
    }
}

/// transformers 5 writes `rope_parameters` instead of `rope_theta` / `rope_scaling`
/// (nested per layer type for Gemma 3): both spellings give the same config.
#[test]
fn rope_parameters_spelling_reads_the_same() {
    for spec in crate::testing::tiny_specs() {
        let want = ModelConfig::from_hf_json(Path::new("c"), &spec.config).unwrap();
        let mut j = spec.config.clone();
        let o = j.as_object_mut().unwrap();
        let theta = o.remove("rope_theta");
        let mut scaling = o
            .remove("rope_scaling")
            .unwrap_or(json!({"rope_type": "default"}));
        if spec.name == "gemma3" {
            let local = o.remove("rope_local_base_freq").unwrap();
            scaling["rope_theta"] = theta.unwrap();
            o.insert(
                "rope_parameters".into(),
                json!({"full_attention": scaling,
                       "sliding_attention": {"rope_type": "default", "rope_theta": local}}),
            );
        } else {
            scaling["rope_theta"] = theta.unwrap();
            o.insert("rope_parameters".into(), scaling);
        }
        let got = ModelConfig::from_hf_json(Path::new("c"), &j).unwrap();
        assert_eq!(got, want, "{}", spec.name);
    }
}

#[test]
fn unsupported_architecture_is_named() {
    let mut j = smollm2();
    j["model_type"] = "gpt_neox".into();
    refused(&j, "unsupported architecture `gpt_neox`", "gpt_neox");
    j["model_type"] = "gemma3".into();
    refused(&j, "gemma3_text", "gemma3");
}

#[test]
fn huge_or_non_numeric_sizes_are_refused_before_allocating() {
    for (key, value, needle) in [
        ("num_hidden_layers", json!(u64::MAX), "num_hidden_layers"),
        ("num_hidden_layers", json!(5000), "more than the 4096"),
        ("hidden_size", json!(4294967295u64), "hidden_size"),
        ("vocab_size", json!(-3), "not a non-negative integer"),
        ("num_key_value_heads", json!(1.5), "num_key_value_heads"),
        ("rms_norm_eps", json!("1e-5"), "not a number"),
        ("rms_norm_eps", json!(0.0), "finite, positive"),
        ("rope_theta", json!(-1.0), "finite, positive"),
        ("rms_norm_eps", json!(5.0), "below 1"),
        ("rms_norm_eps", json!(1e300), "finite, positive"),
        ("tie_word_embeddings", json!("yes"), "not true or false"),
    ] {
        let mut j = smollm2();
        j[key] = value;
        refused(&j, needle, key);
    }
}

/// The new architectures' own settings get the same caps and finite checks.
#[test]
fn new_architecture_settings_are_checked() {
    let spec = |name: &str| {
        crate::testing::tiny_specs()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap()
            .config
    };
    for (arch, key, value, needle) in [
        ("qwen3_moe", "num_experts", json!(100000), "num_experts"),
        ("qwen3_moe", "num_experts", json!(0), "must be positive"),
        (
            "qwen3_moe",
            "num_experts_per_tok",
            json!(9),
            "more than the 8 experts",
        ),
        (
            "qwen3_moe",
            "moe_intermediate_size",
            json!(1u64 << 40),
            "moe_intermediate_size",
        ),
        (
            "qwen3_moe",
            "decoder_sparse_step",
            json!(0),
            "decoder_sparse_step",
        ),
        (
            "qwen3_moe",
            "mlp_only_layers",
            json!("all"),
            "mlp_only_layers",
        ),
        ("mixtral", "num_local_experts", json!(5000), "num_experts"),
        (
            "gemma3",
            "query_pre_attn_scalar",
            json!(-4.0),
            "query_pre_attn_scalar",
        ),
        (
            "gemma3",
            "rope_local_base_freq",
            json!(0.0),
            "rope_local_base_freq",
        ),
        (
            "gemma3",
            "layer_types",
            json!(["sliding_attention"]),
            "layer_types",
        ),
        (
            "gemma3",
            "final_logit_softcapping",
            json!(30.0),
            "softcapping",
        ),
        (
            "gemma3",
            "hidden_activation",
            json!("relu"),
            "not supported",
        ),
        ("gemma3", "sliding_window", json!(0), "sliding_window"),
        (
            "phi3",
            "partial_rotary_factor",
            json!(0.75),
            "partial_rotary_factor",
        ),
    ] {
        let mut j = spec(arch);
        j[key] = value;
        refused(&j, needle, &format!("{arch} {key}"));
    }
    let mut j = spec("phi3");
    j["rope_scaling"]["short_factor"] = json!([1.0, 2.0]);
    let e = ModelConfig::from_hf_json(Path::new("c"), &j)
        .unwrap_err()
        .to_string();
    assert!(e.contains("short_factor has 2 entries"), "{e}");
    let mut j = spec("phi3");
    j["rope_scaling"]["long_factor"][0] = json!(-1.0);
    let e = ModelConfig::from_hf_json(Path::new("c"), &j)
        .unwrap_err()
        .to_string();
    assert!(e.contains("long_factor"), "{e}");
}

#[test]
fn non_finite_values_are_refused_naming_the_field() {
    let mut c = ModelConfig::from_hf_json(Path::new("c"), &smollm2()).unwrap();
    c.rms_eps = f32::NAN;
    assert!(c.validate().unwrap_err().contains("rms_norm_eps"));
    c.rms_eps = 1e-5;
    c.rope_theta = f64::INFINITY;
    assert!(c.validate().unwrap_err().contains("rope_theta"));
    c.rope_theta = 1e4;
    c.rope_scaling = Some(RopeScaling::Linear { factor: f64::NAN });
    assert!(c.validate().unwrap_err().contains("rope_scaling.factor"));
    c.rope_scaling = None;
    c.embed_scale = Some(f32::INFINITY);
    assert!(c.validate().unwrap_err().contains("embedding scale"));
}

#[test]
fn written_configs_never_hold_null_numbers() {
    for spec in crate::testing::tiny_specs() {
        let c = ModelConfig::from_hf_json(Path::new("c"), &spec.config).unwrap();
        let j = c.to_hf_json();
        for (k, v) in j.as_object().unwrap() {
            // `sliding_window: null` means "no window" (transformers' own spelling);
            // every other key is a value.
            assert!(
                !v.is_null() || k == "sliding_window",
                "{}: {k} is null",
                spec.name
            );
        }
    }
}

#[test]
fn inconsistent_heads_are_rejected() {
    let mut j = smollm2();
    j["num_key_value_heads"] = 4.into();
    let e = ModelConfig::from_hf_json(Path::new("config.json"), &j).unwrap_err();
    assert!(e.to_string().contains("not a multiple"), "{e}");
}

#[test]
fn gemma3_layer_pattern_and_qwen3_moe_dense_layers() {
    let mut j = crate::testing::tiny_specs()
        .into_iter()
        .find(|s| s.name == "gemma3")
        .unwrap()
        .config;
    j.as_object_mut().unwrap().remove("layer_types");
    j["num_hidden_layers"] = 7.into();
    j["sliding_window_pattern"] = 3.into();
    let c = ModelConfig::from_hf_json(Path::new("c"), &j).unwrap();
    let global: Vec<usize> = (0..7).filter(|&i| c.layer_window[i].is_none()).collect();
    assert_eq!(global, vec![2, 5]);
    let mut j = crate::testing::tiny_specs()
        .into_iter()
        .find(|s| s.name == "qwen3_moe")
        .unwrap()
        .config;
    j["num_hidden_layers"] = 4.into();
    j["decoder_sparse_step"] = 2.into();
    j["mlp_only_layers"] = json!([3]);
    let c = ModelConfig::from_hf_json(Path::new("c"), &j).unwrap();
    let sparse = &c.moe.as_ref().unwrap().sparse_layers;
    assert_eq!(sparse, &vec![false, true, false, false]);
    assert!(c.layer_moe(1).is_some() && c.layer_moe(0).is_none());
}
