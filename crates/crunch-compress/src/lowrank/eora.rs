//! EoRA (Liu et al., 2024, "EoRA: Training-free Compensation for Compressed LLM with
//! Eigenspace Low-Rank Approximation"): a rank-r correction A·B for a compressed weight Ŵ
//! (quantized, pruned or both) so that Ŵ + A·B reproduces the layer's *outputs* as well as any
//! rank-r correction can, in closed form, without training.
//!
//! With XᵀX = Q·Λ·Qᵀ (here the [`Hessian`], H = 2·XᵀX/N) and ΔW = W − Ŵ, the output error of a
//! correction C is ‖(ΔW − C)·Xᵀ‖_F² ∝ ‖(ΔW − C)·Q·Λ^{1/2}‖_F². So: project ΔW' = ΔW·Q·Λ^{1/2},
//! take its rank-r truncated SVD U_r·Σ_r·V_rᵀ (Eckart–Young: optimal in this norm), and map back,
//! C = U_r·Σ_r·V_rᵀ·Λ^{-1/2}·Qᵀ. Factors split evenly as elsewhere ([`crate::svd`]):
//! A = U_r·Σ_r^{1/2}, B = Σ_r^{1/2}·V_rᵀ·Λ^{-1/2}·Qᵀ. The truncation loss Σ_{i>r} σ_i² of
//! ΔW' is the remaining output error tr((ΔW − C)·H·(ΔW − C)ᵀ).
//!
//! This is SVD-LLM's whitening ([`crate::whitened_svd`]) applied to the residual, with the
//! symmetric square root Q·Λ^{1/2} instead of the Cholesky factor; any S with S·Sᵀ = XᵀX gives the
//! same correction, the eigenbasis is what the paper uses.
//!
//! Tiny eigenvalues: H is stored in f32, so eigenvalues below about 10⁻⁷·λ_max are rounding noise
//! and may come out zero or negative (and a dead input column has λ = 0). Every eigenvalue is
//! clamped to at least `eig_floor`·λ_max before the square roots. (The paper's code replaces
//! negative eigenvalues by the smallest positive one.) Directions below the floor then weigh
//! almost nothing in the projection, and Λ^{-1/2} stays bounded by (`eig_floor`·λ_max)^{-1/2}.
//! An all-zero H (no signal at all) gives the zero correction.

use super::decomp::{assemble, balanced_split, DenseLinAlg};
use super::svd::LowRank;
use crate::error::{check_option, Result};
use crate::hessian::Hessian;
use crunch_repr::{check_rank, validate_weight, Factored};
use faer::Mat;

/// EoRA settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EoraOptions {
    /// Eigenvalues of H are clamped to at least `eig_floor` times the largest one.
    pub eig_floor: f64,
}

impl Default for EoraOptions {
    /// 1e-6: above the f32 rounding noise of H's eigenvalues for usual layer widths, far below
    /// any direction that carries signal.
    fn default() -> Self {
        Self { eig_floor: 1e-6 }
    }
}

/// The rank-`rank` EoRA correction: W ≈ `compressed` + A·B, minimizing the output error
/// tr((W − Ŵ − A·B)·H·(W − Ŵ − A·B)ᵀ) over rank-`rank` A·B (H with its eigenvalues floored). The
/// spectrum is that of ΔW·Q·Λ^{1/2}: its squares sum to the output error before the correction.
/// The dense linear algebra is done by `la`.
#[allow(clippy::too_many_arguments)]
pub fn eora(
    la: &dyn DenseLinAlg,
    original: &[f32],
    compressed: &[f32],
    rows: usize,
    cols: usize,
    hessian: &Hessian,
    rank: usize,
    opts: &EoraOptions,
) -> Result<LowRank> {
    validate_weight(original, rows, cols)?;
    validate_weight(compressed, rows, cols)?;
    check_rank(rank, rows, cols)?;
    hessian.validate_for(cols)?;
    check_option("eig_floor", opts.eig_floor, true)?;
    let h = Mat::<f64>::from_fn(cols, cols, |i, j| hessian.get(i, j) as f64);
    let (mut lambda, q) = la.symmetric_eigen(h.as_ref())?;
    let largest = lambda.last().copied().unwrap_or(0.0);
    if largest <= 0.0 {
        return Ok(LowRank {
            factored: Factored {
                rows,
                cols,
                rank,
                a: vec![0.0; rows * rank],
                b: vec![0.0; rank * cols],
            },
            spectrum: vec![0.0; rows.min(cols)],
        });
    }
    let floor = opts.eig_floor * largest;
    for l in &mut lambda {
        *l = l.max(floor);
    }
    let root: Vec<f64> = lambda.iter().map(|l| l.sqrt()).collect();

    let delta = Mat::<f64>::from_fn(rows, cols, |i, j| {
        original[i * cols + j] as f64 - compressed[i * cols + j] as f64
    });
    // ΔW' = ΔW·Q·Λ^{1/2}.
    let q_root = Mat::<f64>::from_fn(cols, cols, |i, k| q[(i, k)] * root[k]);
    let projected = la.matmul(delta.as_ref(), q_root.as_ref())?;
    let svd = la.thin_svd(projected.as_ref())?;
    let (a, bt_projected) = balanced_split(&svd, rank);
    // Bᵀ = Q·Λ^{-1/2}·V_r·Σ_r^{1/2}.
    let q_inv_root = Mat::<f64>::from_fn(cols, cols, |i, k| q[(i, k)] / root[k]);
    let bt = la.matmul(q_inv_root.as_ref(), bt_projected.as_ref())?;
    Ok(LowRank {
        factored: assemble(rows, cols, a, bt.as_ref()),
        spectrum: svd.s,
    })
}

