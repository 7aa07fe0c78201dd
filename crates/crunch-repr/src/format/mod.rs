//! crunch's own format: a Hugging Face–style directory (`config.json`, `tokenizer.json`,
//! `model.safetensors`) plus `crunch.json` ([`Recipe`]), which says what was done to which layer.
//! [`layer_tensors`] writes a compressed layer's tensors, [`CrunchSource`] reads them back; the
//! directory around them is written by `crunch_export::crunch_dir`.
//!
//! A compressed linear layer `P` (e.g. `model.layers.0.mlp.up_proj`) has no `P.weight`; its
//! recipe entry (`layers[P]`, with `rows`, `cols`) and the tensors below say what it holds.
//! Every unquantized value (pruned values, factors) is F16; masks and codes are U8.
//!
//! Quantized (`bits` 1–8, no `rank`):
//! - `P.qcodes`  U8, the integer codes packed densely (`bits` bits each, little-endian bit order,
//!   row-major over `[rows, cols]`, last byte zero-padded);
//! - `P.qscales` F16 `[rows, groups]`;
//! - `P.qzeros`  U8 `[rows, groups]`, integer zero points;
//! - `P.g_idx`   I32 `[cols]`, only with act-order: the group of each input column;
//!
//! dequantized as `(code − zero) · scale`.
//!
//! Quantized with two-level scales (`scale_bits` k in the recipe, decision 145): `P.qscales`
//! is replaced by
//! - `P.qscodes`  U8, the group scales' codes (1 ..= 2^k − 1, `[rows, groups]` row-major)
//!   packed at k bits as `P.qcodes`;
//! - `P.qrscales` F16 `[rows]`, one normal (≥ 2^-14) row scale per row;
//!
//! and `P.qzeros` is packed at `bits` bits as `P.qcodes` (`[packed_len(rows·groups, bits)]`).
//! The scale of row r, group g is `f16(f32(qrscales[r]) · c / (2^k − 1))`
//! (`crate::coded_scale`), the f16 value every reader then uses as `P.qscales` would be.
//!
//! Lookup table (`codebook: true`, `bits` 2–4, decision 143):
//! - `P.lcodes`  U8, the codes packed as `P.qcodes`;
//! - `P.llevels` F16 `[rows, groups, 2^bits]`, each row's (or row and group's) codebook in
//!   non-decreasing order (`group_size` absent: one group per row);
//!
//! dequantized as `llevels[r, group(c), code]`.
//!
//! Pruned (`sparsity` "0.5" for a pruned fraction, "2:4" for N:M):
//! - unstructured, not quantized: `P.mask` U8 `[ceil(rows·cols/8)]`, the keep-mask (bit
//!   k = r·cols + c is bit k % 8 of byte k / 8, least significant first, 1 = kept, padding
//!   bits 0) and `P.values` F16 `[kept]`, the kept values in row-major order;
//! - N:M, not quantized: `P.nm_values` F16 `[rows, cols/m·n]`, each group of m input columns'
//!   n kept values in column order (a group keeping fewer is padded with zeros at its lowest
//!   free positions), and `P.nm_indices` U8, their in-group positions at ⌈log2 m⌉ bits each,
//!   packed like `P.qcodes`; n and m come from `sparsity`;
//! - pruned and quantized (SparseGPT's joint mode; `P.qcodes` present): the quantized tensors
//!   above for the whole matrix, pruned entries holding the code that dequantizes to exactly 0,
//!   plus `P.mask`; the weight is the dequantized codes with every unkept entry 0.
//!
//! Factored (`rank` r): `P.lr_a` F16 `[rows, r]` and `P.lr_b` F16 `[r, cols]`, W = A·B, run as
//! two products (x·Bᵀ)·Aᵀ.
//!
//! Any of these with an EoRA correction (`correction_rank` r) also stores `P.eora_a` F16
//! `[rows, r]` and `P.eora_b` F16 `[r, cols]`: the layer computes x·(Ŵ + A·B)ᵀ.
//!
//! Every other tensor is stored as it is. Readers check every stored tensor's dtype and shape
//! against `rows`, `cols`, `bits`, `group_size`, `sparsity` and the ranks.

mod read;
mod recipe;
mod write;

pub use read::CrunchSource;
pub use recipe::{Calibration, ExpertRecipe, LayerRecipe, Recipe, FORMAT_VERSION, RECIPE_FILE};
pub use write::{check_layer_recipe, layer_recipe, layer_recipes, layer_tensors};
