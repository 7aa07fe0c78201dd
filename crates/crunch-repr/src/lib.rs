//! What a compressed linear layer *is*, whatever method made it, and crunch's own on-disk format
//! for it: the layer below every method (`crunch-compress`), every loader (`crunch-model`) and
//! every writer (`crunch-export`), so that none of them needs the others to agree on a layout.
//!
//! - Storage types: [`QuantizedWeight`] (integer codes on a [`QuantSpec`] grid, bit-packed by
//!   [`pack_codes`]), [`LutWeight`] (codes indexing per-row codebooks of f16 levels), [`PrunedWeight`] (a [`Bitmask`], or [`NmPacked`] values + indices, optionally
//!   with codes), [`Factored`] (W ≈ A·B), and [`CompressedLayer`]: one of them plus an optional
//!   low-rank correction. [`Produces`] describes what a method will store before it runs, so an
//!   output format can refuse it before any calibration.
//! - [`format`]: crunch's format — `crunch.json` ([`format::Recipe`]), the stored tensors of each
//!   kind of layer ([`format::layer_tensors`]) and the reader that answers `P.weight` for them
//!   ([`format::CrunchSource`]).
//!
//! Weights are row-major [rows = out_features, cols = in_features] f32 slices, as in a `Linear`
//! layer.

mod compressed;
mod error;
mod factored;
pub mod format;
mod gguf_blocks;
mod lut;
mod mask;
mod nm_pack;
mod pack;
mod pruned;
mod quantized;
mod scale_codes;
mod sparsity;
mod spec;

pub use compressed::{
    factor_bits_per_weight, Compressed, CompressedLayer, ExpertCalibration, Planned, Produces,
};
pub use error::{ReprError, Result};
pub use factored::{check_rank, max_useful_rank, Factored};
pub use lut::{LutSpec, LutWeight, LUT_BITS};
pub use mask::Bitmask;
pub use nm_pack::{nm_index_bits, NmPacked, NM_MAX_M};
pub use pack::{f16s_le, pack_codes, packed_len, unpack_codes};
pub use pruned::PrunedWeight;
pub use quantized::QuantizedWeight;
pub use scale_codes::{
    coded_scale, decode_scales, encode_scales, max_scale_code, valid_row_scale, CodedScales,
};
pub use sparsity::{check_nm, Sparsity};
pub use spec::{
    validate_weight, GroupFit, QuantSpec, EXPORT_BITS, MIN_GROUP_SIZE, SCALE_BITS, SUPPORTED_BITS,
};
