//! One global parameter budget turned into a rank per layer.
//!
//! Each layer is kept factored at some rank r (costing r·(rows + cols) values) or dense (costing
//! rows·cols, and losing nothing). Keeping rank r of a layer with singular values σ (of W for
//! plain SVD, of W·S for SVD-LLM) retains Σ_{i≤r} σ_i² of its energy. The total of Σ cost may not
//! exceed `keep`·Σ rows·cols.
//!
//! Energies are normalized per layer, σ_i² / Σ_j σ_j²: different layers' spectra have unrelated
//! scales (whitened spectra carry each layer's input scale, which varies by orders of magnitude
//! between, say, q_proj and down_proj), and an unnormalized greedy would give every parameter to
//! the loudest layers. Normalized, a step's gain is the fraction of *that layer's* output energy
//! it restores, comparable across layers; the objective is the sum over layers of the fraction
//! retained.
//!
//! Greedy: every layer starts at rank 0; the next step of a layer is rank r → r + 1 (cost
//! rows + cols, gain σ_{r+1}²) while r < [`max_useful_rank`], then max_useful_rank → dense (cost
//! rows·cols − r·(rows + cols) ≤ rows + cols, gain the whole remaining tail). Steps are taken by
//! best gain per parameter, ties to the lower layer index, and the allocation stops at the first
//! step that does not fit. The order of steps does not depend on the budget, so a plan is a
//! prefix of one fixed sequence: a larger `keep` never lowers any layer's rank, and at most one
//! step (≤ rows + cols of the widest layer) of the budget is left unused. Steps that gain nothing
//! (the rest of the spectrum is zero) are never taken: such a layer is already exact.
//! Known limit: a one-rank-at-a-time greedy does not see that a layer's cheap jump to dense can
//! be worth climbing to; an upper-concave-hull greedy would.

use crate::error::{CompressError, Result};
use crunch_repr::max_useful_rank;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// One layer's shape and singular spectrum (non-increasing, min(rows, cols) values).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSpectrum {
    pub rows: usize,
    pub cols: usize,
    pub singular_values: Vec<f64>,
}

/// What to do with one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RankChoice {
    /// Factor at this rank (0: the layer is replaced by zero, when its spectrum is all zero or
    /// the budget is too small to give it anything).
    Factored(usize),
    /// Keep the dense weight.
    Dense,
}

impl RankChoice {
    /// Stored values for a rows×cols layer.
    pub fn params(&self, rows: usize, cols: usize) -> usize {
        match *self {
            RankChoice::Factored(r) => r * (rows + cols),
            RankChoice::Dense => rows * cols,
        }
    }
}

/// The result of [`allocate_ranks`].
#[derive(Clone, Debug, PartialEq)]
pub struct RankPlan {
    /// One per layer, in input order.
    pub choices: Vec<RankChoice>,
    /// Σ params of the choices (≤ `budget`).
    pub params: usize,
    /// ⌊keep · Σ rows·cols⌋.
    pub budget: usize,
    /// Σ rows·cols.
    pub dense_params: usize,
}

/// Fraction of a layer's energy Σσ² kept by `choice` (1 for a layer with no energy).
pub fn retained_energy(layer: &LayerSpectrum, choice: RankChoice) -> f64 {
    let total: f64 = layer.singular_values.iter().map(|s| s * s).sum();
    if total == 0.0 {
        return 1.0;
    }
    match choice {
        RankChoice::Dense => 1.0,
        RankChoice::Factored(r) => {
            layer.singular_values[..r]
                .iter()
                .map(|s| s * s)
                .sum::<f64>()
                / total
        }
    }
}

