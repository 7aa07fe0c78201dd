//! Plain truncated SVD of a weight: the best rank-r approximation in the Frobenius norm
//! (Eckart–Young), blind to the layer's inputs. The baseline that SVD-LLM
//! ([`crate::whitened_svd`]) improves on, and the spectrum it returns feeds rank allocation
//! ([`crate::allocate_ranks`]).
//!
//! Factor layout: W = U·Σ·Vᵀ is split evenly, A = U_r·Σ_r^{1/2} and B = Σ_r^{1/2}·V_rᵀ (as
//! SVD-LLM does). Both factors then have the same scale (‖A‖_F = ‖B‖_F = (Σ_{i≤r} σ_i)^{1/2}),
//! which suits storing them in f16 or quantizing them later; putting Σ on one side leaves that
//! side up to σ_1 times larger than the other, orthonormal, one.

use super::decomp::{assemble, balanced_split, to_f64, DenseLinAlg};
use crate::error::Result;
use crunch_repr::{check_rank, validate_weight, Factored};

/// A truncated factorization and the full singular spectrum it was cut from.
#[derive(Clone, Debug, PartialEq)]
pub struct LowRank {
    pub factored: Factored,
    /// All min(rows, cols) singular values of the decomposed matrix, non-increasing. The
    /// truncation loss in that matrix's Frobenius norm is Σ_{i>r} σ_i².
    pub spectrum: Vec<f64>,
}

/// The rank-`rank` truncated SVD of the row-major [rows, cols] `weight`, with W's spectrum; the
/// decomposition done by `la` ([`Host`](super::Host) or a GPU).
pub fn truncated_svd(
    la: &dyn DenseLinAlg,
    weight: &[f32],
    rows: usize,
    cols: usize,
    rank: usize,
) -> Result<LowRank> {
    validate_weight(weight, rows, cols)?;
    check_rank(rank, rows, cols)?;
    let svd = la.thin_svd(to_f64(weight, rows, cols).as_ref())?;
    let (a, bt) = balanced_split(&svd, rank);
    Ok(LowRank {
        factored: assemble(rows, cols, a, bt.as_ref()),
        spectrum: svd.s,
    })
}

/// W's singular values, non-increasing (no singular vectors: for rank allocation), computed by
/// `la`.
pub fn singular_values(
    la: &dyn DenseLinAlg,
    weight: &[f32],
    rows: usize,
    cols: usize,
) -> Result<Vec<f64>> {
    validate_weight(weight, rows, cols)?;
    la.singular_values(to_f64(weight, rows, cols).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CompressError;
    use crate::testutil::Rng;
    use crate::Host;
    use crunch_repr::ReprError;

    fn frob2(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum()
    }

    #[test]
    fn exact_at_the_true_rank_and_loss_is_the_tail() {
        let mut rng = Rng::new(5);
        let (rows, cols, true_rank) = (12, 20, 3);
        let w = Factored {
            rows,
            cols,
            rank: true_rank,
            a: rng.normals(rows * true_rank),
            b: rng.normals(true_rank * cols),
        }
        .dense();
        let norm2 = frob2(&w, &vec![0.0; w.len()]);
        let full = truncated_svd(&Host, &w, rows, cols, true_rank).unwrap();
        assert_eq!(full.spectrum.len(), rows);
        // The f32 product is rank 3 up to rounding.
        assert!(full.spectrum[true_rank] < 1e-6 * full.spectrum[0]);
        assert!(frob2(&full.factored.dense(), &w) < 1e-10 * norm2);
        // Σσ² = ‖W‖², and the rank-1 error is the tail.
        let energy: f64 = full.spectrum.iter().map(|s| s * s).sum();
        assert!((energy - norm2).abs() < 1e-10 * norm2);
        let one = truncated_svd(&Host, &w, rows, cols, 1).unwrap();
        let tail: f64 = one.spectrum[1..].iter().map(|s| s * s).sum();
        assert!((frob2(&one.factored.dense(), &w) - tail).abs() < 1e-5 * norm2);
        // Balanced factors.
        let (na, nb) = (
            frob2(&one.factored.a, &[0.0; 12]),
            frob2(&one.factored.b, &[0.0; 20]),
        );
        assert!((na - nb).abs() < 1e-5 * na);
        let sv = singular_values(&Host, &w, rows, cols).unwrap();
        assert!(sv
            .iter()
            .zip(&full.spectrum)
            .all(|(a, b)| (a - b).abs() < 1e-9 * sv[0]));
    }

    #[test]
    fn rank_zero_and_bad_ranks() {
        let w = vec![1.0f32; 6];
        let zero = truncated_svd(&Host, &w, 2, 3, 0).unwrap();
        assert_eq!(zero.factored, Factored::zero(2, 3));
        assert!(matches!(
            truncated_svd(&Host, &w, 2, 3, 3),
            Err(CompressError::Repr(ReprError::BadRank { max: 2, .. }))
        ));
        assert!(truncated_svd(&Host, &w, 2, 2, 1).is_err());
    }
}
