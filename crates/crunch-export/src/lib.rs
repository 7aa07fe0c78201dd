//! Writing compressed models.
//!
//! - [`crunch_dir`]: crunch's own format (see `crunch_formats::recipe` for the layout), which
//!   `crunch eval` and `crunch info` load directly.
//! - [`compressed_tensors`]: compressed-tensors' pack-quantized layout (transformers, vLLM).
//! - [`gptq_layout`]: the classic GPTQ layout (AutoGPTQ, GPTQModel, vLLM).
//! - [`sparse24`]: compressed-tensors' sparse-24-bitmask layout for 2:4-pruned layers.
//!
//! Every writer builds its output in a temporary directory beside the destination and renames
//! it into place only when complete ([`atomic_dir`]), so a failure never leaves a partial model
//! under the final name, and an existing output is never replaced unless asked — and then
//! only if crunch wrote it ([`output`]: the `--force` rules, the marker file, stale
//! temporaries of killed runs). [`interrupt`] removes a run's temporary output on SIGINT and
//! names the file on SIGBUS.

mod atomic;
pub mod compressed_tensors;
pub mod crunch_dir;
pub mod gptq_layout;
pub mod interrupt;
pub mod output;
pub mod sparse24;

pub use atomic::{atomic_dir, atomic_file};
pub use output::{check_output, prepare_output, OutputKind};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Format(#[from] crunch_formats::FormatError),
    #[error(transparent)]
    Model(#[from] crunch_model::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
