//! Low-rank methods: each factors a weight into `crunch_repr::Factored` (W ≈ A·B), or fits a
//! correction of another compression's error (EoRA). Ranks come from one global parameter
//! budget (`rank_budget.rs`); the O(n³) decompositions run through [`DenseLinAlg`] (`decomp.rs`)
//! so that a GPU can do them.

pub(crate) mod decomp;
mod eora;
#[cfg(test)]
mod lowrank_reference;
mod rank_budget;
mod svd;
mod whitened_svd;

pub use decomp::{DenseLinAlg, Host, ThinSvd};
pub use eora::{eora, eora_bits, eora_bits_per_weight, EoraOptions};
pub use rank_budget::{allocate_ranks, retained_energy, LayerSpectrum, RankChoice, RankPlan};
pub use svd::{singular_values, truncated_svd, LowRank};
pub use whitened_svd::{whiten, whitened_svd, WhitenOptions, Whitened};
