//! `--kv-cache MODE` (eval, generate, chat, serve) and the memory figures every `--json` record
//! of those commands carries: bytes per token of each mode and the longest context that fits a
//! memory budget.

use crunch_generate::memory::KvGeometry;
use crunch_model::ModelConfig;
use crunch_runtime::KvMode;

/// clap's parser for `--kv-cache`.
pub fn parse(s: &str) -> Result<KvMode, String> {
    KvMode::parse(s)
}

/// The help text's list of modes.
pub const HELP: &str = "How the key/value cache stores keys and values: f32 (the default: as \
    computed), f16, q8 (8-bit per token, absmax per 32 channels), q4 (4-bit per token, min-max \
    per 32 channels), kivi4 / kivi2 (KIVI: keys per channel over groups of 32 tokens, values \
    per token, the last < 32 tokens in f16 until their group fills; options after ':' — a \
    token group (kivi2:64), kB / vB key / value bits, vgN channels per value group, sN the first \
    N positions kept in f16, pre keys quantized before the rotary embedding, rN at least the N \
    most recent positions in f16, h / hk / hv Hadamard-rotated keys and values / keys / values, \
    kgN keys per token in groups of N channels, mse ranges clipped to the least squared error: \
    kivi2:vg64:s1:pre:h)";

/// Bytes of `mode`'s cache for `config`: `(per token, all blocks; fixed)`.
pub fn bytes(config: &ModelConfig, mode: KvMode) -> (f64, usize) {
    KvGeometry::of(config).bytes(mode)
}

/// The longest context a cache in `mode` holds within `budget` bytes (one sequence).
pub fn max_context(config: &ModelConfig, mode: KvMode, budget: u64) -> u64 {
    KvGeometry::of(config).max_context(mode, budget)
}

/// The `kv_cache` object of a `--json` record: the mode, bytes per token (and against an f16
/// cache), the cache's bytes at `context`, and the longest context within `budget` bytes.
pub fn record(
    config: &ModelConfig,
    mode: KvMode,
    context: usize,
    budget: u64,
) -> serde_json::Value {
    let (per, fixed) = bytes(config, mode);
    let (f16, _) = bytes(config, KvMode::F16);
    let at = per * context as f64 + fixed as f64;
    serde_json::json!({
        "mode": mode.to_string(),
        "bytes_per_token": per,
        "bytes_per_token_vs_f16": per / f16,
        "fixed_bytes": fixed,
        "context": context,
        "bytes_at_context": at.ceil() as u64,
        "bytes_at_context_vs_f16": at / (f16 * context as f64),
        "memory_budget_bytes": budget,
        "max_context_in_budget": max_context(config, mode, budget),
    })
}
