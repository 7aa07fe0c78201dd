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
pub mod perturb;
mod rope;
mod rows;
mod store;

pub use attend::attend;
pub use rope::Rotation;
pub use store::{Encoded, Layout, QuantKv, Side};

use std::fmt;

/// Token group of the KIVI modes unless the name says otherwise.
pub const KIVI_GROUP: usize = 32;
/// Channels per group of the per-token codecs (and of KIVI's values).
pub const CHANNEL_GROUP: usize = 32;

/// What a key/value store is made for ([`crate::Backend::kv_alloc`]): `capacity` positions
/// of `kv_heads` heads of `head_dim` channels, held as `mode` says, and the inverse
/// frequencies (one per channel pair, "half" layout) of the rotary embedding the keys carry,
/// which a mode quantizing keys before it needs ([`KvMode::needs_rope`]: an error without
/// them) and the others ignore.
#[derive(Clone, Copy, Debug)]
pub struct KvSpec<'a> {
    pub capacity: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub mode: KvMode,
    pub inv_freq: Option<&'a [f64]>,
}

impl KvSpec<'_> {
    /// A store without rotary frequencies (enough for every mode but a `pre_rope` one).
    pub fn new(capacity: usize, kv_heads: usize, head_dim: usize, mode: KvMode) -> Self {
        KvSpec {
            capacity,
            kv_heads,
            head_dim,
            mode,
            inv_freq: None,
        }
    }
}

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
    /// KIVI and its variants.
    Kivi(Kivi),
}

/// A KIVI cache: keys per channel over groups of `group` positions, values per token in
/// groups of `value_channels` channels, min–max with f16 scale and minimum; the positions
/// after the last full group kept in f16 until it fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kivi {
    pub key_bits: u8,
    pub value_bits: u8,
    /// Positions per key group (and the f16 tail's length bound).
    pub group: usize,
    /// Channels per value group; 0: [`CHANNEL_GROUP`] (or the whole row, see [`channel_group`]).
    pub value_channels: usize,
    /// The first `sink` positions are kept in f16 and left out of group 0's ranges.
    pub sink: usize,
    /// Keys are quantized before their rotary embedding (the store undoes it, then redoes it
    /// on decoding) rather than as the model rotated them.
    pub pre_rope: bool,
    /// Decision 131. At least this many of the most recent positions stay in f16 (KIVI's
    /// residual window; the tail then holds `residual` to `residual + group − 1` positions).
    pub residual: usize,
    /// Keys per token in groups of this many channels (0: KIVI's per-channel keys).
    pub key_channels: usize,
    /// An orthonormal Hadamard rotation of each key / value row (per head) before it is
    /// quantized, undone on decoding.
    pub hadamard_k: bool,
    pub hadamard_v: bool,
    /// Min–max ranges clipped to the quantization error's minimum (a grid search per group)
    /// instead of the group's extremes.
    pub mse: bool,
    /// Decision 142: the keys' / values' 2-bit codes on the Gaussian's Lloyd–Max levels (an
    /// f16 offset and scale per group, fitted by least squares) instead of a min–max grid.
    pub lloyd_k: bool,
    pub lloyd_v: bool,
    /// With `lloyd_*`: each Lloyd–Max group's scale widened to undo the levels' shrinkage
    /// ([`codec::Codec::LloydMax2`]).
    pub unshrunk: bool,
}

impl Kivi {
    /// The paper's scheme at `bits` for keys and values, groups of [`KIVI_GROUP`].
    pub const fn plain(bits: u8) -> Kivi {
        Kivi {
            key_bits: bits,
            value_bits: bits,
            group: KIVI_GROUP,
            value_channels: 0,
            sink: 0,
            pre_rope: false,
            residual: 0,
            key_channels: 0,
            hadamard_k: false,
            hadamard_v: false,
            mse: false,
            lloyd_k: false,
            lloyd_v: false,
            unshrunk: false,
        }
    }

    /// Channels per key group for rows of `head_dim` when keys are quantized per token.
    pub fn key_group(self, head_dim: usize) -> usize {
        match self.key_channels {
            c if c > 0 && head_dim.is_multiple_of(c) => c,
            _ => head_dim,
        }
    }

