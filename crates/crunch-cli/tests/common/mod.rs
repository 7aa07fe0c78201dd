//! What the CLI's test files share: running the binary, and a tiny model made in code.
#![allow(dead_code)] // Each test file uses its own part.

use crunch_model::testing::{tiny_dir, tiny_specs};
use std::path::{Path, PathBuf};
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
    let dir = tiny_dir(&tiny_specs()[0]);
    let p = dir.path().to_path_buf();
    (dir, p)
}

fn s(p: &impl AsRef<Path>) -> &str {
    p.as_ref().to_str().unwrap()
}

/// `crunch compress MODEL --recipe RECIPE --out OUT`, which must succeed: an output rebuilt
/// from the `recipe.toml` written beside it.
pub fn rebuild(model: impl AsRef<Path>, recipe: impl AsRef<Path>, out: impl AsRef<Path>) {
    let (ok, _, err) = crunch(&[
        "compress",
        s(&model),
        "--recipe",
        s(&recipe),
        "--out",
        s(&out),
    ]);
    assert!(ok, "{err}");
}

/// `crunch eval MODEL --data TEXT` on 64 tokens in windows of 32, which must succeed: the
/// perplexity.
pub fn eval_ppl(model: impl AsRef<Path>, text: impl AsRef<Path>) -> f64 {
    let window = ["--ctx", "32", "--max-tokens", "64", "--json"];
    let (ok, out, err) = crunch(&[&["eval", s(&model), "--data", s(&text)][..], &window].concat());
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["ppl"].as_f64().unwrap()
}
