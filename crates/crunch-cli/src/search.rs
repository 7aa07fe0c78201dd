//! `crunch compress MODEL --target-bpw B | --target-size S | --target-kl K`: the per-layer
//! budget search (crunch-search, EvoPress). The search picks a level per linear layer; the
//! result is then written by the one driver from a recipe that names every layer's level
//! (`recipe.toml`), so `crunch compress --recipe OUT/recipe.toml` rebuilds it without searching.

use crate::compress::OutputArgs;
use crate::device::with_backend;
use crate::progress::{self, Bars};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use crunch_calib::{RecipeFile, Stage};
use crunch_model::model::{tensor_shapes, BLOCK_LINEARS};
use crunch_model::Checkpoint;
use crunch_runtime::Backend;
use crunch_search::database::{model_hash, windows_hash};
use crunch_search::evo::Step;
use crunch_search::{
    hash_bytes, search, Budget, Database, EvoParams, Level, ModelFitness, SearchState, HASH_START,
};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args, Clone, Debug)]
pub struct SearchArgs {
    /// Search a level per linear layer for this average storage cost of the block linear
    /// layers, in bits per weight (codes, scales and zero points), e.g. 3.5.
    #[arg(long, value_name = "BPW")]
    pub target_bpw: Option<f64>,
    /// Search for this size of the written tensors (e.g. 60MB, 93.5MB, 1.2GB; MB = 10^6
    /// bytes): the block linear layers get what the kept tensors (embeddings, norms) leave.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub target_size: Option<u64>,
    /// Search for the smallest model whose calibration KL to the original is at most this
    /// (bisection over the budget between the uniform levels that bracket it).
    #[arg(long, value_name = "KL")]
    pub target_kl: Option<f64>,
    /// Bit widths a layer may get (ascending; crunch's grids: 2, 3, 4, 8).
    #[arg(long, value_delimiter = ',', default_value = "2,3,4,8")]
    pub levels: Vec<u8>,
    /// The method that makes every level's variants: gptq (calibration Hessians) or rtn.
    #[arg(long, default_value = "gptq", value_parser = ["gptq", "rtn"])]
    pub level_method: String,
    /// Group size of every level's grid (0 = per channel).
    #[arg(long, default_value_t = 128)]
    pub level_group_size: usize,
    /// Generations of the evolutionary search.
    #[arg(long, default_value_t = 50)]
    pub generations: usize,
    /// Offspring per generation (λ).
    #[arg(long, default_value_t = 16)]
    pub offspring: usize,
    /// Selection steps, WINDOWSxSURVIVORS each: every candidate is scored on the first step's
    /// calibration windows, the best survive to the next step's (more) windows; the last keeps
    /// one.
    #[arg(long, default_value = "2x4,8x1")]
    pub selection: String,
    /// Calibration windows the reported KL (and the plot's points) are measured on.
    #[arg(long, default_value_t = 8)]
    pub kl_windows: usize,
    /// Where variants and search states are kept [default: $CRUNCH_CACHE/search, else
    /// ~/.cache/crunch/search]. A search killed midway resumes from its last generation.
    #[arg(long, value_name = "DIR")]
    pub search_cache: Option<PathBuf>,
    /// Draw the rate–distortion figure (bits per weight vs calibration KL of the uniform
    /// configurations and the searched one) and the chosen levels per layer: .svg or .png.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
}

/// `60MB`, `93.5MB`, `1.2GB`, `500kB`, `1234` (bytes); decimal units.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let x: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 60MB, 93.5MB, 1.2GB)"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        u => {
            return Err(format!(
                "`{s}`: unknown unit `{u}` (B, kB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    if !(x.is_finite() && x > 0.0) {
        return Err(format!("`{s}`: a size must be positive"));
    }
    Ok((x * mult).round() as u64)
}

fn parse_selection(s: &str) -> Result<Vec<Step>> {
    s.split(',')
        .map(|part| {
            let (w, k) = part
                .trim()
                .split_once(['x', '×'])
                .ok_or_else(|| anyhow!("--selection `{part}`: expected WINDOWSxSURVIVORS"))?;
            Ok(Step {
                windows: w.trim().parse().context("--selection: windows")?,
                survivors: k.trim().parse().context("--selection: survivors")?,
            })
        })
        .collect()
}

