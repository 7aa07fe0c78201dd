//! The search's fitness: KL(base ‖ candidate) on calibration windows, measured by
//! `crunch_eval::BaseLogits` (the evaluation's scoring, on the device when the backend scores
//! there). The candidate model is one loaded model whose linear weights are replaced by the
//! candidate's variants; only layers that differ from the last candidate are swapped, so an
//! offspring (a few layers away from its parent) costs a few uploads, not a model.

use crate::database::Variants;
use crate::evo::Fitness;
use crate::swap::SwapCache;
use crate::{Error, Result};
use crunch_eval::{BaseLogits, ScoreTiming};
use crunch_model::Model;
use crunch_runtime::Backend;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Where the fitness's wall time goes, summed since the fitness was made (the `--json`
/// record's `search.timing.fitness`). Always counted (a clock read per stage); the stages'
/// boundaries synchronize the device only when `CRUNCH_FITNESS_TIMING=1` (`synchronized`):
/// without it, work a GPU queued in one stage may be paid for in the next.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct FitnessTiming {
    /// Whether the stages' boundaries synchronized the device.
    pub synchronized: bool,
    /// `apply`: the changed layers' variants made dense (f32, on the host).
    pub dequantize_s: f64,
    /// `apply`: the dense weights uploaded (`Backend::upload_weight`) and put in the model.
    pub upload_s: f64,
    /// Layers swapped into the candidate, and the f32 bytes handed to the upload.
    pub layers_swapped: usize,
    pub upload_f32_bytes: u64,
    /// Swaps whose weight came back from the swap cache (no dequantization, no upload), and
    /// uploads written into a reused buffer (`Backend::write_weight`).
    pub cache_hits: usize,
    pub written_in_place: usize,
    /// Candidates scored (`score` and the held windows).
    pub scores: usize,
    /// The candidates' scoring: forward, LM head, KL (`crunch_eval::ScoreTiming`).
    pub score: ScoreTiming,
    /// The base's logits of each generation's windows (`prepare`).
    pub prepare_s: f64,
    /// The base's logits of the held windows (once).
    pub held_base_s: f64,
}

impl FitnessTiming {
    /// `self − earlier`, field by field (what happened between two readings).
    pub fn since(&self, earlier: &FitnessTiming) -> FitnessTiming {
        let s = (&self.score, &earlier.score);
        FitnessTiming {
            synchronized: self.synchronized,
            dequantize_s: self.dequantize_s - earlier.dequantize_s,
            upload_s: self.upload_s - earlier.upload_s,
            layers_swapped: self.layers_swapped - earlier.layers_swapped,
            upload_f32_bytes: self.upload_f32_bytes - earlier.upload_f32_bytes,
            cache_hits: self.cache_hits - earlier.cache_hits,
            written_in_place: self.written_in_place - earlier.written_in_place,
            scores: self.scores - earlier.scores,
            score: ScoreTiming {
                forward_s: s.0.forward_s - s.1.forward_s,
                head_s: s.0.head_s - s.1.head_s,
                kl_s: s.0.kl_s - s.1.kl_s,
                windows: s.0.windows - s.1.windows,
                positions: s.0.positions - s.1.positions,
            },
            prepare_s: self.prepare_s - earlier.prepare_s,
            held_base_s: self.held_base_s - earlier.held_base_s,
        }
    }
}

pub struct ModelFitness<'a, B: Backend> {
    base: &'a Model<B>,
    model: Model<B>,
    db: &'a dyn Variants,
    /// The level each unit of `model` holds now; `None` = the original weight.
    current: Vec<Option<u8>>,
    pool: &'a [Vec<u32>],
    seed: u64,
    kept: Option<BaseLogits<B>>,
    /// How many of the pool's first windows are the held windows, and their base logits once
    /// needed.
    held_windows: usize,
    held: Option<BaseLogits<B>>,
    /// Fitness evaluations so far.
    pub evaluations: usize,
    /// Where the time went; shared so that a caller can read it while the search holds the
    /// fitness (per generation).
    timing: Arc<Mutex<FitnessTiming>>,
    /// The dense buffer variants are made in (kept between swaps where the backend copies
    /// from it).
    scratch: Vec<f32>,
    /// Weights swapped out, by (unit, level), to swap back without an upload.
    cache: SwapCache<B::Tensor>,
    /// Device buffers no longer in use (evicted from the cache, or the original weights), by
    /// shape: the next upload of that shape is written into one.
    spares: Vec<((usize, usize), B::Tensor)>,
}

/// The swap cache's default budget: this share of the units' f32 bytes (an 8B model in f32:
/// ≈ 7 GB beside the two copies' 64 GB). `CRUNCH_SWAP_CACHE_MB` sets it (0: none).
const SWAP_CACHE_SHARE: f64 = 0.25;
/// Spare buffers kept per shape (a Llama block has four shapes).
const SPARES_PER_SHAPE: usize = 2;

