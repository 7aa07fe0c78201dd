//! Any bytes opened as a safetensors file must give an error or tensors that read back,
//! never a panic (each input goes through a scratch file: the reader maps files).
//! The body is shared with the stable replay harness (crates/crunch-cli/tests/fuzz_replay.rs).
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::safetensors_header(data));