fn cache_root(flag: &Option<PathBuf>) -> PathBuf {
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

enum Goal {
    /// Average bits per weight of the block linear layers.
    Bpw(f64),
    /// Bits for all block linear layers together.
    Bits(f64),
    /// The smallest model with at most this calibration KL.
    Kl(f64),
}

/// What a search found.
struct Found {
    config: Vec<u8>,
    units: Vec<String>,
    levels: Vec<Level>,
    state: SearchState,
    kl: f64,
    bits: f64,
    weights: f64,
    limit: f64,
    uniform: Vec<(String, f64, f64)>,
    searched: Vec<(f64, f64)>,
    cached: usize,
    made: usize,
    state_files: Vec<PathBuf>,
}

pub fn run(common: &OutputArgs, s: &SearchArgs) -> Result<()> {
    let c = common;
    if c.format == Some(crunch_export::Format::Gguf) {
        bail!(
            "--format gguf with a target is not supported yet: the search's levels are crunch's \
             grids; write --format crunch (or compressed-tensors) instead"
        );
    }
    if !c.skip.is_empty() {
        bail!("--skip is not supported with a target yet: every block linear layer gets a level");
    }
    let levels: Vec<Level> = s
        .levels
        .iter()
        .map(|&b| Level::quant(&s.level_method, b, s.level_group_size))
        .collect::<crunch_search::Result<_>>()?;
    if levels.len() < 2 {
        bail!("--levels: a search needs at least two levels");
    }
    let params = EvoParams {
        generations: s.generations,
        offspring: s.offspring,
        steps: parse_selection(&s.selection)?,
        seed: c.calib.seed(),
    };
    params.validate()?;
    crate::output_notes(crunch_export::prepare_output(
        &c.out,
        &[c.model.as_path()],
        crunch_export::OutputKind::Dir,
        c.force,
    )?);
    let ckpt = Checkpoint::open(&c.model)?;
    let (windows, _) = c.calib.load(&ckpt, c.device, "a budget search")?;
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
    let found = with_backend!(c.device, b => searched(&b, &ckpt, &levels, &windows, s, &params, &goal, &cache)?);
    let search_seconds = start.elapsed().as_secs_f64();
    if let Some(p) = &s.plot {
        let layers: Vec<(String, usize)> = found
            .units
            .iter()
            .zip(&found.config)
            .map(|(n, &l)| (n.clone(), l as usize))
            .collect();
        let names: Vec<String> = found.levels.iter().map(|l| l.short()).collect();
        crunch_search::plot::draw(
            p,
            &crunch_search::plot::Figure {
                uniform: &found.uniform,
                searched: &found.searched,
                layers: &layers,
                level_names: &names,
            },
        )?;
    }
    let mut stages = Vec::new();
    let mut counts = serde_json::Map::new();
    for (l, level) in found.levels.iter().enumerate() {
        let layers: Vec<String> = found
            .units
            .iter()
            .zip(&found.config)
            .filter(|(_, &x)| x as usize == l)
            .map(|(n, _)| n.clone())
            .collect();
        counts.insert(level.short(), json!(layers.len()));
        if !layers.is_empty() {
            stages.push(Stage {
                method: level.stage.method.clone(),
                layers,
            });
        }
    }
    let extra = json!({
        "target_bpw": s.target_bpw,
        "target_size": s.target_size,
        "target_kl": s.target_kl,
        "budget_bits": found.limit,
        "linear_bpw": found.bits / found.weights,
        "calibration_kl": found.kl,
        "calibration_kl_windows": s.kl_windows.min(windows.len()),
        "fitness": found.state.fitness(),
        "generations": found.state.generation,
        "evaluations": found.state.history.iter().map(|g| g.evaluations).sum::<usize>(),
        "levels": counts,
        "uniform": found.uniform.iter().map(|(n, b, k)| json!({"level": n, "linear_bpw": b, "calibration_kl": k})).collect::<Vec<_>>(),
        "variants_cached": found.cached,
        "variants_made": found.made,
        "search_seconds": search_seconds,
        "state": found.state_files,
    });
    if !c.json {
        eprintln!(
            "search: {:.3} bits per weight (budget {:.3}), calibration KL {:.4} on {} windows, {} \
             generations, {search_seconds:.1} s",
            found.bits / found.weights,
            found.limit / found.weights,
            found.kl,
            s.kl_windows.min(windows.len()),
            found.state.generation
        );
    }
    crate::compress::run(c, RecipeFile::default(), stages, Some(extra))
}

#[allow(clippy::too_many_arguments)]
fn searched<B: Backend + Clone>(
    b: &B,
    ckpt: &Checkpoint,
    levels: &[Level],
    windows: &[Vec<u32>],
    s: &SearchArgs,
    params: &EvoParams,
    goal: &Goal,
    cache: &Path,
) -> Result<Found> {
    let bar = progress::bar(ckpt.config.layers, "variants");
    let db = Database::build(
        b,
        ckpt,
        levels,
        Some(windows),
        Some(&cache.join("variants")),
        &mut Bars(bar.clone()),
    )?;
    bar.finish_and_clear();
    let costs = db.costs()?;
    let weights = db.weights() as f64;
    let sp = progress::spinner("loading the model twice (base and candidate)");
    let base = ckpt.load(b.clone(), |_| {})?;
    let model = ckpt.load(b.clone(), |_| {})?;
    sp.finish_and_clear();
    let mut fit = ModelFitness::new(&base, model, &db, windows, params.seed);
    let kl_set = &windows[..s.kl_windows.clamp(1, windows.len())];
    let key_base = {
        let mut h = hash_bytes(HASH_START, &model_hash(&ckpt.path)?.to_le_bytes());
        h = hash_bytes(h, &windows_hash(windows).to_le_bytes());
        for l in levels {
            h = hash_bytes(h, l.describe().as_bytes());
        }
        hash_bytes(h, serde_json::to_string(params)?.as_bytes())
    };
    let states = cache.join("states");
    let mut state_files = Vec::new();
    let mut run_at = |fit: &mut ModelFitness<B>, limit: f64| -> Result<SearchState> {
        let budget = Budget {
            costs: costs.clone(),
            limit,
        };
        let key = format!(
            "{:016x}",
            hash_bytes(key_base, &limit.to_bits().to_le_bytes())
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
        let st = search(&budget, params, &key, fit, resume, &mut |st| {
            bar.set_position(st.generation as u64);
            let g = st.history.last().expect("a generation ran");
            bar.set_message(format!(
                "best KL {:.4}, budget used {:.2}%",
                g.fitness,
                100.0 * g.bits / limit
            ));
            save_state(&path, st)
        })?;
        bar.finish_and_clear();
        state_files.push(path);
        Ok(st)
    };
    let uniform_cost = |l: usize| -> f64 { costs.iter().map(|c| c[l]).sum() };
    let mut uniform = Vec::new();
    let want_uniform = s.plot.is_some() || matches!(goal, Goal::Kl(_));
    if want_uniform {
        let sp = progress::spinner("measuring the uniform configurations");
        for (l, level) in levels.iter().enumerate() {
            let kl = fit.kl_on(&vec![l as u8; costs.len()], kl_set, 4)?;
            uniform.push((level.short(), uniform_cost(l) / weights, kl));
        }
        sp.finish_and_clear();
    }
    let mut searched_points = Vec::new();
    let (state, limit) = match *goal {
        Goal::Bpw(bpw) => (run_at(&mut fit, bpw * weights)?, bpw * weights),
        Goal::Bits(bits) => (run_at(&mut fit, bits)?, bits),
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
                    let st = run_at(&mut fit, mid)?;
                    let kl = fit.kl_on(&st.parent, kl_set, 4)?;
                    searched_points.push((
                        Budget {
                            costs: costs.clone(),
                            limit: mid,
                        }
                        .cost(&st.parent)
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
                        parent: vec![top as u8; costs.len()],
                        history: Vec::new(),
                    };
                    (st, hi)
                }
            }
        }
    };
    let budget = Budget {
        costs: costs.clone(),
        limit,
    };
    let bits = budget.cost(&state.parent);
    let kl = fit.kl_on(&state.parent, kl_set, 4)?;
    if !matches!(goal, Goal::Kl(_)) {
        searched_points.push((bits / weights, kl));
    }
    Ok(Found {
        config: state.parent.clone(),
        units: db.units.iter().map(|u| u.full_name()).collect(),
        levels: levels.to_vec(),
        state,
        kl,
        bits,
        weights,
        limit,
        uniform,
        searched: searched_points,
        cached: db.cached,
        made: db.made,
        state_files,
    })
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

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("60MB"), Ok(60_000_000));
        assert_eq!(parse_size("93.5MB"), Ok(93_500_000));
        assert_eq!(parse_size("1.2 GB"), Ok(1_200_000_000));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1234"), Ok(1234));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("0MB").is_err());
    }

    #[test]
    fn selection_parses() {
        let s = parse_selection("2x4, 8x1").unwrap();
        assert_eq!(
            s[1],
            Step {
                windows: 8,
                survivors: 1
            }
        );
        assert!(parse_selection("2-4").is_err());
    }
}
