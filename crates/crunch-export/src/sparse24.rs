//! compressed-tensors' "sparse-24-bitmask" layout for 2:4-pruned, unquantized layers, which
//! transformers (through the `compressed-tensors` package, 0.20.0) decompresses on load.
//! Written from `Sparse24BitMaskTensor` / `sparse24_bitmask_decompress` of that package.
//!
//! A 2:4 layer `P` with `[out, in]` weight becomes
//! - `P.compressed` F32 `[out, in/2]`: the two kept values of every group of four input
//!   columns, in column order, row-major (`tensor[bytemask].reshape(out, in/2)`);
//! - `P.bitmask` U8 `[out, ceil(in/8)]`: the keep-mask of each row packed as numpy's
//!   `packbits(axis=-1, bitorder="little")` — column c is bit c % 8 (least significant first)
//!   of byte c / 8 of its row, each row zero-padded to whole bytes;
//! - `P.shape` I64 `[2, 1]` = `[[out], [in]]` (`torch.tensor(shape).reshape(-1, 1)`).
//!
//! Decompression scatters the values, in row-major order, to the set bits, so every row must
//! set exactly in/2 bits: a group keeping fewer than two weights marks kept zeros at its
//! lowest free positions (as [`NmPacked`] does). Values are rounded to f16 and stored as f32,
//! so the export computes exactly what crunch's own format (f16 values) does, in the model's
//! f32 dtype. config.json's `quantization_config` holds only a `sparsity_config`
//! (`format: "sparse-24-bitmask"`, `sparsity_structure: "2:4"`, `targets`: the 2:4 layers by
//! name, `ignore: []`).

use crate::compressed_tensors::{
    check_linear, linear_modules, refuse_rope_freqs, write_tensors_dir, COMPRESSED_TENSORS_VERSION,
};
use crate::{Error, Format, Layers, Result, Target};
use crunch_formats::safetensors::OwnedTensor;
use crunch_formats::DType;
use crunch_model::Checkpoint;
use crunch_repr::format::Recipe;
use crunch_repr::{CompressedLayer, NmPacked, Produces, PrunedWeight};
use half::f16;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The 2:4-pruned, unquantized weight of `layer`, or why it cannot be stored in this layout.
fn two_four<'a>(name: &str, layer: &'a CompressedLayer) -> Result<&'a PrunedWeight> {
    let format = Format::Sparse24Bitmask;
    let what = match layer.correction {
        Some(_) => Produces::Correction,
        None => layer.main.produces(),
    };
    match (format.refuses(what, layer.shape()), &layer.main) {
        (None, crunch_repr::Compressed::Pruned(p)) => Ok(p),
        (why, _) => Err(Error::Refused {
            layer: name.into(),
            format: format.name(),
            why: why.unwrap_or(crate::Refusal::NotPruned),
        }),
    }
}

/// The stored tensors of one 2:4-pruned layer `prefix`.
pub fn layer_tensors(prefix: &str, p: &PrunedWeight) -> Result<Vec<OwnedTensor>> {
    let bad = Error::layer(prefix);
    p.validate().map_err(&bad)?;
    let (rows, cols) = (p.rows, p.cols);
    let packed = NmPacked::encode(&p.weight, &p.mask, 2, 4).map_err(&bad)?;
    // The positions NmPacked stores: exactly two per group, padding included.
    let (_, mask) = packed.decode().map_err(bad)?;
    let kept = mask.to_bools();
    let row_bytes = cols.div_ceil(8);
    let mut bitmask = vec![0u8; rows * row_bytes];
    for (r, row) in kept.chunks(cols).enumerate() {
        for (c, _) in row.iter().enumerate().filter(|(_, &k)| k) {
            bitmask[r * row_bytes + c / 8] |= 1 << (c % 8);
        }
    }
    let values: Vec<f32> = packed
        .values
        .iter()
        .map(|&v| f16::from_f32(v).to_f32())
        .collect();
    Ok(vec![
        OwnedTensor::f32(format!("{prefix}.compressed"), &[rows, cols / 2], &values),
        OwnedTensor {
            name: format!("{prefix}.bitmask"),
            dtype: DType::U8,
            shape: vec![rows, row_bytes],
            data: bitmask,
        },
        OwnedTensor {
            name: format!("{prefix}.shape"),
            dtype: DType::I64,
            shape: vec![2, 1],
            data: [rows as i64, cols as i64]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        },
    ])
}

/// `quantization_config` of a model whose only compression is 2:4 sparsity of `names`.
pub fn sparsity_config(names: &[&str], global_sparsity: f64) -> Value {
    json!({
        "quant_method": "compressed-tensors",
        "sparsity_config": {
            "format": "sparse-24-bitmask",
            "sparsity_structure": "2:4",
            "targets": names,
            "ignore": [],
            "global_sparsity": global_sparsity,
        },
        "version": COMPRESSED_TENSORS_VERSION,
    })
}

/// Writes `ckpt` with `layers` (Hugging Face layer names without `.weight`, each 2:4-pruned
/// and unquantized, without correction) to `to` in compressed-tensors' sparse-24-bitmask
/// layout. Every other layer is stored dense; anything else in `layers` is refused.
pub fn write(ckpt: &Checkpoint, layers: &Layers, recipe: &Recipe, to: &Target) -> Result<()> {
    refuse_rope_freqs(ckpt)?;
    let mut packed = BTreeMap::new();
    for (name, layer) in layers {
        let p = two_four(name, layer)?;
        check_linear(ckpt, name, p.rows, p.cols)?;
        packed.insert(name.as_str(), layer_tensors(name, p)?);
    }
    // Sparsity over every Linear module's weights, as compressed-tensors reports it.
    let shapes: BTreeMap<String, Vec<usize>> = crunch_model::model::tensor_shapes(&ckpt.config)
        .into_iter()
        .collect();
    let total: usize = linear_modules(ckpt)
        .iter()
        .filter_map(|n| shapes.get(&format!("{n}.weight")))
        .map(|s| s.iter().product::<usize>())
        .sum();
    let pruned: usize = layers.values().map(|l| l.shape().0 * l.shape().1 / 2).sum();
    let names: Vec<&str> = layers.keys().map(String::as_str).collect();
    let quant = sparsity_config(&names, pruned as f64 / total.max(1) as f64);
    write_tensors_dir(ckpt, packed, recipe, to, quant, Vec::new())
}
