//! Rebuilds a Hugging Face tokenizer from a GGUF file's `tokenizer.ggml.*` metadata.
//!
//! A GGUF converted from a Hugging Face byte-level BPE tokenizer keeps everything the
//! `tokenizer.json` had except its pre-tokenizer, which llama.cpp reduces to a name
//! (`tokenizer.ggml.pre`). Each supported name maps back to the normalizer, pre-tokenizer and
//! BPE options of the model family's `tokenizer.json`; the vocabulary, merges and added
//! tokens come from the file itself. See docs/decisions/ for why this is done by name.

mod from_json;

pub use from_json::{tokenizer_metadata, SpecialIds};

use super::{GgufFile, GgufValue};
use crate::Result;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    SplitDelimiterBehavior, Tokenizer,
};

/// Llama 3's split pattern: contractions, letters, digits in groups of up to three,
/// punctuation runs, newlines, whitespace.
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's: the same with one digit per piece.
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The `tokenizer.ggml.pre` names this module understands, for error messages.
pub const SUPPORTED_PRE: &[&str] = &["default", "gpt2", "gpt-2", "smollm", "llama-bpe", "qwen2"];

/// llama.cpp's `llama_token_type` values that matter here.
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;
const TOKEN_TYPE_UNUSED: i64 = 5;

/// How one model family's `tokenizer.json` cuts and normalizes text before BPE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PreKind {
    /// GPT-2: ByteLevel with its built-in regex.
    Gpt2,
    /// SmolLM: every digit alone, then GPT-2's ByteLevel.
    SmolLm,
    /// Llama 3: its own split regex, ByteLevel without regex, `ignore_merges`.
    Llama3,
    /// Qwen 2: NFC, its split regex, ByteLevel without regex.
    Qwen2,
}

impl PreKind {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "default" | "gpt2" | "gpt-2" => PreKind::Gpt2,
            "smollm" => PreKind::SmolLm,
            "llama-bpe" => PreKind::Llama3,
            "qwen2" => PreKind::Qwen2,
            _ => return None,
        })
    }

    fn split(pattern: &str) -> PreTokenizerWrapper {
        let split = Split::new(
            SplitPattern::Regex(pattern.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .expect("built-in split pattern compiles");
        PreTokenizerWrapper::Split(split)
    }

    fn pre_tokenizer(self) -> PreTokenizerWrapper {
        let byte_level = |trim_offsets, use_regex| {
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, trim_offsets, use_regex))
        };
        match self {
            PreKind::Gpt2 => byte_level(true, true),
            PreKind::SmolLm => PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                byte_level(true, true),
            ])),
            PreKind::Llama3 => PreTokenizerWrapper::Sequence(Sequence::new(vec![
                Self::split(LLAMA3_PATTERN),
                byte_level(true, false),
            ])),
            PreKind::Qwen2 => PreTokenizerWrapper::Sequence(Sequence::new(vec![
                Self::split(QWEN2_PATTERN),
                byte_level(false, false),
            ])),
        }
    }

    fn normalizer(self) -> Option<NormalizerWrapper> {
        (self == PreKind::Qwen2).then_some(NormalizerWrapper::NFC(NFC))
    }

    /// Llama 3's tokenizer.json looks whole pre-tokens up in the vocabulary before merging.
    fn ignore_merges(self) -> bool {
        self == PreKind::Llama3
    }
}

/// Builds the tokenizer described by `file`'s metadata. Only byte-level BPE
/// (`tokenizer.ggml.model` = "gpt2") is supported.
pub fn build_tokenizer(file: &GgufFile) -> Result<Tokenizer> {
    let model = file
        .get("tokenizer.ggml.model")
        .and_then(GgufValue::as_str)
        .ok_or_else(|| {
            file.invalid("no string `tokenizer.ggml.model`: the file has no tokenizer")
        })?;
    if model != "gpt2" {
        return Err(file.invalid(format!(
            "tokenizer.ggml.model is `{model}`; only `gpt2` (byte-level BPE) is supported"
        )));
    }
    // llama.cpp treats a missing name as "default".
    let pre_name = match file.get("tokenizer.ggml.pre") {
        None => "default",
        Some(v) => v
            .as_str()
            .ok_or_else(|| file.invalid("tokenizer.ggml.pre is not a string"))?,
    };
    let pre = PreKind::from_name(pre_name).ok_or_else(|| {
        file.invalid(format!(
            "unsupported tokenizer.ggml.pre `{pre_name}`; supported: {}",
            SUPPORTED_PRE.join(", ")
        ))
    })?;

    let tokens = string_array(file, "tokenizer.ggml.tokens")?;
    let types = token_types(file, tokens.len())?;
    let merges = string_array(file, "tokenizer.ggml.merges")?
        .into_iter()
        .enumerate()
        .map(|(i, m)| match m.split_once(' ') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                Ok((a.to_string(), b.to_string()))
            }
            _ => Err(file.invalid(format!(
                "tokenizer.ggml.merges[{i}] is `{m}`, not two tokens separated by one space"
            ))),
        })
        .collect::<Result<Vec<_>>>()?;

    let mut vocab = Vocab::with_capacity(tokens.len());
    for (id, (&tok, &ty)) in tokens.iter().zip(&types).enumerate() {
        // Unused slots are llama.cpp's padding (`[PAD123]`); the original vocabulary has no
        // such entries. A repeated token keeps its first id, as a JSON vocabulary would.
        if ty != TOKEN_TYPE_UNUSED {
            vocab.entry(tok.to_string()).or_insert(id as u32);
        }
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(pre.ignore_merges())
        .build()
        .map_err(|e| file.invalid(format!("cannot build the BPE model: {e}")))?;

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_normalizer(pre.normalizer());
    tokenizer.with_pre_tokenizer(Some(pre.pre_tokenizer()));
    tokenizer.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));

    // Control tokens were `special` added tokens in tokenizer.json, user-defined ones
    // non-special added tokens; both are matched verbatim in the input before BPE.
    for (&tok, &ty) in tokens.iter().zip(&types) {
        if ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED {
            let special = ty == TOKEN_TYPE_CONTROL;
            let added = AddedToken::from(tok.to_string(), special).normalized(false);
            if special {
                tokenizer.add_special_tokens(&[added]);
            } else {
                tokenizer.add_tokens(&[added]);
            }
        }
    }
    tokenizer.with_post_processor(post_processor(file, &tokens)?);
    Ok(tokenizer)
}

