//! Sparsity patterns and mask selection from a score matrix (higher score = more worth keeping).
//!
//! - `Unstructured(p)`: a fraction p of the weights is pruned, compared either within each output
//!   row (Wanda's comparison group, Sun et al. 2023: rows are independent outputs, and comparing
//!   across rows lets a few rows lose most of their weights) or over the whole layer (the usual
//!   magnitude baseline). A row prunes round(p·cols) weights, a layer round(p·rows·cols).
//! - `NM { n, m }`: at most n non-zeros in every group of m consecutive input columns of a row,
//!   the meaning of "2:4" in NVIDIA's sparse tensor cores and compressed-tensors. Selection keeps
//!   exactly n per group (prunes m − n), which is what the hardware layouts store.
//!
//! Ties are broken by index: among equal scores the weight with the lower column (or, per
//! layer, the lower row-major) index is pruned first, so masks never depend on sort internals.

use crate::error::{CompressError, Result};
use crate::mask::Bitmask;
use rayon::prelude::*;
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

/// Which weights an unstructured selection compares with each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskScope {
    /// Each output row prunes its own round(p·cols) lowest scores.
    PerRow,
    /// The round(p·rows·cols) lowest scores of the whole matrix are pruned.
    PerLayer,
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
        let bad = |msg: String| Err(CompressError::InvalidSparsity(msg));
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
    type Err = CompressError;

    /// "0.5" (fraction pruned), "50%", or "2:4" (N:M).
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let bad = |why: &str| CompressError::InvalidSparsity(format!("{s:?}: {why}"));
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

/// Weights pruned from `len` by a fraction `p`.
pub(crate) fn pruned_count(p: f32, len: usize) -> usize {
    ((p as f64 * len as f64).round() as usize).min(len)
}

/// Marks as pruned (`false`) the `k` lowest of `scores` in `kept` (same length), ordered by
/// (score, index): a partial selection finds the k-th smallest score t, then every score below
/// t is pruned and the first ones equal to t fill up the count. One f32 copy (no index array),
/// so a per-layer selection costs 4 bytes per weight.
pub(crate) fn prune_lowest(scores: &[f32], k: usize, kept: &mut [bool]) {
    debug_assert_eq!(scores.len(), kept.len());
    if k == 0 {
        return;
    }
    if k >= scores.len() {
        kept.iter_mut().for_each(|b| *b = false);
        return;
    }
    let mut copy = scores.to_vec();
    let (_, &mut t, _) = copy.select_nth_unstable_by(k - 1, f32::total_cmp);
    let below = scores.iter().filter(|s| s.total_cmp(&t).is_lt()).count();
    let mut ties = k - below;
    for (s, kept) in scores.iter().zip(kept) {
        match s.total_cmp(&t) {
            std::cmp::Ordering::Less => *kept = false,
            std::cmp::Ordering::Equal if ties > 0 => {
                *kept = false;
                ties -= 1;
            }
            _ => {}
        }
    }
}

