//! The numerical core of crunch's weight compression: round-to-nearest and GPTQ quantizers,
//! the Hessian they need, and dense bit packing of the integer codes.
//!
//! Weights are row-major [rows = out_features, cols = in_features] f32 slices, as in a
//! `Linear` layer; a quantized weight is W ≈ (code − zero) · scale with one f16 scale and integer
//! zero point per row (per channel) or per group of `group_size` input columns.
//!
//! Everything here is deterministic: the same inputs give bit-identical outputs on any number of
//! threads.

mod compressed;
mod compressor;
mod error;
mod gptq;
#[cfg(feature = "cuda")]
mod gptq_cuda;
mod grid;
mod hessian;
mod inverse;
mod pack;
mod rtn;
mod spec;
mod weight;

// Pruning (issue 5).
mod magnitude;
mod mask;
mod nm_pack;
mod pruned;
mod sparsegpt;
#[cfg(feature = "cuda")]
mod sparsegpt_cuda;
mod sparsity;
mod wanda;
// Low rank (decision 052).
mod decomp;
#[cfg(feature = "cuda")]
mod dense_cuda;
mod eora;
mod factored;
mod rank_budget;
mod svd;
mod whitened_svd;

#[cfg(test)]
mod gptq_reference;
#[cfg(test)]
mod lowrank_reference;
#[cfg(test)]
mod sparsegpt_reference;
#[cfg(test)]
mod testutil;

pub use compressed::{factor_bits_per_weight, Compressed, CompressedLayer};
pub use compressor::{Compressor, Gptq, Rtn};
#[cfg(feature = "cuda")]
pub use dense_cuda::CudaDense;
pub use error::{CompressError, Result};
pub use gptq::{gptq, GptqOptions};
#[cfg(feature = "cuda")]
pub use gptq_cuda::{CudaGptq, DeviceHessian};
pub use hessian::Hessian;
pub use pack::{pack_codes, packed_len, unpack_codes};
pub use rtn::rtn;
pub use spec::{GroupFit, QuantSpec, MIN_GROUP_SIZE, SUPPORTED_BITS};
pub use weight::QuantizedWeight;

pub use magnitude::magnitude;
pub use mask::Bitmask;
pub use nm_pack::{nm_index_bits, NmPacked, NM_MAX_M};
pub use pruned::PrunedWeight;
pub use sparsegpt::{sparsegpt, SparseGptOptions};
pub use sparsity::{check_nm, select_mask, MaskScope, Sparsity};
pub use wanda::{input_norms, wanda, wanda_with_norms};
// Low rank.
pub use decomp::{DenseLinAlg, Host, ThinSvd};
pub use eora::{eora, eora_bits, eora_bits_per_weight, eora_with, EoraOptions};
pub use factored::{max_useful_rank, Factored};
pub use rank_budget::{allocate_ranks, retained_energy, LayerSpectrum, RankChoice, RankPlan};
pub use svd::{singular_values, singular_values_with, truncated_svd, truncated_svd_with, LowRank};
pub use whitened_svd::{
    whitened_singular_values, whitened_singular_values_with, whitened_svd, whitened_svd_with,
    WhitenOptions,
};
