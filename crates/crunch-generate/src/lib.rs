//! Text generation on crunch's host runtime (`crunch_runtime::Host`: weights kept packed,
//! pre-allocated key/value caches) or, with the `cuda` feature, on a GPU with packed weights
//! (`Engine<Cuda>`, [`runtime`]): what `crunch generate`, `crunch chat` and `crunch serve`
//! run.
//!
//! - [`engine`]: load a checkpoint, prefill in chunks, decode one or many sequences, the
//!   generation loop with stop conditions and timings.
//! - [`sampling`]: greedy and seeded sampling (temperature, top-k, top-p, min-p, repetition
//!   penalty).
//! - [`detok`]: streaming detokenization and stop strings.
//! - [`template`]: chat templates rendered with minijinja.
//! - [`runtime`]: the backends an engine runs on.
//! - [`meta`]: end-of-sequence tokens and the template, from GGUF or tokenizer_config.json.

pub mod detok;
pub mod engine;
pub mod memory;
pub mod meta;
pub mod runtime;
pub mod sampling;
pub mod template;

pub use crunch_model::PagedCache;
pub use engine::{Engine, Finish, Generation, PagedSequence, Request, Sequence};
pub use runtime::Runtime;
pub use sampling::{Sampler, SamplingParams};
pub use template::Message;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Load(#[from] crunch_model::Error),
    /// The model's files lack something generation needs, or hold it malformed.
    #[error("{0}")]
    Model(String),
    /// A request that cannot be served as asked (caller's error).
    #[error("{0}")]
    Request(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
