//! `crunch compress`'s search flags ([`SearchArgs`]) and the parsers of their values: sizes,
//! levels (`3`, `3g64`, `3lut`, …) and selection schedules (`8x4,32x1`).

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use crunch_search::evo::Step;
use std::path::PathBuf;

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
    #[command(flatten)]
    pub gguf: crate::gguf_out::MixArgs,
    /// Reference files drawn on the --plot figure, at their bits per weight (linear layers)
    /// and their KL on the same calibration windows (e.g. llama.cpp's GGUFs).
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub compare: Vec<PathBuf>,
    /// Levels a layer may get, in any order (the search sorts them by the uniform model's
    /// size, decision 147): a bit
    /// width (2–8) on the --level-group-size grid, BITSgGROUP for another group size (e.g.
    /// 3g64, 4g32), or BITSlut for GPTQ onto one codebook of 2^BITS f16 levels per row (2lut,
    /// 3lut, 4lut; 3lutg256 for one per 256 columns; decision 143); a suffix sK codes each
    /// group's scale on K bits against one f16 scale per row (3g16s6, 3g32s6; GPTQ only;
    /// decision 145). The default holds free and coded group scales (decision 150: the
    /// ladder, pruning and jumps that met issue 14 at 3.0 and 3.5 bpw on SmolLM2); a large
    /// model's search may want fewer levels, e.g. s26's ten: 2,3,3g64,3g32,4,4g64,4g32,5,6,8.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_LEVELS)]
    pub levels: Vec<String>,
    /// The method that makes every level's variants: gptq (calibration Hessians) or rtn.
    #[arg(long, default_value = "gptq", value_parser = ["gptq", "rtn"])]
    pub level_method: String,
    /// Fit the levels' grids by min–max instead of GPTQ's default search of each group's
    /// clipping range: variants several times faster on a large model (that search runs on the
    /// host, 21 trial grids per group), at a KL cost measured in BENCHMARKS (decision 124).
    #[arg(long)]
    pub level_no_mse: bool,
    /// Group size of the levels that name none (0 = per channel).
    #[arg(long, default_value_t = 128)]
    pub level_group_size: usize,
    /// What each level's variants are made from: sequential (one pass per level, each layer
    /// from the inputs of the model compressed at that level so far, as `crunch quantize`
    /// runs it: the uniform configurations are crunch's uniform models) or independent (one
    /// pass, every level from the uncompressed model's inputs, as in EvoPress).
    #[arg(long, default_value = "sequential", value_parser = ["sequential", "independent"])]
    pub level_inputs: String,
    /// Generations of the evolutionary search.
    #[arg(long, default_value_t = 50)]
    pub generations: usize,
    /// Offspring per generation (λ).
    #[arg(long, default_value_t = 16)]
    pub offspring: usize,
    /// Selection steps, WINDOWSxSURVIVORS each: every candidate is scored on the first step's
    /// calibration windows, the best survive to the next step's (more) windows; the last keeps
    /// one [default: 8x4,32x1 for --format gguf, 2x4,8x1 otherwise (decision 136)].
    #[arg(long)]
    pub selection: Option<String>,
    /// Calibration windows the reported KL (and the plot's points) are measured on.
    #[arg(long, default_value_t = 8)]
    pub kl_windows: usize,
    /// Stop the generations early once the best configuration on the --kl-windows windows has
    /// not improved for N generations (0: run all --generations).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub patience: usize,
    /// Measure the search's fitness on the first L tokens of each window (0: whole windows).
    /// The variants still come from the whole --calib windows; only what the search decides
    /// by gets cheaper (e.g. on a CPU: decision 124).
    #[arg(long, value_name = "L", default_value_t = 0)]
    pub fitness_len: usize,
    /// The most ranks one mutation raises a layer by (1: EvoPress's level switch). In a ladder
    /// with many levels, a larger jump lets a layer step over levels that suit it badly in one
    /// move (decision 149) [default: 3 for crunch's levels, 1 for --format gguf's types
    /// (decision 150)].
    #[arg(long, value_name = "RANKS")]
    pub jump: Option<usize>,
    /// Before searching, drop every level whose uniform model (all layers at that level) is
    /// larger than another level's and no better on the --kl-windows windows: the search then
    /// steps along the uniform models' front (decision 148) [the default for crunch's levels
    /// (decision 150); --format gguf's types are not pruned].
    #[arg(long, overrides_with = "no_prune_levels")]
    pub prune_levels: bool,
    /// Search the ladder as given, without --prune-levels.
    #[arg(long, overrides_with = "prune_levels")]
    pub no_prune_levels: bool,
    /// Rounds of the fill pass after the generations: the budget the result leaves unused goes
    /// to the layer raises that lower the KL on the --kl-windows windows most per byte, each
    /// measured and kept only if it does (0: no fill).
    #[arg(long, default_value_t = 2)]
    pub fill_rounds: usize,
    /// Add N sequences sampled from the model itself (as `--calib self:N×L`, L = --calib-len) to
    /// the windows the search's fitness is measured on, interleaved with the calibration
    /// windows (so the --kl-windows windows hold both): a fitness less specific to the
    /// calibration text. The variants and the importance still come from --calib alone.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub fitness_self: usize,
    /// Where variants and search states are kept [default: $CRUNCH_CACHE/search, else
    /// ~/.cache/crunch/search]. A search killed midway resumes from its last generation.
    #[arg(long, value_name = "DIR")]
    pub search_cache: Option<PathBuf>,
    /// Draw the rate–distortion figure (bits per weight vs calibration KL of the uniform
    /// configurations and the searched one) and the chosen levels per layer: .svg or .png.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
}

