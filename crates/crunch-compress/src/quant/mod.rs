//! Quantizers: each maps a weight to integer codes on a grid (`crunch_repr::QuantizedWeight`),
//! or, for [`gptq_gguf`], onto one of ggml's block types, or, for [`gptq_lut`], onto per-row
//! codebooks (`crunch_repr::LutWeight`). `grid.rs` fits the grids (min–max or
//! MSE clipping) that RTN and GPTQ share; the GGUF types' grids are their encoders' own.

pub(crate) mod coded_grid;
pub(crate) mod gptq;
mod gptq_gguf;
#[cfg(test)]
mod gptq_gguf_reference;
#[cfg(test)]
pub(crate) mod gptq_reference;
pub(crate) mod grid;
mod lut;
#[cfg(test)]
mod lut_reference;
mod lut_refit;
mod rtn;

pub use gptq::{gptq, GptqOptions};
pub use gptq_gguf::{gptq_gguf, GgufHessian, GgufQuantized};
pub use lut::{gptq_lut, LutOptions, LLOYD_ITERATIONS};
pub use rtn::rtn;
