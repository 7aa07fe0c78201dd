//! KL divergence to a base model whose logits are computed once and reused: a budget search
//! scores many candidate models on the same tokens, so the base model's logits are made once
//! per token set and kept on the backend (on a GPU, scored there too). The per-row scoring is
//! the evaluation's own (`score_chunk`), so `crunch eval --base` and the search measure the
//! same KL(base ‖ model).

use crate::perplexity::{score_chunk, EvalError, WindowError, LOGIT_ROWS};
use crate::scoring::RowScores;
use crunch_model::Model;
use crunch_runtime::Backend;
use std::time::Instant;

/// Where [`BaseLogits::score_timed`]'s wall time went, summed over calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct ScoreTiming {
    /// The candidate's forward through its blocks (embedding to the last hidden state).
    pub forward_s: f64,
    /// The final norm and the LM head (the logits of each chunk of rows).
    pub head_s: f64,
    /// Scoring the logits against the base's: on the device where the backend scores there
    /// (only per-row sums come back), else the logits copied back and scored on the host.
    pub kl_s: f64,
    /// Windows and positions scored.
    pub windows: usize,
    pub positions: usize,
}

impl ScoreTiming {
    /// What was spent since `earlier` (a snapshot of the same running totals).
    pub fn since(&self, earlier: &ScoreTiming) -> ScoreTiming {
        ScoreTiming {
            forward_s: self.forward_s - earlier.forward_s,
            head_s: self.head_s - earlier.head_s,
            kl_s: self.kl_s - earlier.kl_s,
            windows: self.windows - earlier.windows,
            positions: self.positions - earlier.positions,
        }
    }
}

/// The base model's logits for a set of windows, in chunks of `LOGIT_ROWS` rows.
pub struct BaseLogits<B: Backend> {
    windows: Vec<Vec<u32>>,
    /// Per window, its chunks' logits `[rows, vocab]`.
    chunks: Vec<Vec<B::Tensor>>,
    vocab: usize,
}

fn window_error(window: usize, e: WindowError) -> EvalError {
    match e {
        WindowError::NonFinite(what) => EvalError::NonFinite {
            window: window + 1,
            start: 0,
            end: 0,
            what,
        },
        WindowError::Model(e) => EvalError::Model(e),
    }
}

impl<B: Backend> BaseLogits<B> {
    /// Runs `base` over `windows` (each at least two tokens) and keeps its logits.
    pub fn new(base: &Model<B>, windows: Vec<Vec<u32>>) -> Result<Self, EvalError> {
        let b = &base.backend;
        let mut chunks = Vec::with_capacity(windows.len());
        for w in &windows {
            let hidden = base.hidden_states(w, &mut ())?;
            let rows = w.len().saturating_sub(1);
            let mut per = Vec::new();
            for start in (0..rows).step_by(LOGIT_ROWS) {
                let len = LOGIT_ROWS.min(rows - start);
                let rows = b
                    .rows(&hidden, start, len)
                    .map_err(crunch_model::Error::from)?;
                per.push(base.logits(&rows, &mut ())?);
            }
            chunks.push(per);
        }
        Ok(Self {
            windows,
            chunks,
            vocab: base.config.vocab,
        })
    }

    pub fn windows(&self) -> &[Vec<u32>] {
        &self.windows
    }

    /// Scored positions over the first `n` windows.
    pub fn positions(&self, n: usize) -> usize {
        self.windows
            .iter()
            .take(n)
            .map(|w| w.len().saturating_sub(1))
            .sum()
    }

    /// Scores `model` on the first `n` windows against the kept logits: the sums of NLL, KL and
    /// agreements (`RowScores::kl / positions` is the mean KL(base ‖ model)).
    pub fn score(&self, model: &Model<B>, n: usize) -> Result<RowScores, EvalError> {
        self.score_timed(model, n, &mut ScoreTiming::default(), false)
    }

