//! Importance statistics for importance-weighted rounding: the mean square of every input
//! column of every linear layer, E[xⱼ²] over the calibration tokens (llama.cpp's "imatrix"),
//! and of the final normed hidden state that feeds the output matrix.
//!
//! One forward pass of the *uncompressed* model, block by block over all windows (each block's
//! weights loaded once), with a hook that squares and sums each distinct linear input (q/k/v
//! share one, gate/up share one, an expert's gate/up the rows routed to it) on the host. No Hessian (XᵀX) is formed, so this costs
//! little more than the forward pass itself; no logits are computed.

use crate::sequential::Progress;
use crate::{Error, Result};
use crunch_model::hooks::{LinearHook, LinearId};
use crunch_model::layout::{block_linears, LinearRole};
use crunch_model::model::{block_forward, load_block, RopeTables};
use crunch_model::Checkpoint;
use crunch_runtime::Backend;
use std::collections::BTreeMap;

/// Per-column sums of squares of one input, and the rows they cover.
#[derive(Default)]
struct SumSq {
    sums: Vec<f64>,
    rows: usize,
}

impl SumSq {
    fn add(&mut self, x: &[f32], cols: usize) {
        if self.sums.is_empty() {
            self.sums = vec![0.0; cols];
        }
        // Sum each window in f32 rows into an f32 buffer, then widen: exact enough (512 rows of
        // squares) and several times faster than widening every element.
        let mut acc = vec![0f32; cols];
        for row in x.chunks_exact(cols) {
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v * v;
            }
        }
        for (s, a) in self.sums.iter_mut().zip(&acc) {
            *s += *a as f64;
        }
        self.rows += x.len() / cols;
    }

    fn mean(&self) -> Vec<f32> {
        let n = self.rows.max(1) as f64;
        self.sums.iter().map(|s| (s / n) as f32).collect()
    }
}

struct Hook<'a, B: Backend> {
    backend: &'a B,
    /// Per owning linear layer ([`LinearId::input_owner`]).
    inputs: BTreeMap<LinearId, SumSq>,
}

impl<B: Backend> LinearHook<B> for Hook<'_, B> {
    fn linear_input(&mut self, id: LinearId, x: &B::Tensor) -> crunch_model::Result<()> {
        if id.input_owner() != id {
            return Ok(()); // the same input as its owner's (k/v: q's, up: gate's)
        }
        let cols = *self.backend.shape(x).last().expect("2-D input");
        let host = self.backend.to_f32(x)?;
        self.inputs.entry(id).or_default().add(&host, cols);
        Ok(())
    }
}

/// E[x²] of each input column of every linear layer of `ckpt` over `windows`, keyed by the
/// Hugging Face weight name (`model.layers.0.self_attn.q_proj.weight`, …, and
/// `lm_head.weight` for the output matrix, whether or not it is tied to the embedding).
pub fn collect_importance<B: Backend>(
    backend: &B,
    ckpt: &Checkpoint,
    windows: &[Vec<u32>],
    progress: &mut dyn Progress,
) -> Result<BTreeMap<String, Vec<f32>>> {
    let cfg = &ckpt.config;
    let w = &ckpt.weights;
    if windows.is_empty() {
        return Err(Error::NoWindows);
    }
    let mut acts: Vec<B::Tensor> = {
        let table = w.read("model.embed_tokens.weight", &[cfg.vocab, cfg.hidden], cfg)?;
        let table = backend.upload(table, &[cfg.vocab, cfg.hidden])?;
        windows
            .iter()
            .map(|ids| backend.embedding(&table, ids))
            .collect::<std::result::Result<_, _>>()?
    };
    let rope = RopeTables::new(
        backend,
        w,
        cfg,
        windows.iter().map(Vec::len).max().unwrap_or(1),
    )?;
    let mut out = BTreeMap::new();
    for layer in 0..cfg.layers {
        progress.block(layer, cfg.layers);
        let block = load_block(backend, w, cfg, layer)?;
        let mut hook = Hook {
            backend,
            inputs: BTreeMap::new(),
        };
        for x in acts.iter_mut() {
            *x = block_forward(backend, cfg, &block, layer, x, &rope, &mut hook)?;
        }
        for spec in block_linears(cfg, layer) {
            let name = spec.id.full_name();
            match hook.inputs.get(&spec.id.input_owner()) {
                Some(stats) => {
                    out.insert(format!("{name}.weight"), stats.mean());
                }
                // An expert the router sent no token has no statistics: it is rounded without
                // importance weights.
                None if matches!(spec.role, LinearRole::Expert(_)) => {}
                None => return Err(Error::NoInputs { layer: name }),
            }
        }
    }
    progress.step("output");
    let norm = w.read("model.norm.weight", &[cfg.hidden], cfg)?;
    let norm = backend.upload(norm, &[cfg.hidden])?;
    let mut last = SumSq::default();
    for x in &acts {
        let y = backend.rms_norm(x, &norm, cfg.rms_eps)?;
        last.add(&backend.to_f32(&y)?, cfg.hidden);
    }
    out.insert("lm_head.weight".to_string(), last.mean());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_of_squares_per_column() {
        let mut s = SumSq::default();
        s.add(&[1.0, 2.0, 3.0, -4.0], 2);
        s.add(&[0.0, 2.0], 2);
        assert_eq!(s.rows, 3);
        assert_eq!(s.mean(), vec![10.0 / 3.0, 24.0 / 3.0]);
    }
}
