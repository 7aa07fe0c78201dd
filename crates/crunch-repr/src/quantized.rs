//! The quantized form of one linear weight.

use crate::error::{ReprError, Result};
use crate::scale_codes::{encode_scales, CodedScales};
use crate::spec::QuantSpec;
use half::f16;

/// A quantized linear weight W ≈ (code − zero) · scale, with W of shape
/// [rows = out_features, cols = in_features].
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedWeight {
    pub spec: QuantSpec,
    pub rows: usize,
    pub cols: usize,
    /// rows·cols unsigned codes in [0, 2^bits − 1], row-major, original column order.
    pub codes: Vec<u8>,
    /// rows·n_groups scales, row-major [rows, n_groups]. f16 because exported formats store f16
    /// scales and crunch must dequantize exactly as they do.
    pub scales: Vec<f16>,
    /// rows·n_groups integer zero points (symmetric: 2^(bits−1)).
    pub zeros: Vec<u8>,
    /// Group of each input column (len cols), for checkpoints quantized with act-order and
    /// dynamic groups; `None` = column j is in group j / group_size. crunch's own GPTQ uses static
    /// groups and always writes `None` (decision 050).
    pub g_idx: Option<Vec<u32>>,
}

impl QuantizedWeight {
    /// Groups per row (1 when per-channel).
    pub fn n_groups(&self) -> usize {
        self.spec.n_groups(self.cols)
    }

    /// The group holding input column `col`.
    #[inline]
    pub fn group_of(&self, col: usize) -> usize {
        match (&self.g_idx, self.spec.group_size) {
            (Some(g_idx), _) => g_idx[col] as usize,
            (None, Some(g)) => col / g,
            (None, None) => 0,
        }
    }

    /// W ≈ (code − zero) · f32(scale), computed in f32; row-major [rows, cols].
    pub fn dequantize(&self) -> Vec<f32> {
        crate::pack::by_rows(self.rows, self.cols, |r, row| self.dequantize_row(r, row))
    }

    /// Row `r` of [`dequantize`](Self::dequantize) into `row` (`cols` values), the same
    /// arithmetic: callers that make rows in parallel (the search's layer swap) get the same
    /// bits.
    pub fn dequantize_row(&self, r: usize, row: &mut [f32]) {
        let n_groups = self.n_groups();
        let scales = &self.scales[r * n_groups..(r + 1) * n_groups];
        let zeros = &self.zeros[r * n_groups..(r + 1) * n_groups];
        let codes = &self.codes[r * self.cols..(r + 1) * self.cols];
        match (&self.g_idx, self.spec.group_size) {
            // Static groups: one scale and zero per run of `g` columns.
            (None, group) => {
                let g = group.unwrap_or(self.cols).max(1);
                for (i, (w, c)) in row.chunks_mut(g).zip(codes.chunks(g)).enumerate() {
                    let (s, z) = (scales[i].to_f32(), zeros[i] as f32);
                    for (w, &c) in w.iter_mut().zip(c) {
                        *w = (c as f32 - z) * s;
                    }
                }
            }
            (Some(_), _) => {
                for (col, (w, &c)) in row.iter_mut().zip(codes).enumerate() {
                    let g = self.group_of(col);
                    *w = (c as f32 - zeros[g] as f32) * scales[g].to_f32();
                }
            }
        }
    }

    /// Storage cost per weight: `bits` per code, a 16-bit scale (or, with coded scales, a
    /// `scale_bits`-wide code and one 16-bit row scale per row) and a `bits`-wide zero point
    /// per group, and 32 bits per input column for `g_idx` when present, amortized over all
    /// weights.
    pub fn bits_per_weight(&self) -> f64 {
        let weights = (self.rows * self.cols) as f64;
        let bits = self.spec.bits as f64;
        let (scale, per_row) = match self.spec.scale_bits {
            None => (16.0, 0.0),
            Some(k) => (k as f64, 16.0),
        };
        let per_group = (self.rows * self.n_groups()) as f64 * (scale + bits);
        let g_idx = self.g_idx.as_ref().map_or(0.0, |g| 32.0 * g.len() as f64);
        (weights * bits + per_group + self.rows as f64 * per_row + g_idx) / weights
    }

    /// With coded scales (`spec.scale_bits`), the row scales and codes that make `scales`
    /// (decision 145); `None` for free f16 scales. An error if the scales are not on the grid.
    pub fn coded_scales(&self) -> Result<Option<CodedScales>> {
        self.spec
            .scale_bits
            .map(|k| encode_scales(&self.scales, self.n_groups(), k))
            .transpose()
    }

