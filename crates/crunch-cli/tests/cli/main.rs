//! The `crunch` binary end to end: happy paths print what they promise, and every kind of bad
//! input ends with a clear error naming the file, a non-zero exit, and no panic. One test
//! binary (each links the whole CLI), one module per idea.

use std::path::Path;

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod commands;
mod recipes;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// A calibration text for tiny models: random ids decoded by the model's own tokenizer would
/// need one; the tiny models have none, so calibrate on text sampled from the model.
const TINY_CALIB: &str = "self:4x16";

/// Every file of a directory (not below it) with its bytes, sorted by name.
fn dir_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}
