//! Writing one compressed layer in crunch's format: its stored tensors ([`layer_tensors`]) and
//! its `crunch.json` entry ([`layer_recipe`]). The layout is described in [`super`].

use super::recipe::{ExpertRecipe, LayerRecipe, Recipe};
use crate::{
    pack_codes, packed_len, Compressed, CompressedLayer, Factored, LutWeight, NmPacked,
    PrunedWeight, QuantizedWeight, ReprError, Result, Sparsity,
};
use crunch_formats::safetensors::OwnedTensor;
use crunch_formats::DType;
use half::f16;
use std::collections::BTreeMap;

/// The stored tensors of one quantized layer `prefix` (checked by the caller: with coded
/// scales, `q.coded_scales()` succeeds).
fn quantized_tensors(prefix: &str, q: &QuantizedWeight) -> Result<Vec<OwnedTensor>> {
    let groups = q.n_groups();
    let mut out = vec![OwnedTensor {
        name: format!("{prefix}.qcodes"),
        dtype: DType::U8,
        shape: vec![(q.rows * q.cols * q.spec.bits as usize).div_ceil(8)],
        data: pack_codes(&q.codes, q.spec.bits),
    }];
    match (q.coded_scales()?, q.spec.scale_bits) {
        (Some(c), Some(k)) => {
            // Two-level scales (decision 145): codes and zero points packed at their widths,
            // so the file holds the bits `bits_per_weight` counts.
            let n = q.rows * groups;
            out.extend([
                u8_tensor(
                    format!("{prefix}.qscodes"),
                    vec![packed_len(n, k)],
                    &pack_codes(&c.codes, k),
                ),
                OwnedTensor {
                    name: format!("{prefix}.qrscales"),
                    dtype: DType::F16,
                    shape: vec![q.rows],
                    data: c.row_scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
                },
                u8_tensor(
                    format!("{prefix}.qzeros"),
                    vec![packed_len(n, q.spec.bits)],
                    &pack_codes(&q.zeros, q.spec.bits),
                ),
            ]);
        }
        _ => out.extend([
            OwnedTensor {
                name: format!("{prefix}.qscales"),
                dtype: DType::F16,
                shape: vec![q.rows, groups],
                data: q.scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
            },
            u8_tensor(format!("{prefix}.qzeros"), vec![q.rows, groups], &q.zeros),
        ]),
    }
    if let Some(g) = &q.g_idx {
        out.push(OwnedTensor {
            name: format!("{prefix}.g_idx"),
            dtype: DType::I32,
            shape: vec![q.cols],
            data: g.iter().flat_map(|&v| (v as i32).to_le_bytes()).collect(),
        });
    }
    Ok(out)
}

/// The stored tensors of one lookup-table layer `prefix`.
fn lut_tensors(prefix: &str, q: &LutWeight) -> Vec<OwnedTensor> {
    vec![
        OwnedTensor {
            name: format!("{prefix}.lcodes"),
            dtype: DType::U8,
            shape: vec![(q.rows * q.cols * q.spec.bits as usize).div_ceil(8)],
            data: pack_codes(&q.codes, q.spec.bits),
        },
        OwnedTensor {
            name: format!("{prefix}.llevels"),
            dtype: DType::F16,
            shape: vec![q.rows, q.n_groups(), q.spec.levels()],
            data: q.levels.iter().flat_map(|s| s.to_le_bytes()).collect(),
        },
    ]
}

fn u8_tensor(name: String, shape: Vec<usize>, bytes: &[u8]) -> OwnedTensor {
    OwnedTensor {
        name,
        dtype: DType::U8,
        shape,
        data: bytes.to_vec(),
    }
}

/// Values rounded to f16: every unquantized value of crunch's format is stored so.
fn f16_tensor(name: String, shape: Vec<usize>, values: &[f32]) -> OwnedTensor {
    OwnedTensor {
        name,
        dtype: DType::F16,
        shape,
        data: values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
    }
}

fn pruned_tensors(prefix: &str, p: &PrunedWeight) -> Result<Vec<OwnedTensor>> {
    let mask = || {
        u8_tensor(
            format!("{prefix}.mask"),
            vec![p.mask.as_bytes().len()],
            p.mask.as_bytes(),
        )
    };
    Ok(match (&p.quant, p.sparsity) {
        // The codes of the whole matrix (pruned entries hold the zero point's code) + the mask.
        (Some(q), _) => {
            let mut t = quantized_tensors(prefix, q)?;
            t.push(mask());
            t
        }
        (None, Sparsity::NM { n, m }) => {
            let nm = NmPacked::encode(&p.weight, &p.mask, n, m)?;
            vec![
                f16_tensor(
                    format!("{prefix}.nm_values"),
                    vec![p.rows, p.cols / m * n],
                    &nm.values,
                ),
                u8_tensor(
                    format!("{prefix}.nm_indices"),
                    vec![nm.indices.len()],
                    &nm.indices,
                ),
            ]
        }
        (None, Sparsity::Unstructured(_)) => {
            let kept: Vec<f32> = p
                .weight
                .iter()
                .zip(p.mask.to_bools())
                .filter_map(|(&w, k)| k.then_some(w))
                .collect();
            vec![
                mask(),
                f16_tensor(format!("{prefix}.values"), vec![kept.len()], &kept),
            ]
        }
    })
}

