//! Lookup grids of the IQ types: format data, one integer per grid row whose byte j
//! (little-endian) is the row's element j.
//!
//! The rows are in `iq_grids/*.in`, written by `scripts/gen_iq_grids.py` from gguf-py 0.19.0
//! (MIT licence, (c) the ggml authors); data files, so that rustfmt keeps them as generated.

/// IQ2_XXS: 256 rows of 8 magnitudes from {8, 25, 43}.
pub static IQ2XXS_GRID: [u64; 256] = include!("iq_grids/iq2xxs.in");

/// IQ2_XS: 512 rows of 8 magnitudes from {8, 25, 43}.
pub static IQ2XS_GRID: [u64; 512] = include!("iq_grids/iq2xs.in");

/// IQ2_S: 1024 rows of 8 magnitudes from {8, 25, 43}.
pub static IQ2S_GRID: [u64; 1024] = include!("iq_grids/iq2s.in");

/// IQ3_XXS: 256 rows of 4 magnitudes from {4, 12, ..., 52, 62}.
pub static IQ3XXS_GRID: [u32; 256] = include!("iq_grids/iq3xxs.in");

/// IQ3_S: 512 rows of 4 odd magnitudes 1..15.
pub static IQ3S_GRID: [u32; 512] = include!("iq_grids/iq3s.in");

/// IQ1_S and IQ1_M: 2048 rows of 8 values from {-1, 0, 1} (as i8 bytes).
pub static IQ1S_GRID: [u64; 2048] = include!("iq_grids/iq1s.in");