    /// Checks that the buffers agree with the shape and spec (for weights read from disk).
    pub fn validate(&self) -> Result<()> {
        self.spec.validate(self.cols)?;
        let bad = |what: String| Err(ReprError::Inconsistent(what));
        let n = self.rows * self.cols;
        let per_group = self.rows * self.n_groups();
        if self.codes.len() != n {
            return bad(format!(
                "{} codes for a {}×{} weight",
                self.codes.len(),
                self.rows,
                self.cols
            ));
        }
        if self.scales.len() != per_group || self.zeros.len() != per_group {
            return bad(format!(
                "{} scales and {} zero points, expected {per_group}",
                self.scales.len(),
                self.zeros.len()
            ));
        }
        let maxq = self.spec.maxq();
        if let Some(i) = self.codes.iter().position(|&c| c > maxq) {
            return bad(format!(
                "code {} at index {i} exceeds {maxq}",
                self.codes[i]
            ));
        }
        if let Some(i) = self.zeros.iter().position(|&z| z > maxq) {
            return bad(format!(
                "zero point {} at index {i} exceeds {maxq}",
                self.zeros[i]
            ));
        }
        // Coded scales: every scale must be a code of its row's scale.
        self.coded_scales()?;
        if let Some(g_idx) = &self.g_idx {
            if self.spec.group_size.is_none() || g_idx.len() != self.cols {
                return bad("g_idx needs a group size and one entry per column".into());
            }
            if let Some(c) = g_idx.iter().position(|&g| g as usize >= self.n_groups()) {
                return bad(format!("g_idx[{c}] = {} is not a group", g_idx[c]));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(g_idx: Option<Vec<u32>>) -> QuantizedWeight {
        QuantizedWeight {
            spec: QuantSpec::new(4, Some(2), false),
            rows: 2,
            cols: 4,
            codes: vec![0, 1, 2, 3, 15, 14, 8, 7],
            scales: [0.5f32, 2.0, 0.25, 1.0].map(f16::from_f32).to_vec(),
            zeros: vec![1, 3, 8, 7],
            g_idx,
        }
    }

    #[test]
    fn dequantize_uses_each_columns_group() {
        let q = sample(None);
        q.validate().unwrap();
        assert_eq!(q.n_groups(), 2);
        assert_eq!(
            q.dequantize(),
            vec![-0.5, 0.0, -2.0, 0.0, 1.75, 1.5, 1.0, 0.0]
        );
        // With g_idx the groups follow it instead of position.
        let q = sample(Some(vec![1, 0, 0, 1]));
        q.validate().unwrap();
        assert_eq!(q.group_of(0), 1);
        assert_eq!(
            q.dequantize(),
            vec![-6.0, 0.0, 0.5, 0.0, 8.0, 1.5, 0.0, 0.0]
        );
    }

    #[test]
    fn bits_per_weight_counts_scales_zeros_and_g_idx() {
        // 4-bit codes + 2 groups × (16 + 4) bits per row of 4 weights = 4 + 10.
        assert_eq!(sample(None).bits_per_weight(), 14.0);
        // + 4 columns × 32 bits over 8 weights.
        assert_eq!(sample(Some(vec![0, 0, 1, 1])).bits_per_weight(), 30.0);
    }

    #[test]
    fn coded_scales_cost_and_validate() {
        // 3-bit codes, groups of 16, 6-bit scale codes: 3 + (6 + 3)/16 + 16/cols.
        let (rows, cols) = (2, 64);
        let spec = QuantSpec::new(3, Some(16), false).with_scale_bits(Some(6));
        let rs = [0.5f32, 0.25].map(f16::from_f32);
        let codes = [63u8, 1, 20, 40, 63, 63, 2, 9];
        let scales = crate::decode_scales(&rs, &codes, 4, 6).unwrap();
        let mut q = QuantizedWeight {
            spec,
            rows,
            cols,
            codes: vec![3; rows * cols],
            scales,
            zeros: vec![4; 8],
            g_idx: None,
        };
        q.validate().unwrap();
        assert_eq!(q.bits_per_weight(), 3.0 + 9.0 / 16.0 + 16.0 / 64.0);
        let coded = q.coded_scales().unwrap().unwrap();
        assert_eq!(coded.row_scales, rs);
        assert_eq!(coded.codes, codes);
        // A scale off the grid of its row.
        q.scales[1] = f16::from_f32(0.3);
        assert!(q.validate().is_err());
    }

    #[test]
    fn validate_catches_inconsistencies() {
        let mut q = sample(None);
        q.codes[3] = 16;
        assert!(q.validate().is_err());
        let mut q = sample(None);
        q.scales.pop();
        assert!(q.validate().is_err());
        assert!(sample(Some(vec![0, 2, 0, 0])).validate().is_err());
    }
}