    /// Channels per value group for rows of `head_dim`.
    pub fn value_group(self, head_dim: usize) -> usize {
        match self.value_channels {
            0 => channel_group(head_dim),
            c if head_dim.is_multiple_of(c) => c,
            _ => head_dim,
        }
    }
}

/// The names `--kv-cache` takes, with a line each.
pub const KV_MODES: [(&str, &str); 6] = [
    ("f32", "full precision, as computed (the default)"),
    ("f16", "half precision"),
    ("q8", "8-bit per token, absmax per 32 channels"),
    ("q4", "4-bit per token, min-max per 32 channels"),
    (
        "kivi4",
        "KIVI 4-bit: keys per channel over 32 tokens, values per token; the last < 32 tokens in f16",
    ),
    (
        "kivi2",
        "KIVI 2-bit: keys per channel over 32 tokens, values per token; the last < 32 tokens in f16",
    ),
];

impl KvMode {
    /// Parses a `--kv-cache` value: one of [`KV_MODES`], or a KIVI mode followed by options
    /// separated by `:` — a number (the token group G, a power of two from 8 to 256), `kB` /
    /// `vB` (key / value bits, 2, 4 or 8), `vgN` (channels per value group), `sN` (the first
    /// N ≤ G positions kept in f16), `pre` (keys quantized before the rotary embedding);
    /// decision 131: `rN` (at least the N most recent positions kept in f16), `kgN` (keys
    /// per token in groups of N channels), `h` / `hk` / `hv` (Hadamard rotation of keys and
    /// values / keys / values), `mse` (ranges clipped to the least squared error); decision
    /// 142: `lm` / `lmk` / `lmv` (2-bit keys and values / keys / values on the Gaussian's
    /// Lloyd–Max levels; other widths keep min–max), `u` (their scales widened to undo the
    /// levels' shrinkage).
    pub fn parse(s: &str) -> Result<KvMode, String> {
        let known = || {
            KV_MODES
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = s.split(':');
        let name = parts.next().unwrap_or("");
        let mode = match name {
            "f32" => KvMode::F32,
            "f16" => KvMode::F16,
            "q8" => KvMode::Q8,
            "q4" => KvMode::Q4,
            "kivi4" => KvMode::Kivi(Kivi::plain(4)),
            "kivi2" => KvMode::Kivi(Kivi::plain(2)),
            "kivi8" => KvMode::Kivi(Kivi::plain(8)),
            _ => {
                return Err(format!(
                    "unknown key/value cache '{s}'; choose one of {}",
                    known()
                ))
            }
        };
        let KvMode::Kivi(mut kivi) = mode else {
            return match parts.next() {
                None => Ok(mode),
                Some(_) => Err(format!(
                    "'{s}': only the KIVI modes take options (kivi2:64)"
                )),
            };
        };
        let number = |x: &str, what: &str| {
            x.parse::<usize>()
                .map_err(|_| format!("'{s}': {what} '{x}' is not a number"))
        };
        let bits = |x: &str| match number(x, "the bit width")? {
            b @ (2 | 4 | 8) => Ok(b as u8),
            _ => Err(format!("'{s}': bit widths are 2, 4 or 8")),
        };
        for opt in parts {
            if opt == "pre" {
                kivi.pre_rope = true;
            } else if opt == "mse" {
                kivi.mse = true;
            } else if opt == "lm" {
                (kivi.lloyd_k, kivi.lloyd_v) = (true, true);
            } else if opt == "lmk" {
                kivi.lloyd_k = true;
            } else if opt == "lmv" {
                kivi.lloyd_v = true;
            } else if opt == "u" {
                kivi.unshrunk = true;
            } else if opt == "h" {
                (kivi.hadamard_k, kivi.hadamard_v) = (true, true);
            } else if opt == "hk" {
                kivi.hadamard_k = true;
            } else if opt == "hv" {
                kivi.hadamard_v = true;
            } else if let Some(x) = opt.strip_prefix("kg") {
                kivi.key_channels = number(x, "the key group")?;
                if kivi.key_channels == 0 || !kivi.key_channels.is_power_of_two() {
                    return Err(format!("'{s}': the key group must be a power of two"));
                }
            } else if let Some(x) = opt.strip_prefix('r') {
                kivi.residual = number(x, "the residual window")?;
                if kivi.residual > 4096 {
                    return Err(format!(
                        "'{s}': a residual window of at most 4096 positions"
                    ));
                }
            } else if let Some(x) = opt.strip_prefix("vg") {
                kivi.value_channels = number(x, "the value group")?;
                if kivi.value_channels == 0 || !kivi.value_channels.is_power_of_two() {
                    return Err(format!("'{s}': the value group must be a power of two"));
                }
            } else if let Some(x) = opt.strip_prefix('k') {
                kivi.key_bits = bits(x)?;
            } else if let Some(x) = opt.strip_prefix('v') {
                kivi.value_bits = bits(x)?;
            } else if let Some(x) = opt.strip_prefix('s') {
                kivi.sink = number(x, "the sink")?;
            } else {
                let group = number(opt, "the token group")?;
                if !(8..=256).contains(&group) || !group.is_power_of_two() {
                    return Err(format!(
                        "'{s}': the token group must be a power of two from 8 to 256"
                    ));
                }
                kivi.group = group;
            }
        }
        if kivi.unshrunk && !(kivi.lloyd_k || kivi.lloyd_v) {
            return Err(format!(
                "'{s}': 'u' applies to Lloyd–Max levels (lm, lmk, lmv)"
            ));
        }
        if kivi.sink > kivi.group {
            return Err(format!(
                "'{s}': at most one token group ({}) of sink positions",
                kivi.group
            ));
        }
        Ok(KvMode::Kivi(kivi))
    }

    /// Whether the store is the backend's plain f32 one.
    pub fn is_full(self) -> bool {
        self == KvMode::F32
    }

    /// Whether the store needs the rotary frequencies its keys were rotated with.
    pub fn needs_rope(self) -> bool {
        matches!(self, KvMode::Kivi(k) if k.pre_rope)
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
            KvMode::Kivi(k) => {
                // Keys: a scale and minimum per channel per `group` tokens (or per token per
                // channel group); values: per token per channel group.
                let key_meta = match k.key_channels {
                    0 => 4.0 * d / k.group as f64,
                    _ => 4.0 * d / k.key_group(head_dim) as f64,
                };
                (d * k.key_bits as f64 / 8.0 + key_meta)
                    + (d * k.value_bits as f64 / 8.0 + 4.0 * d / k.value_group(head_dim) as f64)
            }
        };
        per_head * kv_heads as f64
    }

