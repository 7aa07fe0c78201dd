//! "Make it this size, least damage": which compression level each linear layer gets, found by
//! EvoPress's evolutionary search (Sieberling et al., "EvoPress: Towards Optimal Dynamic Model
//! Compression via Evolutionary Search", 2024).
//!
//! - [`database`]: every layer compressed at every level (crunch's int2–8 grouped grids made by
//!   the recipe driver's methods, RTN or GPTQ), each from the uncompressed model's calibration
//!   inputs, cached on disk per model, calibration and method.
//! - [`evo`]: the (1+λ) search with level-switch mutations that keep the budget, multi-step
//!   selection, one RNG stream per generation (deterministic for a seed) and a state file
//!   written after every generation (resumable).
//! - [`fitness`]: KL(base ‖ candidate) on calibration tokens, through `crunch_eval::BaseLogits`
//!   (the evaluation's own scoring), with only the layers that differ from the last candidate
//!   swapped in; the seeds and the elite are judged on fixed held windows.
//! - [`swap`]: how a swap stays cheap at large shapes (parallel dequantization into a kept
//!   buffer, recently swapped-out weights kept on the device, buffers reused); on a GPU with
//!   room, every quantized variant is kept there as codes and a swap is one kernel
//!   (`ModelFitness::keep_variants_on_device`, decision 137).
//! - [`fill`]: after the generations, the unused budget goes to the measured best raises.

pub mod database;
pub mod evo;
pub mod fill;
pub mod fitness;
pub mod gguf_levels;
pub mod plot;
pub mod prune;
pub mod swap;

#[cfg(test)]
mod evo_reference;

pub use database::{Database, Level, Variants};
pub use evo::{search, Budget, Elite, EvoParams, Fitness, Generation, SearchState};
pub use fill::{fill_round, FillRound};
pub use fitness::{DeviceVariants, FitnessTiming, ModelFitness};
pub use gguf_levels::GgufDatabase;
pub use prune::undominated;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Boxed: these are large, and every `Result` of the crate carries the error's size.
    #[error(transparent)]
    Calib(Box<crunch_calib::Error>),
    #[error(transparent)]
    Eval(Box<crunch_eval::EvalError>),
    #[error(transparent)]
    Model(Box<crunch_model::Error>),
    #[error("backend: {0}")]
    Backend(#[from] crunch_runtime::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {problem}", path.display())]
    BadFile { path: PathBuf, problem: String },
    #[error(
        "a budget of {budget:.0} bits is below the smallest configuration ({smallest:.0} bits, \
         every layer at its lowest level); raise the target or add a lower level"
    )]
    BudgetTooSmall { budget: f64, smallest: f64 },
    #[error("{0}")]
    Params(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<crunch_calib::Error> for Error {
    fn from(e: crunch_calib::Error) -> Self {
        Error::Calib(Box::new(e))
    }
}

impl From<crunch_eval::EvalError> for Error {
    fn from(e: crunch_eval::EvalError) -> Self {
        Error::Eval(Box::new(e))
    }
}

impl From<crunch_model::Error> for Error {
    fn from(e: crunch_model::Error) -> Self {
        Error::Model(Box::new(e))
    }
}

/// The search's random stream: crunch's one SplitMix64.
pub use crunch_rng::SplitMix64 as Rng;

/// The stream of generation `g` of a search seeded with `seed`.
pub fn generation_rng(seed: u64, g: u64, salt: u64) -> Rng {
    let mut r = Rng(seed ^ salt.wrapping_mul(0xD1B5_4A32_D192_ED03));
    r.0 ^= r
        .next_u64()
        .wrapping_add(g.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    r
}

/// 64-bit FNV-1a over bytes, 8 at a time (cache keys; not cryptographic).
pub fn hash_bytes(mut h: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(0x0100_0000_01b3);
    }
    for &b in chunks.remainder() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

pub const HASH_START: u64 = 0xcbf2_9ce4_8422_2325;
