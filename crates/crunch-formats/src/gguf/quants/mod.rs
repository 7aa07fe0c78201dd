//! ggml's block-quantized types: block layouts, decoders and encoders.
//!
//! One file per family, each type's layout, decoder and packer together:
//! [`legacy`] (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0), [`kquants`] (Q2_K … Q6_K, Q8_K), [`iq`]
//! (IQ4_NL, IQ4_XS; and IQ1_S … IQ3_S, decode only). Every block is a `#[repr(C)]` struct with
//! ggml's exact byte layout ([`GgmlBlock`]), so a runtime can view a tensor's bytes as
//! `&[BlockQ4K]` ([`blocks`]) and run kernels on the fields directly.
//!
//! Decoders evaluate each value with the same f32 operations in the same order as ggml, so the
//! results are bit-identical to llama.cpp's and gguf-py's (checked against gguf-py in
//! `tests/gguf_dequant.rs` and by `scripts/check-gguf-py`).
//!
//! Encoding ([`Codec`]) is split in two steps so that an error-feedback quantizer (GPTQ) can
//! fit a block's grid from error-updated weights and then quantize it column by column:
//! [`Codec::fit`] chooses the grid of one (super-)block — every stored parameter but the codes
//! — minimising the importance-weighted squared error; [`Codec::quantize`] rounds one value
//! to its nearest code under that grid, [`Codec::dequantize`] gives the value a code stands
//! for (bit-identical to the decoder), and [`Codec::pack`] writes grid + codes as the block's
//! bytes. [`Codec::encode_rows`] does all of it for a whole row-major tensor.

/// Declares block structs with ggml's byte layout: `#[repr(C)]`, plain old data (no padding,
/// every bit pattern valid), public fields, and a compile-time check that the struct's size is
/// the block size [`DType::block`] gives its type. `Name: DTYPE { field: type, … }` per block.
macro_rules! ggml_blocks {
    ($($(#[$doc:meta])* $name:ident: $dtype:ident {
        $($(#[$fdoc:meta])* $field:ident: $ty:ty),+ $(,)?
    })+) => {$(
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty),+
        }
        const _: () = assert!(std::mem::size_of::<$name>() == $crate::DType::$dtype.block().1);
    )+};
}

mod codec;
mod fit;
pub mod iq;
pub mod iq_grids;
pub mod kquants;
pub mod legacy;

pub use codec::{Codec, Grid, ENCODABLE};
pub use iq::*;
pub use kquants::*;
pub use legacy::*;

use crate::DType;
use half::{bf16, f16};
use rayon::prelude::*;

/// One block of a ggml quantized type, laid out exactly as in a GGUF file.
pub trait GgmlBlock: bytemuck::Pod {
    const DTYPE: DType;
    /// Values per block (32 or 256).
    const VALUES: usize = Self::DTYPE.block().0;
    /// Decodes the block into `y[..VALUES]`, bit-identical to ggml's dequantization.
    fn decode(&self, y: &mut [f32]);
}

/// A tensor's bytes viewed as blocks without copying: `None` when `bytes` is not a whole
/// number of blocks or is not aligned for `B` (tensor data in a GGUF file is 32-byte aligned).
pub fn blocks<B: GgmlBlock>(bytes: &[u8]) -> Option<&[B]> {
    bytemuck::try_cast_slice(bytes).ok()
}

/// Decodes one block from its (possibly unaligned) bytes.
fn decode_one<B: GgmlBlock>(b: &[u8], y: &mut [f32]) {
    bytemuck::pod_read_unaligned::<B>(b).decode(y)
}

/// Tensors with at least this many elements are dequantized on the rayon pool.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 16;
/// Elements per rayon task: large enough that scheduling costs nothing, small enough to
/// balance across cores.
const TASK_ELEMENTS: usize = 1 << 14;

/// Dequantizes `bytes` of type `dtype` into `out`, whose length is the element count.
/// Fails (with a message) when the byte count does not match, or for integer types.
pub fn dequantize(dtype: DType, bytes: &[u8], out: &mut [f32]) -> Result<(), String> {
    let kernel = kernel(dtype)?;
    let (per_block, block_bytes) = dtype.block();
    match dtype.bytes_for(out.len()) {
        Some(n) if n == bytes.len() => {}
        Some(n) => {
            return Err(format!(
                "{} {} elements need {n} bytes, got {}",
                out.len(),
                dtype.ggml_name(),
                bytes.len()
            ))
        }
        None => {
            return Err(format!(
                "{} elements are not a whole number of {} blocks of {per_block}",
                out.len(),
                dtype.ggml_name()
            ))
        }
    }
    let run = |(src, dst): (&[u8], &mut [f32])| {
        for (b, y) in src
            .chunks_exact(block_bytes)
            .zip(dst.chunks_exact_mut(per_block))
        {
            kernel(b, y);
        }
    };
    if out.len() >= PARALLEL_MIN_ELEMENTS {
        let blocks_per_task = (TASK_ELEMENTS / per_block).max(1);
        bytes
            .par_chunks(blocks_per_task * block_bytes)
            .zip(out.par_chunks_mut(blocks_per_task * per_block))
            .for_each(run);
    } else {
        run((bytes, out));
    }
    Ok(())
}

type Kernel = fn(&[u8], &mut [f32]);

fn kernel(dtype: DType) -> Result<Kernel, String> {
    use DType::*;
    Ok(match dtype {
        F32 => |b, y| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        F16 => |b, y| y[0] = f16::from_le_bytes([b[0], b[1]]).to_f32(),
        BF16 => |b, y| y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        F64 => |b, y| y[0] = f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
        Q4_0 => decode_one::<BlockQ4_0>,
        Q4_1 => decode_one::<BlockQ4_1>,
        Q5_0 => decode_one::<BlockQ5_0>,
        Q5_1 => decode_one::<BlockQ5_1>,
        Q8_0 => decode_one::<BlockQ8_0>,
        Q2K => decode_one::<BlockQ2K>,
        Q3K => decode_one::<BlockQ3K>,
        Q4K => decode_one::<BlockQ4K>,
        Q5K => decode_one::<BlockQ5K>,
        Q6K => decode_one::<BlockQ6K>,
        Q8K => decode_one::<BlockQ8K>,
        IQ1S => decode_one::<BlockIQ1S>,
        IQ1M => decode_one::<BlockIQ1M>,
        IQ2XXS => decode_one::<BlockIQ2XXS>,
        IQ2XS => decode_one::<BlockIQ2XS>,
        IQ2S => decode_one::<BlockIQ2S>,
        IQ3XXS => decode_one::<BlockIQ3XXS>,
        IQ3S => decode_one::<BlockIQ3S>,
        IQ4NL => decode_one::<BlockIQ4NL>,
        IQ4XS => decode_one::<BlockIQ4XS>,
        I64 | I32 | I16 | I8 | U8 | U32 | Bool => {
            return Err(format!(
                "dtype {dtype:?} is an integer type, not a (quantized) float"
            ))
        }
    })
}

#[cfg(test)]
mod tests;
