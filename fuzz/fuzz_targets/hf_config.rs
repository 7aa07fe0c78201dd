//! Any bytes as a config.json: `from_hf_json`, its own output parsed back to the same config,
//! and a small model of it built, opened and run.
//! The body is shared with the stable replay harness (crates/crunch-cli/tests/fuzz_replay.rs).
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::hf_config(data));
