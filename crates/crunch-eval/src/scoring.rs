//! Per-position scores from logits rows, on the host, in f64 where it matters.

use rayon::prelude::*;

/// Sums over a set of scored positions.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RowScores {
    pub positions: usize,
    /// Σ −log p(target)
    pub nll: f64,
    /// Positions whose arg-max is the target.
    pub top1_correct: usize,
    /// Σ KL(base ‖ model), when a base is given.
    pub kl: f64,
    /// Positions where model and base agree on the arg-max.
    pub top1_agree: usize,
}

impl RowScores {
    pub fn add(&mut self, o: &RowScores) {
        self.positions += o.positions;
        self.nll += o.nll;
        self.top1_correct += o.top1_correct;
        self.kl += o.kl;
        self.top1_agree += o.top1_agree;
    }
}

/// Log-sum-exp and arg-max of one logits row.
fn lse_argmax(row: &[f32]) -> (f64, usize) {
    let (mut arg, mut max) = (0, f32::NEG_INFINITY);
    for (i, &v) in row.iter().enumerate() {
        if v > max {
            max = v;
            arg = i;
        }
    }
    let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
    (max as f64 + sum.ln(), arg)
}

/// Scores `rows` of logits (`[targets.len(), vocab]`, row-major) against `targets`, and against
/// `base` logits of the same shape when given.
pub fn score_rows(
    logits: &[f32],
    base: Option<&[f32]>,
    targets: &[u32],
    vocab: usize,
) -> RowScores {
    assert_eq!(logits.len(), targets.len() * vocab);
    (0..targets.len())
        .into_par_iter()
        .map(|r| {
            let row = &logits[r * vocab..(r + 1) * vocab];
            let t = targets[r] as usize;
            let (lse, arg) = lse_argmax(row);
            let mut s = RowScores {
                positions: 1,
                nll: lse - row[t] as f64,
                top1_correct: (arg == t) as usize,
                ..Default::default()
            };
            if let Some(base) = base {
                let brow = &base[r * vocab..(r + 1) * vocab];
                let (blse, barg) = lse_argmax(brow);
                // KL(base ‖ model) = Σ p_b (log p_b − log p_m)
                s.kl = brow
                    .iter()
                    .zip(row)
                    .map(|(&b, &m)| {
                        let lb = b as f64 - blse;
                        lb.exp() * (lb - (m as f64 - lse))
                    })
                    .sum::<f64>()
                    .max(0.0);
                s.top1_agree = (barg == arg) as usize;
            }
            s
        })
        .reduce(RowScores::default, |mut a, b| {
            a.add(&b);
            a
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_logits_score_log_vocab() {
        let s = score_rows(&[0.0; 8], None, &[1, 3], 4);
        assert!((s.nll / 2.0 - 4f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn kl_is_zero_against_itself_and_positive_otherwise() {
        let a = [1.0, 2.0, 0.5, -1.0];
        let b = [0.0, 2.5, 0.5, -1.0];
        let same = score_rows(&a, Some(&a), &[1], 4);
        assert!(same.kl.abs() < 1e-12);
        assert_eq!(same.top1_agree, 1);
        let diff = score_rows(&a, Some(&b), &[1], 4);
        // Direct: p = softmax(b), q = softmax(a), Σ p log(p/q)
        let sm = |x: &[f64]| {
            let z: f64 = x.iter().map(|v| v.exp()).sum();
            x.iter().map(|v| v.exp() / z).collect::<Vec<_>>()
        };
        let p = sm(&b.map(|v| v as f64));
        let q = sm(&a.map(|v| v as f64));
        let want: f64 = p.iter().zip(&q).map(|(p, q)| p * (p / q).ln()).sum();
        assert!((diff.kl - want).abs() < 1e-9, "{} vs {want}", diff.kl);
    }
}
