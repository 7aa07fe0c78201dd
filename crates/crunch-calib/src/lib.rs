//! Calibration for every compressor that looks at data, and the one driver every compressing
//! command runs through.
//!
//! [`windows`] draws N random windows of L tokens from a tokenized text; with no text,
//! [`sample_windows`] generates N sequences of L tokens from the model itself
//! (`--calib self:N×L`). [`run_sequential`]
//! streams them through the model one decoder block at a time, as in the GPTQ paper: for each
//! block it captures the input of every linear layer, accumulates the Hessian H = 2·XᵀX/n,
//! hands each layer to a [`LayerCompressor`], writes the compressed weights back, and pushes
//! the activations through the *compressed* block to feed the next one. [`compress_model`]
//! runs a [`RecipeFile`]'s typed [`stages`] through it.
//!
//! Peak memory is one decoder block (its f32 weights) plus the calibration activations,
//! N × L × hidden × 4 bytes (128 × 512 × 576 × 4 = 151 MB for SmolLM2; 128 × 2048 × 4096 × 4
//! = 4.3 GB for an 8B model), plus the block's Hessians (hidden² + q_dim² + hidden² +
//! intermediate² floats), independent of the number of layers.

mod checks;
mod compress;
mod data;
mod device_gptq;
mod gguf_gptq;
mod importance;
mod recipe_file;
mod selfgen;
mod sequential;
pub mod stages;
mod variants;

pub use checks::{available_memory, calibration_bytes, check_calibration_size};
pub use compress::{check_recipe, compress_model, first_calibrated, output_recipe, planned};
pub use crunch_compress::GptqOptions;
pub use data::windows;
pub use gguf_gptq::gptq_gguf_model;
pub use importance::collect_importance;
pub use recipe_file::{
    pattern_matches, CalibrationSpec, GgufSpec, MoeSpec, RecipeError, RecipeFile, Stage,
};
pub use selfgen::{default_batch, sample_windows, SampleProblem, SelfSpec, SpecProblem};
pub use sequential::{
    run_sequential, InputStats, LayerCompressor, LayerJob, Progress, Replacement,
};
pub use stages::{Family, Method, METHODS};
pub use variants::{compress_variants, VariantSink};

use crunch_compress::CompressError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] crunch_model::Error),
    #[error("backend: {0}")]
    Backend(#[from] crunch_runtime::Error),
    /// A stage's method failed on (or does not fit) one layer.
    #[error("{layer}: {method}: {source}")]
    Layer {
        layer: String,
        method: &'static str,
        #[source]
        source: CompressError,
    },
    /// A pruner's output that does not hold the N:M pattern it was asked for.
    #[error("{layer}: output breaks the {n}:{m} pattern")]
    BrokenPattern { layer: String, n: usize, m: usize },
    #[error(
        "{layer}: matched by stage {first} ({first_method}) and stage {second} \
         ({second_method}); a layer takes one main compression and one correction (chaining, \
         e.g. quantizing factors, is not supported yet)"
    )]
    Overlap {
        layer: String,
        first: usize,
        first_method: &'static str,
        second: usize,
        second_method: &'static str,
    },
    #[error("the recipe has no stages")]
    NoStages,
    #[error("{method} needs calibration data (--calib FILE or --calib self:NxL)")]
    NeedsCalibration { method: &'static str },
    /// A low-rank stage's global budget could not be shared out.
    #[error("stage {stage} ({method}): {source}")]
    Budget {
        stage: usize,
        method: &'static str,
        #[source]
        source: CompressError,
    },
    #[error("{}: missing `{tensor}`", path.display())]
    MissingTensor { path: PathBuf, tensor: String },
    #[error("no calibration windows")]
    NoWindows,
    #[error("{layer}: no calibration inputs reached it")]
    NoInputs { layer: String },
    #[error("{layer}: Hessian: {source}")]
    Hessian {
        layer: String,
        #[source]
        source: CompressError,
    },
    #[error("GPU: {0}")]
    Gpu(#[source] CompressError),
    #[error(
        "`{spec}`: {problem} (expected self:N×L or self:NxL, e.g. self:128x512: N sequences of \
         L tokens)"
    )]
    SelfSpec { spec: String, problem: SpecProblem },
    #[error("self-calibration: {0}")]
    SelfCalibration(#[source] SampleProblem),
    #[error(transparent)]
    Windows(#[from] WindowProblem),
}

/// Calibration windows the input (or the machine) cannot supply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowProblem {
    #[error("calibration needs at least one window of at least one token")]
    Empty,
    #[error("calibration text has {tokens} tokens, fewer than one window of {len}")]
    TextTooShort { tokens: usize, len: usize },
    #[error(
        "{samples} calibration windows of {len} tokens asked for, but a text of {tokens} tokens \
         has only {starts} distinct windows of that length; use fewer or shorter windows, or \
         more text"
    )]
    TooManyWindows {
        samples: usize,
        len: usize,
        tokens: usize,
        starts: u64,
    },
    #[error("{samples} calibration windows of {len} tokens: the activations' size overflows")]
    Overflow { samples: usize, len: usize },
    #[error(
        "{samples} calibration windows of {len} tokens need about {:.1} GB of activations \
         (hidden size {hidden}), but only {:.1} GB of memory is available; use fewer or shorter \
         windows",
        *need as f64 / 1e9,
        *available as f64 / 1e9
    )]
    OutOfMemory {
        samples: usize,
        len: usize,
        hidden: usize,
        need: u64,
        available: u64,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
