//! Any text given as a `crunch compress --recipe` file must parse to a plan or give an error,
//! never a panic; a plan that parses must survive its own TOML round trip.
//! The body is shared with the stable replay harness (crates/crunch-cli/tests/fuzz_replay.rs).
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::recipe(data));
