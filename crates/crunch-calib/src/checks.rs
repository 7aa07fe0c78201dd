//! Checks of what a command asks for against what the input and the machine can supply, made
//! before any calibration or large allocation: calibration windows against the machine's
//! memory. (Group sizes against every layer's columns are `crate::check_recipe`'s.)

use crate::{Result, WindowProblem};
use crunch_model::ModelConfig;

/// Bytes of calibration activations for `samples` windows of `len` tokens (inputs and
/// outputs of a block, f32), the part of calibration's memory that the flags set.
pub fn calibration_bytes(cfg: &ModelConfig, samples: usize, len: usize) -> Option<u64> {
    let per_token = cfg.hidden.max(cfg.max_intermediate()).checked_mul(4 * 2)? as u64;
    (samples as u64)
        .checked_mul(len as u64)?
        .checked_mul(per_token)
}

/// Memory the system can still give (`MemAvailable` of /proc/meminfo), if known.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Refuses `samples` × `len` calibration tokens whose activations could not fit in the
/// memory available now, before any of it is allocated (a billion samples used to grow
/// until the kernel killed the process).
pub fn check_calibration_size(cfg: &ModelConfig, samples: usize, len: usize) -> Result<()> {
    let need = calibration_bytes(cfg, samples, len);
    let avail = available_memory();
    match (need, avail) {
        (None, _) => Err(WindowProblem::Overflow { samples, len }.into()),
        (Some(need), Some(available)) if need > available => Err(WindowProblem::OutOfMemory {
            samples,
            len,
            hidden: cfg.hidden,
            need,
            available,
        }
        .into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg() -> ModelConfig {
        let spec = crunch_model::testing::tiny_specs().remove(0);
        ModelConfig::from_hf_json(Path::new("c"), &spec.config).unwrap()
    }

    #[test]
    fn calibration_larger_than_memory_is_refused() {
        let c = cfg();
        assert!(check_calibration_size(&c, 4, 16).is_ok());
        let e = check_calibration_size(&c, usize::MAX, 512)
            .unwrap_err()
            .to_string();
        assert!(e.contains("overflows"), "{e}");
        if available_memory().is_some() {
            let e = check_calibration_size(&c, 1_000_000_000, 512)
                .unwrap_err()
                .to_string();
            assert!(e.contains("GB of memory is available"), "{e}");
        }
    }
}