/// Held windows by default: the pool's first 8 (the CLI's `--kl-windows` default).
const HELD_WINDOWS: usize = 8;

impl<'a, B: Backend> ModelFitness<'a, B> {
    /// `model` starts as a copy of `base` (loaded separately: its weights are replaced);
    /// `pool` is the calibration windows each generation draws from.
    pub fn new(
        base: &'a Model<B>,
        model: Model<B>,
        db: &'a dyn Variants,
        pool: &'a [Vec<u32>],
        seed: u64,
    ) -> Self {
        Self {
            base,
            model,
            db,
            current: vec![None; db.layers().0.len()],
            pool,
            seed,
            kept: None,
            held_windows: HELD_WINDOWS.min(pool.len()),
            held: None,
            evaluations: 0,
            timing: Arc::new(Mutex::new(FitnessTiming {
                synchronized: std::env::var("CRUNCH_FITNESS_TIMING").is_ok_and(|v| v == "1"),
                ..Default::default()
            })),
            scratch: Vec::new(),
            cache: SwapCache::new(swap_cache_budget(db)),
            spares: Vec::new(),
        }
    }

    /// Keeps up to `bytes` (counted as f32) of swapped-out weights for swapping back
    /// (0: none). The results are the same whatever the budget; only the time changes.
    pub fn with_swap_cache(mut self, bytes: u64) -> Self {
        self.cache = SwapCache::new(bytes);
        self
    }

    /// The time counters (a handle: read it while a search holds the fitness).
    pub fn timing_handle(&self) -> Arc<Mutex<FitnessTiming>> {
        self.timing.clone()
    }

    /// The time counters so far.
    pub fn timing(&self) -> FitnessTiming {
        *self.timing.lock().expect("timing lock")
    }

    /// Seconds since `t0`, after the device has finished when timing synchronizes.
    fn lap(&self, t0: Instant) -> Result<f64> {
        if self.timing().synchronized {
            self.model.backend.synchronize()?;
        }
        Ok(t0.elapsed().as_secs_f64())
    }

    /// Scores the candidate on the first `n` windows of `kept`, counting the time.
    fn scored(&self, kept: &BaseLogits<B>, n: usize) -> Result<f64> {
        let mut timing = self.timing.lock().expect("timing lock");
        let sync = timing.synchronized;
        let s = kept.score_timed(&self.model, n, &mut timing.score, sync)?;
        timing.scores += 1;
        Ok(s.kl / s.positions.max(1) as f64)
    }

    /// The held windows: the pool's first `n` (at least one), the same in every generation.
    /// The seeds, the elite and the reported KL are measured on them.
    pub fn with_held(mut self, n: usize) -> Self {
        self.held_windows = n.clamp(1, self.pool.len().max(1));
        self.held = None;
        self
    }

    /// Mean KL(base ‖ `config`) on the held windows (the base's logits computed once).
    pub fn held_kl(&mut self, config: &[u8]) -> Result<f64> {
        if self.held.is_none() {
            let t0 = Instant::now();
            let w = self.pool[..self.held_windows].to_vec();
            self.held = Some(BaseLogits::new(self.base, w)?);
            let s = self.lap(t0)?;
            self.timing.lock().expect("timing lock").held_base_s += s;
        }
        self.apply(config)?;
        let held = self.held.as_ref().expect("made above");
        self.scored(held, self.held_windows)
    }

    /// Puts `config`'s variants into the model (only the layers that change): from the swap
    /// cache when it holds them, else made dense and uploaded (into a spare buffer of the same
    /// shape where the backend can write one).
    pub fn apply(&mut self, config: &[u8]) -> Result<()> {
        for (u, &l) in config.iter().enumerate() {
            if self.current[u] == Some(l) {
                continue;
            }
            let (units, shapes) = self.db.layers();
            let (id, shape) = (units[u], shapes[u]);
            let (mut dequantized, mut bytes, mut in_place) = (0.0, 0, false);
            let t0 = Instant::now();
            let cached = self.cache.take(u, l);
            let hit = cached.is_some();
            let weight = match cached {
                Some(w) => w,
                None => {
                    self.db.dense_into(u, l as usize, &mut self.scratch);
                    dequantized = t0.elapsed().as_secs_f64();
                    bytes = 4 * self.scratch.len() as u64;
                    // A spare buffer of this shape, else (when the cache is full) its oldest
                    // weight of this shape, whose place the swapped-out weight takes.
                    let spare = self
                        .spares
                        .iter()
                        .position(|(s, _)| *s == shape)
                        .map(|i| self.spares.swap_remove(i).1)
                        .or_else(|| self.cache.evict_for(shape));
                    let backend = &self.model.backend;
                    let mut written = None;
                    if let Some(mut w) = spare {
                        if backend.write_weight(&mut w, &self.scratch)? {
                            written = Some(w);
                        }
                    }
                    in_place = written.is_some();
                    match written {
                        Some(w) => w,
                        None => backend.upload_weight(
                            std::mem::take(&mut self.scratch),
                            &[shape.0, shape.1],
                        )?,
                    }
                }
            };
            let lin = self.model.blocks[id.layer]
                .linear_mut(id.name)
                .expect("a block linear");
            let old = std::mem::replace(&mut lin.weight, weight);
            lin.up = None;
            lin.correction = None;
            let freed = match self.current[u] {
                Some(prev) => self.cache.put(u, prev, shape, old),
                // The original weight is never swapped back: its buffer is a spare.
                None => vec![(shape, old)],
            };
            for (s, w) in freed {
                if self.spares.iter().filter(|(o, _)| *o == s).count() < SPARES_PER_SHAPE {
                    self.spares.push((s, w));
                }
            }
            self.current[u] = Some(l);
            let uploaded = self.lap(t0)? - dequantized;
            let mut timing = self.timing.lock().expect("timing lock");
            timing.dequantize_s += dequantized;
            timing.upload_s += uploaded;
            timing.layers_swapped += 1;
            timing.upload_f32_bytes += bytes;
            timing.cache_hits += hit as usize;
            timing.written_in_place += in_place as usize;
        }
        Ok(())
    }

