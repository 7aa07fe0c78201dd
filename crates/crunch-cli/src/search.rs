//! `crunch compress MODEL --target-bpw B | --target-size S | --target-kl K`: the per-layer
//! budget search (crunch-search, EvoPress). The search picks a level per linear layer; the
//! result is then written by the one driver from a recipe that names every layer's level
//! (`recipe.toml`), so `crunch compress --recipe OUT/recipe.toml` rebuilds it without searching.

use crate::compress::{OutputArgs, Searched};
use crate::device::with_backend;
use crate::progress::{self, Bars};
use crate::search_report::{compare_points, draw, record, summary};
use crate::search_timing::{add_stages, SearchClock};
use anyhow::{anyhow, bail, Result};
use crunch_calib::{LevelInputs, RecipeFile, Stage};
use crunch_model::model::{tensor_shapes, BLOCK_LINEARS};
use crunch_model::Checkpoint;
use crunch_runtime::Backend;
use crunch_search::database::{model_hash, windows_hash};
use crunch_search::{
    hash_bytes, search, Budget, Database, EvoParams, Level, ModelFitness, SearchState, HASH_START,
};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use crate::search_args::SearchArgs;
use crate::search_args::{parse_level, parse_selection};

pub(crate) fn cache_root(flag: &Option<PathBuf>) -> PathBuf {
    if let Some(p) = flag {
        return p.clone();
    }
    if let Some(c) = std::env::var_os("CRUNCH_CACHE") {
        return PathBuf::from(c).join("search");
    }
    let home = std::env::var_os("HOME").map_or(PathBuf::from("."), PathBuf::from);
    home.join(".cache/crunch/search")
}

/// Bytes of every tensor that is not a block linear weight, as crunch's format stores it
/// (a 16-bit source's bytes kept, else f32).
fn kept_bytes(ckpt: &Checkpoint) -> u64 {
    tensor_shapes(&ckpt.config)
        .into_iter()
        .filter(|(name, _)| {
            !BLOCK_LINEARS
                .iter()
                .any(|l| name.ends_with(&format!("{l}.weight")))
        })
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let per = if ckpt.weights.raw_half(&name).is_some() {
                2
            } else {
                4
            };
            (n * per) as u64
        })
        .sum()
}

pub(crate) enum Goal {
    /// Average bits per weight of the block linear layers.
    Bpw(f64),
    /// Bits for all block linear layers together.
    Bits(f64),
    /// The smallest model with at most this calibration KL.
    Kl(f64),
}

/// What a search over crunch's levels found.
struct Found {
    outcome: Outcome,
    compare: Vec<(String, f64, f64)>,
    units: Vec<String>,
    levels: Vec<Level>,
    /// `[unit][rank]`: the level of each rank (`Database::order`).
    order: Vec<Vec<usize>>,
    cached: usize,
    made: usize,
    variants_seconds: f64,
    /// Levels `--prune-levels` dropped: name, bits per weight and held KL of each uniform model.
    pruned: Vec<Dropped>,
}