/// The mask keeping the highest `scores` (row-major [rows, cols]) under `sparsity`; `scope`
/// chooses the comparison group of unstructured sparsity (N:M always compares within a group).
pub fn select_mask(
    scores: &[f32],
    rows: usize,
    cols: usize,
    sparsity: Sparsity,
    scope: MaskScope,
) -> Result<Bitmask> {
    sparsity.validate(cols)?;
    if rows.checked_mul(cols) != Some(scores.len()) || cols == 0 {
        return Err(CompressError::WeightShape {
            len: scores.len(),
            rows,
            cols,
        });
    }
    let mut kept = vec![true; scores.len()];
    match (sparsity, scope) {
        (Sparsity::Unstructured(p), MaskScope::PerLayer) => {
            prune_lowest(scores, pruned_count(p, scores.len()), &mut kept);
        }
        (Sparsity::Unstructured(p), MaskScope::PerRow) => {
            let k = pruned_count(p, cols);
            kept.par_chunks_mut(cols)
                .zip(scores.par_chunks(cols))
                .for_each(|(kept, scores)| prune_lowest(scores, k, kept));
        }
        (Sparsity::NM { n, m }, _) => {
            kept.par_chunks_mut(cols)
                .zip(scores.par_chunks(cols))
                .for_each(|(kept, scores)| {
                    for (kept, scores) in kept.chunks_mut(m).zip(scores.chunks(m)) {
                        prune_lowest(scores, m - n, kept);
                    }
                });
        }
    }
    Bitmask::from_bools(rows, cols, &kept)
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
    use crate::testutil::Rng;
    use proptest::prelude::*;

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
            assert!(matches!(err, CompressError::InvalidSparsity(_)), "{bad}");
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
    fn selection_per_row_per_layer_and_nm() {
        let scores = [
            5.0, 1.0, 3.0, 2.0, //
            9.0, 8.0, 7.0, 6.0,
        ];
        let bools = |sp, scope| {
            select_mask(&scores, 2, 4, sp, scope)
                .unwrap()
                .to_bools()
                .iter()
                .map(|&b| b as u8)
                .collect::<Vec<_>>()
        };
        let half = Sparsity::Unstructured(0.5);
        assert_eq!(bools(half, MaskScope::PerRow), [1, 0, 1, 0, 1, 1, 0, 0]);
        assert_eq!(bools(half, MaskScope::PerLayer), [0, 0, 0, 0, 1, 1, 1, 1]);
        let nm = Sparsity::NM { n: 1, m: 2 };
        assert_eq!(bools(nm, MaskScope::PerRow), [1, 0, 1, 0, 1, 0, 1, 0]);
        // Ties: the lower index is pruned first.
        let flat = select_mask(
            &[1.0; 8],
            2,
            4,
            Sparsity::NM { n: 2, m: 4 },
            MaskScope::PerRow,
        );
        assert_eq!(flat.unwrap().as_bytes(), &[0b1100_1100]);
        let flat = select_mask(&[1.0; 8], 2, 4, half, MaskScope::PerLayer).unwrap();
        assert_eq!(flat.as_bytes(), &[0b1111_0000]);
        assert!(select_mask(&scores, 2, 3, half, MaskScope::PerRow).is_err());
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

    #[test]
    fn row_counts_match_the_fraction() {
        let mut rng = Rng::new(1);
        let scores = rng.normals(7 * 50);
        for p in [0.1f32, 0.5, 0.62, 0.9] {
            let m = select_mask(&scores, 7, 50, Sparsity::Unstructured(p), MaskScope::PerRow);
            let b = m.unwrap().to_bools();
            for row in b.chunks(50) {
                let pruned = row.iter().filter(|&&k| !k).count();
                assert_eq!(pruned, (p as f64 * 50.0).round() as usize);
            }
        }
    }

    proptest! {
        #[test]
        fn lowest_selection_equals_a_full_sort_by_score_then_index(
            scores in proptest::collection::vec(
                prop_oneof![(-3i8..3).prop_map(|v| v as f32), Just(-0.0f32), -1.0f32..1.0], 1..60),
            frac in 0.0f64..=1.0,
        ) {
            let k = (frac * scores.len() as f64) as usize;
            let mut kept = vec![true; scores.len()];
            prune_lowest(&scores, k, &mut kept);
            let mut order: Vec<usize> = (0..scores.len()).collect();
            order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
            let mut want = vec![true; scores.len()];
            for &i in &order[..k] {
                want[i] = false;
            }
            prop_assert_eq!(kept, want);
        }

        #[test]
        fn nm_selection_keeps_the_top_n_of_each_group(
            scores in proptest::collection::vec(-4i8..4, 48).prop_map(
                |v| v.into_iter().map(|x| x as f32).collect::<Vec<_>>()),
            nm in prop_oneof![Just((2usize, 4usize)), Just((4, 8)), Just((1, 4)), Just((3, 16))],
        ) {
            let (n, m) = nm;
            let mask = select_mask(&scores, 3, 16, Sparsity::NM { n, m }, MaskScope::PerRow);
            let kept = mask.unwrap().to_bools();
            for (g, (k, s)) in kept.chunks(m).zip(scores.chunks(m)).enumerate() {
                prop_assert_eq!(k.iter().filter(|&&b| b).count(), n, "group {}", g);
                // Every kept score beats every pruned one, ties going to the higher index.
                for i in 0..m {
                    for j in 0..m {
                        if k[i] && !k[j] {
                            prop_assert!(s[i] > s[j] || (s[i] == s[j] && i > j));
                        }
                    }
                }
            }
            let pruned: Vec<f32> = scores.iter().zip(&kept)
                .map(|(&s, &k)| if k { s + 10.0 } else { 0.0 }).collect();
            prop_assert!(check_nm(&pruned, 3, 16, n, m));
        }
    }
}
