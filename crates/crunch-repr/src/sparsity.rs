//! Sparsity patterns: how many weights a pruned layer drops and in what arrangement.
//!
//! - `Unstructured(p)`: a fraction p of the weights is pruned.
//! - `NM { n, m }`: at most n non-zeros in every group of m consecutive input columns of a row,
//!   the meaning of "2:4" in NVIDIA's sparse tensor cores and compressed-tensors.
//!
//! Which weights a method prunes is its own business (`crunch_compress::select_mask`); this is
//! the pattern as stored and checked.

use crate::error::{ReprError, Result};
use std::fmt;
use std::str::FromStr;

/// How many weights to prune and in what pattern.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Sparsity {
    /// Fraction of weights pruned, in (0, 1).
    Unstructured(f32),
    /// At most `n` non-zeros in every group of `m` consecutive input columns of a row.
    NM { n: usize, m: usize },
}

impl Sparsity {
    /// Fraction of weights the pattern prunes (the nominal one for unstructured sparsity).
    pub fn pruned_fraction(&self) -> f64 {
        match *self {
            Sparsity::Unstructured(p) => p as f64,
            Sparsity::NM { n, m } => 1.0 - n as f64 / m as f64,
        }
    }

    /// Checks the pattern itself and that it fits a weight with `cols` input columns.
    pub fn validate(&self, cols: usize) -> Result<()> {
        let bad = |msg: String| Err(ReprError::InvalidSparsity(msg));
        match *self {
            Sparsity::Unstructured(p) => {
                if !(p > 0.0 && p < 1.0) {
                    return bad(format!("pruned fraction {p} must be in (0, 1)"));
                }
            }
            Sparsity::NM { n, m } => {
                if n == 0 || n >= m {
                    return bad(format!(
                        "{n}:{m} must keep at least 1 and fewer than all {m} weights of a group"
                    ));
                }
                if cols % m != 0 {
                    return bad(format!(
                        "{n}:{m} needs the input columns in whole groups of {m}, \
                         but the weight has {cols} columns ({} left over)",
                        cols % m
                    ));
                }
            }
        }
        Ok(())
    }
}

impl FromStr for Sparsity {
    type Err = ReprError;

    /// "0.5" (fraction pruned), "50%", or "2:4" (N:M).
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let bad = |why: &str| ReprError::InvalidSparsity(format!("{s:?}: {why}"));
        if let Some((n, m)) = s.split_once(':') {
            let parse = |v: &str| {
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| bad("N:M needs two whole numbers, as in 2:4"))
            };
            let (n, m) = (parse(n)?, parse(m)?);
            if n == 0 || n >= m {
                return Err(bad("N:M needs 0 < N < M (N weights kept of every M)"));
            }
            return Ok(Sparsity::NM { n, m });
        }
        let p = match s.strip_suffix('%') {
            Some(pct) => pct.trim().parse::<f32>().map(|v| v / 100.0),
            None => s.parse::<f32>(),
        }
        .map_err(|_| bad("expected a pruned fraction (0.5), a percentage (50%) or N:M (2:4)"))?;
        if !(p > 0.0 && p < 1.0) {
            return Err(bad("the pruned fraction must be strictly between 0 and 1"));
        }
        Ok(Sparsity::Unstructured(p))
    }
}

impl fmt::Display for Sparsity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sparsity::Unstructured(p) => write!(f, "{p}"),
            Sparsity::NM { n, m } => write!(f, "{n}:{m}"),
        }
    }
}

/// Whether every group of `m` consecutive columns of every row of a row-major [rows, cols]
/// weight has at most `n` non-zeros (false for a shape that does not split into such groups).
pub fn check_nm(weight: &[f32], rows: usize, cols: usize, n: usize, m: usize) -> bool {
    if m == 0 || cols % m != 0 || rows.checked_mul(cols) != Some(weight.len()) {
        return false;
    }
    weight
        .chunks(m)
        .all(|group| group.iter().filter(|&&w| w != 0.0).count() <= n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_and_display() {
        assert_eq!("0.5".parse::<Sparsity>(), Ok(Sparsity::Unstructured(0.5)));
        assert_eq!(" 70% ".parse::<Sparsity>(), Ok(Sparsity::Unstructured(0.7)));
        assert_eq!("2:4".parse::<Sparsity>(), Ok(Sparsity::NM { n: 2, m: 4 }));
        assert_eq!("4:8".parse::<Sparsity>(), Ok(Sparsity::NM { n: 4, m: 8 }));
        for s in ["2:4", "4:8", "0.5", "0.25"] {
            assert_eq!(s.parse::<Sparsity>().unwrap().to_string(), s);
        }
        for bad in [
            "", "0", "1", "1.5", "-0.2", "abc", "2:", "2:2", "0:4", "5:4", "2:4:8", "x%",
        ] {
            let err = bad.parse::<Sparsity>().unwrap_err();
            assert!(matches!(err, ReprError::InvalidSparsity(_)), "{bad}");
            assert!(
                err.to_string().contains(&format!("{:?}", bad.trim())),
                "{err}"
            );
        }
        assert_eq!(Sparsity::NM { n: 2, m: 4 }.pruned_fraction(), 0.5);
    }

    #[test]
    fn validation_names_the_problem() {
        let err = Sparsity::NM { n: 2, m: 4 }.validate(10).unwrap_err();
        assert!(err.to_string().contains("10 columns"), "{err}");
        assert!(Sparsity::NM { n: 2, m: 4 }.validate(12).is_ok());
        assert!(Sparsity::Unstructured(1.0).validate(12).is_err());
        assert!(Sparsity::Unstructured(f32::NAN).validate(12).is_err());
    }

    #[test]
    fn check_nm_counts_non_zeros_per_group() {
        let w = [1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0];
        assert!(check_nm(&w, 2, 4, 2, 4));
        assert!(check_nm(&w, 1, 8, 2, 4));
        assert!(!check_nm(&w, 2, 4, 1, 4));
        assert!(check_nm(&w, 1, 8, 1, 2));
        assert!(!check_nm(&[1.0, 2.0, 0.0, 0.0], 1, 4, 1, 2)); // the first pair has two
        assert!(!check_nm(&w, 2, 4, 2, 3)); // 4 columns do not split into groups of 3
        assert!(!check_nm(&w[..7], 2, 4, 2, 4));
    }
}