/// Storage of a rank-`rank` correction with both factors in f16: 16·rank·(rows + cols) bits.
pub fn eora_bits(rows: usize, cols: usize, rank: usize) -> u64 {
    16 * rank as u64 * (rows + cols) as u64
}

/// [`eora_bits`] spread over the rows·cols weights it corrects (add to the compressed weight's
/// own bits per weight).
pub fn eora_bits_per_weight(rows: usize, cols: usize, rank: usize) -> f64 {
    eora_bits(rows, cols, rank) as f64 / (rows * cols) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{correlated_inputs, Rng};
    use crate::Host;

    fn setup(seed: u64, rows: usize, cols: usize) -> (Vec<f32>, Hessian, Rng) {
        let mut rng = Rng::new(seed);
        let mut h = Hessian::new(cols);
        h.add_batch(&correlated_inputs(&mut rng, 4 * cols, cols, 1.5));
        (rng.normals(rows * cols), h, rng)
    }

    #[test]
    fn recovers_a_low_rank_residual_exactly() {
        let (rows, cols) = (16, 32);
        let (w, h, mut rng) = setup(9, rows, cols);
        let residual = Factored {
            rows,
            cols,
            rank: 2,
            a: rng.normals(rows * 2),
            b: rng.normals(2 * cols),
        }
        .dense();
        let compressed: Vec<f32> = w.iter().zip(&residual).map(|(a, b)| a - b).collect();
        let opts = EoraOptions::default();
        let out = eora(&Host, &w, &compressed, rows, cols, &h, 2, &opts).unwrap();
        let fixed = out.factored.dense();
        let max = residual.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (got, want) in fixed.iter().zip(&residual) {
            assert!((got - want).abs() <= 1e-4 * max, "{got} vs {want}");
        }
        assert!(out.spectrum[2] < 1e-6 * out.spectrum[0]);
    }

    #[test]
    fn rank_zero_no_residual_and_no_signal() {
        let (rows, cols) = (6, 8);
        let (w, h, _) = setup(1, rows, cols);
        let opts = EoraOptions::default();
        let zero = eora(&Host, &w, &w, rows, cols, &h, 3, &opts).unwrap();
        assert!(zero.factored.dense().iter().all(|v| *v == 0.0));
        assert!(zero.spectrum.iter().all(|s| *s == 0.0));
        let r0 = eora(&Host, &w, &vec![0.0; w.len()], rows, cols, &h, 0, &opts).unwrap();
        assert_eq!(r0.factored, Factored::zero(rows, cols));
        assert!(r0.spectrum[0] > 0.0);
        let silent = Hessian {
            n: cols,
            samples: 5,
            h: vec![0.0; cols * cols],
        };
        let none = eora(
            &Host,
            &w,
            &vec![0.0; w.len()],
            rows,
            cols,
            &silent,
            2,
            &opts,
        )
        .unwrap();
        assert_eq!(none.factored.dense(), vec![0.0; rows * cols]);
        assert!(eora(&Host, &w, &w[1..], rows, cols, &h, 1, &opts).is_err());
        let bad = EoraOptions { eig_floor: 0.0 };
        assert!(eora(&Host, &w, &w, rows, cols, &h, 1, &bad).is_err());
    }

    #[test]
    fn bits_accounting() {
        assert_eq!(eora_bits(4096, 4096, 64), 16 * 64 * 8192);
        assert_eq!(
            eora_bits_per_weight(64, 192, 16),
            16.0 * 16.0 * 256.0 / (64.0 * 192.0)
        );
        assert_eq!(eora_bits(10, 20, 0), 0);
    }
}
