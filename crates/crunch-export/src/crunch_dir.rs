//! crunch's own format as a directory: config.json, tokenizer.json, model.safetensors and
//! crunch.json. Each compressed layer's stored tensors and recipe entry come from
//! `crunch_repr::format`, which also reads them back.

use crate::{atomic_dir, Error, Layers, Result, Target};
use crunch_formats::dtype::BLOCKS_IN_SAFETENSORS;
use crunch_formats::gguf::quants::Codec;
use crunch_formats::safetensors::{write_file, OwnedTensor};
use crunch_formats::DType;
use crunch_model::model::tensor_shapes;
use crunch_model::Checkpoint;
use crunch_repr::format::{check_layer_recipe, layer_tensors, Recipe, RECIPE_FILE};
use std::collections::BTreeMap;
use std::path::Path;

/// How crunch's format stores the token embedding and an untied LM head (`--embeddings`,
/// decision 093). They are a fifth of a small model's weights (SmolLM2-135M: 28 M of 135 M)
/// and never pass through a compression stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Embeddings {
    /// The source's own encoding: its GGUF blocks, its 16-bit floats, else f32.
    Keep,
    F16,
    /// Rows encoded in a GGUF block type (round to nearest, no importance: an embedding
    /// table has no input activations to weigh by); a row that is not whole blocks of it takes
    /// llama.cpp's fallback type for that width (Q6_K → Q8_0 for SmolLM2's 576).
    Blocks(DType),
}

impl Embeddings {
    /// The spellings `--embeddings` takes.
    pub const NAMES: [&'static str; 7] = ["keep", "f16", "q8_0", "q6_k", "q5_k", "q4_k", "q5_0"];

    pub fn name(self) -> String {
        match self {
            Embeddings::Keep => "keep".into(),
            Embeddings::F16 => "f16".into(),
            Embeddings::Blocks(t) => t.ggml_name().to_lowercase(),
        }
    }
}

impl std::str::FromStr for Embeddings {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "keep" => Ok(Embeddings::Keep),
            "f16" => Ok(Embeddings::F16),
            lower => BLOCKS_IN_SAFETENSORS
                .into_iter()
                .find(|t| t.ggml_name().eq_ignore_ascii_case(lower) && Codec::new(*t).is_some())
                .map(Embeddings::Blocks)
                .ok_or_else(|| {
                    format!(
                        "`{s}` is not an embedding encoding: one of {}",
                        Embeddings::NAMES.join(", ")
                    )
                }),
        }
    }
}

/// `values` (`shape = [rows, cols]`) stored as `how` says (not `Keep`).
fn encode_embedding(
    name: String,
    shape: Vec<usize>,
    values: &[f32],
    how: Embeddings,
) -> OwnedTensor {
    let cols = shape[1];
    let dtype = match how {
        Embeddings::Blocks(t) => crate::gguf::mix::fallback(t, cols),
        _ => DType::F16,
    };
    let codec = Codec::new(dtype).filter(|_| dtype != DType::F16);
    match codec.and_then(|c| c.encode_rows(values, cols, None).ok()) {
        Some(data) => OwnedTensor {
            name,
            dtype,
            shape,
            data,
        },
        None => OwnedTensor {
            name,
            dtype: DType::F16,
            shape,
            data: values
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
        },
    }
}

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
                // Kept tensors keep their source's encoding, never a wider one: a GGUF's
                // blocks (its Q8_0 token embedding stays Q8_0), a 16-bit source's bytes (an
                // f32 copy would double them); anything else is read as f32.
                None if to.embeddings != Embeddings::Keep
                    && matches!(
                        name.as_str(),
                        "model.embed_tokens.weight" | "lm_head.weight"
                    ) =>
                {
                    let v = ckpt.weights.read(&name, &shape, cfg)?;
                    tensors.push(encode_embedding(name, shape, &v, to.embeddings));
                }
                None => {
                    let same_shape =
                        ckpt.weights.info(&name).map(|i| i.shape) == Some(shape.clone());
                    let kept = match ckpt.weights.raw_blocks(&name, &shape) {
                        Some(raw) => Some((raw.dtype, raw.buffer[raw.range].to_vec())),
                        None => ckpt
                            .weights
                            .raw_half(&name)
                            .filter(|_| same_shape)
                            .map(|(d, b)| (d, b.to_vec())),
                    };
                    match kept {
                        Some((dtype, data)) => tensors.push(OwnedTensor {
                            name,
                            dtype,
                            shape,
                            data,
                        }),
                        None => {
                            let v = ckpt.weights.read(&name, &shape, cfg)?;
                            tensors.push(OwnedTensor::f32(name, &shape, &v));
                        }
                    }
                }
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
