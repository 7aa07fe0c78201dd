//! Bytes steering a tiny model (sizes, switches, extreme weights) and a recipe (method, bits,
//! group size, calibration tokens): quantized or pruned, written, read back, run.
//! The body is shared with the stable replay harness (crates/crunch-cli/tests/fuzz_replay.rs).
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::quantize_tiny(data));
