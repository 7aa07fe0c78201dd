//! The other direction: a Hugging Face byte-level BPE tokenizer (`tokenizer.json`, and
//! `tokenizer_config.json` when there is one) as GGUF `tokenizer.ggml.*` metadata, as
//! llama.cpp's converter writes it. The pre-tokenizer is recognised by its structure and
//! written as the `tokenizer.ggml.pre` name that [`super::build_tokenizer`] (and llama.cpp)
//! map back to it.

use super::{
    GgufValue, LLAMA3_PATTERN, QWEN2_PATTERN, SUPPORTED_PRE, TOKEN_TYPE_CONTROL, TOKEN_TYPE_UNUSED,
    TOKEN_TYPE_USER_DEFINED,
};
use serde_json::Value;

const TOKEN_TYPE_NORMAL: i32 = 1;

/// Special-token ids from `config.json`, used where `tokenizer_config.json` names none.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
}

/// The `tokenizer.ggml.*` keys (and `tokenizer.chat_template`) for `tokenizer_json`, with the
/// vocabulary padded to `vocab` entries (`[PAD{id}]`, type unused) when the model's embedding
/// is larger than the tokenizer. Only byte-level BPE tokenizers with a pre-tokenizer crunch
/// recognises (see [`SUPPORTED_PRE`]) are accepted; errors say what is missing.
pub fn tokenizer_metadata(
    tokenizer_json: &Value,
    tokenizer_config: Option<&Value>,
    fallback: SpecialIds,
    vocab: usize,
) -> Result<Vec<(String, GgufValue)>, String> {
    let model = &tokenizer_json["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(format!(
            "tokenizer model is {}, only BPE is supported",
            model["type"]
        ));
    }
    let pre = detect_pre(tokenizer_json)?;
    let mut tokens: Vec<Option<(String, i32)>> = vec![None; vocab];
    let mut put = |id: u64, tok: &str, ty: i32| -> Result<(), String> {
        let slot = tokens.get_mut(id as usize).ok_or_else(|| {
            format!("token `{tok}` has id {id}, beyond the model's vocabulary of {vocab}")
        })?;
        *slot = Some((tok.to_string(), ty));
        Ok(())
    };
    let map = model["vocab"]
        .as_object()
        .ok_or("tokenizer model has no `vocab` object")?;
    for (tok, id) in map {
        let id = id
            .as_u64()
            .ok_or_else(|| format!("vocab entry `{tok}` has no integer id"))?;
        put(id, tok, TOKEN_TYPE_NORMAL)?;
    }
    for t in tokenizer_json["added_tokens"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let (Some(id), Some(content)) = (t["id"].as_u64(), t["content"].as_str()) else {
            return Err(format!("added token {t} lacks an id or content"));
        };
        let ty = if t["special"].as_bool().unwrap_or(false) {
            TOKEN_TYPE_CONTROL
        } else {
            TOKEN_TYPE_USER_DEFINED
        };
        put(id, content, ty as i32)?;
    }
    let (names, types): (Vec<GgufValue>, Vec<GgufValue>) = tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| match t {
            Some((tok, ty)) => (GgufValue::String(tok), GgufValue::I32(ty)),
            None => (
                GgufValue::String(format!("[PAD{id}]")),
                GgufValue::I32(TOKEN_TYPE_UNUSED as i32),
            ),
        })
        .unzip();
    let merges = model["merges"]
        .as_array()
        .ok_or("tokenizer model has no `merges` array")?
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let text = match m {
                Value::String(s) => s.clone(),
                Value::Array(p) if p.len() == 2 && p.iter().all(Value::is_string) => {
                    format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap())
                }
                _ => return Err(format!("merge {i} is {m}, not \"a b\" or [a, b]")),
            };
            Ok(GgufValue::String(text))
        })
        .collect::<Result<Vec<_>, String>>()?;

    let id_of = |key: &str| -> Option<u32> {
        let v = &tokenizer_config?[key];
        let content = v.as_str().or_else(|| v["content"].as_str())?;
        names
            .iter()
            .position(|n| n.as_str() == Some(content))
            .map(|i| i as u32)
    };
    let mut meta = vec![
        (
            "tokenizer.ggml.model".into(),
            GgufValue::String("gpt2".into()),
        ),
        ("tokenizer.ggml.pre".into(), GgufValue::String(pre.into())),
        (
            "tokenizer.ggml.tokens".into(),
            GgufValue::Array(names.clone()),
        ),
        ("tokenizer.ggml.token_type".into(), GgufValue::Array(types)),
        ("tokenizer.ggml.merges".into(), GgufValue::Array(merges)),
    ];
    let ids = [
        ("bos", id_of("bos_token").or(fallback.bos)),
        ("eos", id_of("eos_token").or(fallback.eos)),
        ("unknown", id_of("unk_token")),
        ("padding", id_of("pad_token")),
    ];
    for (name, id) in ids {
        if let Some(id) = id {
            meta.push((
                format!("tokenizer.ggml.{name}_token_id"),
                GgufValue::U32(id),
            ));
        }
    }
    for flag in ["add_bos_token", "add_eos_token"] {
        if let Some(b) = tokenizer_config.and_then(|c| c[flag].as_bool()) {
            meta.push((format!("tokenizer.ggml.{flag}"), GgufValue::Bool(b)));
        }
    }
    if let Some(t) = tokenizer_config.and_then(chat_template) {
        meta.push(("tokenizer.chat_template".into(), GgufValue::String(t)));
    }
    Ok(meta)
}