pub fn run(common: &OutputArgs, s: &SearchArgs) -> Result<()> {
    let c = common;
    if !c.skip.is_empty() {
        bail!("--skip is not supported with a target yet: every block linear layer gets a level");
    }
    if c.format == Some(crunch_export::Format::Gguf) {
        return crate::search_gguf::run(c, s);
    }
    if s.gguf.imatrix.is_some() {
        bail!("--imatrix applies to --format gguf only");
    }
    let levels: Vec<Level> = s
        .levels
        .iter()
        .map(|l| {
            let (bits, group, lut, scale_bits) = parse_level(l, s.level_group_size)?;
            if lut {
                // GPTQ onto codebooks whatever --level-method says; --level-no-mse is about
                // uniform grids' clipping and does not apply.
                return Ok(Level::lut(bits, group)?);
            }
            let mut extra: Vec<(&str, toml::Value)> = Vec::new();
            if s.level_no_mse {
                extra.push(("mse_clip", false.into()));
            }
            if let Some(k) = scale_bits {
                if s.level_method != "gptq" {
                    bail!(
                        "--levels `{l}`: coded group scales are made by gptq only (the default \
                         ladder has them; with --level-method {} give --levels, e.g. \
                         2,3,3g64,3g32,4,4g64,4g32,5,6,8)",
                        s.level_method
                    );
                }
                extra.push(("scale_bits", i64::from(k).into()));
            }
            Ok(Level::quant_with(&s.level_method, bits, group, &extra)?)
        })
        .collect::<Result<_>>()?;
    if levels.len() < 2 {
        bail!("--levels: a search needs at least two levels");
    }
    let params = evo_params(s, c.calib.seed(), JUMP)?;
    crate::output_notes(crunch_export::prepare_output(
        &c.out,
        &[c.model.as_path()],
        crunch_export::OutputKind::Dir,
        c.force,
    )?);
    let started = Instant::now();
    let ckpt = Checkpoint::open(&c.model)?;
    let (windows, calibration) = c.calib.load(&ckpt, c.device, "a budget search")?;
    let goal = match (s.target_bpw, s.target_size, s.target_kl) {
        (Some(b), None, None) => Goal::Bpw(b),
        (None, Some(size), None) => {
            let kept = kept_bytes(&ckpt);
            if size <= kept {
                bail!(
                    "--target-size {:.1} MB is below the {:.1} MB the kept tensors (embeddings, \
                     norms) take",
                    size as f64 / 1e6,
                    kept as f64 / 1e6
                );
            }
            Goal::Bits(((size - kept) * 8) as f64)
        }
        (None, None, Some(k)) => Goal::Kl(k),
        _ => bail!("give one of --target-bpw, --target-size, --target-kl"),
    };
    let start = Instant::now();
    let cache = cache_root(&s.search_cache);
    let how = How {
        args: s,
        params: &params,
        goal: &goal,
        cache: &cache,
    };
    let pool = crate::calib_args::with_self_samples(&c.calib, c.device, &ckpt, &windows, s)?;
    let calibration_seconds = started.elapsed().as_secs_f64();
    let found = with_backend!(c.device, b => searched(&b, &ckpt, &levels, &windows, &pool, &how)?);
    let search_seconds = start.elapsed().as_secs_f64();
    let units = &found.units;
    let names: Vec<String> = found.levels.iter().map(|l| l.short()).collect();
    if let Some(p) = &s.plot {
        draw(
            p,
            &found.outcome,
            units,
            &|u, l| names[found.order[u][l]].clone(),
            &found.compare,
        )?;
    }
    let found_outcome = &found.outcome;
    let mut stages = Vec::new();
    let mut counts = serde_json::Map::new();
    for (l, level) in found.levels.iter().enumerate() {
        // The configuration holds each unit's rank; `order` maps it to the level.
        let layers: Vec<String> = units
            .iter()
            .zip(&found_outcome.config)
            .enumerate()
            .filter(|(u, (_, &x))| found.order[*u][x as usize] == l)
            .map(|(_, (n, _))| n.clone())
            .collect();
        counts.insert(level.short(), json!(layers.len()));
        if !layers.is_empty() {
            stages.push(Stage {
                method: level.stage.method.clone(),
                layers,
            });
        }
    }
    let mut extra = record(s, &params, found_outcome, windows.len(), search_seconds);
    extra["levels"] = json!(counts);
    extra["variants_cached"] = json!(found.cached);
    extra["variants_made"] = json!(found.made);
    if s.prune() {
        extra["pruned_levels"] = json!(found
            .pruned
            .iter()
            .map(|(n, bpw, kl)| json!({"level": n, "bits_per_weight": bpw, "kl": kl}))
            .collect::<Vec<_>>());
    }
    add_stages(
        &mut extra["timing"],
        calibration_seconds,
        found.variants_seconds,
    );
    if !c.json {
        summary(s, found_outcome, windows.len(), search_seconds);
    }
    // The write calibrates with the windows the search's variants were made from: loaded
    // once (a `self:` calibration is sampled once).
    let given = Searched {
        windows,
        calibration,
        record: extra,
    };
    crate::compress::run(c, RecipeFile::default(), stages, Some(given))
}

