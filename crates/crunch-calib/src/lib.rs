//! Calibration for every compressor that looks at data.
//!
//! [`windows`] draws N random windows of L tokens from a tokenized text; with no text,
//! [`sample_windows`] generates N sequences of L tokens from the model itself
//! (`--calib self:N×L`). [`run_sequential`]
//! streams them through the model one decoder block at a time, as in the GPTQ paper: for each
//! block it captures the input of every linear layer, accumulates the Hessian H = 2·XᵀX/n,
//! hands each layer to a [`LayerCompressor`], writes the compressed weights back, and pushes
//! the activations through the *compressed* block to feed the next one.
//!
//! Peak memory is one decoder block (its f32 weights) plus the calibration activations,
//! N × L × hidden × 4 bytes (128 × 512 × 576 × 4 = 151 MB for SmolLM2; 128 × 2048 × 4096 × 4
//! = 4.3 GB for an 8B model), plus the block's Hessians (hidden² + q_dim² + hidden² +
//! intermediate² floats), independent of the number of layers.

mod checks;
mod compress;
mod data;
mod device_gptq;
mod quantize;
mod recipe_file;
mod selfgen;
mod sequential;

pub use checks::{available_memory, calibration_bytes, check_calibration_size};
pub use compress::{compress_model, CompressPlan, Stage, StageMethod};
pub use data::windows;
pub use quantize::{pattern_matches, quantize_model, Method, QuantizePlan};
pub use recipe_file::{CalibrationSpec, RecipeFile, StageSpec};
pub use selfgen::{default_batch, sample_windows, SelfSpec};
pub use sequential::{
    run_sequential, InputStats, LayerCompressor, LayerJob, Progress, Replacement,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] crunch_model::Error),
    #[error("backend: {0}")]
    Backend(#[from] crunch_runtime::Error),
    #[error("{0}")]
    Compress(String),
    #[error("{0}")]
    Data(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