/// BOS/EOS insertion, only when the file asks for it (`tokenizer.ggml.add_bos_token`,
/// `add_eos_token`). Pairs repeat the markers around the second sequence.
fn post_processor(file: &GgufFile, tokens: &[&str]) -> Result<Option<PostProcessorWrapper>> {
    let flag = |key: &str| file.get(key).and_then(GgufValue::as_bool).unwrap_or(false);
    let special = |key: &str| -> Result<(String, u32)> {
        let id = file
            .get(key)
            .and_then(GgufValue::as_u64)
            .filter(|&id| (id as usize) < tokens.len())
            .ok_or_else(|| file.invalid(format!("`{key}` is missing or out of range")))?;
        Ok((tokens[id as usize].to_string(), id as u32))
    };
    let bos = flag("tokenizer.ggml.add_bos_token")
        .then(|| special("tokenizer.ggml.bos_token_id"))
        .transpose()?;
    let eos = flag("tokenizer.ggml.add_eos_token")
        .then(|| special("tokenizer.ggml.eos_token_id"))
        .transpose()?;
    if bos.is_none() && eos.is_none() {
        return Ok(None);
    }
    let wrap = |seq: &str, type_id: u32| {
        let mut parts = Vec::new();
        if let Some((t, _)) = &bos {
            parts.push(format!("{t}:{type_id}"));
        }
        parts.push(format!("${seq}:{type_id}"));
        if let Some((t, _)) = &eos {
            parts.push(format!("{t}:{type_id}"));
        }
        parts.join(" ")
    };
    let single = wrap("A", 0);
    let pair = format!("{single} {}", wrap("B", 1));
    let template = TemplateProcessing::builder()
        .try_single(single.as_str())
        .and_then(|b| b.try_pair(pair.as_str()))
        .map_err(|e| file.invalid(format!("cannot build the BOS/EOS template: {e}")))?
        .special_tokens(bos.into_iter().chain(eos).collect::<Vec<_>>())
        .build()
        .map_err(|e| file.invalid(format!("cannot build the BOS/EOS template: {e}")))?;
    Ok(Some(PostProcessorWrapper::Template(template)))
}

fn string_array<'a>(file: &'a GgufFile, key: &str) -> Result<Vec<&'a str>> {
    let items = file
        .get(key)
        .and_then(GgufValue::as_array)
        .ok_or_else(|| file.invalid(format!("no array `{key}`")))?;
    each(file, key, items, "a string", GgufValue::as_str)
}

/// Every item of the array `key` as `get` reads it, or an error naming the first that is not
/// `what`.
fn each<'a, T>(
    file: &GgufFile,
    key: &str,
    items: &'a [GgufValue],
    what: &str,
    get: impl Fn(&'a GgufValue) -> Option<T>,
) -> Result<Vec<T>> {
    items
        .iter()
        .enumerate()
        .map(|(i, v)| get(v).ok_or_else(|| file.invalid(format!("`{key}`[{i}] is not {what}"))))
        .collect()
}

/// Token types, one per token; all "normal" when the file has none.
fn token_types(file: &GgufFile, n_tokens: usize) -> Result<Vec<i64>> {
    let key = "tokenizer.ggml.token_type";
    let Some(v) = file.get(key) else {
        return Ok(vec![1; n_tokens]);
    };
    let items = v
        .as_array()
        .ok_or_else(|| file.invalid(format!("`{key}` is not an array")))?;
    if items.len() != n_tokens {
        return Err(file.invalid(format!(
            "`{key}` has {} entries for {n_tokens} tokens",
            items.len()
        )));
    }
    each(file, key, items, "an integer", GgufValue::as_i64)
}

#[cfg(test)]
mod tests;
