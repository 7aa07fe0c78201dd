//! crunch's own format: config.json, tokenizer.json, model.safetensors and crunch.json. The
//! stored tensors of each kind of compressed layer are described in `crunch_formats::recipe`.

use crate::{atomic_dir, Error, Result};
use crunch_compress::{
    pack_codes, Compressed, CompressedLayer, Factored, NmPacked, PrunedWeight, QuantizedWeight,
    Sparsity,
};
use crunch_formats::recipe::{LayerRecipe, Recipe, RECIPE_FILE};
use crunch_formats::safetensors::{write_file, OwnedTensor};
use crunch_formats::DType;
use crunch_model::model::tensor_shapes;
use crunch_model::Checkpoint;
use half::f16;
use std::collections::BTreeMap;
use std::path::Path;

/// The stored tensors of one quantized layer `prefix`.
pub fn quantized_tensors(prefix: &str, q: &QuantizedWeight) -> Vec<OwnedTensor> {
    let groups = q.n_groups();
    let mut out = vec![
        OwnedTensor {
            name: format!("{prefix}.qcodes"),
            dtype: DType::U8,
            shape: vec![(q.rows * q.cols * q.spec.bits as usize).div_ceil(8)],
            data: pack_codes(&q.codes, q.spec.bits),
        },
        OwnedTensor {
            name: format!("{prefix}.qscales"),
            dtype: DType::F16,
            shape: vec![q.rows, groups],
            data: q.scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
        },
        u8_tensor(format!("{prefix}.qzeros"), vec![q.rows, groups], &q.zeros),
    ];
    if let Some(g) = &q.g_idx {
        out.push(OwnedTensor {
            name: format!("{prefix}.g_idx"),
            dtype: DType::I32,
            shape: vec![q.cols],
            data: g.iter().flat_map(|&v| (v as i32).to_le_bytes()).collect(),
        });
    }
    out
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
            let mut t = quantized_tensors(prefix, q);
            t.push(mask());
            t
        }
        (None, Sparsity::NM { n, m }) => {
            let nm = NmPacked::encode(&p.weight, &p.mask, n, m)
                .map_err(|e| Error::Other(format!("{prefix}: {e}")))?;
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
    let bad = |e: crunch_compress::CompressError| Error::Other(format!("{prefix}: {e}"));
    let mut out = match &layer.main {
        Compressed::Quantized(q) => {
            q.validate().map_err(bad)?;
            quantized_tensors(prefix, q)
        }
        Compressed::Pruned(p) => {
            p.validate().map_err(bad)?;
            pruned_tensors(prefix, p)?
        }
        Compressed::Factored(f) => {
            f.validate().map_err(bad)?;
            factor_tensors(prefix, "lr", f).into()
        }
    };
    if let Some(c) = &layer.correction {
        c.validate().map_err(bad)?;
        if (c.rows, c.cols) != layer.shape() {
            return Err(Error::Other(format!(
                "{prefix}: {}×{} correction of a {:?} layer",
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
/// `mse_clip`) are left at their defaults for the caller to fill in.
pub fn layer_recipe(layer: &CompressedLayer) -> LayerRecipe {
    let (rows, cols) = layer.shape();
    let quant = match &layer.main {
        Compressed::Quantized(q) => Some(q),
        Compressed::Pruned(p) => p.quant.as_ref(),
        Compressed::Factored(_) => None,
    };
    LayerRecipe {
        method: layer.method.clone(),
        bits: quant.map_or(16, |q| q.spec.bits),
        group_size: quant.and_then(|q| q.spec.group_size),
        symmetric: quant.is_some_and(|q| q.spec.symmetric),
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
    }
}

/// Refuses a layer whose recipe entry would make the reader misread it.
fn check_recipe(name: &str, layer: &CompressedLayer, recipe: &Recipe) -> Result<()> {
    let r = recipe.layers.get(name).ok_or_else(|| {
        Error::Other(format!(
            "{name}: compressed, but the recipe has no entry for it"
        ))
    })?;
    let want = layer_recipe(layer);
    let quantized = !matches!(&layer.main, Compressed::Factored(_))
        && !matches!(&layer.main, Compressed::Pruned(p) if p.quant.is_none());
    let same_grid = !quantized
        || (r.bits, r.group_size, r.symmetric) == (want.bits, want.group_size, want.symmetric);
    if (r.rows, r.cols) != (want.rows, want.cols)
        || r.sparsity != want.sparsity
        || r.rank != want.rank
        || r.correction_rank != want.correction_rank
        || !same_grid
    {
        return Err(Error::Other(format!(
            "{name}: the recipe entry {r:?} does not describe the layer ({want:?})"
        )));
    }
    Ok(())
}

/// Writes `ckpt` with `layers` (Hugging Face layer names without `.weight`) replaced by their
/// compressed form, to `out` in crunch's format. `recipe` must describe every layer (see
/// [`layer_recipe`]); everything is converted before the disk is touched.
pub fn write(
    ckpt: &Checkpoint,
    layers: &BTreeMap<String, CompressedLayer>,
    recipe: &Recipe,
    out: &Path,
    overwrite: bool,
) -> Result<()> {
    write_with_recipe_file(ckpt, layers, recipe, None, out, overwrite)
}

/// [`write`], also storing the TOML recipe that made the output as `recipe.toml` (what
/// `crunch compress --recipe` reads back).
pub fn write_with_recipe_file(
    ckpt: &Checkpoint,
    layers: &BTreeMap<String, CompressedLayer>,
    recipe: &Recipe,
    recipe_toml: Option<&str>,
    out: &Path,
    overwrite: bool,
) -> Result<()> {
    let cfg = &ckpt.config;
    let shapes: BTreeMap<String, Vec<usize>> = tensor_shapes(cfg).into_iter().collect();
    let mut stored = BTreeMap::new();
    for (name, layer) in layers {
        let (rows, cols) = layer.shape();
        if shapes.get(&format!("{name}.weight")) != Some(&vec![rows, cols]) {
            return Err(Error::Other(format!(
                "{name}: not a linear layer of this model with a {rows}×{cols} weight"
            )));
        }
        check_recipe(name, layer, recipe)?;
        stored.insert(name.as_str(), layer_tensors(name, layer)?);
    }
    let tokenizer = ckpt.tokenizer_if_present()?;
    atomic_dir(out, &[&ckpt.path], overwrite, |dir| {
        let mut tensors = Vec::new();
        let mut names: Vec<(String, Vec<usize>)> = tensor_shapes(cfg);
        if ckpt.weights.contains("rope_freqs.weight") {
            names.push(("rope_freqs.weight".into(), vec![cfg.head_dim / 2]));
        }
        for (name, shape) in names {
            match name.strip_suffix(".weight").and_then(|p| stored.remove(p)) {
                Some(t) => tensors.extend(t),
                // Kept tensors keep a 16-bit source's bytes (an f32 copy would double them).
                None => match ckpt.weights.raw_half(&name) {
                    Some((dtype, bytes))
                        if ckpt.weights.info(&name).map(|i| i.shape) == Some(shape.clone()) =>
                    {
                        tensors.push(OwnedTensor {
                            name,
                            dtype,
                            shape,
                            data: bytes.to_vec(),
                        })
                    }
                    _ => {
                        let v = ckpt.weights.read(&name, &shape, cfg)?;
                        tensors.push(OwnedTensor::f32(name, &shape, &v));
                    }
                },
            }
        }
        let meta = BTreeMap::from([("format".to_string(), "crunch".to_string())]);
        write_file(&dir.join("model.safetensors"), &tensors, &meta)?;
        let io = |p: &Path, e: std::io::Error| Error::Other(format!("{}: {e}", p.display()));
        let cfg_path = dir.join("config.json");
        let cfg_text = serde_json::to_string_pretty(&cfg.to_hf_json()).expect("json") + "\n";
        std::fs::write(&cfg_path, cfg_text).map_err(|e| io(&cfg_path, e))?;
        let recipe_path = dir.join(RECIPE_FILE);
        std::fs::write(&recipe_path, recipe.to_json()).map_err(|e| io(&recipe_path, e))?;
        if let Some(text) = recipe_toml {
            let p = dir.join("recipe.toml");
            std::fs::write(&p, text).map_err(|e| io(&p, e))?;
        }
        if let Some(t) = tokenizer {
            let p = dir.join("tokenizer.json");
            t.save(&p, false)
                .map_err(|e| Error::Other(format!("{}: {e}", p.display())))?;
        }
        Ok(())
    })
}