/// `--levels`' default (decision 150): s32's union of free-scale and coded-scale levels less
/// the six free-scale levels that `--prune-levels` dropped on SmolLM2 (2g64, 2g32, 3g64, 3g32,
/// 4g64, 4g32: each larger and no better than a coded level), so the variants are made only for
/// levels that can be chosen there. With pruning on it searches the same ladder as the
/// 22 levels did in s33 (a dominated level never dominates a kept one).
pub const DEFAULT_LEVELS: &str =
    "2,2g32s6,2g16s6,3g0,3g256s6,3g128s6,3,3g64s6,3g32s6,3g16s6,4,4g64s6,4g32s6,5,6,8";

impl SearchArgs {
    /// Whether the crunch-format search prunes its ladder first (on unless --no-prune-levels).
    pub fn prune(&self) -> bool {
        !self.no_prune_levels
    }
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

/// A level of `--levels`: bits, group size (0 = per channel), a lookup-table level, and the
/// width of coded group scales (decision 145).
pub(crate) type ParsedLevel = (u8, usize, bool, Option<u8>);

/// `3` (at `group`), `3g64`: bits and group size of a level; `3g16s6`, `3s6`: the same with
/// 6-bit coded group scales against one f16 scale per row (decision 145); `3lut`, `3lutg256`:
/// a lookup-table level (one codebook per row, or per 256 columns).
pub(crate) fn parse_level(s: &str, group: usize) -> Result<ParsedLevel> {
    let t = s.trim();
    if let Some((b, rest)) = t.split_once("lut") {
        let g = match rest.strip_prefix(['g', 'G']) {
            None if rest.is_empty() => Some(0),
            Some(g) => g.parse().ok(),
            None => None,
        };
        return match (b.parse(), g) {
            (Ok(b), Some(g)) => Ok((b, g, true, None)),
            _ => bail!("--levels `{s}`: expected BITSlut or BITSlutgGROUP (e.g. 3lut, 3lutg256)"),
        };
    }
    let (t, scale_bits) = match t.split_once(['s', 'S']) {
        Some((grid, k)) => match k.parse::<u8>() {
            Ok(k) => (grid, Some(k)),
            Err(_) => bail!("--levels `{s}`: expected BITSgGROUPsSCALEBITS (e.g. 3g16s6)"),
        },
        None => (t, None),
    };
    let (b, g) = match t.split_once(['g', 'G']) {
        Some((b, g)) => (b, g.parse().ok()),
        None => (t, Some(group)),
    };
    match (b.parse(), g) {
        (Ok(b), Some(g)) => Ok((b, g, false, scale_bits)),
        _ => bail!(
            "--levels `{s}`: expected BITS, BITSgGROUP, BITSgGROUPsSCALEBITS or BITSlut (e.g. \
             3, 3g64, 3g16s6, 3lut)"
        ),
    }
}

pub(crate) fn parse_selection(s: &str) -> Result<Vec<Step>> {
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
    fn levels_parse() {
        assert_eq!(parse_level("3", 128).unwrap(), (3, 128, false, None));
        assert_eq!(parse_level("4g32", 128).unwrap(), (4, 32, false, None));
        assert_eq!(parse_level("3lut", 128).unwrap(), (3, 0, true, None));
        assert_eq!(parse_level("2lutg256", 128).unwrap(), (2, 256, true, None));
        assert_eq!(parse_level("3g16s6", 128).unwrap(), (3, 16, false, Some(6)));
        assert_eq!(parse_level("2s8", 32).unwrap(), (2, 32, false, Some(8)));
        assert!(parse_level("3g16s", 128).is_err());
        assert!(parse_level("3g16sx", 128).is_err());
        assert!(parse_level("3lut64", 128).is_err());
        assert!(parse_level("lut", 128).is_err());
        assert!(parse_level("x", 128).is_err());
        assert!(parse_level("3g", 128).is_err());
    }

    /// The write after a search calibrates with the windows the search drew: a `--calib
    /// self:N×L` is sampled once (and `--fitness-self` once more), never again for the write
    /// (its record says where its windows came from: a write that loads or samples its own
    /// says "loaded").

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
