//! Choosing the next token from logits: greedy, or sampling after the usual filters, with one
//! seeded random stream per sequence so that the same seed gives the same text.
//!
//! Order (Hugging Face's): repetition penalty → temperature → top-k → top-p → min-p → draw.
//! Arithmetic is f64 and ties are broken by token id, so results do not depend on the
//! platform's sort or summation order.

use crunch_rng::SplitMix64 as Rng;
use crunch_runtime::kernels::exp_nonpositive;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 is greedy (the arg-max, lowest id on ties); otherwise logits are divided by it.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (0: off).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `p` (1: off).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (0: off).
    pub min_p: f32,
    /// CTRL's penalty on tokens already in the sequence (prompt included): a positive logit
    /// is divided by it, a negative one multiplied (1: off).
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// A message naming the first parameter out of range, if any.
    pub fn validate(&self) -> Result<(), String> {
        let finite = |v: f32, name: &str| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(format!("{name} must be a finite number, got {v}"))
            }
        };
        finite(self.temperature, "temperature")?;
        finite(self.top_p, "top_p")?;
        finite(self.min_p, "min_p")?;
        finite(self.repetition_penalty, "repetition_penalty")?;
        if self.temperature < 0.0 {
            return Err(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if self.repetition_penalty <= 0.0 {
            return Err(format!(
                "repetition_penalty must be > 0, got {}",
                self.repetition_penalty
            ));
        }
        Ok(())
    }
}

/// One sequence's sampler.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = Rng(params.seed);
        Sampler { params, rng }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The next token given `logits` (one per vocabulary entry) and the tokens so far.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let p = &self.params;
        let mut l: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
        if p.repetition_penalty != 1.0 {
            let rp = p.repetition_penalty as f64;
            let mut seen = vec![false; l.len()];
            for &t in history {
                if let Some(s) = seen.get_mut(t as usize) {
                    if !*s {
                        *s = true;
                        let v = &mut l[t as usize];
                        *v = if *v > 0.0 { *v / rp } else { *v * rp };
                    }
                }
            }
        }
        if p.temperature == 0.0 {
            return argmax(&l);
        }
        let t = p.temperature as f64;
        let max = l
            .iter()
            .copied()
            .filter(|v| !v.is_nan())
            .fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            return argmax(&l);
        }
        // Unnormalised probabilities (a vectorisable f32 exp: sampling a 50k vocabulary
        // for 32 sequences per step must not cost more than the step); NaN logits get none.
        let w: Vec<f64> = l
            .iter()
            .map(|&v| {
                if v.is_nan() {
                    0.0
                } else {
                    exp_nonpositive(((v - max) / t) as f32) as f64
                }
            })
            .collect();
        // Most likely first, ties by lower id: a total order, so every selection below is
        // the same on every platform.
        let order = |a: &u32, b: &u32| {
            w[*b as usize]
                .partial_cmp(&w[*a as usize])
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.cmp(b))
        };
        let mut idx: Vec<u32> = (0..w.len() as u32)
            .filter(|&i| w[i as usize] > 0.0)
            .collect();
        let filtered = p.top_k > 0 || p.top_p < 1.0 || p.min_p > 0.0;
        if !filtered {
            // Plain sampling: no order needed.
            return self.draw(&idx, &w);
        }
        if p.top_k > 0 && p.top_k < idx.len() {
            idx.select_nth_unstable_by(p.top_k - 1, order);
            idx.truncate(p.top_k);
        }
        if p.top_p < 1.0 {
            let total: f64 = idx.iter().map(|&i| w[i as usize]).sum();
            let goal = p.top_p as f64 * total;
            // Sort only as many of the most likely as the nucleus needs: grow the prefix
            // until it holds the mass, then cut it where the running sum reaches it.
            let mut k = 64.min(idx.len());
            loop {
                if k < idx.len() {
                    idx.select_nth_unstable_by(k - 1, order);
                }
                let head: f64 = idx[..k].iter().map(|&i| w[i as usize]).sum();
                if head >= goal || k == idx.len() {
                    break;
                }
                k = (4 * k).min(idx.len());
            }
            idx.truncate(k);
            idx.sort_unstable_by(order);
            let mut cum = 0.0;
            let keep = idx
                .iter()
                .position(|&i| {
                    cum += w[i as usize];
                    cum >= goal
                })
                .map_or(idx.len(), |n| n + 1);
            idx.truncate(keep);
        } else {
            idx.sort_unstable_by(order);
        }
        if p.min_p > 0.0 {
            let floor = p.min_p as f64 * w[idx[0] as usize];
            let keep = idx
                .iter()
                .take_while(|&&i| w[i as usize] >= floor)
                .count()
                .max(1);
            idx.truncate(keep);
        }
        self.draw(&idx, &w)
    }

    /// A draw among `idx` in proportion to `w`.
    fn draw(&mut self, idx: &[u32], w: &[f64]) -> u32 {
        let total: f64 = idx.iter().map(|&i| w[i as usize]).sum();
        let mut u = self.rng.unit() * total;
        for &i in idx {
            let q = w[i as usize];
            if u < q {
                return i;
            }
            u -= q;
        }
        *idx.last().unwrap_or(&0)
    }
}

