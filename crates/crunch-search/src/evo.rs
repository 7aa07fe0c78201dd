//! EvoPress's (1+λ) evolutionary search over per-layer levels, under a budget.
//!
//! Read from the paper (Sieberling et al. 2024, Algorithm 1 and §3):
//! - a candidate is one level per unit (here: per linear layer); the parent starts as a
//!   configuration that meets the budget (here: the highest uniform level that fits, then
//!   random single-level raises while they fit, so the start uses the budget as the uniform
//!   configurations would not);
//! - each generation makes λ offspring of the parent by a *level-switch mutation*: one unit
//!   goes one level up and another one level down, which keeps the sum of levels. Layers differ
//!   in size, so a level is not a fixed number of bits: here random other units go one level
//!   down until the candidate fits the budget again (the paper's treatment of non-uniform
//!   costs), so every candidate meets the budget;
//! - selection is in several steps: all candidates (offspring and the parent, the "1+") are
//!   scored on a few tokens, the best few survive to be scored on more tokens, and so on; the
//!   best of the last step is the next parent. Every generation draws fresh calibration data
//!   (`Fitness::prepare`), so the parent is scored again with the offspring rather than kept
//!   with an old, lucky score.
//!
//! Determinism: generation `g` draws from its own RNG stream (seed, g), so a search resumed from
//! the state after generation g continues exactly as the uninterrupted one.

use crate::{Error, Result, Rng};
use serde::{Deserialize, Serialize};

/// Every unit's cost (bits) at each of its levels, ascending, and the budget a candidate must
/// meet.
#[derive(Clone, Debug)]
pub struct Budget {
    pub costs: Vec<Vec<f64>>,
    pub limit: f64,
}

impl Budget {
    /// Total bits of `config`.
    pub fn cost(&self, config: &[u8]) -> f64 {
        config
            .iter()
            .zip(&self.costs)
            .map(|(&l, c)| c[l as usize])
            .sum()
    }

    fn levels(&self, unit: usize) -> usize {
        self.costs[unit].len()
    }

    /// Bits with every unit at its lowest level.
    pub fn smallest(&self) -> f64 {
        self.costs.iter().map(|c| c[0]).sum()
    }

    /// The highest uniform level that fits (every unit at level `l`, capped at its own top).
    pub fn best_uniform(&self) -> Result<Vec<u8>> {
        if self.smallest() > self.limit {
            return Err(Error::BudgetTooSmall {
                budget: self.limit,
                smallest: self.smallest(),
            });
        }
        let top = self.costs.iter().map(|c| c.len()).max().unwrap_or(1);
        let mut best = vec![0u8; self.costs.len()];
        for l in 0..top {
            let c: Vec<u8> = (0..self.costs.len())
                .map(|u| l.min(self.levels(u) - 1) as u8)
                .collect();
            if self.cost(&c) <= self.limit {
                best = c;
            }
        }
        Ok(best)
    }

    /// The starting parent: the best uniform configuration, then single-level raises of random
    /// units while one fits.
    pub fn initial(&self, rng: &mut Rng) -> Result<Vec<u8>> {
        let mut c = self.best_uniform()?;
        self.fill(&mut c, usize::MAX, rng);
        Ok(c)
    }

    /// Single-level raises of random units other than `except` while one fits: what a
    /// configuration leaves of the budget goes to some layer rather than unused.
    fn fill(&self, c: &mut [u8], except: usize, rng: &mut Rng) {
        let mut cost = self.cost(c);
        loop {
            let fits: Vec<usize> = (0..c.len())
                .filter(|&u| {
                    let l = c[u] as usize;
                    u != except
                        && l + 1 < self.levels(u)
                        && cost - self.costs[u][l] + self.costs[u][l + 1] <= self.limit
                })
                .collect();
            if fits.is_empty() {
                return;
            }
            let u = fits[rng.below(fits.len())];
            let l = c[u] as usize;
            cost += self.costs[u][l + 1] - self.costs[u][l];
            c[u] += 1;
        }
    }

    /// A level-switch mutation of `parent` (which meets the budget): a random unit one level
    /// up, then random other units one level down until the budget is met again, then what
    /// the steps down freed beyond that to random units (other than the raised one) while a
    /// raise fits: with layers of unequal sizes a step down can free far more than the step up
    /// took. The parent itself when no unit can go up, or when nothing else can go down.
    pub fn mutate(&self, parent: &[u8], rng: &mut Rng) -> Vec<u8> {
        let mut c = parent.to_vec();
        let up: Vec<usize> = (0..c.len())
            .filter(|&u| (c[u] as usize) + 1 < self.levels(u))
            .collect();
        if up.is_empty() {
            return c;
        }
        let i = up[rng.below(up.len())];
        c[i] += 1;
        let mut cost = self.cost(&c);
        while cost > self.limit {
            let down: Vec<usize> = (0..c.len()).filter(|&u| u != i && c[u] > 0).collect();
            if down.is_empty() {
                return parent.to_vec();
            }
            let j = down[rng.below(down.len())];
            let l = c[j] as usize;
            cost += self.costs[j][l - 1] - self.costs[j][l];
            c[j] -= 1;
        }
        self.fill(&mut c, i, rng);
        c
    }
}

