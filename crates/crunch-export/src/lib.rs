//! Writing compressed models.
//!
//! - [`Format`]: the layouts, as one list with what each can hold and its writer.
//! - [`crunch_dir`]: crunch's own format (`crunch_repr::format` describes and encodes the
//!   layers), which `crunch eval` and `crunch info` load directly.
//! - [`compressed_tensors`]: compressed-tensors' pack-quantized layout (transformers, vLLM).
//! - [`gptq_layout`]: the classic GPTQ layout (AutoGPTQ, GPTQModel, vLLM).
//! - [`sparse24`]: compressed-tensors' sparse-24-bitmask layout for 2:4-pruned layers.
//! - [`gguf`]: a whole model as one GGUF file for llama.cpp, with llama-quantize's per-tensor
//!   type presets and crunch's importance-weighted encoders.
//!
//! Every writer builds its output in a temporary directory beside the destination and renames
//! it into place only when complete ([`atomic_dir`]), so a failure never leaves a partial model
//! under the final name, and an existing output is never replaced unless asked — and then
//! only if crunch wrote it ([`output`]: the `--force` rules, the marker file, stale
//! temporaries of killed runs). [`interrupt`] removes a run's temporary output on SIGINT and
//! names the file on SIGBUS. Single files (GGUF) go through [`atomic_file`] the same way.

mod atomic;
pub mod compressed_tensors;
pub mod crunch_dir;
mod format;
pub mod gguf;
pub mod gptq_layout;
pub mod interrupt;
pub mod output;
pub mod sparse24;

pub use atomic::{atomic_dir, atomic_file};
pub use format::Format;
pub use output::{check_output, prepare_output, OutputKind, OutputProblem};

use crunch_repr::{CompressedLayer, QuantizedWeight, ReprError, Sparsity};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Bytes an output takes on disk: a file's size, or the sum of a directory's files.
pub fn size_on_disk(path: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| if m.is_file() { m.len() } else { 0 });
    match std::fs::read_dir(path) {
        Ok(entries) => entries.flatten().map(|e| size(&e.path())).sum(),
        Err(_) => size(path),
    }
}

/// Compressed layers by Hugging Face layer name (without `.weight`).
pub type Layers = BTreeMap<String, CompressedLayer>;
/// Quantized layers by Hugging Face layer name, for the layouts that hold nothing else.
pub type QuantizedLayers = BTreeMap<String, QuantizedWeight>;

/// Where a writer writes: the output directory, whether it may replace an existing one
/// (`--force`), and files (name, contents) to put beside the model inside the same atomic
/// directory (the `recipe.toml` that made it).
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub dir: &'a Path,
    pub overwrite: bool,
    pub extra: &'a [(&'a str, &'a str)],
    /// How crunch's format stores the token embedding and an untied LM head.
    pub embeddings: crunch_dir::Embeddings,
}

impl<'a> Target<'a> {
    /// `dir`, refused if it exists, with nothing beside the model.
    pub fn new(dir: &'a Path) -> Self {
        Self {
            dir,
            overwrite: false,
            extra: &[],
            embeddings: crunch_dir::Embeddings::Keep,
        }
    }

    /// Storing the embeddings as `embeddings` says (crunch's format).
    pub fn embeddings(self, embeddings: crunch_dir::Embeddings) -> Self {
        Self { embeddings, ..self }
    }

    /// Replacing `dir` if it exists (`--force`) when `overwrite`.
    pub fn overwrite(self, overwrite: bool) -> Self {
        Self { overwrite, ..self }
    }

