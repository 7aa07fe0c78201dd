//! The calibration flags shared by every command that looks at data (`--calib FILE` or
//! `--calib self:N×L`, `--calib-samples`, `--calib-len`, `--seed`).

use crate::device::{with_backend, Device};
use crate::progress;
use anyhow::{bail, Context, Result};
use clap::Args;
use crunch_calib::{default_batch, sample_windows, windows, SelfSpec};
use crunch_model::Checkpoint;
use crunch_repr::format::Calibration;
use std::path::{Path, PathBuf};

#[derive(Args, Clone, Debug, Default)]
pub struct CalibArgs {
    /// Calibration data (methods that look at data): a text file to draw windows from, or `self:N×L` (also
    /// `self:NxL`, e.g. `self:128x512`) to sample N sequences of L tokens from the model itself
    /// when you have no data: each starts at the BOS token (else a random token) and continues
    /// by plain sampling at temperature 1, reproducible from --seed. Name a file that really is
    /// called `self:...` as `./self:...`.
    #[arg(long, value_name = "FILE|self:NxL")]
    pub calib: Option<PathBuf>,
    /// Calibration windows to draw from FILE [default: 128] (`self:N×L` sets N itself).
    #[arg(long, value_name = "N")]
    pub calib_samples: Option<usize>,
    /// Tokens per calibration window [default: 512] (`self:N×L` sets L itself).
    #[arg(long, value_name = "L")]
    pub calib_len: Option<usize>,
    /// Seed for drawing (or, with `self:`, sampling) the windows [default: 0, or the recipe's
    /// seed]: the same seed gives byte-identical output.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl CalibArgs {
    /// `--seed`, 0 when not given.
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or(0)
    }

    /// The calibration windows, and how they were made (for the recipe). `who` names the
    /// option that needs them, for the error when `--calib` is missing.
    pub fn load(
        &self,
        ckpt: &Checkpoint,
        device: Device,
        who: &str,
    ) -> Result<(Vec<Vec<u32>>, Calibration)> {
        let Some(path) = &self.calib else {
            bail!(
                "{who} needs --calib FILE (text to calibrate on) or --calib self:NxL \
                 (text sampled from the model)"
            );
        };
        let spec = match path.to_str() {
            Some(s) => SelfSpec::parse(s).map_err(|e| anyhow::anyhow!("--calib {e}"))?,
            None => None,
        };
        match spec {
            Some(spec) => self_windows(self, device, ckpt, spec, self.seed()),
            None => file_windows(self, ckpt, path),
        }
    }
}

/// The budget search's fitness windows: `windows` interleaved with `--fitness-self N` sequences
/// sampled from the model (`self:N×L`, L the calibration windows' length, seeded by `--seed`),
/// so that every prefix (the held windows) holds both; `windows` alone when N is 0.
pub fn with_self_samples(
    args: &CalibArgs,
    device: Device,
    ckpt: &Checkpoint,
    windows: &[Vec<u32>],
    s: &crate::search::SearchArgs,
) -> Result<Vec<Vec<u32>>> {
    let n = s.fitness_self;
    let Some(len) = windows.first().map(Vec::len).filter(|_| n > 0) else {
        return Ok(fitness_prefixes(windows.to_vec(), s.fitness_len));
    };
    let spec = SelfSpec { samples: n, len };
    let sampled = self_windows(&CalibArgs::default(), device, ckpt, spec, args.seed())?.0;
    let mut out = Vec::with_capacity(windows.len() + sampled.len());
    for i in 0..windows.len().max(sampled.len()) {
        out.extend(windows.get(i).cloned());
        out.extend(sampled.get(i).cloned());
    }
    Ok(fitness_prefixes(out, s.fitness_len))
}

/// `--fitness-len L`: each window's first L tokens (0, or L at least the window's length:
/// the window as it is).
fn fitness_prefixes(mut windows: Vec<Vec<u32>>, len: usize) -> Vec<Vec<u32>> {
    if len > 0 {
        for w in &mut windows {
            w.truncate(len);
        }
    }
    windows
}

pub fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Windows drawn from a text file (`--calib FILE`).
fn file_windows(
    args: &CalibArgs,
    ckpt: &Checkpoint,
    path: &Path,
) -> Result<(Vec<Vec<u32>>, Calibration)> {
    let samples = args.calib_samples.unwrap_or(DEFAULT_SAMPLES);
    let len = args.calib_len.unwrap_or(DEFAULT_LEN);
    crunch_calib::check_calibration_size(&ckpt.config, samples, len)?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read as UTF-8 text", path.display()))?;
    let tokenizer = ckpt.tokenizer()?;
    let ids = tokenizer
        .encode(text.as_str(), false)
        .map_err(|e| anyhow::anyhow!("{}: tokenizing failed: {e}", path.display()))?
        .get_ids()
        .to_vec();
    let w = windows(&ids, samples, len, args.seed())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let c = Calibration {
        data: file_name(path),
        samples,
        tokens_per_sample: len,
        seed: args.seed(),
    };
    Ok((w, c))
}

/// Windows sampled from the model itself (`--calib self:N×L`).
fn self_windows(
    args: &CalibArgs,
    device: Device,
    ckpt: &Checkpoint,
    spec: SelfSpec,
    seed: u64,
) -> Result<(Vec<Vec<u32>>, Calibration)> {
    let label = spec.label();
    let given = [
        ("--calib-samples", args.calib_samples, spec.samples, "N"),
        ("--calib-len", args.calib_len, spec.len, "L"),
    ];
    for (flag, value, from_spec, letter) in given {
        if let Some(v) = value.filter(|&v| v != from_spec) {
            bail!(
                "{flag} {v} conflicts with --calib {label}, which sets {letter} = {from_spec} \
                 (leave {flag} out)"
            );
        }
    }
    crunch_calib::check_calibration_size(&ckpt.config, spec.samples, spec.len)?;
    let w = with_backend!(device, b => {
        let sp = progress::spinner("loading model");
        let model = ckpt.load(b, |_| {})?;
        sp.finish_and_clear();
        let bar = progress::bar(spec.samples * spec.len, "sampling");
        let batch = default_batch(&ckpt.config, spec.len);
        let w = sample_windows(
            &model,
            spec,
            ckpt.bos_token(),
            seed,
            batch,
            &mut |done, _| bar.set_position(done as u64),
        )
        .map_err(|e| anyhow::anyhow!("--calib {label}: {e}"))?;
        bar.finish_and_clear();
        w
    });
    let c = Calibration {
        data: label,
        samples: spec.samples,
        tokens_per_sample: spec.len,
        seed,
    };
    Ok((w, c))
}

const DEFAULT_SAMPLES: usize = 128;
const DEFAULT_LEN: usize = 512;
