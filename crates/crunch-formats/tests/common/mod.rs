//! Shared helpers for the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The SmolLM2-135M-Instruct Q4_1 GGUF: `$CRUNCH_SMOLLM2_GGUF` if set, else whatever
/// `scripts/fetch-smollm2` prints (it downloads into `.cache/` on first use).
pub fn smollm2_gguf() -> PathBuf {
    if let Some(p) = std::env::var_os("CRUNCH_SMOLLM2_GGUF") {
        return p.into();
    }
    let script = repo_root().join("scripts/fetch-smollm2");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(path.is_file(), "fetch-smollm2 printed {}", path.display());
    path
}

/// SmolLM2's Hugging Face tokenizer.json, committed under tests/fixtures.
pub fn smollm2_tokenizer_json() -> PathBuf {
    repo_root().join("tests/fixtures/smollm2/tokenizer.json")
}
