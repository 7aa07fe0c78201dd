//! Calibration text sampled from the model itself (`--calib self:N×L`), for users with no
//! data (LLM-QAT's data-free generation, Liu et al. 2023).
//!
//! Each of the N sequences starts from the beginning-of-sequence token when the checkpoint
//! names one (else from a token drawn uniformly from the vocabulary) and continues by plain
//! sampling from the model's full next-token distribution, softmax(logits) at temperature 1,
//! no top-k or top-p, until it is L tokens long (start token included; an end-of-sequence
//! token is sampled like any other and generation goes on, as a window cut from a packed
//! text file may cross a document boundary). Why not LLM-QAT's greedy first tokens: with a
//! fixed start token, greedy steps would give every sequence the same prefix; plain sampling
//! keeps the N sequences independent draws from the model's own distribution, which is the
//! distribution whose activations the quantized model must reproduce. See decision 040.
//!
//! Sequences are generated `batch` at a time with a key/value cache: the linear layers run on
//! `[batch, hidden]`, attention per sequence. Every sequence has its own random stream
//! (SplitMix64 seeded from `seed` and its index), sampling happens on the host in f64, and
//! nothing depends on the thread count, so the windows are a function of the model, N, L,
//! the seed and the batch size ([`default_batch`] derives it from the model shape and L only).

use crate::{Error, Result};
use crunch_model::testing::SplitMix64;
use crunch_model::{KvCache, Model, ModelConfig};
use crunch_runtime::Backend;

/// What is wrong with a `self:N×L` spec.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecProblem {
    #[error("no `x` between N and L")]
    NoSeparator,
    #[error("{0} `{1}` is not a whole number")]
    NotANumber(char, String),
    #[error("{0} `{1}` is too large")]
    TooLarge(char, String),
    #[error("N must be at least 1")]
    NoSequences,
    #[error("L must be at least 2 (the start token and one sampled token)")]
    TooShort,
}

/// Why the model's own text cannot be sampled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SampleProblem {
    #[error("the model produced non-finite logits")]
    NonFiniteLogits,
    #[error("it needs at least one sequence of at least one token")]
    Empty,
    #[error("sequences of {len} tokens are longer than the model's context ({context} positions)")]
    TooLong { len: usize, context: usize },
    #[error("start token {token} is outside the vocabulary ({vocab})")]
    StartToken { token: u32, vocab: usize },
}

/// `N` sequences of `L` tokens, as written in `--calib self:N×L`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelfSpec {
    pub samples: usize,
    pub len: usize,
}

impl SelfSpec {
    /// Parses `self:N×L` (or `self:NxL` with an ASCII x), e.g. `self:128x512`. Returns
    /// `Ok(None)` when `s` does not start with `self:` (it is then a file name), and an error
    /// naming the problem when it does but the rest is malformed.
    pub fn parse(s: &str) -> Result<Option<SelfSpec>> {
        let Some(rest) = s.strip_prefix("self:") else {
            return Ok(None);
        };
        let bad = |problem| Error::SelfSpec {
            spec: s.to_string(),
            problem,
        };
        let (n, l) = rest
            .split_once(['x', 'X', '×'])
            .ok_or_else(|| bad(SpecProblem::NoSeparator))?;
        let number = |v: &str, what: char| -> Result<usize> {
            let v = v.trim();
            if v.is_empty() || !v.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad(SpecProblem::NotANumber(what, v.into())));
            }
            v.parse::<usize>()
                .map_err(|_| bad(SpecProblem::TooLarge(what, v.into())))
        };
        let samples = number(n, 'N')?;
        let len = number(l, 'L')?;
        if samples == 0 {
            return Err(bad(SpecProblem::NoSequences));
        }
        if len < 2 {
            return Err(bad(SpecProblem::TooShort));
        }
        Ok(Some(SelfSpec { samples, len }))
    }

    /// The spec as recorded in a recipe: `self:NxL`.
    pub fn label(&self) -> String {
        format!("self:{}x{}", self.samples, self.len)
    }
}

/// Sequences generated together: as many as fit a 2 GiB key/value cache (f32 keys and values
/// of every block for L positions), at least 1, at most 64. Depends only on the model shape
/// and L, so the output does not depend on the machine.
pub fn default_batch(cfg: &ModelConfig, len: usize) -> usize {
    const BUDGET: usize = 2 << 30;
    let per_seq = cfg.layers * 2 * cfg.kv_dim() * len.max(1) * 4;
    (BUDGET / per_seq.max(1)).clamp(1, 64)
}

/// Draws one index from softmax(`logits`) with `rng` (f64 on the host: exact and
/// thread-independent). Errors on non-finite logits.
fn sample(logits: &[f32], rng: &mut SplitMix64) -> Result<u32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() || logits.iter().any(|l| l.is_nan()) {
        return Err(Error::SelfCalibration(SampleProblem::NonFiniteLogits));
    }
    let weights: Vec<f64> = logits.iter().map(|&l| ((l - max) as f64).exp()).collect();
    let total: f64 = weights.iter().sum();
    // 53 random bits: uniform in [0, 1).
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let target = u * total;
    let mut acc = 0.0;
    for (i, w) in weights.iter().enumerate() {
        acc += w;
        if acc > target {
            return Ok(i as u32);
        }
    }
    // Rounding left `target` at the very top: the last token with any weight.
    Ok(weights.iter().rposition(|&w| w > 0.0).unwrap_or(0) as u32)
}

