//! The fill pass: what the search leaves of its budget goes to the layers that gain most from it,
//! each step measured.
//!
//! Why (decision 122): the evolutionary search returns its elite, the best configuration on the
//! held windows. When every configuration that uses more of the budget scores worse than a seed
//! on the held windows, the elite is that seed, however far under the budget it is (at
//! llama.cpp's Q5_K_M size of SmolLM2: the uniform Q5_1/Q4_K seed, 4.9% under). The mutations do
//! fill the budget, but with *random* raises, and one bad raise (e.g. a layer from Q5_1, which
//! re-encodes a Q4_1 source almost exactly, to Q8_0, which does not) can spoil an offspring
//! whose other raises help. The fill measures raises one by one instead:
//!
//! 1. **Probe**: from the elite, every unit that can go one level up within the budget is raised
//!    alone and scored on the held windows; its gain per bit is (elite's fitness − raised
//!    fitness) / (the raise's extra bits). Raises that do not lower the fitness are dropped.
//! 2. **Apply**, best gain per bit first (ties: the lower unit index): the raise is applied to the
//!    current configuration if it still fits, scored on the held windows, and kept only if the
//!    fitness goes down. The first raise is the probe itself (not scored again).
//! 3. **Rounds**: with `rounds > 1`, probing starts again from the result (a unit raised in one
//!    round may go up again in the next); a round that keeps nothing ends the pass.
//!
//! The result never has a higher held fitness than the elite it started from (each kept step
//! lowers it), never exceeds the budget, and uses no random numbers: the same elite and fitness
//! give the same result. Cost: per round one held evaluation per unit that can be raised within
//! the remaining budget (none when the budget is used up) plus one per raise with a positive
//! probe gain.

use crate::evo::{Budget, Elite, Fitness};
use crate::Result;
use serde::{Deserialize, Serialize};

/// What one round of the fill did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FillRound {
    /// Held evaluations of single raises (the probe).
    pub probed: usize,
    /// Raises whose probe lowered the fitness.
    pub promising: usize,
    /// Raises kept.
    pub kept: usize,
    /// Held evaluations in all (probe and apply).
    pub evaluations: usize,
    /// Held fitness before and after the round.
    pub before: f64,
    pub after: f64,
    /// Bits before and after the round.
    pub bits_before: f64,
    pub bits_after: f64,
}

