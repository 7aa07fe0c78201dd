//! Model architectures and the forward pass.
//!
//! - [`checkpoint`] opens a Hugging Face directory or a GGUF file and gives a [`ModelConfig`],
//!   named [`weights::Weights`] and a tokenizer, whatever the format.
//! - [`model`] holds the decoder, written once against `crunch_runtime::Backend`, with a
//!   [`hooks::LinearHook`] at the input of every linear layer and a per-block entry point.
//! - [`decode`] runs a batch of sequences incrementally against a key/value cache.
//! - [`testing`] builds tiny random models in code for reference-logit tests.

mod block;
pub mod checkpoint;
pub mod config;
pub mod decode;
mod gguf_config;
mod hf_config;
pub mod hooks;
pub mod layout;
pub mod model;
pub mod moe;
pub mod paged;
pub mod rope;
mod rope_tables;
pub mod structure;
pub mod testing;
pub mod weights;

use std::path::PathBuf;

pub use checkpoint::{read_json, Checkpoint};
pub use config::{Activation, Arch, ModelConfig, MoeConfig};
pub use decode::KvCache;
pub use gguf_config::gguf_shape_metadata;
pub use hooks::{LinearHook, LinearId};
pub use model::Model;
pub use paged::PagedCache;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Format(#[from] crunch_formats::FormatError),
    #[error("backend: {0}")]
    Backend(#[from] crunch_runtime::Error),
    /// A path that is not a model at all.
    #[error("{}: {problem}", path.display())]
    NotAModel {
        path: PathBuf,
        problem: &'static str,
    },
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not valid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A configuration (config.json or GGUF metadata) crunch cannot use: the file, and what.
    #[error("{}: {problem}", path.display())]
    Config {
        path: PathBuf,
        problem: ConfigProblem,
    },
    /// A stored tensor that does not fit the configuration: the file, the tensor, and how.
    #[error("{}: {problem}", path.display())]
    Tensor {
        path: PathBuf,
        problem: TensorProblem,
    },
    /// The file's blocks disagree with the configuration's layer count.
    #[error(
        "{}: `{key}` in {config} says {layers} blocks, but the file holds tensors of {held} \
         blocks{}; refusing to load a model whose layer count disagrees with its weights",
        path.display(),
        present.map_or(String::new(), |n| format!(" ({n} of blocks 0..{held} have tensors)"))
    )]
    Blocks {
        path: PathBuf,
        key: String,
        config: String,
        layers: usize,
        held: usize,
        /// When some blocks below `held` have no tensors: how many have.
        present: Option<usize>,
    },
    #[error("{}: {source}", path.display())]
    Tokenizer {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "{}: no tokenizer (tokenizer.json beside config.json, or GGUF tokenizer metadata)",
        path.display()
    )]
    NoTokenizer { path: PathBuf },
    #[error("cached forward: {0}")]
    Cache(CacheProblem),
    #[error("position {position} is past the rotary tables ({positions} positions)")]
    PastRope { position: u32, positions: usize },
}

/// What is wrong with a configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigProblem {
    #[error("missing `{0}`")]
    Missing(String),
    #[error("`{key}` is {value}, not a non-negative integer")]
    NotAnInteger { key: String, value: String },
    #[error("`{key}` is {value}, not an unsigned integer")]
    NotUnsigned { key: String, value: String },
    #[error("`{key}` is {value}, not a number")]
    NotANumber { key: String, value: String },
    #[error("unsupported architecture `{name}` (supported: {})", config::SUPPORTED)]
    UnsupportedArchitecture { name: String },
    #[error("hidden_act `{0}` is not supported (only silu)")]
    UnsupportedActivation(String),
    #[error("no vocabulary size (`vocab_size` or tokenizer tokens)")]
    NoVocabulary,
    #[error("`{key}` is {value}; it must be between 1 and {cap} (the file is corrupt)")]
    OutOfRange {
        key: String,
        value: usize,
        cap: usize,
    },
    /// Values that do not fit together (`ModelConfig::validate`) or a malformed rope scaling.
    #[error("{0}")]
    Invalid(String),
}

/// What is wrong with a stored tensor.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorProblem {
    #[error("missing tensor `{tensor}`{}", implied_by.as_ref().map_or(String::new(), |c| format!(" (the config in {c} implies it)")))]
    Missing {
        tensor: String,
        implied_by: Option<String>,
    },
    #[error("tensor `{tensor}` has shape {found:?}, but {implied_by} implies {expected:?}")]
    Shape {
        tensor: String,
        found: Vec<usize>,
        expected: Vec<usize>,
        implied_by: String,
    },
    #[error("tensor `{tensor}` holds {value} at {at}; crunch refuses non-finite weights")]
    NonFinite {
        tensor: String,
        value: f32,
        at: String,
    },
    #[error(
        "tensor `{tensor}` is stored as {dtype:?}, not as floating-point or quantized weights"
    )]
    NotNumeric {
        tensor: String,
        dtype: crunch_formats::DType,
    },
    #[error("tensor `{tensor}` has shape {found:?}, expected [out_features, rank]")]
    NotAFactor { tensor: String, found: Vec<usize> },
    /// A stacked expert tensor (GGUF) holding another number of experts than configured.
    #[error("tensor `{tensor}` stacks {found:?} experts, but {implied_by} says {expected}")]
    Experts {
        tensor: String,
        found: Option<usize>,
        expected: usize,
        implied_by: String,
    },
    /// Stored bytes the packed-weight kernels cannot use as they are (wrong length, range).
    #[error("tensor `{tensor}`: {problem}")]
    Unusable { tensor: String, problem: String },
}

/// A batch of key/value caches that does not fit the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheProblem {
    #[error("{ids} token ids cannot be split evenly over {caches} sequences")]
    Uneven { ids: usize, caches: usize },
    #[error("a cache made for {cache} blocks, the model has {model}")]
    Blocks { cache: usize, model: usize },
    #[error("{adding} more tokens do not fit a cache of {capacity} positions holding {holding}")]
    Full {
        adding: usize,
        capacity: usize,
        holding: usize,
    },
}

impl Error {
    /// A configuration problem in `path`.
    pub(crate) fn config(path: impl Into<PathBuf>) -> impl Fn(ConfigProblem) -> Error {
        let path = path.into();
        move |problem| Error::Config {
            path: path.clone(),
            problem,
        }
    }

    /// A stored-tensor problem in `path`.
    pub(crate) fn tensor(path: &std::path::Path, problem: TensorProblem) -> Error {
        Error::Tensor {
            path: path.to_path_buf(),
            problem,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
