//! Bad inputs: each ends with a clear error naming the file and the problem, a non-zero exit
//! and no panic.

use crate::common::{crunch, tiny_llama};
use crunch_model::testing::smollm2_gguf;
use std::path::Path;

/// Runs `crunch info` on `path` and checks that it fails cleanly with every `needle` in the error.
fn fails_cleanly(path: &Path, needles: &[&str]) {
    let (ok, _, err) = crunch(&["info", path.to_str().unwrap()]);
    assert!(!ok, "expected failure for {}", path.display());
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "error lacks `{n}`: {err}");
    }
}

fn edit_header(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}

#[test]
fn info_describes_a_tiny_model() {
    let (_d, p) = tiny_llama();
    let (ok, out, err) = crunch(&["info", p.to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["architecture"], "llama");
    assert_eq!(v["layers"], 2);
    assert!(v["parameters"].as_u64().unwrap() > 0);
    assert!(v["dtypes"]["F32"]["tensors"].as_u64().unwrap() > 0);
}

#[test]
fn truncated_safetensors_is_reported() {
    let (_d, p) = tiny_llama();
    let f = p.join("model.safetensors");
    let len = std::fs::metadata(&f).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    fails_cleanly(&p, &["model.safetensors", "truncated"]);
}

#[test]
fn header_lying_about_offsets_is_reported() {
    let (_d, p) = tiny_llama();
    let f = p.join("model.safetensors");
    edit_header(&f, |h| {
        h["model.norm.weight"]["data_offsets"] = serde_json::json!([0u64, 1u64 << 40]);
    });
    fails_cleanly(&p, &["model.safetensors", "model.norm.weight", "outside"]);
}

#[test]
fn unknown_dtype_is_reported() {
    let (_d, p) = tiny_llama();
    edit_header(&p.join("model.safetensors"), |h| {
        h["model.norm.weight"]["dtype"] = "F7".into();
    });
    fails_cleanly(&p, &["model.safetensors", "unknown dtype `F7`"]);
}

#[test]
fn missing_tensor_is_reported_on_load() {
    let (_d, p) = tiny_llama();
    edit_header(&p.join("model.safetensors"), |h| {
        let v = h["model.norm.weight"].clone();
        h.as_object_mut().unwrap().remove("model.norm.weight");
        h["renamed.weight"] = v;
    });
    std::fs::write(p.join("data.txt"), "hello world ".repeat(20)).unwrap();
    let (ok, _, err) = crunch(&[
        "eval",
        p.to_str().unwrap(),
        "--data",
        p.join("data.txt").to_str().unwrap(),
    ]);
    assert!(!ok && !err.contains("panicked"), "{err}");
    // The structure is checked against the config when the model is opened, before the
    // tokenizer is looked for.
    assert!(err.contains("missing tensor `model.norm.weight`"), "{err}");
}

/// Sets `key` of the model's config.json to `value`.
fn edit_config(model: &Path, key: &str, value: serde_json::Value) {
    let path = model.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg[key] = value;
    std::fs::write(&path, cfg.to_string()).unwrap();
}

#[test]
fn shape_that_does_not_match_config_is_reported() {
    let (_d, p) = tiny_llama();
    edit_config(&p, "intermediate_size", 96.into());
    // Checked against the tensors when the checkpoint is opened, before anything is loaded.
    let err = crunch_model::Checkpoint::open(&p)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("mlp.gate_proj.weight") && err.contains("config.json implies [96, 64]"),
        "{err}"
    );
    fails_cleanly(&p, &["mlp.gate_proj.weight", "[96, 64]"]);
}

#[test]
fn unsupported_architecture_is_reported() {
    let (_d, p) = tiny_llama();
    edit_config(&p, "model_type", "bloom".into());
    fails_cleanly(&p, &["config.json", "unsupported architecture `bloom`"]);
}

#[test]
fn truncated_and_corrupt_gguf_are_reported() {
    let gguf = std::fs::read(smollm2_gguf()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &gguf[..gguf.len() / 3]).unwrap();
    fails_cleanly(&truncated, &["truncated.gguf"]);
    let corrupt = dir.path().join("corrupt.gguf");
    let mut bytes = gguf[..4096].to_vec();
    bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes()); // metadata count
    std::fs::write(&corrupt, &bytes).unwrap();
    fails_cleanly(&corrupt, &["corrupt.gguf"]);
    fails_cleanly(&dir.path().join("absent.gguf"), &["absent.gguf"]);
}

/// `--device cuda` for the commands that run a model, where no GPU can run it (a build without
/// the `cuda` feature, as CI's; or a CUDA build on a machine without a driver): a clear error
/// naming the device, a non-zero exit, no panic. A CUDA build on a GPU machine runs them.
#[test]
fn device_cuda_without_a_gpu_fails_cleanly() {
    let (_d, p) = tiny_llama();
    let p = p.to_str().unwrap();
    let runs: [&[&str]; 4] = [
        &[
            "generate",
            p,
            "--prompt",
            "hi",
            "--max-tokens",
            "2",
            "--device",
            "cuda",
        ],
        &[
            "generate",
            p,
            "--prompt",
            "hi",
            "--device",
            "cuda-bf16:1",
            "--json",
        ],
        &["chat", p, "--device", "cuda"],
        &["serve", p, "--device", "cuda:0", "--port", "0"],
    ];
    for args in runs {
        if args[0] == "serve" && cfg!(feature = "cuda") {
            continue; // on a GPU it would serve until stopped
        }
        let (ok, _, err) = crunch(args);
        if ok && cfg!(feature = "cuda") {
            continue; // a GPU ran it
        }
        assert!(!ok, "{args:?} succeeded without a GPU");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(err.contains("--device cuda"), "{args:?}: {err}");
        if !cfg!(feature = "cuda") {
            assert!(err.contains("without the `cuda` feature"), "{err}");
        }
    }
    let (ok, _, err) = crunch(&["generate", p, "--prompt", "hi", "--device", "tpu"]);
    assert!(
        !ok && err.contains("expected cpu, cuda[:N] or cuda-bf16[:N]"),
        "{err}"
    );
}
