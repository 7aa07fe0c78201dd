//! Compressed key/value caches (issue 17): what `--kv-cache` chooses, how many bytes each
//! holds, the stores ([`QuantKv`]) and attention over them without expanding the cache.
//!
//! Modes (decision 120):
//! - `f32` (the default on every backend: the cache the model computes in), `f16`;
//! - `q8`: per token, groups of 32 along the head dimension, absmax (symmetric) with an f16
//!   scale: 8.5 bits per value;
//! - `q4`: per token, groups of 32 along the head dimension, min–max (asymmetric) with f16
//!   scale and minimum: 5 bits per value;
//! - `kivi4`, `kivi2` (KIVI, arXiv 2402.02750): keys quantized per channel over groups of
//!   G = 32 tokens, values per token in groups of 32 channels, both min–max; the positions
//!   after the last full group (fewer than G) are kept in full precision until their group
//!   fills, then keys and values of the whole group are quantized together. `kivi2:64`,
//!   `kivi4:128`… choose another G (8–256, a power of two).

mod attend;
pub mod codec;
mod store;

pub use attend::attend;
pub use store::{QuantKv, Side};

use std::fmt;

/// Token group of the KIVI modes unless the name says otherwise.
pub const KIVI_GROUP: usize = 32;
/// Channels per group of the per-token codecs (and of KIVI's values).
pub const CHANNEL_GROUP: usize = 32;

/// What a key/value cache stores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvMode {
    /// f32, as the model computes them (the default).
    #[default]
    F32,
    F16,
    /// Per token, absmax 8-bit, groups of 32 channels.
    Q8,
    /// Per token, min–max 4-bit, groups of 32 channels.
    Q4,
    /// KIVI at `bits` (2 or 4) with token groups of `group`.
    Kivi {
        bits: u8,
        group: usize,
    },
}

/// The names `--kv-cache` takes, with a line each.
pub const KV_MODES: [(&str, &str); 6] = [
    ("f32", "full precision, as computed (the default)"),
    ("f16", "half precision"),
    ("q8", "8-bit per token, absmax per 32 channels"),
    ("q4", "4-bit per token, min-max per 32 channels"),
    (
        "kivi4",
        "KIVI 4-bit: keys per channel over 32 tokens, values per token; the last < 32 tokens in f32",
    ),
    (
        "kivi2",
        "KIVI 2-bit: keys per channel over 32 tokens, values per token; the last < 32 tokens in f32",
    ),
];

impl KvMode {
    /// Parses a `--kv-cache` value: one of [`KV_MODES`], or `kivi2:G` / `kivi4:G`.
    pub fn parse(s: &str) -> Result<KvMode, String> {
        let known = || {
            KV_MODES
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (name, group) = match s.split_once(':') {
            Some((n, g)) => (n, Some(g)),
            None => (s, None),
        };
        let mode = match name {
            "f32" => KvMode::F32,
            "f16" => KvMode::F16,
            "q8" => KvMode::Q8,
            "q4" => KvMode::Q4,
            "kivi4" | "kivi2" => KvMode::Kivi {
                bits: if name == "kivi4" { 4 } else { 2 },
                group: KIVI_GROUP,
            },
            _ => {
                return Err(format!(
                    "unknown key/value cache '{s}'; choose one of {}",
                    known()
                ))
            }
        };
        match (mode, group) {
            (_, None) => Ok(mode),
            (KvMode::Kivi { bits, .. }, Some(g)) => {
                let group: usize = g
                    .parse()
                    .map_err(|_| format!("'{s}': the token group '{g}' is not a number"))?;
                if !(8..=256).contains(&group) || !group.is_power_of_two() {
                    return Err(format!(
                        "'{s}': the token group must be a power of two from 8 to 256"
                    ));
                }
                Ok(KvMode::Kivi { bits, group })
            }
            _ => Err(format!(
                "'{s}': only the KIVI modes take a token group (kivi2:64)"
            )),
        }
    }

    /// Whether the store is the backend's plain f32 one.
    pub fn is_full(self) -> bool {
        self == KvMode::F32
    }

    /// Bytes per cached position of one decoder block (keys and values of every kv head),
    /// not counting [`KvMode::fixed_bytes`].
    pub fn bytes_per_position(self, kv_heads: usize, head_dim: usize) -> f64 {
        let d = head_dim as f64;
        let per_head = match self {
            KvMode::F32 => 8.0 * d,
            KvMode::F16 => 4.0 * d,
            KvMode::Q8 => 2.0 * (d + 2.0 * d / channel_group(head_dim) as f64),
            KvMode::Q4 => 2.0 * (d / 2.0 + 4.0 * d / channel_group(head_dim) as f64),
            KvMode::Kivi { bits, group } => {
                let codes = d * bits as f64 / 8.0;
                // Keys: a scale and minimum per channel per `group` tokens; values: per
                // token per channel group.
                (codes + 4.0 * d / group as f64)
                    + (codes + 4.0 * d / channel_group(head_dim) as f64)
            }
        };
        per_head * kv_heads as f64
    }

    /// Bytes of one block's store that do not grow with the context: KIVI's full-precision
    /// positions awaiting a full group (room for `group` positions of f32 keys and values).
    pub fn fixed_bytes(self, kv_heads: usize, head_dim: usize) -> usize {
        match self {
            KvMode::Kivi { group, .. } => 8 * group * kv_heads * head_dim,
            _ => 0,
        }
    }
}

impl fmt::Display for KvMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            KvMode::F32 => write!(f, "f32"),
            KvMode::F16 => write!(f, "f16"),
            KvMode::Q8 => write!(f, "q8"),
            KvMode::Q4 => write!(f, "q4"),
            KvMode::Kivi { bits, group } if group == KIVI_GROUP => write!(f, "kivi{bits}"),
            KvMode::Kivi { bits, group } => write!(f, "kivi{bits}:{group}"),
        }
    }
}

/// Channels per group for rows of `head_dim`: [`CHANNEL_GROUP`], or the whole row when it does
/// not divide it.
pub fn channel_group(head_dim: usize) -> usize {
    if head_dim.is_multiple_of(CHANNEL_GROUP) {
        CHANNEL_GROUP
    } else {
        head_dim
    }
}

#[cfg(test)]
mod tests;
