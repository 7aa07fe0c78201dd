//! Rotary tables on the backend: cos/sin for positions `0..n` per rotary set of the model,
//! gathered per token row for batches at different positions (the math is in `rope.rs`).

use crate::config::ModelConfig;
use crate::rope;
use crate::weights::Weights;
use crate::Result;
use crunch_runtime::Backend;

/// Rotary tables for positions `0..n`, uploaded once per sequence length: one set per
/// rotary variant of the model (Gemma's sliding layers have their own base).
pub struct RopeTables<B: Backend> {
    sets: Vec<(B::Tensor, B::Tensor)>,
    positions: usize,
}

/// Rotary rows for arbitrary positions, one `(cos, sin)` per set.
pub struct RopeRows<B: Backend> {
    sets: Vec<(B::Tensor, B::Tensor)>,
}

impl<B: Backend> RopeRows<B> {
    /// `cos` and `sin` `[rows, head_dim / 2]` of rotary set `set`.
    pub fn set(&self, set: usize) -> (&B::Tensor, &B::Tensor) {
        let (c, s) = &self.sets[set.min(self.sets.len() - 1)];
        (c, s)
    }
}

impl<B: Backend> RopeTables<B> {
    /// Tables for a checkpoint without loading the model (calibration streams blocks alone).
    pub fn new(backend: &B, w: &Weights, cfg: &ModelConfig, positions: usize) -> Result<Self> {
        let factors = rope_freq_factors(w, cfg)?;
        Self::build(backend, cfg, factors.as_deref(), positions)
    }

    pub(crate) fn build(
        backend: &B,
        cfg: &ModelConfig,
        factors: Option<&[f32]>,
        positions: usize,
    ) -> Result<Self> {
        let mut sets = Vec::new();
        for (inv_freq, scale) in rope::rope_sets(cfg, factors, positions) {
            let (cos, sin) = rope::scaled_tables(&inv_freq, positions, scale);
            let half = inv_freq.len();
            sets.push((
                backend.upload(cos, &[positions, half])?,
                backend.upload(sin, &[positions, half])?,
            ));
        }
        Ok(RopeTables { sets, positions })
    }

    /// How many positions the tables cover (`0..len`).
    pub fn len(&self) -> usize {
        self.positions
    }

    pub fn is_empty(&self) -> bool {
        self.positions == 0
    }

    /// `cos` and `sin` rows `[positions.len(), head_dim / 2]` of every set for arbitrary
    /// absolute positions, one per token row (a gather, so rows of a batch may sit at
    /// different positions).
    pub fn at(&self, backend: &B, positions: &[u32]) -> Result<RopeRows<B>> {
        if let Some(&p) = positions.iter().find(|&&p| p as usize >= self.positions) {
            return Err(crate::Error::PastRope {
                position: p,
                positions: self.positions,
            });
        }
        let sets = self
            .sets
            .iter()
            .map(|(c, s)| {
                Ok((
                    backend.embedding(c, positions)?,
                    backend.embedding(s, positions)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(RopeRows { sets })
    }

    /// The whole tables of rotary set `set`.
    pub(crate) fn set(&self, set: usize) -> (&B::Tensor, &B::Tensor) {
        let (c, s) = &self.sets[set.min(self.sets.len() - 1)];
        (c, s)
    }
}

/// llama.cpp stores Llama 3's rope rescaling as per-frequency divisors.
pub(crate) fn rope_freq_factors(w: &Weights, cfg: &ModelConfig) -> Result<Option<Vec<f32>>> {
    const NAME: &str = "rope_freqs.weight";
    if cfg.rope_scaling.is_some() || !w.contains(NAME) {
        return Ok(None);
    }
    Ok(Some(w.read(NAME, &[cfg.head_dim / 2], cfg)?))
}
