//! Choosing the next token from logits: greedy, or sampling after the usual filters, with one
//! seeded random stream per sequence so that the same seed gives the same text.
//!
//! Order (Hugging Face's): repetition penalty → temperature → top-k → top-p → min-p → draw.
//! Arithmetic is f64 and ties are broken by token id, so results do not depend on the
//! platform's sort or summation order.

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

/// SplitMix64: small, fast, identical everywhere.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
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
        // Candidates, most likely first (ties: lower id first).
        let mut idx: Vec<u32> = (0..l.len() as u32)
            .filter(|&i| !l[i as usize].is_nan())
            .collect();
        if idx.is_empty() {
            return 0;
        }
        idx.sort_by(|&a, &b| {
            l[b as usize]
                .partial_cmp(&l[a as usize])
                .unwrap()
                .then(a.cmp(&b))
        });
        if p.top_k > 0 && p.top_k < idx.len() {
            idx.truncate(p.top_k);
        }
        let max = l[idx[0] as usize] / t;
        let mut probs: Vec<f64> = idx
            .iter()
            .map(|&i| (l[i as usize] / t - max).exp())
            .collect();
        let z: f64 = probs.iter().sum();
        for q in &mut probs {
            *q /= z;
        }
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            let mut keep = probs.len();
            for (n, q) in probs.iter().enumerate() {
                cum += q;
                if cum >= p.top_p as f64 {
                    keep = n + 1;
                    break;
                }
            }
            probs.truncate(keep);
        }
        if p.min_p > 0.0 {
            let floor = p.min_p as f64 * probs[0];
            let keep = probs.iter().take_while(|&&q| q >= floor).count().max(1);
            probs.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        let mut u = self.rng.unit() * total;
        for (n, q) in probs.iter().enumerate() {
            if u < *q {
                return idx[n];
            }
            u -= q;
        }
        idx[probs.len() - 1]
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
        let draw = |params: SamplingParams| -> Vec<u32> {
            let mut s = Sampler::new(params);
            (0..400).map(|_| s.sample(&logits(), &[])).collect()
        };
        let base = SamplingParams {
            temperature: 1.0,
            seed: 9,
            ..Default::default()
        };
        let all = draw(base.clone());
        assert!(
            all.contains(&5) && all.contains(&0),
            "plain sampling reaches every token"
        );
        let k2 = draw(SamplingParams {
            top_k: 2,
            ..base.clone()
        });
        assert!(k2.iter().all(|&t| t == 1 || t == 3));
        // p(1) = p(3) ≈ 0.39 each: top-p 0.5 needs both.
        let p = draw(SamplingParams {
            top_p: 0.5,
            ..base.clone()
        });
        assert!(p.iter().all(|&t| t == 1 || t == 3) && p.contains(&1) && p.contains(&3));
        // min-p 0.5: e^(2-3) ≈ 0.37 < 0.5 drops token 2.
        let m = draw(SamplingParams {
            min_p: 0.5,
            ..base.clone()
        });
        assert!(m.iter().all(|&t| t == 1 || t == 3));
        // Low temperature concentrates on the maxima.
        let cold = draw(SamplingParams {
            temperature: 0.05,
            ..base.clone()
        });
        assert!(cold.iter().all(|&t| t == 1 || t == 3));
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
        let bad = |p: SamplingParams| p.validate().unwrap_err();
        assert!(bad(SamplingParams {
            temperature: -1.0,
            ..Default::default()
        })
        .contains("temperature"));
        assert!(bad(SamplingParams {
            top_p: 0.0,
            ..Default::default()
        })
        .contains("top_p"));
        assert!(bad(SamplingParams {
            min_p: 2.0,
            ..Default::default()
        })
        .contains("min_p"));
        assert!(bad(SamplingParams {
            repetition_penalty: 0.0,
            ..Default::default()
        })
        .contains("repetition"));
        assert!(bad(SamplingParams {
            temperature: f32::NAN,
            ..Default::default()
        })
        .contains("finite"));
    }
}
