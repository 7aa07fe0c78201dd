//! Any bytes given to the GGUF reader, dequantizer and tokenizer builder must give an error
//! or a value, never a panic, a hang or a huge allocation.
//! The body is shared with the stable replay harness (crates/crunch-cli/tests/fuzz_replay.rs).
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::gguf(data));
