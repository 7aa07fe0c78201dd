//! What a budget search reports: its `--json` record (`search`), the one line on stderr, the
//! `--plot` figure, and the `--compare` files' points on it. Shared by the search over crunch's
//! levels (`search.rs`) and the one over GGUF types (`search_gguf.rs`).

use crate::progress;
use crate::search::{Outcome, SearchArgs};
use anyhow::{anyhow, bail, Result};
use crunch_formats::gguf::GgufFile;
use crunch_formats::TensorSource;
use crunch_model::{Checkpoint, Model};
use crunch_runtime::Backend;
use crunch_search::evo::EvoParams;
use serde_json::json;
use std::path::{Path, PathBuf};

/// The `--plot` figure: the rate–distortion points and each unit's chosen level, named by
/// `level_name(unit, level)`; `compare`: reference files as (name, bits per weight, KL).
pub(crate) fn draw(
    path: &Path,
    o: &Outcome,
    units: &[String],
    level_name: &dyn Fn(usize, usize) -> String,
    compare: &[(String, f64, f64)],
) -> Result<()> {
    let layers: Vec<(String, String)> = units
        .iter()
        .zip(&o.config)
        .enumerate()
        .map(|(u, (n, &l))| (n.clone(), level_name(u, l as usize)))
        .collect();
    crunch_search::plot::draw(
        path,
        &crunch_search::plot::Figure {
            uniform: &o.uniform,
            searched: &o.searched,
            compare,
            layers: &layers,
        },
    )?;
    Ok(())
}

/// The `--json` record of a search (`search` in the output's record).
pub(crate) fn record(
    s: &SearchArgs,
    params: &EvoParams,
    o: &Outcome,
    windows: usize,
    seconds: f64,
) -> serde_json::Value {
    json!({
        "target_bpw": s.target_bpw,
        "target_size": s.target_size,
        "target_kl": s.target_kl,
        "budget_bits": o.limit,
        "linear_bpw": o.bits / o.weights,
        "calibration_kl": o.kl,
        "calibration_kl_windows": s.kl_windows.min(windows),
        "fitness": o.state.fitness(),
        "generations": o.state.generation,
        "evaluations": o.state.history.iter().map(|g| g.evaluations).sum::<usize>()
            + o.state.fill.iter().map(|r| r.evaluations).sum::<usize>(),
        "fill": o.state.fill,
        "fitness_self": s.fitness_self,
        "jump": params.jump,
        "uniform": o.uniform.iter().map(|(n, b, k)| json!({"level": n, "linear_bpw": b, "calibration_kl": k})).collect::<Vec<_>>(),
        "searched": o.searched.iter().map(|(b, k)| json!({"linear_bpw": b, "calibration_kl": k})).collect::<Vec<_>>(),
        "search_seconds": seconds,
        "seeds": o.seeds.iter().map(|(n, k)| json!({"seed": n, "calibration_kl": k})).collect::<Vec<_>>(),
        "state": o.state_files,
        "timing": o.timing,
    })
}

/// One line on stderr: what the search reached.
pub(crate) fn summary(s: &SearchArgs, o: &Outcome, windows: usize, seconds: f64) {
    eprintln!(
        "search: {:.3} bits per weight (budget {:.3}), calibration KL {:.4} on {} windows, {} \
         generations, {} fill rounds ({} raises kept), {seconds:.1} s",
        o.bits / o.weights,
        o.limit / o.weights,
        o.kl,
        s.kl_windows.min(windows),
        o.state.generation,
        o.state.fill.len(),
        o.state.fill.iter().map(|r| r.kept).sum::<usize>()
    );
}

/// Each `--compare` GGUF file: (file name, bits per weight of its block linear layers, KL to
/// the base on `windows`).
pub(crate) fn compare_points<B: Backend + Clone>(
    b: &B,
    base: &Model<B>,
    files: &[PathBuf],
    windows: &[Vec<u32>],
) -> Result<Vec<(String, f64, f64)>> {
    let mut out = Vec::new();
    for f in files {
        let bpw = linear_bpw(f)?;
        let sp = progress::spinner(&format!("scoring {}", f.display()));
        let model = Checkpoint::open(f)?.load(b.clone(), |_| {})?;
        let kl = crunch_search::fitness::mean_kl(base, &model, windows, 4)?;
        sp.finish_and_clear();
        let name = f
            .file_stem()
            .map_or_else(|| f.display().to_string(), |s| s.to_string_lossy().into());
        out.push((name, bpw, kl));
    }
    Ok(out)
}

/// Bits per weight of a GGUF file's block linear layers.
fn linear_bpw(path: &Path) -> Result<f64> {
    let f = GgufFile::open(path)?;
    let (mut bits, mut n) = (0f64, 0f64);
    for t in f.tensors() {
        if !crate::search_gguf::is_block_linear(&t.name) {
            continue;
        }
        let numel: usize = t.shape.iter().product();
        let bytes = t
            .dtype
            .bytes_for(numel)
            .ok_or_else(|| anyhow!("{}: `{}` is not whole blocks", path.display(), t.name))?;
        bits += 8.0 * bytes as f64;
        n += numel as f64;
    }
    if n == 0.0 {
        bail!(
            "{}: no block linear layers (blk.N.attn_q.weight, ...)",
            path.display()
        );
    }
    Ok(bits / n)
}
