//! The result of pruning one linear weight, optionally quantized jointly (SparseGPT).
//!
//! Semantics with quantization: the weight is the dequantized codes with every pruned entry
//! exactly 0. crunch's grids have an integer zero point, so the code equal to it dequantizes to
//! exactly 0 and pruned entries store that code: `quant.dequantize()` alone already gives the
//! pruned weight. The mask is still part of the result because a kept weight can round to 0,
//! and sparse layouts (bitmask, N:M) need to know which entries are structural zeros; a format
//! whose zero point is not an integer code relies on [`PrunedWeight::dequantize`]'s masking.

use crate::error::{ReprError, Result};
use crate::mask::Bitmask;
use crate::nm_pack::nm_index_bits;
use crate::quantized::QuantizedWeight;
use crate::sparsity::{check_nm, Sparsity};

/// A pruned, possibly quantized, row-major [rows, cols] weight.
#[derive(Clone, Debug, PartialEq)]
pub struct PrunedWeight {
    pub sparsity: Sparsity,
    pub rows: usize,
    pub cols: usize,
    /// Dense, with zeros where pruned; equal to the dequantized weight when quantized.
    pub weight: Vec<f32>,
    /// 1 = kept.
    pub mask: Bitmask,
    /// The codes of the kept weights when pruned and quantized jointly.
    pub quant: Option<QuantizedWeight>,
}

impl PrunedWeight {
    /// The weight a model runs with: the dequantized codes (if quantized) with pruned entries 0.
    pub fn dequantize(&self) -> Vec<f32> {
        match &self.quant {
            None => self.weight.clone(),
            Some(q) => {
                let mut w = q.dequantize();
                self.mask.apply(&mut w).expect("validated shapes agree");
                w
            }
        }
    }

    /// Fraction of weights kept.
    pub fn density(&self) -> f64 {
        1.0 - self.mask.sparsity()
    }

    /// Storage per weight, amortized: kept values at 16 bits (f16/bf16) or at the quantized bit
    /// width plus the grids' scales and zero points (as [`QuantizedWeight::bits_per_weight`]),
    /// and the positions: one mask bit per weight for unstructured sparsity, ⌈log2 m⌉ bits per
    /// stored value for N:M (which stores exactly n values per group).
    pub fn bits_per_weight(&self) -> f64 {
        let weights = (self.rows * self.cols) as f64;
        let (value_bits, grid_bits) = match &self.quant {
            None => (16.0, 0.0),
            Some(q) => {
                let bits = q.spec.bits as f64;
                (bits, (q.rows * q.n_groups()) as f64 * (16.0 + bits))
            }
        };
        let positions = match self.sparsity {
            Sparsity::Unstructured(_) => self.mask.count_kept() as f64 * value_bits + weights,
            Sparsity::NM { n, m } => {
                weights / m as f64 * n as f64 * (value_bits + nm_index_bits(m) as f64)
            }
        };
        (positions + grid_bits) / weights
    }

    /// Checks shapes, that pruned entries are 0, the N:M pattern, and the codes' consistency.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(ReprError::BadMask(what));
        let n = self.rows * self.cols;
        if self.weight.len() != n || self.mask.rows() != self.rows || self.mask.cols() != self.cols
        {
            return bad(format!(
                "weight of {} values and {}×{} mask for a {}×{} layer",
                self.weight.len(),
                self.mask.rows(),
                self.mask.cols(),
                self.rows,
                self.cols
            ));
        }
        if let Some(k) =
            (0..n).find(|&k| !self.mask.get(k / self.cols, k % self.cols) && self.weight[k] != 0.0)
        {
            return bad(format!(
                "pruned weight at ({}, {}) is not 0",
                k / self.cols,
                k % self.cols
            ));
        }
        if let Sparsity::NM { n, m } = self.sparsity {
            if !check_nm(&self.weight, self.rows, self.cols, n, m) {
                return bad(format!("weight is not {n}:{m} sparse"));
            }
        }
        if let Some(q) = &self.quant {
            q.validate()?;
            if (q.rows, q.cols) != (self.rows, self.cols) {
                return bad("quantized weight has another shape".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::QuantSpec;
    use half::f16;

    #[test]
    fn bits_per_weight_accounting() {
        let kept = [true, false, true, false, false, true, false, true];
        let mask = Bitmask::from_bools(2, 4, &kept).unwrap();
        let weight: Vec<f32> = kept.iter().map(|&k| k as u8 as f32).collect();
        let mut p = PrunedWeight {
            sparsity: Sparsity::NM { n: 2, m: 4 },
            rows: 2,
            cols: 4,
            weight,
            mask,
            quant: None,
        };
        p.validate().unwrap();
        // 2:4 at 16 bits: half the weights stored, each with a 2-bit index.
        assert_eq!(p.bits_per_weight(), 9.0);
        // Unstructured: 4 kept × 16 bits + 8 mask bits over 8 weights.
        p.sparsity = Sparsity::Unstructured(0.5);
        assert_eq!(p.bits_per_weight(), 9.0);
        // 4-bit codes with one grid per row: 4·4 + 8 + 2·(16 + 4) over 8 weights.
        let q = QuantizedWeight {
            spec: QuantSpec::new(4, None, false),
            rows: 2,
            cols: 4,
            codes: vec![9, 8, 9, 8, 8, 9, 8, 9],
            scales: vec![f16::ONE; 2],
            zeros: vec![8; 2],
            g_idx: None,
        };
        p.quant = Some(q);
        p.validate().unwrap();
        assert_eq!(p.bits_per_weight(), (16.0 + 8.0 + 40.0) / 8.0);
        assert_eq!(p.dequantize(), p.weight);
        assert_eq!(p.density(), 0.5);
    }

    #[test]
    fn validate_catches_non_zero_pruned_weights() {
        let mask = Bitmask::from_bools(1, 4, &[true, false, true, false]).unwrap();
        let p = PrunedWeight {
            sparsity: Sparsity::NM { n: 2, m: 4 },
            rows: 1,
            cols: 4,
            weight: vec![1.0, 0.5, 1.0, 0.0],
            mask,
            quant: None,
        };
        assert!(matches!(p.validate(), Err(ReprError::BadMask(_))));
    }
}
