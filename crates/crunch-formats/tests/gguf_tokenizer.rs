//! The tokenizer rebuilt from SmolLM2's GGUF metadata must tokenize exactly like the model's
//! Hugging Face `tokenizer.json`.

mod common;

use crunch_formats::gguf::{build_tokenizer, GgufFile};
use tokenizers::Tokenizer;

fn tokenizers() -> (Tokenizer, Tokenizer) {
    let gguf = GgufFile::open(common::smollm2_gguf()).unwrap();
    let from_gguf = build_tokenizer(&gguf).unwrap();
    let reference = Tokenizer::from_file(common::smollm2_tokenizer_json()).unwrap();
    (from_gguf, reference)
}

/// Ids of `text` from both tokenizers, without special-token insertion (as crunch evaluates).
fn both(a: &Tokenizer, b: &Tokenizer, text: &str) -> (Vec<u32>, Vec<u32>) {
    let ids = |t: &Tokenizer| t.encode(text, false).unwrap().get_ids().to_vec();
    (ids(a), ids(b))
}

fn assert_same(got: &[u32], want: &[u32], what: &str) {
    if got != want {
        let i = got.iter().zip(want).take_while(|(a, b)| a == b).count();
        panic!(
            "{what}: {} vs {} tokens, first difference at token {i}: gguf {:?} vs tokenizer.json {:?}",
            got.len(),
            want.len(),
            &got[i..(i + 5).min(got.len())],
            &want[i..(i + 5).min(want.len())]
        );
    }
}

#[test]
fn matches_tokenizer_json_on_the_committed_sample() {
    let (gguf, reference) = tokenizers();
    let sample = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tokenizer_sample.txt"),
    )
    .unwrap();
    let (got, want) = both(&gguf, &reference, &sample);
    assert!(want.len() > 1000, "sample too small: {} tokens", want.len());
    assert_same(&got, &want, "whole sample");
    // Line by line too: different text boundaries exercise different merges.
    for (n, line) in sample.split_inclusive('\n').enumerate() {
        let (got, want) = both(&gguf, &reference, line);
        assert_same(&got, &want, &format!("line {}", n + 1));
    }
    // The special-token strings in the sample are single added tokens in both.
    let eot = reference.token_to_id("<|endoftext|>").unwrap();
    assert!(got.contains(&eot));
    // Decoding gives back the text (byte-level BPE is lossless).
    assert_eq!(gguf.decode(&got, false).unwrap(), sample);
    assert_eq!(
        gguf.decode(&got, false).unwrap(),
        reference.decode(&want, false).unwrap()
    );
}

#[test]
fn vocabulary_and_special_tokens_match() {
    let (gguf, reference) = tokenizers();
    assert_eq!(
        gguf.get_vocab_size(true),
        reference.get_vocab_size(true),
        "vocabulary size with added tokens"
    );
    let mut want: Vec<_> = reference.get_vocab(true).into_iter().collect();
    let mut got: Vec<_> = gguf.get_vocab(true).into_iter().collect();
    want.sort();
    got.sort();
    assert!(got == want, "token -> id maps differ");
    let specials = |t: &Tokenizer| {
        let mut s: Vec<_> = t
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, tok)| (id, tok.content, tok.special))
            .collect();
        s.sort();
        s
    };
    assert_eq!(specials(&gguf), specials(&reference));
}

/// The acceptance check on the whole WikiText-2 test split (1.3 MB); run with
/// `cargo test -p crunch-formats --release --test gguf_tokenizer -- --ignored --nocapture`.
/// Reads `$CRUNCH_WIKITEXT_TEST` or `/work/shared/data/wikitext-2-raw/wiki.test.raw`.
#[test]
#[ignore = "needs the WikiText-2 test split; run by hand"]
fn matches_tokenizer_json_on_wikitext2_test() {
    let path = std::env::var("CRUNCH_WIKITEXT_TEST")
        .unwrap_or_else(|_| "/work/shared/data/wikitext-2-raw/wiki.test.raw".into());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (gguf, reference) = tokenizers();
    let (got, want) = both(&gguf, &reference, &text);
    assert_same(&got, &want, &path);
    println!(
        "{path}: {} bytes, {} tokens, identical from GGUF metadata and tokenizer.json",
        text.len(),
        got.len()
    );
}

/// tokenizer.json → GGUF metadata (what crunch writes for a safetensors source) gives the
/// arrays llama.cpp's converter wrote into SmolLM2's GGUF, and a tokenizer that tokenizes the
/// sample exactly like tokenizer.json.
#[test]
fn tokenizer_json_becomes_the_metadata_llama_cpp_writes() {
    use crunch_formats::gguf::{serialize, tokenizer_metadata, GgufValue, SpecialIds};
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::smollm2_tokenizer_json()).unwrap())
            .unwrap();
    let file = GgufFile::open(common::smollm2_gguf()).unwrap();
    let ids = SpecialIds {
        bos: Some(1),
        eos: Some(2),
    };
    let meta = tokenizer_metadata(&json, None, ids, 49152).unwrap();
    for key in [
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
    ] {
        let ours = &meta.iter().find(|(k, _)| k == key).unwrap().1;
        assert!(
            Some(ours) == file.get(key),
            "{key} differs from llama.cpp's"
        );
    }
    let refs: Vec<(&str, GgufValue)> = meta.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let rebuilt = GgufFile::from_bytes("tok.gguf", serialize(&refs, &[]).unwrap()).unwrap();
    let ours = build_tokenizer(&rebuilt).unwrap();
    let reference = Tokenizer::from_file(common::smollm2_tokenizer_json()).unwrap();
    let sample = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tokenizer_sample.txt"),
    )
    .unwrap();
    let (got, want) = both(&ours, &reference, &sample);
    assert_same(
        &got,
        &want,
        "sample through tokenizer.json -> GGUF metadata",
    );

    // A pre-tokenizer crunch cannot name is refused with the reason.
    let mut odd = json.clone();
    odd["pre_tokenizer"] = serde_json::json!({"type": "Whitespace"});
    let e = tokenizer_metadata(&odd, None, ids, 49152).unwrap_err();
    assert!(e.contains("Whitespace") && e.contains("smollm"), "{e}");
}
