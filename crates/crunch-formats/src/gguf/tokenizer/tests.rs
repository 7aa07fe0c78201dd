//! Tokenizer-from-metadata tests on a tiny synthetic vocabulary; the comparison with a real
//! `tokenizer.json` lives in tests/gguf_tokenizer.rs.

use super::*;
use crate::gguf::serialize;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

/// Control token (id 0), user-defined token (1), the 256 byte-level characters (2..=257),
/// merge results ("he" = 258 ... "123" = 262), an unused slot (263).
fn vocab() -> (Vec<String>, Vec<i32>) {
    let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    alphabet.sort();
    let mut tokens = vec!["<|endoftext|>".to_string(), "<tool>".to_string()];
    tokens.extend(alphabet.iter().map(char::to_string));
    tokens.extend(["he", "Ġt", "Ġthe", "12", "123"].map(String::from));
    tokens.push("[PAD999]".into());
    let mut types = vec![1; tokens.len()];
    types[0] = 3;
    types[1] = 4;
    *types.last_mut().unwrap() = 5;
    (tokens, types)
}

const MERGES: &[&str] = &["h e", "Ġ t", "Ġt he", "1 2", "12 3"];

fn file_with(pre: &str, extra: Vec<(&str, GgufValue)>) -> GgufFile {
    let (tokens, types) = vocab();
    let strings =
        |v: &[String]| GgufValue::Array(v.iter().cloned().map(GgufValue::String).collect());
    let merges: Vec<String> = MERGES.iter().map(|m| m.to_string()).collect();
    let mut meta = vec![
        ("tokenizer.ggml.model", GgufValue::String("gpt2".into())),
        ("tokenizer.ggml.pre", GgufValue::String(pre.into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        (
            "tokenizer.ggml.token_type",
            GgufValue::Array(types.into_iter().map(GgufValue::I32).collect()),
        ),
        ("tokenizer.ggml.merges", strings(&merges)),
        ("tokenizer.ggml.bos_token_id", GgufValue::U32(0)),
        ("tokenizer.ggml.eos_token_id", GgufValue::U32(0)),
    ];
    // Later entries replace earlier ones with the same key.
    for (k, v) in extra {
        meta.retain(|(key, _)| *key != k);
        meta.push((k, v));
    }
    GgufFile::from_bytes("tok.gguf", serialize(&meta, &[]).unwrap()).unwrap()
}

fn tokens(t: &Tokenizer, text: &str) -> Vec<String> {
    t.encode(text, false).unwrap().get_tokens().to_vec()
}

#[test]
fn pre_tokenizer_names_select_the_digit_rules() {
    let gpt2 = build_tokenizer(&file_with("gpt2", vec![])).unwrap();
    assert_eq!(
        tokens(&gpt2, "the 1234"),
        ["t", "he", "Ġ", "123", "4"].map(String::from)
    );
    // GPT-2 keeps the number whole, so the 1-2-3 merges apply; SmolLM splits every digit;
    // Llama 3 cuts digit runs into threes.
    let smol = build_tokenizer(&file_with("smollm", vec![])).unwrap();
    assert_eq!(
        tokens(&smol, " 1234"),
        ["Ġ", "1", "2", "3", "4"].map(String::from)
    );
    let llama = build_tokenizer(&file_with("llama-bpe", vec![])).unwrap();
    assert_eq!(tokens(&llama, "1234"), ["123", "4"].map(String::from));
    assert_eq!(tokens(&llama, " the"), ["Ġthe"].map(String::from));
}

#[test]
fn qwen2_normalizes_to_nfc() {
    let qwen = build_tokenizer(&file_with("qwen2", vec![])).unwrap();
    let gpt2 = build_tokenizer(&file_with("gpt2", vec![])).unwrap();
    let (composed, decomposed) = ("\u{e9}", "e\u{301}");
    assert_eq!(tokens(&qwen, decomposed), tokens(&qwen, composed));
    assert_ne!(tokens(&gpt2, decomposed), tokens(&gpt2, composed));
}

#[test]
fn added_tokens_match_verbatim_and_decode() {
    let t = build_tokenizer(&file_with("smollm", vec![])).unwrap();
    let enc = t.encode("he<|endoftext|><tool>", false).unwrap();
    assert_eq!(enc.get_ids(), &[258, 0, 1]);
    assert_eq!(
        t.decode(&[258, 0, 1], false).unwrap(),
        "he<|endoftext|><tool>"
    );
    // Only the control token is special.
    assert_eq!(t.decode(&[258, 0, 1], true).unwrap(), "he<tool>");
    assert_eq!(t.decode(&[262, 260], false).unwrap(), "123 the");
    // The unused padding slot is not in the vocabulary.
    assert_eq!(t.token_to_id("[PAD999]"), None);
}

#[test]
fn bos_is_added_only_when_the_file_asks() {
    let plain = build_tokenizer(&file_with("gpt2", vec![])).unwrap();
    assert_eq!(plain.encode("he", true).unwrap().get_ids(), &[258]);
    let bos = file_with(
        "gpt2",
        vec![("tokenizer.ggml.add_bos_token", GgufValue::Bool(true))],
    );
    let t = build_tokenizer(&bos).unwrap();
    assert_eq!(t.encode("he", true).unwrap().get_ids(), &[0, 258]);
    assert_eq!(t.encode("he", false).unwrap().get_ids(), &[258]);
}

/// The error building a tokenizer from `file_with(pre, extra)` gives.
fn refusal(pre: &str, extra: Vec<(&str, GgufValue)>) -> String {
    build_tokenizer(&file_with(pre, extra))
        .unwrap_err()
        .to_string()
}

#[test]
fn unsupported_inputs_are_clear_errors() {
    let e = refusal("falcon", vec![]);
    assert!(e.contains("unsupported tokenizer.ggml.pre `falcon`"), "{e}");
    assert!(
        e.contains("smollm") && e.contains("llama-bpe") && e.contains("qwen2"),
        "{e}"
    );

    let llama = vec![("tokenizer.ggml.model", GgufValue::String("llama".into()))];
    let e = refusal("default", llama);
    assert!(e.contains("only `gpt2`"), "{e}");

    let bad_merge = vec![(
        "tokenizer.ggml.merges",
        GgufValue::Array(vec![GgufValue::String("abc".into())]),
    )];
    let e = refusal("gpt2", bad_merge);
    assert!(e.contains("merges[0]"), "{e}");

    let unknown_merge = vec![(
        "tokenizer.ggml.merges",
        GgufValue::Array(vec![GgufValue::String("Ġthe zz".into())]),
    )];
    let e = refusal("gpt2", unknown_merge);
    assert!(e.contains("BPE model"), "{e}");

    let short_types = vec![(
        "tokenizer.ggml.token_type",
        GgufValue::Array(vec![GgufValue::I32(1)]),
    )];
    let e = refusal("gpt2", short_types);
    assert!(e.contains("1 entries for"), "{e}");

    let bos = vec![
        ("tokenizer.ggml.add_bos_token", GgufValue::Bool(true)),
        ("tokenizer.ggml.bos_token_id", GgufValue::U32(1 << 20)),
    ];
    let e = refusal("gpt2", bos);
    assert!(e.contains("bos_token_id"), "{e}");

    let none = GgufFile::from_bytes("x.gguf", serialize(&[], &[]).unwrap()).unwrap();
    let e = build_tokenizer(&none).unwrap_err().to_string();
    assert!(
        e.starts_with("x.gguf: ") && e.contains("no tokenizer"),
        "{e}"
    );
}