    /// [`BaseLogits::score`], adding the wall time of its parts to `timing`. With `sync` the
    /// backend is synchronized at each part's end ([`Backend::synchronize`]: a GPU launches
    /// asynchronously, so without it a part's time is partly its successor's); the result is
    /// the same either way.
    pub fn score_timed(
        &self,
        model: &Model<B>,
        n: usize,
        timing: &mut ScoreTiming,
        sync: bool,
    ) -> Result<RowScores, EvalError> {
        if model.config.vocab != self.vocab {
            return Err(EvalError::Vocabularies {
                base: self.vocab,
                model: model.config.vocab,
            });
        }
        let b = &model.backend;
        let lap = |t0: Instant| -> Result<f64, EvalError> {
            if sync {
                b.synchronize().map_err(crunch_model::Error::from)?;
            }
            Ok(t0.elapsed().as_secs_f64())
        };
        let mut total = RowScores::default();
        for (i, (w, chunks)) in self.windows.iter().zip(&self.chunks).take(n).enumerate() {
            let t0 = Instant::now();
            let hidden = model.hidden_states(w, &mut ())?;
            timing.forward_s += lap(t0)?;
            for (c, base) in chunks.iter().enumerate() {
                let t0 = Instant::now();
                let start = c * LOGIT_ROWS;
                let len = LOGIT_ROWS.min(w.len() - 1 - start);
                let rows = b
                    .rows(&hidden, start, len)
                    .map_err(crunch_model::Error::from)?;
                let logits = model.logits(&rows, &mut ())?;
                timing.head_s += lap(t0)?;
                let t0 = Instant::now();
                let targets = &w[start + 1..start + 1 + len];
                let s = score_chunk(model, &logits, Some(base), targets, start)
                    .map_err(|e| window_error(i, e))?;
                total.add(&s);
                timing.kl_s += lap(t0)?;
            }
            timing.windows += 1;
            timing.positions += w.len().saturating_sub(1);
        }
        Ok(total)
    }

    /// Mean KL(base ‖ model) per scored position over the first `n` windows.
    pub fn mean_kl(&self, model: &Model<B>, n: usize) -> Result<f64, EvalError> {
        let s = self.score(model, n)?;
        Ok(s.kl / s.positions.max(1) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{evaluate, windows, EvalOptions};
    use crunch_model::testing::{reference_ids, tiny_specs, write_tiny_model};
    use crunch_model::Checkpoint;
    use crunch_runtime::Cpu;

    #[test]
    fn kept_base_logits_give_the_evaluations_kl() {
        let spec = tiny_specs().into_iter().next().unwrap();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write_tiny_model(&spec, a.path(), 0).unwrap();
        write_tiny_model(&spec, b.path(), 1).unwrap();
        let base = Checkpoint::open(a.path())
            .unwrap()
            .load(Cpu, |_| {})
            .unwrap();
        let model = Checkpoint::open(b.path())
            .unwrap()
            .load(Cpu, |_| {})
            .unwrap();
        let tokens = reference_ids(base.config.vocab, 3 * 40);
        let opts = EvalOptions {
            ctx: 40,
            max_tokens: None,
            kv_cache: crunch_runtime::KvMode::F32,
        };
        let report = evaluate(&model, Some(&base), &tokens, &opts, |_, _| {}).unwrap();
        let wins: Vec<Vec<u32>> = windows(&tokens, &opts).iter().map(|w| w.to_vec()).collect();
        let kept = BaseLogits::new(&base, wins).unwrap();
        let kl = kept.mean_kl(&model, 3).unwrap();
        let want = report.kl.unwrap();
        assert!(want > 0.0);
        // The same rows summed in the same order: equal to the last bit.
        assert_eq!(kl, want);
        assert_eq!(kept.positions(2), 78);
        assert_eq!(kept.mean_kl(&base, 3).unwrap(), 0.0);
    }
}
