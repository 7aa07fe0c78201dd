//! crunch's own format as a directory: config.json, tokenizer.json, model.safetensors and
//! crunch.json. Each compressed layer's stored tensors and recipe entry come from
//! `crunch_repr::format`, which also reads them back.

use crate::{atomic_dir, Error, Layers, Result, Target};
use crunch_formats::safetensors::{write_file, OwnedTensor};
use crunch_model::model::tensor_shapes;
use crunch_model::Checkpoint;
use crunch_repr::format::{check_layer_recipe, layer_tensors, Recipe, RECIPE_FILE};
use std::collections::BTreeMap;
use std::path::Path;

/// Writes `ckpt` with `layers` (Hugging Face layer names without `.weight`) replaced by their
/// compressed form, to `to` in crunch's format. `recipe` must describe every layer (see
/// `crunch_repr::format::layer_recipe`); everything is converted before the disk is touched.
pub fn write(ckpt: &Checkpoint, layers: &Layers, recipe: &Recipe, to: &Target) -> Result<()> {
    let cfg = &ckpt.config;
    let shapes: BTreeMap<String, Vec<usize>> = tensor_shapes(cfg).into_iter().collect();
    let mut stored = BTreeMap::new();
    for (name, layer) in layers {
        let (rows, cols) = layer.shape();
        if shapes.get(&format!("{name}.weight")) != Some(&vec![rows, cols]) {
            return Err(Error::NotALinear {
                layer: name.clone(),
                rows,
                cols,
            });
        }
        check_layer_recipe(name, layer, recipe).map_err(Error::layer(name))?;
        let tensors = layer_tensors(name, layer).map_err(Error::layer(name))?;
        stored.insert(name.as_str(), tensors);
    }
    let tokenizer = ckpt.tokenizer_if_present()?;
    atomic_dir(to.dir, &[&ckpt.path], to.overwrite, |dir| {
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
        let config = serde_json::to_string_pretty(&cfg.to_hf_json()).expect("json") + "\n";
        let recipe = recipe.to_json();
        let files = [("config.json", config.as_str()), (RECIPE_FILE, &recipe)];
        write_files(dir, files.iter().chain(to.extra))?;
        save_tokenizer(dir, tokenizer.as_ref())
    })
}

/// Writes each (name, contents) into `dir`.
pub(crate) fn write_files<'a>(
    dir: &Path,
    files: impl IntoIterator<Item = &'a (&'a str, &'a str)>,
) -> Result<()> {
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(Error::io(&p))?;
    }
    Ok(())
}

/// Saves the model's tokenizer, if it has one, as `dir/tokenizer.json`.
pub(crate) fn save_tokenizer(dir: &Path, tokenizer: Option<&tokenizers::Tokenizer>) -> Result<()> {
    if let Some(t) = tokenizer {
        let path = dir.join("tokenizer.json");
        t.save(&path, false)
            .map_err(|source| Error::Tokenizer { path, source })?;
    }
    Ok(())
}
