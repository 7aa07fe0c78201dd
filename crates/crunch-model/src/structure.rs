//! The model structure a config claims, checked against the tensors a file really holds,
//! before anything is sized by the config: a lying layer count must not silently drop blocks
//! (llama.cpp refuses such a file too: "wrong number of tensors"), and a lying width must not
//! make crunch allocate or compute for minutes before failing.

use crate::config::ModelConfig;
use crate::model::tensor_shapes;
use crate::weights::{Naming, Weights};
use crate::{Error, Result, TensorProblem};
use crunch_formats::DType;
use std::collections::BTreeSet;

/// Where the config came from, to name the field in messages.
pub struct Origin<'a> {
    /// The config's file or description: `.../config.json`, or "the GGUF metadata".
    pub config: &'a str,
    /// The key holding the layer count: `num_hidden_layers` or `llama.block_count`.
    pub layers_key: &'a str,
}

/// Block indices that stored tensor names refer to (`model.layers.N.…` or `blk.N.…`).
fn block_indices(w: &Weights) -> BTreeSet<usize> {
    let prefix = match w.naming() {
        Naming::HuggingFace => "model.layers.",
        Naming::Gguf { .. } => "blk.",
    };
    w.source()
        .tensors()
        .iter()
        .filter_map(|t| {
            let rest = t.name.strip_prefix(prefix)?;
            rest.split_once('.')?.0.parse().ok()
        })
        .collect()
}

/// Checks that the file holds exactly `cfg.layers` blocks and every tensor the config
/// implies, each with the implied shape and a numeric type.
pub fn validate_structure(cfg: &ModelConfig, w: &Weights, origin: &Origin) -> Result<()> {
    let path = w.source().path();
    let bad = |problem| Error::tensor(path, problem);
    let blocks = block_indices(w);
    let held = blocks.last().map_or(0, |&b| b + 1);
    if held != cfg.layers || blocks.len() != held {
        return Err(Error::Blocks {
            path: path.to_path_buf(),
            key: origin.layers_key.into(),
            config: origin.config.into(),
            layers: cfg.layers,
            held,
            present: (blocks.len() != held).then_some(blocks.len()),
        });
    }
    for (name, shape) in tensor_shapes(cfg) {
        let stored = w.stored_name(&name);
        let Some(info) = w.info(&name) else {
            // An untied model without an output projection runs with the embeddings as
            // before (`Model::load`).
            if name == "lm_head.weight" {
                continue;
            }
            return Err(bad(TensorProblem::Missing {
                tensor: stored,
                implied_by: Some(origin.config.into()),
            }));
        };
        if info.shape != shape {
            return Err(bad(TensorProblem::Shape {
                tensor: stored,
                found: info.shape,
                expected: shape,
                implied_by: origin.config.into(),
            }));
        }
        if !readable_as_f32(info.dtype) {
            return Err(bad(TensorProblem::NotNumeric {
                tensor: stored,
                dtype: info.dtype,
            }));
        }
    }
    // A stacked expert tensor (GGUF) must hold exactly the configured experts: more would be
    // silently ignored, fewer are caught above as missing slices.
    if let Some(m) = &cfg.moe {
        for layer in (0..cfg.layers).filter(|&l| cfg.layer_moe(l).is_some()) {
            for part in 0..3 {
                let name = format!(
                    "model.layers.{layer}.{}.weight",
                    crate::layout::expert_linear(m.naming, 0, part)
                );
                if let Some(info) = w.stacked_info(&name) {
                    if info.shape.first() != Some(&m.experts) {
                        return Err(bad(TensorProblem::Experts {
                            tensor: info.name.clone(),
                            found: info.shape.first().copied(),
                            expected: m.experts,
                            implied_by: origin.config.into(),
                        }));
                    }
                }
            }
        }
    }
    if let Some(info) = w.info("rope_freqs.weight") {
        if info.shape != [cfg.head_dim / 2] {
            return Err(bad(TensorProblem::Shape {
                tensor: "rope_freqs.weight".into(),
                found: info.shape,
                expected: vec![cfg.head_dim / 2],
                implied_by: format!("head_dim {}", cfg.head_dim),
            }));
        }
    }
    Ok(())
}

fn readable_as_f32(d: DType) -> bool {
    use DType::*;
    !matches!(d, I64 | I32 | I16 | I8 | U8 | U32 | Bool)
}
