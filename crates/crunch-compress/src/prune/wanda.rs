//! Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models"):
//! the score of weight W_ij is |W_ij|·‖X_j‖₂, the size of its contribution to the output over
//! the calibration inputs, and the lowest scores are pruned with no weight update.
//!
//! Comparison groups as in the paper: unstructured sparsity compares within each output row
//! (the paper's ablation finds per-output comparison clearly better for LLMs than per layer),
//! N:M within each group of m input columns of a row.
//!
//! ‖X_j‖ comes from the Hessian's diagonal, H_jj = 2/N Σ_t x_tj², so √H_jj = √(2/N)·‖X_j‖: the
//! constant factor does not change any ranking. Wanda needs only this diagonal, so
//! [`wanda_with_norms`] takes the norms directly for callers that do not accumulate a full H.

use super::select::{prune_by_scores, MaskScope};
use crate::error::{CompressError, Result};
use crate::hessian::Hessian;
use crunch_repr::{validate_weight, PrunedWeight, Sparsity};

/// Per input column, √H_jj: proportional to the column's input norm ‖X_j‖₂.
pub fn input_norms(hessian: &Hessian) -> Vec<f32> {
    (0..hessian.n)
        .map(|j| hessian.get(j, j).max(0.0).sqrt())
        .collect()
}

/// Wanda pruning of a row-major [rows, cols] weight with the Hessian of its inputs.
pub fn wanda(
    weight: &[f32],
    rows: usize,
    cols: usize,
    hessian: &Hessian,
    sparsity: Sparsity,
) -> Result<PrunedWeight> {
    hessian.validate_for(cols)?;
    wanda_with_norms(weight, rows, cols, &input_norms(hessian), sparsity)
}

/// Wanda pruning with the input norms ‖X_j‖ (or anything proportional to them) given directly.
pub fn wanda_with_norms(
    weight: &[f32],
    rows: usize,
    cols: usize,
    norms: &[f32],
    sparsity: Sparsity,
) -> Result<PrunedWeight> {
    validate_weight(weight, rows, cols)?;
    sparsity.validate(cols)?;
    if norms.len() != cols {
        return Err(CompressError::HessianSize {
            hessian_n: norms.len(),
            cols,
        });
    }
    if let Some(j) = norms.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
        return Err(CompressError::InvalidOption(format!(
            "input norm {} of column {j} must be finite and ≥ 0",
            norms[j]
        )));
    }
    let scores: Vec<f32> = weight
        .iter()
        .enumerate()
        .map(|(k, w)| w.abs() * norms[k % cols])
        .collect();
    prune_by_scores(weight, rows, cols, &scores, sparsity, MaskScope::PerRow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::hessian;
    use crunch_repr::check_nm;

    #[test]
    fn input_norms_reweight_the_magnitudes() {
        // Column 0 sees inputs 10× larger than column 1 (H = 2·diag(100, 1)).
        let mut h = Hessian::new(2);
        h.add_batch(&[10.0, 0.0, 0.0, 1.0]);
        let norms = input_norms(&h);
        assert!((norms[0] / norms[1] - 10.0).abs() < 1e-5);
        let w = [0.5, -2.0, 3.0, 1.0];
        let p = wanda(&w, 2, 2, &h, Sparsity::Unstructured(0.5)).unwrap();
        // Scores per row: (5, 2) and (30, 1): column 0 is kept in both rows.
        assert_eq!(p.weight, [0.5, 0.0, 3.0, 0.0]);
        let p = wanda(&w, 1, 4, &hessian(4, diag4()), Sparsity::NM { n: 2, m: 4 }).unwrap();
        assert!(check_nm(&p.weight, 1, 4, 2, 4));
        // Scores 0.5·1, 2·4, 3·0 (dead column: always pruned first), 1·2.
        assert_eq!(p.weight, [0.0, -2.0, 0.0, 1.0]);
    }

    fn diag4() -> Vec<f32> {
        let d = [1.0, 16.0, 0.0, 4.0];
        (0..16)
            .map(|k| if k / 4 == k % 4 { d[k / 4] } else { 0.0 })
            .collect()
    }

    #[test]
    fn rejects_mismatched_norms() {
        let w = [1.0f32; 8];
        let sp = Sparsity::Unstructured(0.5);
        assert!(wanda_with_norms(&w, 2, 4, &[1.0; 3], sp).is_err());
        assert!(wanda_with_norms(&w, 2, 4, &[1.0, -1.0, 1.0, 1.0], sp).is_err());
        assert!(wanda(&w, 2, 4, &Hessian::new(4), sp).is_err());
    }
}