/// The selection steps when --selection is not given, for both formats: 8 windows for every
/// candidate, 32 for the best 4. The GGUF search kept its advantage over llama-quantize off the
/// calibration text with these (decision 136, BENCHMARKS s28); the crunch-format search met
/// issue 14 with them (decision 150, BENCHMARKS s33). The earlier crunch-format default,
/// `2x4,8x1`, scored a quarter of the tokens.
pub(crate) const SELECTION: &str = "8x4,32x1";
/// The crunch-format search's --jump when not given (decision 150).
pub(crate) const JUMP: usize = 3;
/// The GGUF search's --jump when not given: EvoPress's one-rank move, as measured (decision 150).
pub(crate) const JUMP_GGUF: usize = 1;

/// The search's parameters from the flags; `default_jump` when --jump is not given.
pub(crate) fn evo_params(s: &SearchArgs, seed: u64, default_jump: usize) -> Result<EvoParams> {
    let params = EvoParams {
        generations: s.generations,
        offspring: s.offspring,
        steps: parse_selection(s.selection.as_deref().unwrap_or(SELECTION))?,
        seed,
        fill_rounds: s.fill_rounds,
        patience: s.patience,
        jump: s.jump.unwrap_or(default_jump),
    };
    params.validate()?;
    Ok(params)
}

fn searched<B: Backend + Clone>(
    b: &B,
    ckpt: &Checkpoint,
    levels: &[Level],
    windows: &[Vec<u32>],
    pool: &[Vec<u32>],
    how: &How,
) -> Result<Found> {
    let (s, params, cache) = (how.args, how.params, how.cache);
    let variants_started = Instant::now();
    let bar = progress::bar(ckpt.config.layers, "variants");
    let inputs = match s.level_inputs.as_str() {
        "independent" => LevelInputs::Independent,
        _ => LevelInputs::Sequential,
    };
    let mut db = Database::build(
        b,
        ckpt,
        levels,
        inputs,
        Some(windows),
        Some(&cache.join("variants")),
        &mut Bars(bar.clone()),
    )?;
    bar.finish_and_clear();
    let variants_seconds = variants_started.elapsed().as_secs_f64();
    let (base, model) = load_twice(b, ckpt)?;
    let (model, pruned) = if s.prune() {
        prune_ladder(&base, model, &mut db, pool, params.seed, s.kl_windows)?
    } else {
        (model, Vec::new())
    };
    let costs = db.costs()?;
    // The database's ladder, sorted from small to large (the order given may differ).
    let levels = &db.levels;
    let mut fit = ModelFitness::new(&base, model, &db, pool, params.seed).with_held(s.kl_windows);
    let key_base = {
        let mut h = hash_bytes(HASH_START, &model_hash(&ckpt.path)?.to_le_bytes());
        h = hash_bytes(h, &windows_hash(windows).to_le_bytes());
        h = hash_bytes(h, &windows_hash(pool).to_le_bytes());
        h = hash_bytes(h, s.level_inputs.as_bytes());
        for l in levels {
            h = hash_bytes(h, l.describe().as_bytes());
        }
        hash_bytes(h, serde_json::to_string(params)?.as_bytes())
    };
    let names: Vec<String> = levels.iter().map(|l| l.short()).collect();
    let uniform: Vec<Vec<u8>> = (0..levels.len()).map(|l| db.uniform(l)).collect();
    let space = Space {
        costs: &costs,
        names: &names,
        uniform: Some(&uniform),
        key: key_base,
        seeds: Vec::new(),
    };
    let outcome = run_search(&mut fit, &space, how)?;
    let kl_set = &pool[..s.kl_windows.clamp(1, pool.len())];
    let compare = compare_points(b, &base, &s.compare, kl_set)?;
    Ok(Found {
        outcome,
        compare,
        units: db.units.iter().map(|u| u.full_name()).collect(),
        levels: levels.to_vec(),
        order: db.order.clone(),
        cached: db.cached,
        made: db.made,
        variants_seconds,
        pruned,
    })
}

