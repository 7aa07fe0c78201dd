//! The search's fitness: KL(base ‖ candidate) on calibration windows, measured by
//! `crunch_eval::BaseLogits` (the evaluation's scoring, on the device when the backend scores
//! there). The candidate model is one loaded model whose linear weights are replaced by the
//! candidate's variants; only layers that differ from the last candidate are swapped, so an
//! offspring (a few layers away from its parent) costs a few uploads, not a model. On a GPU
//! with room the quantized variants are kept there as codes and a swap expands one in place
//! (decision 137); otherwise a swap is a host dequantization and an upload, helped by the swap
//! cache (decision 129).

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
    /// Whether the quantized variants are kept on the device and expanded there on a swap
    /// (decision 137; `ModelFitness::keep_variants_on_device`), how many, their device bytes,
    /// and the seconds their one upload took (packing included).
    pub device_variants: bool,
    pub device_variant_count: usize,
    pub device_variant_bytes: u64,
    pub device_upload_s: f64,
    /// Swaps expanded on the device from kept codes (one kernel each; counted in
    /// `layers_swapped` too, not in `dequantize_s`/`upload_s`, which are the host path's), and
    /// their time.
    pub device_swaps: usize,
    pub device_dequantize_s: f64,
}

impl FitnessTiming {
    /// `self − earlier`, field by field (what happened between two readings).
    pub fn since(&self, earlier: &FitnessTiming) -> FitnessTiming {
        FitnessTiming {
            synchronized: self.synchronized,
            dequantize_s: self.dequantize_s - earlier.dequantize_s,
            upload_s: self.upload_s - earlier.upload_s,
            layers_swapped: self.layers_swapped - earlier.layers_swapped,
            upload_f32_bytes: self.upload_f32_bytes - earlier.upload_f32_bytes,
            cache_hits: self.cache_hits - earlier.cache_hits,
            written_in_place: self.written_in_place - earlier.written_in_place,
            scores: self.scores - earlier.scores,
            score: self.score.since(&earlier.score),
            prepare_s: self.prepare_s - earlier.prepare_s,
            held_base_s: self.held_base_s - earlier.held_base_s,
            // A state, not a count: as it stands.
            device_variants: self.device_variants,
            device_variant_count: self.device_variant_count,
            device_variant_bytes: self.device_variant_bytes,
            device_upload_s: self.device_upload_s - earlier.device_upload_s,
            device_swaps: self.device_swaps - earlier.device_swaps,
            device_dequantize_s: self.device_dequantize_s - earlier.device_dequantize_s,
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
    /// Each unit's variants kept on the device, `[unit][level]` (empty: none kept;
    /// `keep_variants_on_device`).
    device: Vec<Vec<Option<B::Codes>>>,
}

/// What [`ModelFitness::keep_variants_on_device`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceVariants {
    /// Whether the backend has memory of its own (a GPU) to keep them in.
    pub device: bool,
    /// Variants kept there, and their bytes there.
    pub kept: usize,
    pub bytes: u64,
    /// Variants made dense on the host at each swap (not quantized with static groups, or
    /// not kept), and why, when none were kept.
    pub on_host: usize,
    pub reason: Option<String>,
}

/// The share of the device's free memory the kept variants (and the swap cache, where some
/// variants stay on the host) may take: the rest is for what the search allocates after them,
/// the base logits it keeps (two sets of windows × positions × vocabulary in f32: ≈ 4 GB at
/// 8B's vocabulary with 8-window sets) and the candidate's activations.
const DEVICE_FREE_SHARE: f64 = 0.75;

/// Whether `need` bytes of codes, with `extra` bytes beside them, go to a backend with `free`
/// bytes free (`None`: the backend's memory is the host's); `setting`: `CRUNCH_DEVICE_VARIANTS`
/// (`0`: never). `Err`: why not, for the progress line.
fn device_decision(
    setting: Option<&str>,
    free: Option<u64>,
    need: u64,
    extra: u64,
) -> std::result::Result<(), String> {
    let gb = |b: u64| b as f64 / 1e9;
    let Some(free) = free else {
        return Err("the backend's memory is the host's".into());
    };
    if setting == Some("0") {
        return Err("CRUNCH_DEVICE_VARIANTS=0".into());
    }
    if need == 0 {
        return Err("no variant is quantized with static groups".into());
    }
    let room = (free as f64 * DEVICE_FREE_SHARE) as u64;
    if need + extra > room {
        return Err(format!(
            "{:.1} GB of codes (+ {:.1} GB of swap cache) exceed {:.0}% of the device's {:.1} GB free",
            gb(need),
            gb(extra),
            100.0 * DEVICE_FREE_SHARE,
            gb(free)
        ));
    }
    Ok(())
}

/// The swap cache's default budget: this share of the units' f32 bytes (an 8B model in f32:
/// ≈ 7 GB beside the two copies' 64 GB). `CRUNCH_SWAP_CACHE_MB` sets it (0: none).
const SWAP_CACHE_SHARE: f64 = 0.25;
/// Spare buffers kept per shape (a Llama block has four shapes).
const SPARES_PER_SHAPE: usize = 2;

/// Held windows by default: the pool's first 8 (the CLI's `--kl-windows` default).
const HELD_WINDOWS: usize = 8;

impl<'a, B: Backend> ModelFitness<'a, B> {
    /// `model` starts as a copy of `base` (loaded separately: its weights are replaced), or
    /// as what an earlier fitness gave back ([`Self::into_model`]); `pool` is the calibration
    /// windows each generation draws from.
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
            device: Vec::new(),
        }
    }

    /// Keeps every variant the database holds as codes ([`Variants::codes`]) on the device,
    /// so that swapping one in is a kernel writing the model's weight in place
    /// (`Backend::dequantize_codes`) rather than a host dequantization and an upload (decision
    /// 137), where the backend can and they fit: in `DEVICE_FREE_SHARE` (75%) of its free memory,
    /// unless `CRUNCH_DEVICE_VARIANTS=0`. Otherwise (the host backends, no quantized variants,
    /// too little memory, an upload that fails) nothing changes: every swap takes the host path
    /// with the swap cache. Either way the model computes with the same bits. Call it before
    /// the first candidate (any time is correct; a second call uploads again).
    pub fn keep_variants_on_device(&mut self) -> Result<DeviceVariants> {
        // Codes of an earlier call are freed first (and, if not kept again, not used).
        self.device = Vec::new();
        {
            let mut t = self.timing.lock().expect("timing lock");
            (
                t.device_variants,
                t.device_variant_count,
                t.device_variant_bytes,
            ) = (false, 0, 0);
        }
        let backend = &self.model.backend;
        let free = backend.free_memory()?;
        let (units, _) = self.db.layers();
        let db = self.db;
        let levels = |u: usize| 0..db.levels(u);
        let mut need = 0u64;
        let (mut eligible, mut total) = (0usize, 0usize);
        for u in 0..units.len() {
            for l in levels(u) {
                total += 1;
                if let Some(c) = db.codes(u, l) {
                    need += c.device_bytes();
                    eligible += 1;
                }
            }
        }
        let extra = if eligible < total {
            self.cache.budget()
        } else {
            0
        };
        let setting = std::env::var("CRUNCH_DEVICE_VARIANTS").ok();
        let mut out = DeviceVariants {
            device: free.is_some(),
            kept: 0,
            bytes: 0,
            on_host: total,
            reason: None,
        };
        if let Err(why) = device_decision(setting.as_deref(), free, need, extra) {
            out.reason = Some(why);
            return Ok(out);
        }
        let t0 = Instant::now();
        let mut device = Vec::with_capacity(units.len());
        for u in 0..units.len() {
            let mut row = Vec::new();
            for l in levels(u) {
                let kept = match db.codes(u, l) {
                    Some(c) => match backend.upload_codes(&c) {
                        Ok(k) => k.map(|k| (k, c.device_bytes())),
                        // A failed upload (the device's memory taken meanwhile): everything
                        // back to the host path, as if never tried.
                        Err(e) => {
                            out.reason = Some(format!("uploading the variants failed: {e}"));
                            return Ok(out);
                        }
                    },
                    None => None,
                };
                if let Some((_, b)) = &kept {
                    out.kept += 1;
                    out.bytes += b;
                }
                row.push(kept.map(|(k, _)| k));
            }
            device.push(row);
        }
        out.on_host = total - out.kept;
        if out.kept == 0 {
            out.reason = Some("the backend kept none of the variants".into());
            return Ok(out);
        }
        let s = self.lap(t0)?;
        self.device = device;
        let mut timing = self.timing.lock().expect("timing lock");
        timing.device_variants = true;
        timing.device_variant_count = out.kept;
        timing.device_variant_bytes = out.bytes;
        timing.device_upload_s += s;
        Ok(out)
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
            // Kept on the device: expanded there, into the model's own weight.
            if let Some(codes) = self.device.get(u).and_then(|row| row[l as usize].as_ref()) {
                let t0 = Instant::now();
                let id = self.db.layers().0[u];
                let lin = self.model.blocks[id.layer]
                    .linear_mut(id.name)
                    .expect("a block linear");
                // Refused (the weight is shared, or not the codes' shape): the host path below
                // puts a weight of its own in, which the next swap can write.
                if self
                    .model
                    .backend
                    .dequantize_codes(codes, &mut lin.weight)?
                {
                    lin.up = None;
                    lin.correction = None;
                    self.current[u] = Some(l);
                    let s = self.lap(t0)?;
                    let mut timing = self.timing.lock().expect("timing lock");
                    timing.layers_swapped += 1;
                    timing.device_swaps += 1;
                    timing.device_dequantize_s += s;
                    continue;
                }
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

    /// Gives the candidate model back, for a fitness over another database of the same units
    /// (`--prune-levels` measures the whole ladder, then the search runs on what is left: one
    /// model load, not two). Its block linear layers hold the variants applied last; a new
    /// fitness starts with every unit marked as holding none, so its first candidate puts
    /// every unit's variant in before anything is scored.
    pub fn into_model(self) -> Model<B> {
        self.model
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

#[cfg(test)]
mod tests {
    use super::device_decision;

    #[test]
    fn variants_go_to_the_device_only_when_they_fit_and_may() {
        let gb = 1_000_000_000u64;
        // 8B's ten levels beside two f32 copies on an H200: ≈ 42 GB of codes, ≈ 80 GB free.
        assert_eq!(device_decision(None, Some(80 * gb), 42 * gb, 0), Ok(()));
        // Three quarters of what is free, the swap cache counted where it stays in use.
        assert_eq!(device_decision(None, Some(80 * gb), 60 * gb, 0), Ok(()));
        let e = device_decision(None, Some(80 * gb), 60 * gb, gb).unwrap_err();
        assert!(
            e.contains("60.0 GB of codes") && e.contains("80.0 GB free"),
            "{e}"
        );
        // The host backends, the override, nothing to keep.
        assert!(device_decision(None, None, gb, 0)
            .unwrap_err()
            .contains("host"));
        let e = device_decision(Some("0"), Some(80 * gb), gb, 0).unwrap_err();
        assert!(e.contains("CRUNCH_DEVICE_VARIANTS=0"), "{e}");
        assert!(device_decision(Some("1"), Some(80 * gb), gb, 0).is_ok());
        assert!(device_decision(None, Some(80 * gb), 0, 0).is_err());
    }
}
