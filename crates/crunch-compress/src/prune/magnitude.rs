//! Magnitude pruning: drop the weights of smallest |W|, the baseline every pruning paper compares
//! with (Han et al. 2015; Sun et al. 2023 and Frantar & Alistarh 2023 report it per layer).
//!
//! Unstructured sparsity compares the whole layer (one threshold per matrix), N:M each group of
//! m columns. No calibration data, no weight update.

use super::select::{prune_by_scores, MaskScope};
use crate::error::Result;
use crunch_repr::{validate_weight, PrunedWeight, Sparsity};

/// Prunes a row-major [rows, cols] weight by magnitude.
pub fn magnitude(
    weight: &[f32],
    rows: usize,
    cols: usize,
    sparsity: Sparsity,
) -> Result<PrunedWeight> {
    validate_weight(weight, rows, cols)?;
    sparsity.validate(cols)?;
    let scores: Vec<f32> = weight.iter().map(|w| w.abs()).collect();
    prune_by_scores(weight, rows, cols, &scores, sparsity, MaskScope::PerLayer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;
    use crunch_repr::check_nm;

    #[test]
    fn unstructured_uses_one_threshold_per_layer() {
        // Row 0 holds all the small weights: a per-layer threshold empties it.
        let w = [0.1, -0.2, 0.3, -0.4, 5.0, -6.0, 7.0, -8.0];
        let p = magnitude(&w, 2, 4, Sparsity::Unstructured(0.5)).unwrap();
        assert_eq!(p.weight, [0.0, 0.0, 0.0, 0.0, 5.0, -6.0, 7.0, -8.0]);
        assert_eq!(p.mask.count_kept(), 4);
        p.validate().unwrap();
    }

    #[test]
    fn nm_keeps_the_largest_of_each_group() {
        let mut rng = Rng::new(2);
        let (rows, cols) = (6, 64);
        let w = rng.normals(rows * cols);
        for (n, m) in [(2, 4), (4, 8), (1, 4)] {
            let p = magnitude(&w, rows, cols, Sparsity::NM { n, m }).unwrap();
            p.validate().unwrap();
            assert!(check_nm(&p.weight, rows, cols, n, m));
            assert_eq!(p.mask.count_kept(), rows * cols / m * n);
            for (g, group) in w.chunks(m).enumerate() {
                let kept = &p.weight[g * m..(g + 1) * m];
                let min_kept = (0..m).filter(|&i| kept[i] != 0.0).map(|i| group[i].abs());
                let max_pruned = (0..m).filter(|&i| kept[i] == 0.0).map(|i| group[i].abs());
                assert!(min_kept.fold(f32::INFINITY, f32::min) >= max_pruned.fold(0.0, f32::max));
            }
        }
        assert!(magnitude(&w, rows, cols, Sparsity::NM { n: 2, m: 5 }).is_err());
    }
}