/// Picks a rank per layer so the total stays within `keep` ∈ (0, 1] of the dense parameters.
pub fn allocate_ranks(layers: &[LayerSpectrum], keep: f64) -> Result<RankPlan> {
    if !(keep > 0.0 && keep <= 1.0) {
        return Err(CompressError::InvalidOption(format!(
            "keep {keep} must be in (0, 1]"
        )));
    }
    for (i, l) in layers.iter().enumerate() {
        let s = &l.singular_values;
        let ok = l.rows > 0
            && l.cols > 0
            && s.len() == l.rows.min(l.cols)
            && s.iter().all(|v| v.is_finite() && *v >= 0.0)
            && s.windows(2).all(|w| w[0] >= w[1]);
        if !ok {
            return Err(CompressError::InvalidOption(format!(
                "layer {i} ({}×{}): expected min(rows, cols) finite, non-negative, \
                 non-increasing singular values, got {}",
                l.rows,
                l.cols,
                s.len()
            )));
        }
    }
    let dense_params: usize = layers.iter().map(|l| l.rows * l.cols).sum();
    let budget = ((keep * dense_params as f64).floor() as usize).min(dense_params);

    // Normalized energies and their tails: tail[r] = Σ_{i≥r} σ_i² / Σσ².
    let tails: Vec<Vec<f64>> = layers
        .iter()
        .map(|l| {
            let total: f64 = l.singular_values.iter().map(|s| s * s).sum();
            let mut tail = vec![0.0; l.singular_values.len() + 1];
            if total > 0.0 {
                for r in (0..l.singular_values.len()).rev() {
                    tail[r] = tail[r + 1] + l.singular_values[r].powi(2) / total;
                }
            }
            tail
        })
        .collect();
    let next_step = |layer: usize, choice: RankChoice| -> Option<Step> {
        let l = &layers[layer];
        let RankChoice::Factored(r) = choice else {
            return None;
        };
        let (gain, cost) = if r < max_useful_rank(l.rows, l.cols) {
            (tails[layer][r] - tails[layer][r + 1], l.rows + l.cols)
        } else {
            (tails[layer][r], l.rows * l.cols - r * (l.rows + l.cols))
        };
        (gain > 0.0).then_some(Step {
            ratio: gain / cost as f64,
            layer,
            cost,
        })
    };

    let mut choices = vec![RankChoice::Factored(0); layers.len()];
    let mut heap: BinaryHeap<Step> = (0..layers.len())
        .filter_map(|i| next_step(i, choices[i]))
        .collect();
    let mut params = 0usize;
    while let Some(step) = heap.pop() {
        if params + step.cost > budget {
            break;
        }
        params += step.cost;
        let l = &layers[step.layer];
        choices[step.layer] = match choices[step.layer] {
            RankChoice::Factored(r) if r < max_useful_rank(l.rows, l.cols) => {
                RankChoice::Factored(r + 1)
            }
            _ => RankChoice::Dense,
        };
        if let Some(next) = next_step(step.layer, choices[step.layer]) {
            heap.push(next);
        }
    }
    Ok(RankPlan {
        choices,
        params,
        budget,
        dense_params,
    })
}

/// A candidate step; the heap pops the best gain per parameter, then the lowest layer index.
struct Step {
    ratio: f64,
    layer: usize,
    cost: usize,
}

impl Ord for Step {
    fn cmp(&self, other: &Self) -> Ordering {
        self.ratio
            .total_cmp(&other.ratio)
            .then_with(|| other.layer.cmp(&self.layer))
    }
}

impl PartialOrd for Step {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Step {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Step {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    /// Layers of assorted shapes with decaying random spectra of very different scales.
    fn layers(seed: u64) -> Vec<LayerSpectrum> {
        let mut rng = Rng::new(seed);
        [(32, 48), (48, 32), (16, 64), (40, 40), (8, 96), (24, 24)]
            .iter()
            .enumerate()
            .map(|(i, &(rows, cols))| {
                let scale = 10f64.powi(i as i32 * 2 - 4);
                let decay = 0.02 + 0.2 * rng.uniform() as f64;
                let mut s: Vec<f64> = (0..rows.min(cols))
                    .map(|k| {
                        scale * (-(k as f64) * decay).exp() * (1.0 + 0.1 * rng.uniform() as f64)
                    })
                    .collect();
                s.sort_by(|a, b| b.total_cmp(a));
                LayerSpectrum {
                    rows,
                    cols,
                    singular_values: s,
                }
            })
            .collect()
    }

    fn rank_of(c: RankChoice, l: &LayerSpectrum) -> usize {
        match c {
            RankChoice::Factored(r) => r,
            RankChoice::Dense => l.rows.min(l.cols),
        }
    }