    /// With `extra` files beside the model.
    pub fn beside(self, extra: &'a [(&'a str, &'a str)]) -> Self {
        Self { extra, ..self }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Format(#[from] crunch_formats::FormatError),
    #[error(transparent)]
    Model(#[from] crunch_model::Error),
    /// A compressed layer whose parts do not agree (refused before anything is written).
    #[error("{layer}: {source}")]
    Layer {
        layer: String,
        #[source]
        source: ReprError,
    },
    /// A layer a layout cannot hold.
    #[error("{layer}: {format} cannot store it: {why}")]
    Refused {
        layer: String,
        format: &'static str,
        why: Refusal,
    },
    #[error("{layer}: not a linear layer of this model with a {rows}×{cols} weight")]
    NotALinear {
        layer: String,
        rows: usize,
        cols: usize,
    },
    #[error(
        "this model's rope scaling exists only as GGUF's rope_freqs.weight, which transformers \
         and vLLM ignore; export from the Hugging Face checkpoint instead"
    )]
    RopeFreqsOnly,
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Tokenizer {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A GGUF output or an importance file (`gguf`).
    #[error("{}: {problem}", path.display())]
    Gguf {
        path: PathBuf,
        problem: gguf::GgufProblem,
    },
    /// A path a command may not write (`output`: inputs, `--force`).
    #[error("{}: {problem}", path.display())]
    Output {
        path: PathBuf,
        problem: OutputProblem,
    },
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A malformed layer `layer`.
    pub fn layer(layer: &str) -> impl Fn(ReprError) -> Error + '_ {
        move |source| Error::Layer {
            layer: layer.into(),
            source,
        }
    }
}

/// Why a layout cannot hold a layer.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("it is {0}; this layout stores quantized layers only")]
    NotQuantized(&'static str),
    #[error("it has a low-rank correction, which only crunch's format stores")]
    Correction,
    #[error("act-order groups (g_idx) were removed from compressed-tensors; use --format gptq")]
    ActOrderGroups,
    #[error("{rows}×{cols} weight; the GPTQ layout needs both dimensions to be multiples of 32")]
    DimsNot32 { rows: usize, cols: usize },
    #[error(
        "a zero point is 0, which GPTQ v1 stores as −1 and loaders read back as 2^bits; use \
         --format gptq-v2 (GPTQModel) or --sym"
    )]
    ZeroPointZero,
    #[error(
        "the GPTQ layout has one bit width, group size and symmetry for all layers; this \
         layer's differ"
    )]
    MixedSpecs,
    #[error("symmetric, but a zero point differs from {mid}, which the exported layouts assume")]
    SymmetricZeroPoint { mid: u8 },
    #[error("pruned and quantized; sparse-24-bitmask stores unquantized 2:4 weights only")]
    PrunedAndQuantized,
    #[error("{0} sparsity; sparse-24-bitmask stores 2:4 only")]
    NotTwoFour(Sparsity),
    #[error("not pruned; sparse-24-bitmask stores 2:4-pruned weights only")]
    NotPruned,
    #[error(
        "it stores lookup-table codes (codebooks per row, decision 143), which only crunch's \
         format holds"
    )]
    Codebook,
    #[error("no quantized layers to export")]
    NothingQuantized,
    #[error(
        "{0}-bit; this layout's loaders know 2, 3, 4 and 8 bits (crunch's format stores 2 to 8)"
    )]
    Bits(u8),
    #[error(
        "a GGUF export quantizes every tensor itself from the source (`crunch quantize \
         --format gguf --mix PRESET`, or a recipe with a [gguf] table and no stages)"
    )]
    GgufFromSource,
    #[error("{0}")]
    Grid(crunch_repr::ReprError),
    #[error(
        "a quantized MoE router; vLLM's fused-MoE models run the router unquantized (leave it \
         out, the default)"
    )]
    QuantizedRouter,
    #[error(
        "quantized otherwise than {first} (or not at all); vLLM's fused-MoE loader needs all of \
         a layer's experts in one scheme"
    )]
    MixedExperts { first: String },
    #[error(
        "{}-bit {} experts; vLLM's compressed-tensors fused-MoE kernels take symmetric 4- or \
         8-bit weights only (quantize with --sym and 4 or 8 bits)",
        .0.bits,
        if .0.symmetric { "symmetric" } else { "asymmetric" }
    )]
    MoeGrid(crunch_repr::QuantSpec),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
