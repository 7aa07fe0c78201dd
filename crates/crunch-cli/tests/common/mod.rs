//! What the CLI's test files share: running the binary, and a tiny model made in code.
#![allow(dead_code)] // Each test file uses its own part.

use crunch_model::testing::{tiny_specs, write_tiny_model};
use std::path::PathBuf;
use std::process::Command;

/// Runs `crunch ARGS`: (success, stdout, stderr).
pub fn crunch(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_crunch"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The tiny Llama (seed 0) in a temporary directory.
pub fn tiny_llama() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_specs().into_iter().next().unwrap();
    write_tiny_model(&spec, dir.path(), 0).unwrap();
    let p = dir.path().to_path_buf();
    (dir, p)
}