/// One selection step: score the remaining candidates on `windows` calibration windows, keep
/// the best `survivors`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub windows: usize,
    pub survivors: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvoParams {
    pub generations: usize,
    /// λ: offspring per generation.
    pub offspring: usize,
    /// Selection steps, from few windows and many candidates to the most windows and one.
    pub steps: Vec<Step>,
    pub seed: u64,
}

impl EvoParams {
    /// Checks the steps: at least one, windows > 0, survivors not increasing, the last keeps
    /// exactly one.
    pub fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(Error::Params(s));
        let Some(last) = self.steps.last() else {
            return bad("a search needs at least one selection step".into());
        };
        if last.survivors != 1 {
            return bad(format!(
                "the last selection step keeps {} candidates; it must keep 1 (the next parent)",
                last.survivors
            ));
        }
        if self.offspring == 0 {
            return bad("a search needs at least one offspring per generation".into());
        }
        for (i, s) in self.steps.iter().enumerate() {
            if s.windows == 0 || s.survivors == 0 {
                return bad(format!(
                    "selection step {}: windows and survivors must be > 0",
                    i + 1
                ));
            }
            if i > 0 && s.survivors > self.steps[i - 1].survivors {
                return bad(format!(
                    "selection step {} keeps more candidates than step {}",
                    i + 1,
                    i
                ));
            }
        }
        Ok(())
    }

    /// The most windows any step scores on.
    pub fn max_windows(&self) -> usize {
        self.steps.iter().map(|s| s.windows).max().unwrap_or(0)
    }
}

/// What a search is scored by: lower is better (KL to the base model).
pub trait Fitness {
    /// Draws the data of generation `generation`: `windows` windows, of which each step uses a
    /// prefix.
    fn prepare(&mut self, generation: usize, windows: usize) -> Result<()>;
    /// The fitness of `config` on the first `windows` windows of this generation's data.
    fn score(&mut self, config: &[u8], windows: usize) -> Result<f64>;
}

/// One finished generation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub generation: usize,
    /// The winner's score on the last step's windows.
    pub fitness: f64,
    /// The winner's cost in bits.
    pub bits: f64,
    /// Fitness evaluations this generation (all steps).
    pub evaluations: usize,
}

/// Where a search stands after a generation: enough to resume it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchState {
    /// What the search is (model, data, levels, budget, parameters); a state file with another
    /// key belongs to another search.
    pub key: String,
    /// Generations done.
    pub generation: usize,
    pub parent: Vec<u8>,
    pub history: Vec<Generation>,
}

impl SearchState {
    /// The parent's last fitness, if a generation has run.
    pub fn fitness(&self) -> Option<f64> {
        self.history.last().map(|g| g.fitness)
    }
}

/// Runs the search from `resume` (a state of the same `key`) or from the start, calling
/// `on_generation` after every generation (to save the state and show progress). Returns the
/// final state; its parent is the chosen configuration.
pub fn search(
    budget: &Budget,
    params: &EvoParams,
    key: &str,
    fitness: &mut dyn Fitness,
    resume: Option<SearchState>,
    on_generation: &mut dyn FnMut(&SearchState) -> Result<()>,
) -> Result<SearchState> {
    params.validate()?;
    let mut state = match resume.filter(|s| s.key == key) {
        Some(s) => {
            if s.parent.len() != budget.costs.len() || budget.cost(&s.parent) > budget.limit {
                return Err(Error::Params(
                    "the saved search state does not fit this model and budget".into(),
                ));
            }
            s
        }
        None => SearchState {
            key: key.into(),
            generation: 0,
            parent: budget.initial(&mut Rng::for_generation(params.seed, 0, 2))?,
            history: Vec::new(),
        },
    };
    while state.generation < params.generations {
        let g = state.generation;
        let mut rng = Rng::for_generation(params.seed, g as u64, 1);
        fitness.prepare(g, params.max_windows())?;
        let mut cands: Vec<Vec<u8>> = vec![state.parent.clone()];
        for _ in 0..params.offspring {
            let c = budget.mutate(&state.parent, &mut rng);
            // A duplicate would only cost evaluations (the first copy wins ties).
            if !cands.contains(&c) {
                cands.push(c);
            }
        }
        let mut alive: Vec<usize> = (0..cands.len()).collect();
        let (mut evaluations, mut best) = (0, f64::INFINITY);
        for step in &params.steps {
            let mut scored = Vec::with_capacity(alive.len());
            for &i in &alive {
                scored.push((fitness.score(&cands[i], step.windows)?, i));
            }
            evaluations += scored.len();
            // Ties (and NaNs, last) by candidate order: the parent first.
            scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            scored.truncate(step.survivors);
            alive = scored.iter().map(|s| s.1).collect();
            best = scored[0].0;
        }
        state.parent = cands[alive[0]].clone();
        state.generation = g + 1;
        state.history.push(Generation {
            generation: g + 1,
            fitness: best,
            bits: budget.cost(&state.parent),
            evaluations,
        });
        on_generation(&state)?;
    }
    Ok(state)
}
