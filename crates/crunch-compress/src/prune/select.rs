//! Choosing which weights to prune from a score matrix (higher score = more worth keeping).
//!
//! - `Unstructured(p)`: compared either within each output row (Wanda's comparison group, Sun et
//!   al. 2023: rows are independent outputs, and comparing across rows lets a few rows lose most
//!   of their weights) or over the whole layer (the usual magnitude baseline). A row prunes
//!   round(p·cols) weights, a layer round(p·rows·cols).
//! - `NM { n, m }`: selection keeps exactly n per group of m (prunes m − n), which is what the
//!   hardware layouts store.
//!
//! Ties are broken by index: among equal scores the weight with the lower column (or, per
//! layer, the lower row-major) index is pruned first, so masks never depend on sort internals.

use crate::error::Result;
use crunch_repr::{Bitmask, PrunedWeight, ReprError, Sparsity};
use rayon::prelude::*;

/// Which weights an unstructured selection compares with each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskScope {
    /// Each output row prunes its own round(p·cols) lowest scores.
    PerRow,
    /// The round(p·rows·cols) lowest scores of the whole matrix are pruned.
    PerLayer,
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
        return Err(ReprError::WeightShape {
            len: scores.len(),
            rows,
            cols,
        }
        .into());
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
    Ok(Bitmask::from_bools(rows, cols, &kept)?)
}

/// Prunes `weight` to the mask that keeps its highest `scores`, without updating the kept
/// weights (magnitude, Wanda). Shapes are checked by the caller.
pub(crate) fn prune_by_scores(
    weight: &[f32],
    rows: usize,
    cols: usize,
    scores: &[f32],
    sparsity: Sparsity,
    scope: MaskScope,
) -> Result<PrunedWeight> {
    let mask = select_mask(scores, rows, cols, sparsity, scope)?;
    let mut weight = weight.to_vec();
    mask.apply(&mut weight)?;
    Ok(PrunedWeight {
        sparsity,
        rows,
        cols,
        weight,
        mask,
        quant: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;
    use crunch_repr::check_nm;
    use proptest::prelude::*;

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
