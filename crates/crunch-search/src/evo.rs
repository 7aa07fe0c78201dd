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
//! Never worse than its seeds (beyond the paper): the search may be given *seeds*, whole
//! configurations to start from (every uniform configuration that fits, a llama.cpp preset's own
//! type assignment...). Every seed, and the paper's start, is scored on a fixed set of held
//! windows (`Fitness::score_held`, the same for every generation); the best becomes the first
//! parent and the *elite*. After every generation a new parent is scored on the held windows and
//! replaces the elite only when lower, and the elite competes with each generation's offspring.
//! The search returns the elite ([`SearchState::chosen`]): its held fitness is at most every
//! seed's, whatever the noise of the per-generation windows did to the parent.
//!
//! Then the fill pass (`crate::fill`, `EvoParams::fill_rounds`): the budget the elite leaves
//! unused goes, one measured raise at a time, to the layers whose raise lowers the held fitness
//! most per bit; a raise is kept only when it does, so the elite's held fitness never rises.
//!
//! Determinism: generation `g` draws from its own RNG stream (seed, g), so a search resumed from
//! the state after generation g continues exactly as the uninterrupted one.

use crate::fill::{fill_round, FillRound};
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

    /// Every uniform configuration that fits (each unit at level `l`, capped at its own top),
    /// from the lowest level up.
    pub fn uniform_fits(&self) -> Vec<Vec<u8>> {
        let top = self.costs.iter().map(|c| c.len()).max().unwrap_or(0);
        let mut out: Vec<Vec<u8>> = Vec::new();
        for l in 0..top {
            let c: Vec<u8> = (0..self.costs.len())
                .map(|u| l.min(self.levels(u) - 1) as u8)
                .collect();
            if self.cost(&c) <= self.limit && !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }

    /// `seed` made to fit: levels beyond a unit's top are capped, then, while over the budget,
    /// the unit whose step down frees the most bits per level goes down one level (the largest
    /// layers first: the fewest changes to the seed). `None` when it has the wrong length or
    /// cannot fit.
    pub fn repair(&self, seed: &[u8]) -> Option<Vec<u8>> {
        if seed.len() != self.costs.len() {
            return None;
        }
        let mut c: Vec<u8> = seed
            .iter()
            .enumerate()
            .map(|(u, &l)| l.min((self.levels(u) - 1) as u8))
            .collect();
        let mut cost = self.cost(&c);
        while cost > self.limit {
            let j = (0..c.len()).filter(|&u| c[u] > 0).max_by(|&a, &b| {
                let step = |u: usize| {
                    let l = c[u] as usize;
                    self.costs[u][l] - self.costs[u][l - 1]
                };
                step(a).total_cmp(&step(b)).then(b.cmp(&a))
            })?;
            let l = c[j] as usize;
            cost += self.costs[j][l - 1] - self.costs[j][l];
            c[j] -= 1;
        }
        Some(c)
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
    ///
    /// `jump` > 1 (beyond the paper, decision 149): the raised unit goes up 1 to `jump` ranks,
    /// uniformly drawn (capped at its top), so that in a ladder with many levels a unit can
    /// step over a level that does not suit it in one move. `jump` = 1 is the paper's move and
    /// draws exactly what it drew before the option (no draw for the size of the step).
    pub fn mutate(&self, parent: &[u8], jump: usize, rng: &mut Rng) -> Vec<u8> {
        let mut c = parent.to_vec();
        let up: Vec<usize> = (0..c.len())
            .filter(|&u| (c[u] as usize) + 1 < self.levels(u))
            .collect();
        if up.is_empty() {
            return c;
        }
        let i = up[rng.below(up.len())];
        let room = self.levels(i) - 1 - c[i] as usize;
        let k = match jump.min(room) {
            0 | 1 => 1,
            j => 1 + rng.below(j),
        };
        c[i] += k as u8;
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
    /// Rounds of the fill pass after the generations (`crate::fill`: the unused budget goes to
    /// the raises that lower the held fitness most per bit, each kept only if it does); 0: none.
    #[serde(default)]
    pub fill_rounds: usize,
    /// Early stop: the generations end once the elite's held fitness has not gone down for
    /// this many generations (0: never; run all `generations`). Not serialized when 0, so a
    /// search without it keeps the key (and the saved state) it had before the option.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub patience: usize,
    /// The most ranks a mutation raises its unit by (`Budget::mutate`; 1: the paper's level
    /// switch). Not serialized when 1, so a search without it keeps its key and saved state.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub jump: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
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
        if self.jump == 0 {
            return bad("a mutation's jump must be at least 1 rank".into());
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

    /// Whether `state`'s generations stop early: `patience` > 0 and the elite's held fitness
    /// after the last generation is not below its value `patience` generations earlier. A
    /// function of the saved history only, so a resumed search stops where the uninterrupted
    /// one does.
    pub fn stalled(&self, state: &SearchState) -> bool {
        let (p, h) = (self.patience, &state.history);
        if p == 0 || h.len() <= p {
            return false;
        }
        match (h[h.len() - 1].elite, h[h.len() - 1 - p].elite) {
            (Some(now), Some(then)) => now >= then,
            _ => false,
        }
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
    /// The fitness of `config` on the held windows: the same data in every generation, so that
    /// scores of different generations compare (the seeds and the elite are judged on it).
    fn score_held(&mut self, config: &[u8]) -> Result<f64>;
}

/// One finished generation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub generation: usize,
    /// The winner's score on the last step's windows.
    pub fitness: f64,
    /// The winner's cost in bits.
    pub bits: f64,
    /// Fitness evaluations this generation (all steps, and the held windows' if any).
    pub evaluations: usize,
    /// The elite's fitness on the held windows after this generation.
    #[serde(default)]
    pub elite: Option<f64>,
}

/// The best configuration found so far, by its fitness on the held windows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Elite {
    pub config: Vec<u8>,
    pub fitness: f64,
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
    /// The best configuration so far on the held windows (absent in states of older searches
    /// until their next generation).
    #[serde(default)]
    pub elite: Option<Elite>,
    /// Each seed's fitness on the held windows (the seeds as given, then the search's own
    /// start), after being made to fit; `None` for a seed that cannot fit.
    #[serde(default)]
    pub seeds: Vec<Option<f64>>,
    /// The fill pass's rounds done so far (after the generations).
    #[serde(default)]
    pub fill: Vec<FillRound>,
}

impl SearchState {
    /// The parent's last fitness, if a generation has run.
    pub fn fitness(&self) -> Option<f64> {
        self.history.last().map(|g| g.fitness)
    }

    /// The search's answer: the elite (the best on the held windows), else the parent.
    pub fn chosen(&self) -> &[u8] {
        self.elite.as_ref().map_or(&self.parent, |e| &e.config)
    }
}

/// Scores the seeds (made to fit) and the search's own start on the held windows: the first
/// state, whose parent and elite are the best of them (the first on ties).
fn start(
    budget: &Budget,
    params: &EvoParams,
    key: &str,
    fitness: &mut dyn Fitness,
    seeds: &[Vec<u8>],
) -> Result<SearchState> {
    let own = budget.initial(&mut crate::generation_rng(params.seed, 0, 2))?;
    let mut scored: Vec<(Vec<u8>, f64)> = Vec::new();
    let mut per_seed = Vec::with_capacity(seeds.len() + 1);
    for s in seeds.iter().map(|s| budget.repair(s)).chain([Some(own)]) {
        let Some(c) = s else {
            per_seed.push(None);
            continue;
        };
        let f = match scored.iter().find(|(x, _)| *x == c) {
            Some(&(_, f)) => f,
            None => {
                let f = fitness.score_held(&c)?;
                scored.push((c, f));
                f
            }
        };
        per_seed.push(Some(f));
    }
    // Lowest fitness, the first on ties (NaNs last).
    let (config, f) = scored
        .into_iter()
        .reduce(|a, b| if b.1.total_cmp(&a.1).is_lt() { b } else { a })
        .expect("the search's own start is always scored");
    Ok(SearchState {
        key: key.into(),
        generation: 0,
        parent: config.clone(),
        history: Vec::new(),
        elite: Some(Elite { config, fitness: f }),
        seeds: per_seed,
        fill: Vec::new(),
    })
}

/// Runs the search from `resume` (a state of the same `key`) or from the best of `seeds` and
/// the search's own start, calling `on_generation` after every generation (to save the state
/// and show progress). Returns the final state; [`SearchState::chosen`] is the answer.
pub fn search(
    budget: &Budget,
    params: &EvoParams,
    key: &str,
    fitness: &mut dyn Fitness,
    seeds: &[Vec<u8>],
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
        None => start(budget, params, key, fitness, seeds)?,
    };
    while state.generation < params.generations && !params.stalled(&state) {
        let g = state.generation;
        let mut rng = crate::generation_rng(params.seed, g as u64, 1);
        fitness.prepare(g, params.max_windows())?;
        let mut cands: Vec<Vec<u8>> = vec![state.parent.clone()];
        // The elite competes too, when the parent has left it.
        if let Some(e) = state.elite.as_ref().filter(|e| e.config != state.parent) {
            cands.push(e.config.clone());
        }
        for _ in 0..params.offspring {
            let c = budget.mutate(&state.parent, params.jump, &mut rng);
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
        if state.elite.as_ref().map(|e| &e.config) != Some(&state.parent) {
            let f = fitness.score_held(&state.parent)?;
            evaluations += 1;
            if state.elite.as_ref().is_none_or(|e| f < e.fitness) {
                state.elite = Some(Elite {
                    config: state.parent.clone(),
                    fitness: f,
                });
            }
        }
        state.generation = g + 1;
        state.history.push(Generation {
            generation: g + 1,
            fitness: best,
            bits: budget.cost(&state.parent),
            evaluations,
            elite: state.elite.as_ref().map(|e| e.fitness),
        });
        on_generation(&state)?;
    }
    // The fill pass, from the elite; a round that keeps nothing ends it (a resumed search
    // stops there too).
    while state.fill.len() < params.fill_rounds && state.fill.last().is_none_or(|r| r.kept > 0) {
        let Some(elite) = state.elite.clone() else {
            break;
        };
        let (elite, round) = fill_round(budget, fitness, &elite)?;
        state.elite = Some(elite);
        state.fill.push(round);
        on_generation(&state)?;
    }
    Ok(state)
}