/// A level `--prune-levels` dropped: name, bits per weight, KL on the held windows.
type Dropped = (String, f64, f64);

/// `--prune-levels` (decision 148): each level's uniform model measured on the held windows,
/// the levels off the (size, KL) front dropped from `db`. Returns the candidate model (for the
/// search's fitness) and what was dropped: name, bits per weight, KL.
fn prune_ladder<B: Backend>(
    base: &crunch_model::Model<B>,
    model: crunch_model::Model<B>,
    db: &mut Database,
    pool: &[Vec<u32>],
    seed: u64,
    kl_windows: usize,
) -> Result<(crunch_model::Model<B>, Vec<Dropped>)> {
    let sizes = db.uniform_sizes();
    let weights: f64 = db.shapes.iter().map(|&(r, c)| (r * c) as f64).sum();
    let (kls, model) = {
        let mut fit = ModelFitness::new(base, model, db, pool, seed).with_held(kl_windows);
        let sp = progress::spinner("measuring the uniform configurations to prune the ladder");
        let kls = (0..db.levels.len())
            .map(|l| fit.held_kl(&db.uniform(l)))
            .collect::<std::result::Result<Vec<f64>, _>>()?;
        sp.finish_and_clear();
        (kls, fit.into_model())
    };
    let keep = crunch_search::undominated(&sizes, &kls);
    let dropped: Vec<Dropped> = (0..keep.len())
        .filter(|&l| !keep[l])
        .map(|l| (db.levels[l].short(), sizes[l] / weights, kls[l]))
        .collect();
    for (name, bpw, kl) in &dropped {
        eprintln!(
            "note: level {name} dropped ({bpw:.3} bpw, KL {kl:.4} on held windows): a smaller \
             level's uniform model is as good"
        );
    }
    db.retain_levels(&keep)?;
    Ok((model, dropped))
}

/// The base model and a second copy to become the candidate.
pub(crate) fn load_twice<B: Backend + Clone>(
    b: &B,
    ckpt: &Checkpoint,
) -> Result<(crunch_model::Model<B>, crunch_model::Model<B>)> {
    let sp = progress::spinner("loading the model twice (base and candidate)");
    let base = ckpt.load(b.clone(), |_| {})?;
    let model = ckpt.load(b.clone(), |_| {})?;
    sp.finish_and_clear();
    Ok((base, model))
}

/// What a search chooses among: each unit's cost at each level, a name per level (for the
/// uniform configurations), a hash naming the search (model, data, levels, parameters), and
/// seeds beyond the uniform configurations (e.g. a llama.cpp preset's own types; the key must
/// cover them).
pub(crate) struct Space<'a> {
    pub costs: &'a [Vec<f64>],
    pub names: &'a [String],
    /// The configuration of each named level, where a unit's ranks are not its levels
    /// (`Database::order`); `None`: level l is rank l everywhere.
    pub uniform: Option<&'a [Vec<u8>]>,
    pub key: u64,
    pub seeds: Vec<(String, Vec<u8>)>,
}

/// What a search found.
pub(crate) struct Outcome {
    pub config: Vec<u8>,
    pub state: SearchState,
    /// KL of the chosen configuration on the `--kl-windows` calibration windows.
    pub kl: f64,
    pub bits: f64,
    pub weights: f64,
    pub limit: f64,
    /// Uniform configurations: (name, bits per weight, KL).
    pub uniform: Vec<(String, f64, f64)>,
    /// Searched configurations: (bits per weight, KL).
    pub searched: Vec<(f64, f64)>,
    pub state_files: Vec<PathBuf>,
    /// The seeds of the (last) search: (name, KL on the held windows; `None` if none fits).
    pub seeds: Vec<(String, Option<f64>)>,
    /// Where the time went (seconds): the model loaded twice, the uniform configurations
    /// measured, and in the (last) search each generation's and fill round's end, counted from
    /// the search's start (the seeds are scored before the first generation).
    pub timing: serde_json::Value,
}