    #[test]
    fn budget_respected_and_monotone_in_keep() {
        for seed in 0..4 {
            let ls = layers(seed);
            let mut previous: Option<(RankPlan, f64)> = None;
            for k in 1..=40 {
                let keep = k as f64 / 40.0;
                let plan = allocate_ranks(&ls, keep).unwrap();
                let params: usize = plan
                    .choices
                    .iter()
                    .zip(&ls)
                    .map(|(c, l)| c.params(l.rows, l.cols))
                    .sum();
                assert_eq!(params, plan.params);
                assert!(plan.params <= plan.budget);
                assert!(plan.budget as f64 <= keep * plan.dense_params as f64);
                // Unused budget is below one step of the widest layer.
                let widest = ls.iter().map(|l| l.rows + l.cols).max().unwrap();
                assert!(plan.budget - plan.params < widest, "keep {keep}");
                let energy: f64 = plan
                    .choices
                    .iter()
                    .zip(&ls)
                    .map(|(c, l)| retained_energy(l, *c))
                    .sum();
                if let Some((prev, prev_energy)) = &previous {
                    for ((a, b), l) in prev.choices.iter().zip(&plan.choices).zip(&ls) {
                        assert!(
                            rank_of(*a, l) <= rank_of(*b, l),
                            "keep {keep}: {a:?} → {b:?}"
                        );
                    }
                    assert!(energy >= *prev_energy);
                }
                previous = Some((plan, energy));
            }
        }
    }

    #[test]
    fn keep_one_is_all_dense() {
        let ls = layers(7);
        let plan = allocate_ranks(&ls, 1.0).unwrap();
        assert!(plan.choices.iter().all(|c| *c == RankChoice::Dense));
        assert_eq!(plan.params, plan.dense_params);
    }

    #[test]
    fn normalized_so_scale_does_not_matter() {
        let ls = layers(3);
        let plan = allocate_ranks(&ls, 0.5).unwrap();
        let mut scaled = ls.clone();
        for s in &mut scaled[2].singular_values {
            *s *= 1024.0; // exact in floating point
        }
        assert_eq!(allocate_ranks(&scaled, 0.5).unwrap(), plan);
        // Each layer gets something at half the budget despite 10¹⁰ between the scales.
        assert!(plan.choices.iter().all(|c| *c != RankChoice::Factored(0)));
    }

    #[test]
    fn ties_go_to_the_first_layer_and_zero_layers_stay_at_zero() {
        let same = LayerSpectrum {
            rows: 4,
            cols: 4,
            singular_values: vec![2.0, 1.0, 1.0, 1.0],
        };
        let zero = LayerSpectrum {
            rows: 4,
            cols: 4,
            singular_values: vec![0.0; 4],
        };
        // Budget 8.8 → 8 = one rank step of one layer: the first.
        let ls = vec![zero.clone(), same.clone(), same];
        let plan = allocate_ranks(&ls, 8.8 / 48.0).unwrap();
        assert_eq!(
            plan.choices,
            vec![
                RankChoice::Factored(0),
                RankChoice::Factored(1),
                RankChoice::Factored(0)
            ]
        );
        let all = allocate_ranks(&ls, 1.0).unwrap();
        assert_eq!(all.choices[0], RankChoice::Factored(0));
        assert_eq!(retained_energy(&zero, RankChoice::Factored(0)), 1.0);
    }

    #[test]
    fn rejects_bad_inputs() {
        let ls = layers(1);
        assert!(allocate_ranks(&ls, 0.0).is_err());
        assert!(allocate_ranks(&ls, 1.5).is_err());
        assert!(allocate_ranks(&ls, f64::NAN).is_err());
        let mut short = ls.clone();
        short[0].singular_values.pop();
        assert!(allocate_ranks(&short, 0.5).is_err());
        let mut unsorted = ls;
        unsorted[1].singular_values.swap(0, 3);
        assert!(allocate_ranks(&unsorted, 0.5).is_err());
        assert_eq!(allocate_ranks(&[], 0.5).unwrap().choices, vec![]);
    }
}
