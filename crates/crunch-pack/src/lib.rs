//! Lossless, dtype-aware packing of model checkpoints (issue 3).
//!
//! A pack restores its input bit for bit. Tensors are found in safetensors and GGUF files and
//! split into byte planes by dtype (exponent and sign-mantissa planes for floats, fields of
//! quantisation blocks), each plane of each 512 KiB chunk is coded with the smallest of raw,
//! constant, order-0 rANS and zstd, and chunks are coded in parallel. Everything else is stored
//! generically. The container (docs/pack-format.md) has a per-tensor index, a checksum per
//! chunk and per original file, and is read defensively: a damaged or hostile pack gives an
//! error, never a panic or an unbounded allocation.
//!
//! Module map: `freq`/`rans`/`rans_avx512` (entropy coder), `plane` (per-plane method choice),
//! `split`/`transform` (record layouts), `chunk` (one chunk record), `detect` (finding
//! tensors), `format` (header/index/footer), `pack`/`unpack` (streaming engines), `alloc`
//! (output buffers of in-memory restores), `files` (file and directory operations), `report`
//! (statistics).

mod alloc;
pub mod chunk;
pub mod detect;
pub mod error;
pub mod files;
pub mod format;
pub mod freq;
pub mod hash;
pub mod io;
pub mod pack;
pub mod plane;
pub mod rans;
#[cfg(target_arch = "x86_64")]
mod rans_avx512;
pub mod report;
pub mod split;
pub mod transform;
pub mod unpack;
pub mod workers;

pub use error::{PackError, Result};
pub use files::{pack_path, unpack_path, UnpackOptions};
pub use pack::{pack_bytes, PackOptions};
pub use plane::{PlaneOptions, ZstdTrial};
pub use report::{PackReport, UnpackReport};
pub use unpack::{unpack_bytes, Packed};