/// How a search runs: the flags, the evolution's parameters, the goal and the cache folder.
pub(crate) struct How<'a> {
    pub args: &'a SearchArgs,
    pub params: &'a EvoParams,
    pub goal: &'a Goal,
    pub cache: &'a Path,
}

/// Runs the search (or, for a KL target, the bisection of searches) on `fit` for the goal,
/// saving and resuming its state under `cache/states`.
pub(crate) fn run_search<B: Backend>(
    fit: &mut ModelFitness<B>,
    space: &Space,
    how: &How,
) -> Result<Outcome> {
    let (s, params, goal, cache) = (how.args, how.params, how.goal, how.cache);
    let costs = space.costs;
    let weights = fit.weights() as f64;
    let states = cache.join("states");
    let mut state_files = Vec::new();
    let mut ends = json!({});
    let mut run_at = |fit: &mut ModelFitness<B>, limit: f64| -> Result<SearchState> {
        let budget = Budget {
            costs: costs.to_vec(),
            limit,
        };
        let seeds = seeds_of(&budget, space).1;
        let key = format!(
            "{:016x}",
            hash_bytes(space.key, &limit.to_bits().to_le_bytes())
        );
        let path = states.join(format!("{key}.json"));
        let resume: Option<SearchState> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(r) = resume.as_ref().filter(|r| r.key == key) {
            eprintln!(
                "note: resuming the search from generation {} ({})",
                r.generation,
                path.display()
            );
        }
        let bar = progress::bar(params.generations, "searching");
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "searching [{bar:30}] generation {pos}/{len} {msg} {elapsed_precise} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        let mut clock = SearchClock::start(fit.timing_handle());
        let st = search(&budget, params, &key, fit, &seeds, resume, &mut |st| {
            clock.lap(!st.fill.is_empty());
            bar.set_position(st.generation as u64);
            if let Some(r) = st.fill.last() {
                bar.set_message(format!(
                    "fill round {}: KL {:.4} → {:.4} on held windows, budget used {:.2}%",
                    st.fill.len(),
                    r.before,
                    r.after,
                    100.0 * r.bits_after / limit
                ));
            } else if let Some(g) = st.history.last() {
                bar.set_message(format!(
                    "KL {:.4} (best on held windows {:.4}), budget used {:.2}%",
                    g.fitness,
                    g.elite.unwrap_or(f64::NAN),
                    100.0 * g.bits / limit
                ));
            }
            save_state(&path, st)
        })?;
        bar.finish_and_clear();
        ends = clock.record();
        state_files.push(path);
        Ok(st)
    };
    let top_of = |l: usize| -> Vec<u8> {
        match space.uniform {
            Some(u) => u[l].clone(),
            None => costs.iter().map(|c| l.min(c.len() - 1) as u8).collect(),
        }
    };
    let uniform_cost = |l: usize| -> f64 {
        let c = top_of(l);
        costs.iter().zip(&c).map(|(c, &r)| c[r as usize]).sum()
    };
    // Before the first candidate: the quantized variants on the device where it has room
    // (decision 137), else every swap made dense on the host (decision 129).
    let dv = fit.keep_variants_on_device()?;
    if dv.kept > 0 {
        eprintln!(
            "note: {} variants kept on the device ({:.2} GB of codes), each swap expanded there{}",
            dv.kept,
            dv.bytes as f64 / 1e9,
            if dv.on_host > 0 {
                format!("; {} made dense on the host", dv.on_host)
            } else {
                String::new()
            }
        );
    } else if let (true, Some(why)) = (dv.device, &dv.reason) {
        eprintln!("note: the variants stay on the host, made dense at each swap: {why}");
    }
    let mut uniform = Vec::new();
    let uniform_started = Instant::now();
    let want_uniform = s.plot.is_some() || matches!(goal, Goal::Kl(_));
    if want_uniform {
        let sp = progress::spinner("measuring the uniform configurations");
        for (l, name) in space.names.iter().enumerate() {
            let kl = fit.held_kl(&top_of(l))?;
            uniform.push((name.clone(), uniform_cost(l) / weights, kl));
        }
        sp.finish_and_clear();
    }
    let uniform_seconds = uniform_started.elapsed().as_secs_f64();
    let mut searched_points = Vec::new();
    let (state, limit) = match *goal {
        Goal::Bpw(bpw) => (run_at(fit, bpw * weights)?, bpw * weights),
        Goal::Bits(bits) => (run_at(fit, bits)?, bits),
        Goal::Kl(k) => {
            let top = uniform.iter().position(|u| u.2 <= k).ok_or_else(|| {
                anyhow!(
                    "--target-kl {k}: even the largest level ({}) has KL {:.4} on the \
                     calibration windows",
                    uniform.last().map_or("", |u| u.0.as_str()),
                    uniform.last().map_or(f64::NAN, |u| u.2)
                )
            })?;
            let mut hi = uniform_cost(top);
            let mut best: Option<(SearchState, f64)> = None;
            if top > 0 {
                let mut lo = uniform_cost(top - 1);
                for _ in 0..3 {
                    let mid = 0.5 * (lo + hi);
                    let st = run_at(fit, mid)?;
                    let kl = fit.held_kl(st.chosen())?;
                    searched_points.push((
                        Budget {
                            costs: costs.to_vec(),
                            limit: mid,
                        }
                        .cost(st.chosen())
                            / weights,
                        kl,
                    ));
                    if kl <= k {
                        hi = mid;
                        best = Some((st, mid));
                    } else {
                        lo = mid;
                    }
                }
            }
            match best {
                Some(b) => b,
                None => {
                    let st = SearchState {
                        key: "uniform".into(),
                        generation: 0,
                        parent: top_of(top),
                        history: Vec::new(),
                        elite: None,
                        seeds: Vec::new(),
                        fill: Vec::new(),
                    };
                    (st, hi)
                }
            }
        }
    };
    let budget = Budget {
        costs: costs.to_vec(),
        limit,
    };
    let bits = budget.cost(state.chosen());
    let kl = fit.held_kl(state.chosen())?;
    if !matches!(goal, Goal::Kl(_)) {
        searched_points.push((bits / weights, kl));
    }
    let seeds = seeds_of(&budget, space)
        .0
        .into_iter()
        .zip(state.seeds.clone())
        .collect();
    let mut timing = ends;
    timing["uniform_s"] = json!(uniform_seconds);
    // The fitness's counters over the whole command (uniform points, every search, the final
    // held KL): CRUNCH_FITNESS_TIMING=1 synchronizes the device at their boundaries.
    timing["fitness"] = json!(fit.timing());
    Ok(Outcome {
        timing,
        config: state.chosen().to_vec(),
        state,
        kl,
        bits,
        weights,
        limit,
        uniform,
        searched: searched_points,
        state_files,
        seeds,
    })
}

