//! Checks of what a command asks for against what the model and the input can supply, made
//! before any calibration or large allocation: group sizes against every layer's columns,
//! calibration windows against the text and the machine's memory.

use crate::compress::{CompressPlan, StageMethod};
use crate::quantize::{Method, QuantizePlan};
use crate::{Error, Result};
use crunch_compress::{GroupFit, QuantSpec};
use crunch_model::model::BLOCK_LINEARS;
use crunch_model::ModelConfig;
use std::collections::BTreeSet;

/// Every block linear layer's full name and input columns.
fn linear_columns(cfg: &ModelConfig) -> Vec<(String, usize)> {
    (0..cfg.layers)
        .flat_map(|layer| {
            BLOCK_LINEARS.iter().map(move |&name| {
                let cols = match name {
                    "self_attn.o_proj" => cfg.q_dim(),
                    "mlp.down_proj" => cfg.intermediate,
                    _ => cfg.hidden,
                };
                (format!("model.layers.{layer}.{name}"), cols)
            })
        })
        .collect()
}

/// `spec` against every layer `applies` selects; returns one note per distinct column count
/// that gets a shorter last group.
fn check_spec(
    cfg: &ModelConfig,
    spec: QuantSpec,
    fit: GroupFit,
    applies: impl Fn(&str) -> bool,
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let mut seen = BTreeSet::new();
    for (name, cols) in linear_columns(cfg) {
        if !applies(&name) || !seen.insert(cols) {
            continue;
        }
        match spec.check_layer(cols, fit) {
            Ok(note) => {
                notes.extend(note.map(|n| format!("{name} (and every layer of its width): {n}")))
            }
            Err(e) => return Err(Error::Compress(format!("{name}: {e}"))),
        }
    }
    Ok(notes)
}

impl QuantizePlan {
    /// Checks the plan against the model before calibration (see
    /// [`QuantSpec::check_layer`]); `fit` says whether the output format stores a shorter
    /// last group. Returns notes for the user.
    pub fn check(&self, cfg: &ModelConfig, fit: GroupFit) -> Result<Vec<String>> {
        if let Method::Gptq(opts) = &self.method {
            opts.validate()
                .map_err(|e| Error::Compress(format!("GPTQ options: {e}")))?;
        }
        check_spec(cfg, self.spec, fit, |n| !self.skips(n))
    }
}

impl CompressPlan {
    /// Checks every quantizing stage's grid against the layers it matches, before
    /// calibration (crunch's format stores a shorter last group; the notes say where).
    pub fn check(&self, cfg: &ModelConfig) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        for (i, stage) in self.stages.iter().enumerate() {
            let spec = match &stage.method {
                StageMethod::Rtn { spec, .. } | StageMethod::Gptq { spec, .. } => Some(*spec),
                StageMethod::SparseGpt { quant, .. } => *quant,
                _ => None,
            };
            if let StageMethod::Gptq { opts, .. } = &stage.method {
                opts.validate()
                    .map_err(|e| Error::Compress(format!("stage {} (gptq): {e}", i + 1)))?;
            }
            let Some(spec) = spec else { continue };
            let applies = |n: &str| stage.matches(n) && !self.skips(n);
            let n = check_spec(cfg, spec, GroupFit::ShortLastGroup, applies).map_err(|e| {
                Error::Compress(format!("stage {} ({}): {e}", i + 1, stage.method.name()))
            })?;
            notes.extend(n);
        }
        Ok(notes)
    }
}

/// Bytes of calibration activations for `samples` windows of `len` tokens (inputs and
/// outputs of a block, f32), the part of calibration's memory that the flags set.
pub fn calibration_bytes(cfg: &ModelConfig, samples: usize, len: usize) -> Option<u64> {
    let per_token = cfg.hidden.max(cfg.intermediate).checked_mul(4 * 2)? as u64;
    (samples as u64)
        .checked_mul(len as u64)?
        .checked_mul(per_token)
}

/// Memory the system can still give (`MemAvailable` of /proc/meminfo), if known.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Refuses `samples` × `len` calibration tokens whose activations could not fit in the
/// memory available now, before any of it is allocated (a billion samples used to grow
/// until the kernel killed the process).
pub fn check_calibration_size(cfg: &ModelConfig, samples: usize, len: usize) -> Result<()> {
    let need = calibration_bytes(cfg, samples, len);
    let avail = available_memory();
    match (need, avail) {
        (None, _) => Err(Error::Data(format!(
            "{samples} calibration windows of {len} tokens: the activations' size overflows"
        ))),
        (Some(n), Some(a)) if n > a => Err(Error::Data(format!(
            "{samples} calibration windows of {len} tokens need about {:.1} GB of activations \
             (hidden size {}), but only {:.1} GB of memory is available; use fewer or \
             shorter windows",
            n as f64 / 1e9,
            cfg.hidden,
            a as f64 / 1e9
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg() -> ModelConfig {
        let spec = crunch_model::testing::tiny_specs().remove(0);
        ModelConfig::from_hf_json(Path::new("c"), &spec.config).unwrap()
    }

    #[test]
    fn group_sizes_are_checked_against_every_layer_before_calibration() {
        let c = cfg(); // hidden 64, intermediate 160
        let plan = |g| QuantizePlan {
            method: Method::Rtn,
            spec: QuantSpec::new(4, g, false),
            mse_clip: false,
            skip: vec![],
        };
        assert!(plan(Some(32))
            .check(&c, GroupFit::Exact)
            .unwrap()
            .is_empty());
        for g in [1, 7, 100000] {
            let e = plan(Some(g))
                .check(&c, GroupFit::ShortLastGroup)
                .unwrap_err();
            assert!(e.to_string().contains(&format!("group size {g}")), "{e}");
        }
        // 48 divides neither 64 nor 160: refused for exports, a note for crunch's format.
        let e = plan(Some(48))
            .check(&c, GroupFit::Exact)
            .unwrap_err()
            .to_string();
        assert!(e.contains("model.layers.0.self_attn.q_proj"), "{e}");
        let notes = plan(Some(48)).check(&c, GroupFit::ShortLastGroup).unwrap();
        assert_eq!(notes.len(), 2, "{notes:?}");
        let mut skipping = plan(Some(100));
        skipping.skip = vec!["q_proj".into(), "k_proj".into(), "v_proj".into()];
        skipping
            .skip
            .extend(["o_proj", "gate_proj", "up_proj"].map(String::from));
        // Only down_proj (160 columns) is left: 100 fits it (with a short last group).
        assert_eq!(
            skipping.check(&c, GroupFit::ShortLastGroup).unwrap().len(),
            1
        );
    }

    #[test]
    fn calibration_larger_than_memory_is_refused() {
        let c = cfg();
        assert!(check_calibration_size(&c, 4, 16).is_ok());
        let e = check_calibration_size(&c, usize::MAX, 512)
            .unwrap_err()
            .to_string();
        assert!(e.contains("overflows"), "{e}");
        if available_memory().is_some() {
            let e = check_calibration_size(&c, 1_000_000_000, 512)
                .unwrap_err()
                .to_string();
            assert!(e.contains("GB of memory is available"), "{e}");
        }
    }
}