/// One round of the fill from `elite` (its `fitness` must be its held fitness): the new elite
/// (no worse, within the budget) and what the round did.
pub fn fill_round(
    budget: &Budget,
    fitness: &mut dyn Fitness,
    elite: &Elite,
) -> Result<(Elite, FillRound)> {
    let start_bits = budget.cost(&elite.config);
    let mut evaluations = 0;
    // 1. Probe every single raise that fits.
    let mut promising: Vec<(f64, usize, f64)> = Vec::new();
    let mut probed = 0;
    for u in 0..elite.config.len() {
        let l = elite.config[u] as usize;
        let Some(&up) = budget.costs[u].get(l + 1) else {
            continue;
        };
        let extra = up - budget.costs[u][l];
        if start_bits + extra > budget.limit {
            continue;
        }
        let mut c = elite.config.clone();
        c[u] += 1;
        let f = fitness.score_held(&c)?;
        probed += 1;
        evaluations += 1;
        let gain = elite.fitness - f;
        // `gain > 0` is false for NaN: a raise that cannot be scored is never tried.
        if gain > 0.0 {
            promising.push((gain / extra.max(f64::MIN_POSITIVE), u, f));
        }
    }
    // 2. Apply, best gain per bit first.
    promising.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut cur = elite.clone();
    let mut bits = start_bits;
    let mut kept = 0;
    for &(_, u, probe_f) in &promising {
        let l = cur.config[u] as usize;
        let extra = budget.costs[u][l + 1] - budget.costs[u][l];
        if bits + extra > budget.limit {
            continue;
        }
        let mut c = cur.config.clone();
        c[u] += 1;
        // Until a raise is kept, the configuration is the probe's: its score is known.
        let f = if kept == 0 {
            probe_f
        } else {
            evaluations += 1;
            fitness.score_held(&c)?
        };
        if f < cur.fitness {
            cur = Elite {
                config: c,
                fitness: f,
            };
            bits += extra;
            kept += 1;
        }
    }
    let round = FillRound {
        probed,
        promising: promising.len(),
        kept,
        evaluations,
        before: elite.fitness,
        after: cur.fitness,
        bits_before: start_bits,
        bits_after: bits,
    };
    Ok((cur, round))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evo_reference::Additive;

    fn additive(err: Vec<Vec<f64>>) -> Additive {
        let budget = Budget {
            costs: Vec::new(),
            limit: f64::INFINITY,
        };
        Additive {
            err,
            budget,
            all_within: true,
        }
    }

    fn elite(fit: &mut Additive, config: Vec<u8>) -> Elite {
        let fitness = fit.score(&config, 0).unwrap();
        Elite { config, fitness }
    }

    #[test]
    fn fills_the_slack_with_the_best_gain_per_bit() {
        // Four units; unit 2's raise gains most per bit, unit 0's raise makes things worse (a
        // level that does not suit the layer, like Q8_0 on a Q4_1 source), unit 3 is at its
        // top.
        let budget = Budget {
            costs: vec![
                vec![10.0, 20.0],
                vec![10.0, 30.0],
                vec![10.0, 15.0],
                vec![10.0],
            ],
            limit: 40.0 + 25.0,
        };
        let mut fit = additive(vec![
            vec![1.0, 1.5],
            vec![1.0, 0.2],
            vec![1.0, 0.5],
            vec![1.0],
        ]);
        let e = elite(&mut fit, vec![0; 4]);
        let (got, round) = fill_round(&budget, &mut fit, &e).unwrap();
        // Gains per bit: unit 2 0.1, unit 1 0.04; unit 0 worse. Slack 25: unit 2 (+5), then
        // unit 1 (+20): 65 bits exactly.
        assert_eq!(got.config, vec![0, 1, 1, 0]);
        assert!((got.fitness - (1.0 + 0.2 + 0.5 + 1.0)).abs() < 1e-12);
        assert_eq!(budget.cost(&got.config), 65.0);
        assert_eq!((round.probed, round.promising, round.kept), (3, 2, 2));
        // 3 probes, the first raise reused, the second scored.
        assert_eq!(round.evaluations, 4);
        assert_eq!(round.bits_after, 65.0);
    }

    #[test]
    fn never_worse_and_within_budget() {
        // Raises that look good alone but are bad together (a non-additive fitness): the apply
        // step scores each and keeps only improvements.
        struct Clash;
        impl Fitness for Clash {
            fn prepare(&mut self, _g: usize, _w: usize) -> Result<()> {
                Ok(())
            }
            fn score(&mut self, c: &[u8], _w: usize) -> Result<f64> {
                let raised = c.iter().filter(|&&l| l > 0).count();
                Ok(match raised {
                    0 => 1.0,
                    1 => 0.5 + 0.1 * c.iter().position(|&l| l > 0).unwrap() as f64,
                    _ => 2.0,
                })
            }
            fn score_held(&mut self, c: &[u8]) -> Result<f64> {
                self.score(c, 0)
            }
        }
        let budget = Budget {
            costs: vec![vec![1.0, 2.0]; 3],
            limit: 100.0,
        };
        let e = Elite {
            config: vec![0; 3],
            fitness: 1.0,
        };
        let (got, round) = fill_round(&budget, &mut Clash, &e).unwrap();
        assert_eq!(got.config, vec![1, 0, 0]);
        assert_eq!(got.fitness, 0.5);
        assert_eq!(round.kept, 1);
        // No slack: nothing is probed, nothing changes.
        let tight = Budget {
            costs: budget.costs.clone(),
            limit: 3.0,
        };
        let (same, round) = fill_round(&tight, &mut Clash, &e).unwrap();
        assert_eq!(same, e);
        assert_eq!((round.probed, round.evaluations), (0, 0));
        // Every raise worse: nothing kept.
        let mut fit = additive(vec![vec![0.1, 0.3]; 3]);
        let e = elite(&mut fit, vec![0; 3]);
        let (same, round) = fill_round(&budget, &mut fit, &e).unwrap();
        assert_eq!(same, e);
        assert_eq!((round.probed, round.promising, round.kept), (3, 0, 0));
    }
}
