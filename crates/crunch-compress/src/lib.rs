//! The algorithms of crunch's weight compression, one file per method, grouped by family:
//!
//! - [`quant`]: round-to-nearest ([`rtn`]) and GPTQ ([`gptq`]), on the grids of `grid.rs`;
//! - [`prune`]: magnitude, Wanda and SparseGPT, unstructured or N:M, masks chosen by
//!   `select.rs`;
//! - [`lowrank`]: truncated SVD, SVD-LLM's whitened SVD, one global rank budget, and the EoRA
//!   correction, over the dense decompositions of `decomp.rs`;
//! - `cuda` (feature `cuda`): GPTQ and SparseGPT on the GPU, and the low-rank decompositions
//!   through cuSOLVER/cuBLAS, sharing one solver module.
//!
//! Shared by GPTQ and SparseGPT: the calibration [`Hessian`] (`hessian.rs`), its dampened
//! Cholesky inverse (`inverse.rs`) and the lazy-update column loop (`column_loop.rs`).
//!
//! What a method produces (codes, masks, factors: `crunch_repr`) is not defined here, so that a
//! model loader or a writer never depends on the algorithms. Weights are row-major
//! [rows = out_features, cols = in_features] f32 slices, as in a `Linear` layer. Everything here
//! is deterministic: the same inputs give bit-identical outputs on any number of threads.

mod column_loop;
#[cfg(feature = "cuda")]
mod cuda;
mod error;
mod hessian;
mod inverse;
pub mod lowrank;
pub mod prune;
pub mod quant;
#[cfg(test)]
mod testutil;

pub use column_loop::BLOCK_SIZE;
#[cfg(feature = "cuda")]
pub use cuda::{CudaDense, CudaGptq, DeviceHessian};
pub use error::{CompressError, Result};
pub use hessian::Hessian;
// Each family's module lists its methods; a new method is registered there only.
pub use lowrank::*;
pub use prune::*;
pub use quant::*;