/// `chat_template` of a tokenizer_config.json: a string, or the one named "default" in a
/// list of named templates.
fn chat_template(config: &Value) -> Option<String> {
    match &config["chat_template"] {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => list
            .iter()
            .find(|t| t["name"].as_str() == Some("default"))
            .and_then(|t| t["template"].as_str())
            .map(str::to_string),
        _ => None,
    }
}

/// The `tokenizer.ggml.pre` name of a tokenizer.json's normalizer and pre-tokenizer.
fn detect_pre(tok: &Value) -> Result<&'static str, String> {
    let ty = |v: &Value| v["type"].as_str().map(str::to_string);
    let byte_level = |v: &Value, regex: bool| {
        ty(v).as_deref() == Some("ByteLevel") && v["use_regex"].as_bool().unwrap_or(true) == regex
    };
    let split = |v: &Value, pattern: &str| {
        ty(v).as_deref() == Some("Split") && v["pattern"]["Regex"].as_str() == Some(pattern)
    };
    let (pre, norm) = (&tok["pre_tokenizer"], &tok["normalizer"]);
    let plain = norm.is_null();
    let nfc = ty(norm).as_deref() == Some("NFC");
    let seq: Vec<Value> = pre["pretokenizers"].as_array().cloned().unwrap_or_default();
    let name = match (ty(pre).as_deref(), seq.as_slice()) {
        (Some("ByteLevel"), _) if plain && byte_level(pre, true) => Some("gpt2"),
        (Some("Sequence"), [d, b])
            if plain
                && ty(d).as_deref() == Some("Digits")
                && d["individual_digits"].as_bool() == Some(true)
                && byte_level(b, true) =>
        {
            Some("smollm")
        }
        (Some("Sequence"), [s, b]) if plain && split(s, LLAMA3_PATTERN) && byte_level(b, false) => {
            Some("llama-bpe")
        }
        (Some("Sequence"), [s, b]) if nfc && split(s, QWEN2_PATTERN) && byte_level(b, false) => {
            Some("qwen2")
        }
        _ => None,
    };
    name.ok_or_else(|| {
        format!(
            "the tokenizer's normalizer {norm} and pre-tokenizer {pre} are not one crunch \
             can name for llama.cpp (it knows the pre-tokenizers {})",
            SUPPORTED_PRE.join(", ")
        )
    })
}
