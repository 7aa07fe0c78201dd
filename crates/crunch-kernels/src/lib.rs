//! Packed-weight matrix products for crunch's CPU runtime.
//!
//! A [`PackedMatrix`] keeps a linear layer's weights in their stored encoding (GGUF legacy
//! and K blocks, F16/BF16/F32) and multiplies activation rows by it without ever expanding
//! the matrix: activations are quantized once per product to 8-bit planes (`act`), a tile of
//! weight rows is unpacked to one byte per weight (`formats`, `tile`), and the inner loops
//! are integer dot products (`body`: AVX-512 VNNI `vpdpbusd`, AVX2 `vpmaddubsw`, or plain
//! scalar code, chosen at run time by [`Isa::detect`]), spread over rayon's pool by tiles of
//! output rows.
//!
//! The same kernel serves decoding (one activation row: a matrix-vector product, memory
//! bound) and prefill (hundreds of rows: each unpacked tile is reused by every row, compute
//! bound). Every path is checked against the scalar reference and against dequantize-then-
//! multiply in f64 (`tests` below and `tests/products.rs`).

mod act;
mod aligned;
mod body;
mod float;
mod formats;
mod gemv;
mod isa;
mod math;
mod matrix;
#[cfg(target_arch = "x86_64")]
mod panel;
pub mod pool;
#[cfg(target_arch = "x86_64")]
mod quad;
mod storage;
mod tile;

pub use act::{ActBits, Acts};
pub use crunch_formats::DType;
pub use formats::supported as block_supported;
pub use isa::Isa;
pub use math::exp_nonpositive;
pub use matrix::{Options, PackedMatrix};
pub use storage::{ByteOwner, Bytes};

/// Whether a [`PackedMatrix`] can hold weights of `dtype`.
pub fn supported(dtype: crunch_formats::DType) -> bool {
    formats::supported(dtype) || float::supported(dtype)
}

#[cfg(test)]
mod tests;
