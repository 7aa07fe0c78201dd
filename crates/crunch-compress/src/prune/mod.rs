//! Pruners: each maps a weight to a `crunch_repr::PrunedWeight` (a keep-mask and the kept
//! values, optionally quantized). `select.rs` turns scores into masks for every pattern.

mod magnitude;
pub(crate) mod select;
mod sparsegpt;
#[cfg(test)]
mod sparsegpt_reference;
mod wanda;

pub use magnitude::magnitude;
pub use select::{select_mask, MaskScope};
pub use sparsegpt::{sparsegpt, SparseGptOptions};
pub use wanda::{input_norms, wanda, wanda_with_norms};
