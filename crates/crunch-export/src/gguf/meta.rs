//! GGUF metadata for an export: carried over from a GGUF source, or built from a Hugging Face
//! directory's `config.json`, `tokenizer.json` and `tokenizer_config.json` the way llama.cpp's
//! converter writes it.

use crate::{Error, Result};
use crunch_formats::gguf::{tokenizer_metadata, GgufFile, GgufValue, SpecialIds};
use crunch_model::config::RopeScaling;
use crunch_model::{gguf_shape_metadata, Arch, Checkpoint};
use std::path::Path;

/// llama.cpp's quantization format version (`GGML_QNT_VERSION`).
pub const QUANTIZATION_VERSION: u32 = 2;

/// The llama.cpp architecture name of `arch` (Mistral and Mixtral are Llamas to llama.cpp).
pub fn gguf_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::Llama | Arch::Mistral | Arch::Mixtral => "llama",
        Arch::Qwen2 => "qwen2",
        Arch::Qwen3 => "qwen3",
        Arch::Qwen3Moe => "qwen3moe",
        Arch::Gemma3 => "gemma3",
        Arch::Phi3 => "phi3",
    }
}

/// Whether crunch builds a GGUF of `arch` from a Hugging Face directory: the dense Llama-style
/// architectures. The others (stacked experts, fused projections, Gemma's 1 + w norms,
/// LongRoPE tensors and their metadata) are written only from a GGUF source, whose names and
/// metadata are carried over.
pub fn builds_from_hf(arch: Arch) -> bool {
    matches!(
        arch,
        Arch::Llama | Arch::Mistral | Arch::Qwen2 | Arch::Qwen3
    )
}

/// Keys a quantizer rewrites rather than copies.
fn rewritten(key: &str) -> bool {
    key == "general.file_type" || key == "general.quantization_version" || key.starts_with("split.")
}

/// The source's metadata with `general.file_type` and `general.quantization_version` set (and
/// split keys dropped), as llama-quantize does.
pub fn from_gguf(file: &GgufFile, file_type: u32) -> Vec<(String, GgufValue)> {
    let mut meta: Vec<(String, GgufValue)> = Vec::new();
    let set = |meta: &mut Vec<(String, GgufValue)>, k: &str, v: GgufValue| match meta
        .iter_mut()
        .find(|(key, _)| key == k)
    {
        Some(slot) => slot.1 = v,
        None => meta.push((k.to_string(), v)),
    };
    // In alphabetical order (the reader keeps keys in a map): llama.cpp looks keys up by
    // name, and the byte count, which is what file sizes depend on, is the same in any order.
    for (k, v) in file.metadata() {
        if !rewritten(k) {
            meta.push((k.clone(), v.clone()));
        }
    }
    set(
        &mut meta,
        "general.quantization_version",
        GgufValue::U32(QUANTIZATION_VERSION),
    );
    set(&mut meta, "general.file_type", GgufValue::U32(file_type));
    meta
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    Ok(Some(crunch_model::read_json(path)?))
}

/// Metadata for a Hugging Face source: architecture keys from the config, the tokenizer from
/// `tokenizer.json` (+ `tokenizer_config.json`), `general.*` keys.
pub fn from_hf(ckpt: &Checkpoint, file_type: u32) -> Result<Vec<(String, GgufValue)>> {
    let cfg = &ckpt.config;
    let dir = if ckpt.path.is_dir() {
        ckpt.path.clone()
    } else {
        ckpt.path.parent().unwrap_or(Path::new(".")).to_path_buf()
    };
    let arch = gguf_arch(cfg.arch);
    let k = |s: &str| format!("{arch}.{s}");
    let u = |v: usize| GgufValue::U32(v as u32);
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "model".into());
    let mut meta = vec![
        (
            "general.architecture".to_string(),
            GgufValue::String(arch.into()),
        ),
        (
            "general.type".to_string(),
            GgufValue::String("model".into()),
        ),
        ("general.name".to_string(), GgufValue::String(name)),
    ];
    meta.extend(gguf_shape_metadata(cfg, arch));
    meta.extend([
        ("general.file_type".to_string(), GgufValue::U32(file_type)),
        (k("vocab_size"), u(cfg.vocab)),
        (k("rope.dimension_count"), u(cfg.head_dim)),
    ]);
    if cfg.heads * cfg.head_dim != cfg.hidden {
        meta.push((k("attention.key_length"), u(cfg.head_dim)));
        meta.push((k("attention.value_length"), u(cfg.head_dim)));
    }
    if let Some(RopeScaling::Linear { factor }) = cfg.rope_scaling {
        meta.push((k("rope.scaling.type"), GgufValue::String("linear".into())));
        meta.push((k("rope.scaling.factor"), GgufValue::F32(factor as f32)));
    }
    if let Some(w) = cfg.layer_window.iter().flatten().next() {
        meta.push((k("attention.sliding_window"), u(*w)));
    }
    let config = read_json(&dir.join("config.json"))?;
    let id = |key: &str| {
        config
            .as_ref()
            .and_then(|c| c[key].as_u64())
            .map(|v| v as u32)
    };
    let tok_path = dir.join("tokenizer.json");
    match read_json(&tok_path)? {
        Some(tok) => {
            let tok_config = read_json(&dir.join("tokenizer_config.json"))?;
            let ids = SpecialIds {
                bos: id("bos_token_id"),
                eos: id("eos_token_id"),
            };
            let t = tokenizer_metadata(&tok, tok_config.as_ref(), ids, cfg.vocab).map_err(|e| {
                Error::Tokenizer {
                    path: tok_path.clone(),
                    source: e.into(),
                }
            })?;
            meta.extend(t);
        }
        None => {
            return Err(Error::Gguf {
                path: tok_path,
                problem: super::GgufProblem::NoTokenizer,
            })
        }
    }
    meta.push((
        "general.quantization_version".to_string(),
        GgufValue::U32(QUANTIZATION_VERSION),
    ));
    Ok(meta)
}