    /// Bytes of one block's store that do not grow with the context: KIVI's f16 positions
    /// (the sink, the residual window, and room for the G − 1 positions awaiting a full group
    /// between appends).
    pub fn fixed_bytes(self, kv_heads: usize, head_dim: usize) -> usize {
        match self {
            KvMode::Kivi(k) => 4 * (k.group - 1 + k.residual + k.sink) * kv_heads * head_dim,
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
            KvMode::Kivi(k) => {
                // Named by the key bits; the other options only when they differ.
                write!(f, "kivi{}", k.key_bits)?;
                if k.group != KIVI_GROUP {
                    write!(f, ":{}", k.group)?;
                }
                if k.value_bits != k.key_bits {
                    write!(f, ":v{}", k.value_bits)?;
                }
                if k.value_channels != 0 {
                    write!(f, ":vg{}", k.value_channels)?;
                }
                if k.sink != 0 {
                    write!(f, ":s{}", k.sink)?;
                }
                if k.pre_rope {
                    write!(f, ":pre")?;
                }
                if k.residual != 0 {
                    write!(f, ":r{}", k.residual)?;
                }
                if k.key_channels != 0 {
                    write!(f, ":kg{}", k.key_channels)?;
                }
                match (k.hadamard_k, k.hadamard_v) {
                    (true, true) => write!(f, ":h")?,
                    (true, false) => write!(f, ":hk")?,
                    (false, true) => write!(f, ":hv")?,
                    _ => {}
                }
                if k.mse {
                    write!(f, ":mse")?;
                }
                match (k.lloyd_k, k.lloyd_v) {
                    (true, true) => write!(f, ":lm")?,
                    (true, false) => write!(f, ":lmk")?,
                    (false, true) => write!(f, ":lmv")?,
                    _ => {}
                }
                if k.unshrunk {
                    write!(f, ":u")?;
                }
                Ok(())
            }
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