/// Generates `spec.samples` sequences of `spec.len` tokens from `model` (see the module docs),
/// `batch` sequences at a time. `start_token` is the beginning-of-sequence id (`None`: a
/// uniform random token per sequence). `progress(done, total)` is called after every step
/// with the number of tokens produced so far out of `samples × len`.
pub fn sample_windows<B: Backend>(
    model: &Model<B>,
    spec: SelfSpec,
    start_token: Option<u32>,
    seed: u64,
    batch: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Vec<u32>>> {
    let cfg = &model.config;
    let SelfSpec { samples, len } = spec;
    if samples == 0 || len == 0 {
        return Err(Error::SelfCalibration(SampleProblem::Empty));
    }
    if len > cfg.max_position {
        return Err(Error::SelfCalibration(SampleProblem::TooLong {
            len,
            context: cfg.max_position,
        }));
    }
    if let Some(token) = start_token.filter(|&t| t as usize >= cfg.vocab) {
        return Err(Error::SelfCalibration(SampleProblem::StartToken {
            token,
            vocab: cfg.vocab,
        }));
    }
    let batch = batch.clamp(1, samples);
    let total = samples * len;
    let rope = model.rope_tables(len)?;
    // One independent stream per sequence, so a sequence's draws do not depend on batching.
    let mut master = SplitMix64(seed);
    let mut rngs: Vec<SplitMix64> = (0..samples)
        .map(|_| SplitMix64(master.next_u64()))
        .collect();
    let mut out: Vec<Vec<u32>> = Vec::with_capacity(samples);
    let mut done = 0;
    for first in (0..samples).step_by(batch) {
        let batch_rngs = &mut rngs[first..(first + batch).min(samples)];
        let mut seqs: Vec<Vec<u32>> = batch_rngs
            .iter_mut()
            .map(|rng| {
                let t = start_token.unwrap_or_else(|| (rng.next_u64() % cfg.vocab as u64) as u32);
                let mut s = Vec::with_capacity(len);
                s.push(t);
                s
            })
            .collect();
        done += seqs.len();
        progress(done, total);
        let mut caches: Vec<KvCache<B>> = seqs.iter().map(|_| model.kv_cache()).collect();
        for _ in 1..len {
            let last: Vec<u32> = seqs.iter().map(|s| *s.last().expect("non-empty")).collect();
            let logits = model.forward_cached(&last, &mut caches, &rope)?;
            let logits = model.backend.to_f32(&logits)?;
            for ((s, rng), row) in seqs
                .iter_mut()
                .zip(batch_rngs.iter_mut())
                .zip(logits.chunks_exact(cfg.vocab))
            {
                s.push(sample(row, rng)?);
            }
            done += seqs.len();
            progress(done, total);
        }
        out.extend(seqs);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let ok = |s: &str| SelfSpec::parse(s).unwrap().unwrap();
        assert_eq!(
            ok("self:128x512"),
            SelfSpec {
                samples: 128,
                len: 512
            }
        );
        assert_eq!(
            ok("self:4×16"),
            SelfSpec {
                samples: 4,
                len: 16
            }
        );
        assert_eq!(
            ok("self:4X16"),
            SelfSpec {
                samples: 4,
                len: 16
            }
        );
        assert_eq!(ok("self:4x16").label(), "self:4x16");
        assert_eq!(SelfSpec::parse("wiki.txt").unwrap(), None);
        assert_eq!(SelfSpec::parse("./self:4x16").unwrap(), None);
        for (bad, why) in [
            ("self:", "no `x`"),
            ("self:128", "no `x`"),
            ("self:x512", "N `` is not a whole number"),
            ("self:128x", "L `` is not a whole number"),
            ("self:-1x16", "N `-1`"),
            ("self:4x16x2", "L `16x2`"),
            ("self:0x16", "N must be at least 1"),
            ("self:4x1", "L must be at least 2"),
            ("self:4.5x16", "N `4.5`"),
            ("self:99999999999999999999999x16", "too large"),
        ] {
            let err = SelfSpec::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let mut rng = SplitMix64(3);
        // One overwhelming logit wins; impossible tokens never appear.
        let logits = [0.0, 50.0, f32::NEG_INFINITY, 0.0];
        for _ in 0..100 {
            assert_eq!(sample(&logits, &mut rng).unwrap(), 1);
        }
        // Two equal logits: about half each.
        let logits = [1.0, f32::NEG_INFINITY, 1.0];
        let ones = (0..4000)
            .filter(|_| sample(&logits, &mut rng).unwrap() == 2)
            .count();
        assert!((1800..2200).contains(&ones), "{ones}");
        assert!(sample(&[f32::NAN, 1.0], &mut rng).is_err());
        assert!(sample(&[f32::NEG_INFINITY; 3], &mut rng).is_err());
    }
}