/// A search's seeds under `budget`: every uniform configuration that fits, then the space's
/// own (made to fit by the search); with their names, and the search's own start named last.
fn seeds_of(budget: &Budget, space: &Space) -> (Vec<String>, Vec<Vec<u8>>) {
    let mut names = Vec::new();
    let mut seeds = Vec::new();
    match space.uniform {
        // Each named level's own configuration, where ranks are not levels.
        Some(uniform) => {
            for (name, c) in space.names.iter().zip(uniform) {
                if budget.cost(c) <= budget.limit {
                    names.push(format!("uniform {name}"));
                    seeds.push(c.clone());
                }
            }
        }
        None => {
            for c in budget.uniform_fits() {
                let l = c.iter().copied().max().unwrap_or(0) as usize;
                names.push(format!("uniform {}", space.names[l]));
                seeds.push(c);
            }
        }
    }
    for (n, c) in &space.seeds {
        names.push(n.clone());
        seeds.push(c.clone());
    }
    names.push("start (best uniform, then random raises)".into());
    (names, seeds)
}

/// Writes the search state after a generation (temporary name, then rename).
fn save_state(path: &Path, st: &SearchState) -> crunch_search::Result<()> {
    let io = |source| crunch_search::Error::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io)?;
    }
    let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
    let text = serde_json::to_vec_pretty(st).expect("a state serializes");
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Searches the first tiny model (written under `d` on the first call) at 3.2 bpw over
    /// `levels` (g32 unless named), two generations of two offspring, into `d/out`, with
    /// `extra` flags: the `--json` record.
    fn tiny_search(
        d: &std::path::Path,
        out: &str,
        levels: &str,
        extra: &[&str],
    ) -> serde_json::Value {
        let model = d.join("model");
        if !model.exists() {
            let spec = crunch_model::testing::tiny_specs()
                .into_iter()
                .next()
                .unwrap();
            crunch_model::testing::write_tiny_model(&spec, &model, 0).unwrap();
        }
        let path = |n: &str| d.join(n).to_str().unwrap().to_string();
        let (model, cache, out) = (path("model"), path("cache"), path(out));
        let mut a = vec!["crunch", "compress", &model, "--out", &out, "--target-bpw"];
        a.extend_from_slice(&["3.2", "--calib", "self:8x16", "--levels", levels]);
        a.extend_from_slice(&["--level-group-size", "32", "--generations", "2"]);
        a.extend_from_slice(&["--offspring", "2", "--selection", "2x1"]);
        a.extend_from_slice(&["--search-cache", &cache, "--json"]);
        a.extend_from_slice(extra);
        crate::run_captured(a).unwrap()[0].clone()
    }

    #[test]
    fn a_search_samples_its_self_calibration_once() {
        let d = tempfile::tempdir().unwrap();
        let v = tiny_search(d.path(), "a", "2,3,4", &[]);
        assert_eq!(v["calibration_windows"], "search", "{v}");
        // GPTQ levels: the write calibrated (with the search's windows).
        assert_eq!(v["methods"]["gptq"], 14, "{v}");
        let recipe = std::fs::read_to_string(d.path().join("a/recipe.toml")).unwrap();
        assert!(recipe.contains("data = \"self:8x16\""), "{recipe}");
        let v = tiny_search(d.path(), "b", "2,3,4", &["--fitness-self", "2"]);
        assert_eq!(v["calibration_windows"], "search", "{v}");
        assert_eq!(v["search"]["fitness_self"], 2, "{v}");
    }

    /// `--prune-levels`: a level larger and worse than another (2-bit g8, 4.25 bpw, against
    /// 3-bit g32 at 3.59) leaves the ladder before the search, given out of order too.
    #[test]
    fn pruning_drops_a_larger_and_worse_level() {
        let d = tempfile::tempdir().unwrap();
        // On by default (decision 150), as --prune-levels asks.
        let v = tiny_search(d.path(), "out", "4,2g8,3,2", &[]);
        assert_eq!(v["search"]["jump"], 3, "{v}");
        let pruned = v["search"]["pruned_levels"].as_array().unwrap();
        let names: Vec<&str> = pruned
            .iter()
            .map(|p| p["level"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"gptq2g8"), "{v}");
        // The search's levels are what is left, and no layer got a dropped one.
        let levels = v["search"]["levels"].as_object().unwrap();
        for n in &names {
            assert!(!levels.contains_key(*n), "{v}");
        }
        assert!(
            levels.contains_key("gptq2g32") && levels.contains_key("gptq3g32"),
            "{v}"
        );
        // --no-prune-levels keeps the ladder as given; --jump overrides the default.
        let v = tiny_search(
            d.path(),
            "kept",
            "4,2g8,3,2",
            &["--no-prune-levels", "--jump", "1"],
        );
        assert!(v["search"].get("pruned_levels").is_none(), "{v}");
        assert_eq!(v["search"]["jump"], 1, "{v}");
    }

    #[test]
    fn the_defaults_parse() {
        let steps = parse_selection(SELECTION).unwrap();
        assert_eq!(steps.last().unwrap().survivors, 1);
        for l in crate::search_args::DEFAULT_LEVELS.split(',') {
            parse_level(l, 128).unwrap();
        }
    }
}