    /// Mean KL(base ‖ `config`) over `windows`, scored `batch` windows at a time (the base's
    /// logits of one batch are kept at once).
    pub fn kl_on(&mut self, config: &[u8], windows: &[Vec<u32>], batch: usize) -> Result<f64> {
        self.apply(config)?;
        mean_kl(self.base, &self.model, windows, batch)
    }

    /// Weights of all units.
    pub fn weights(&self) -> usize {
        self.db.weights()
    }

    /// The original model.
    pub fn base(&self) -> &Model<B> {
        self.base
    }

    /// The candidate model as it stands.
    pub fn model(&self) -> &Model<B> {
        &self.model
    }

    /// The candidate model, to change what the search does not (e.g. its embeddings, typed as
    /// the written file will hold them).
    pub fn model_mut(&mut self) -> &mut Model<B> {
        &mut self.model
    }
}

/// The swap cache's budget for `db`: `CRUNCH_SWAP_CACHE_MB` if set, else
/// [`SWAP_CACHE_SHARE`] of its units' f32 bytes.
fn swap_cache_budget(db: &dyn Variants) -> u64 {
    if let Some(mb) = std::env::var("CRUNCH_SWAP_CACHE_MB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return mb << 20;
    }
    (4.0 * db.weights() as f64 * SWAP_CACHE_SHARE) as u64
}

/// Mean KL(`base` ‖ `model`) over `windows` (per scored position), `batch` windows at a time.
pub fn mean_kl<B: Backend>(
    base: &Model<B>,
    model: &Model<B>,
    windows: &[Vec<u32>],
    batch: usize,
) -> Result<f64> {
    let (mut kl, mut positions) = (0.0, 0usize);
    for chunk in windows.chunks(batch.max(1)) {
        let kept = BaseLogits::new(base, chunk.to_vec())?;
        let s = kept.score(model, chunk.len())?;
        kl += s.kl;
        positions += s.positions;
    }
    Ok(kl / positions.max(1) as f64)
}

impl<B: Backend> Fitness for ModelFitness<'_, B> {
    fn prepare(&mut self, generation: usize, windows: usize) -> Result<()> {
        if windows > self.pool.len() {
            return Err(Error::Params(format!(
                "a selection step scores {windows} windows but calibration has {}; use more \
                 calibration samples or fewer windows per step",
                self.pool.len()
            )));
        }
        // A partial Fisher–Yates shuffle: `windows` distinct windows of the pool.
        let mut rng = crate::generation_rng(self.seed, generation as u64, 3);
        let mut idx: Vec<usize> = (0..self.pool.len()).collect();
        for i in 0..windows {
            let j = i + rng.below(idx.len() - i);
            idx.swap(i, j);
        }
        let chosen = idx[..windows]
            .iter()
            .map(|&i| self.pool[i].clone())
            .collect();
        self.kept = None; // free the last generation's logits first
        let t0 = Instant::now();
        self.kept = Some(BaseLogits::new(self.base, chosen)?);
        let s = self.lap(t0)?;
        self.timing.lock().expect("timing lock").prepare_s += s;
        Ok(())
    }

    fn score(&mut self, config: &[u8], windows: usize) -> Result<f64> {
        self.apply(config)?;
        self.evaluations += 1;
        let kept = self.kept.as_ref().expect("prepare runs before score");
        self.scored(kept, windows)
    }

    fn score_held(&mut self, config: &[u8]) -> Result<f64> {
        self.evaluations += 1;
        self.held_kl(config)
    }
}