/// The arg-max, the lowest id among equal maxima (as `torch.argmax`); NaNs never win.
pub fn argmax(l: &[f64]) -> u32 {
    let mut best = 0;
    let mut bv = f64::NEG_INFINITY;
    for (i, &v) in l.iter().enumerate() {
        if v > bv {
            bv = v;
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.0, 3.0, -1.0, 0.5]
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&logits(), &[]), 1);
        // The penalty moves the maximum: token 1 was seen, 3 was not.
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 2.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&logits(), &[1, 1]), 3);
    }

    #[test]
    fn filters_restrict_the_draws() {
        let base = SamplingParams {
            temperature: 1.0,
            seed: 9,
            ..Default::default()
        };
        // 400 draws with `base` changed by `edit`.
        let draw = |edit: fn(&mut SamplingParams)| -> Vec<u32> {
            let mut params = base.clone();
            edit(&mut params);
            let mut s = Sampler::new(params);
            (0..400).map(|_| s.sample(&logits(), &[])).collect()
        };
        let all = draw(|_| {});
        assert!(
            all.contains(&5) && all.contains(&0),
            "plain sampling reaches every token"
        );
        let maxima = |d: &[u32]| d.iter().all(|&t| t == 1 || t == 3);
        assert!(maxima(&draw(|p| p.top_k = 2)));
        // p(1) = p(3) ≈ 0.39 each: top-p 0.5 needs both.
        let p = draw(|p| p.top_p = 0.5);
        assert!(maxima(&p) && p.contains(&1) && p.contains(&3));
        // min-p 0.5: e^(2-3) ≈ 0.37 < 0.5 drops token 2.
        assert!(maxima(&draw(|p| p.min_p = 0.5)));
        // Low temperature concentrates on the maxima.
        assert!(maxima(&draw(|p| p.temperature = 0.05)));
    }

    #[test]
    fn same_seed_same_draws() {
        let p = SamplingParams {
            temperature: 0.8,
            top_k: 4,
            seed: 42,
            ..Default::default()
        };
        let run = |p: SamplingParams| -> Vec<u32> {
            let mut s = Sampler::new(p);
            (0..64).map(|_| s.sample(&logits(), &[])).collect()
        };
        assert_eq!(run(p.clone()), run(p.clone()));
        assert_ne!(run(p.clone()), run(SamplingParams { seed: 43, ..p }));
    }

    #[test]
    fn out_of_range_parameters_are_named() {
        // The error for the default parameters changed by `edit`.
        let bad = |edit: fn(&mut SamplingParams)| {
            let mut p = SamplingParams::default();
            edit(&mut p);
            p.validate().unwrap_err()
        };
        assert!(bad(|p| p.temperature = -1.0).contains("temperature"));
        assert!(bad(|p| p.top_p = 0.0).contains("top_p"));
        assert!(bad(|p| p.min_p = 2.0).contains("min_p"));
        assert!(bad(|p| p.repetition_penalty = 0.0).contains("repetition"));
        assert!(bad(|p| p.temperature = f32::NAN).contains("finite"));
    }
}
