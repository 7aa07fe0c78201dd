//! Quantizers: each maps a weight to integer codes on a grid (`crunch_repr::QuantizedWeight`).
//! `grid.rs` fits the grids (min–max or MSE clipping) that every quantizer shares.

mod gptq;
#[cfg(test)]
pub(crate) mod gptq_reference;
pub(crate) mod grid;
mod rtn;

pub use gptq::{gptq, GptqOptions};
pub use rtn::rtn;
