//! Model architectures and the forward pass.
//!
//! - [`checkpoint`] opens a Hugging Face directory or a GGUF file and gives a [`ModelConfig`],
//!   named [`weights::Weights`] and a tokenizer, whatever the format.
//! - [`model`] holds the decoder, written once against `crunch_runtime::Backend`, with a
//!   [`hooks::LinearHook`] at the input of every linear layer and a per-block entry point.
//! - [`decode`] runs a batch of sequences incrementally against a key/value cache.
//! - [`testing`] builds tiny random models in code for reference-logit tests.

pub mod checkpoint;
pub mod config;
pub mod crunch_format;
pub mod decode;
mod gguf_config;
pub mod hooks;
pub mod model;
pub mod rope;
pub mod structure;
pub mod testing;
pub mod weights;

pub use checkpoint::Checkpoint;
pub use config::{Arch, ModelConfig};
pub use decode::KvCache;
pub use hooks::{LinearHook, LinearId};
pub use model::Model;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Format(#[from] crunch_formats::FormatError),
    #[error("backend: {0}")]
    Backend(#[from] crunch_runtime::Error),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Weights(String),
    #[error("{0}")]
    Tokenizer(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
