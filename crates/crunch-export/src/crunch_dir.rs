//! crunch's own format: config.json, tokenizer.json, model.safetensors and crunch.json.

use crate::{atomic_dir, Error, Result};
use crunch_compress::{pack_codes, QuantizedWeight};
use crunch_formats::recipe::{Recipe, RECIPE_FILE};
use crunch_formats::safetensors::{write_file, OwnedTensor};
use crunch_formats::DType;
use crunch_model::model::tensor_shapes;
use crunch_model::Checkpoint;
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
        OwnedTensor {
            name: format!("{prefix}.qzeros"),
            dtype: DType::U8,
            shape: vec![q.rows, groups],
            data: q.zeros.clone(),
        },
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

/// Writes `ckpt` with `layers` (Hugging Face layer names without `.weight`) replaced by their
/// quantized form, to `out` in crunch's format.
pub fn write(
    ckpt: &Checkpoint,
    layers: &BTreeMap<String, QuantizedWeight>,
    recipe: &Recipe,
    out: &Path,
    overwrite: bool,
) -> Result<()> {
    let cfg = &ckpt.config;
    let tokenizer = ckpt.tokenizer().ok();
    atomic_dir(out, overwrite, |dir| {
        let mut tensors = Vec::new();
        let mut names: Vec<(String, Vec<usize>)> = tensor_shapes(cfg);
        if ckpt.weights.contains("rope_freqs.weight") {
            names.push(("rope_freqs.weight".into(), vec![cfg.head_dim / 2]));
        }
        for (name, shape) in names {
            match name
                .strip_suffix(".weight")
                .and_then(|p| layers.get(p).map(|q| (p, q)))
            {
                Some((prefix, q)) => tensors.extend(quantized_tensors(prefix, q)),
                None => {
                    let v = ckpt.weights.read(&name, &shape, cfg)?;
                    tensors.push(OwnedTensor::f32(name, &shape, &v));
                }
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
        if let Some(t) = tokenizer {
            let p = dir.join("tokenizer.json");
            t.save(&p, false)
                .map_err(|e| Error::Other(format!("{}: {e}", p.display())))?;
        }
        Ok(())
    })
}
