//! Any bytes given to the unpacker must give an error or exactly the bytes that were packed;
//! inputs that are not packs are also packed and unpacked, bit for bit.
//! The body is shared with the stable replay harness (crates/crunch-cli/tests/fuzz_replay.rs).
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::unpack(data));