fn factor_tensors(prefix: &str, kind: &str, f: &Factored) -> [OwnedTensor; 2] {
    [
        f16_tensor(format!("{prefix}.{kind}_a"), vec![f.rows, f.rank], &f.a),
        f16_tensor(format!("{prefix}.{kind}_b"), vec![f.rank, f.cols], &f.b),
    ]
}

/// The stored tensors of one compressed layer `prefix` (checked for consistency first).
pub fn layer_tensors(prefix: &str, layer: &CompressedLayer) -> Result<Vec<OwnedTensor>> {
    let mut out = match &layer.main {
        Compressed::Quantized(q) => {
            q.validate()?;
            quantized_tensors(prefix, q)?
        }
        Compressed::Lut(q) => {
            q.validate()?;
            lut_tensors(prefix, q)
        }
        Compressed::Pruned(p) => {
            p.validate()?;
            pruned_tensors(prefix, p)?
        }
        Compressed::Factored(f) => {
            f.validate()?;
            factor_tensors(prefix, "lr", f).into()
        }
    };
    if let Some(c) = &layer.correction {
        c.validate()?;
        if (c.rows, c.cols) != layer.shape() {
            return Err(ReprError::Inconsistent(format!(
                "{}×{} correction of a {:?} layer",
                c.rows,
                c.cols,
                layer.shape()
            )));
        }
        out.extend(factor_tensors(prefix, "eora", c));
    }
    Ok(out)
}

/// The recipe entry that describes `layer` as stored: the fields a reader needs (method, bit
/// width and grid, shape, sparsity, ranks). Calibration settings (`damp`, `act_order`,
/// `mse_clip`) are left at their defaults for the method to fill in.
pub fn layer_recipe(layer: &CompressedLayer) -> LayerRecipe {
    let (rows, cols) = layer.shape();
    let quant = layer.main.quantized();
    let lut = layer.main.lut();
    LayerRecipe {
        method: layer.method.clone(),
        bits: quant.map_or(lut.map_or(16, |q| q.spec.bits), |q| q.spec.bits),
        group_size: quant.map_or(lut.and_then(|q| q.spec.group_size), |q| q.spec.group_size),
        symmetric: quant.is_some_and(|q| q.spec.symmetric),
        codebook: lut.is_some(),
        scale_bits: quant.and_then(|q| q.spec.scale_bits),
        act_order: quant.is_some_and(|q| q.g_idx.is_some()),
        mse_clip: false,
        damp: None,
        rows,
        cols,
        sparsity: match &layer.main {
            Compressed::Pruned(p) => Some(p.sparsity.to_string()),
            _ => None,
        },
        rank: match &layer.main {
            Compressed::Factored(f) => Some(f.rank),
            _ => None,
        },
        correction_rank: layer.correction.as_ref().map(|c| c.rank),
        expert_calibration: layer.expert.map(|e| ExpertRecipe {
            statistics: if e.all_tokens { "all-tokens" } else { "routed" }.into(),
            routed_tokens: e.routed_tokens,
            tokens: e.tokens,
        }),
    }
}

/// [`layer_recipe`] of every layer.
pub fn layer_recipes(layers: &BTreeMap<String, CompressedLayer>) -> BTreeMap<String, LayerRecipe> {
    layers
        .iter()
        .map(|(n, l)| (n.clone(), layer_recipe(l)))
        .collect()
}

/// Refuses a layer `name` whose entry in `recipe` would make the reader misread it.
pub fn check_layer_recipe(name: &str, layer: &CompressedLayer, recipe: &Recipe) -> Result<()> {
    let r = recipe
        .layers
        .get(name)
        .ok_or_else(|| ReprError::Inconsistent("the recipe has no entry for it".into()))?;
    let want = layer_recipe(layer);
    let grid = |r: &LayerRecipe| (r.bits, r.group_size, r.symmetric, r.codebook, r.scale_bits);
    let same_grid =
        (layer.main.quantized().is_none() && layer.main.lut().is_none()) || grid(r) == grid(&want);
    if (r.rows, r.cols) != (want.rows, want.cols)
        || r.sparsity != want.sparsity
        || r.rank != want.rank
        || r.correction_rank != want.correction_rank
        || r.codebook != want.codebook
        || !same_grid
    {
        return Err(ReprError::Inconsistent(format!(
            "the recipe entry {r:?} does not describe the layer ({want:?})"
        )));
    }
    Ok(())
}
