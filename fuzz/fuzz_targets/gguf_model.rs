//! Any bytes as a whole GGUF model: metadata through `config_from_gguf`, the structure checked
//! against the tensors, the model loaded and run on two tokens.
//! The body is shared with the stable replay harness (crates/crunch-cli/tests/fuzz_replay.rs).
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::gguf_model(data));
