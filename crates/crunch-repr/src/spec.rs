//! Quantization grid settings.

use crate::error::{ReprError, Result};

/// Bit widths crunch quantizes to (its own format stores any of them; the exported layouts
/// hold [`EXPORT_BITS`] only).
pub const SUPPORTED_BITS: [u8; 7] = [2, 3, 4, 5, 6, 7, 8];

/// Bit widths the compressed-tensors and GPTQ layouts are loaded with (their kernels and
/// packers know 2, 3, 4 and 8).
pub const EXPORT_BITS: [u8; 4] = [2, 3, 4, 8];

/// Widths of coded group scales (decision 145): below 4 bits the 15 allowed scales are too
/// coarse to follow the groups (a 2× step between the two smallest), above 8 a code costs as
/// much as half an f16 and the saving is gone.
pub const SCALE_BITS: std::ops::RangeInclusive<u8> = 4..=8;

/// The smallest group size accepted for a model. Each group stores an f16 scale and a zero
/// point: at group 1 that is 24+ bits per weight (more than the f16 it replaces), and below
/// 8 the grid costs over 2.5 bits per weight on top of the codes.
pub const MIN_GROUP_SIZE: usize = 8;

/// What a group size that does not divide a layer's columns means for an output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupFit {
    /// Every group must be whole: compressed-tensors and the GPTQ layout refuse a shorter
    /// last group ("tensor column shape must be divisible by the given group_size").
    Exact,
    /// A shorter last group is stored as it is (crunch's own format, and the GPTQ reference
    /// code's grouping: SmolLM2's 576 columns at g128 are 4 groups of 128 and one of 64).
    ShortLastGroup,
}

/// Quantization grid settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct QuantSpec {
    /// Bits per code: 2 to 8.
    pub bits: u8,
    /// Input columns sharing one scale and zero point; `None` = one per output channel (row).
    /// Any positive size is accepted; when it does not divide the column count the last group
    /// is shorter (as in the GPTQ reference code: SmolLM2's 576 columns at g128 are 4 groups of
    /// 128 and one of 64).
    pub group_size: Option<usize>,
    /// Symmetric grid: zero point fixed at 2^(bits−1), range ±max|w|.
    pub symmetric: bool,
    /// Two-level scales (decision 145): `Some(k)` = each group's scale is one of the 2^k − 1
    /// values [`crate::coded_scale`]`(row_scale, c, k)`, c in 1..2^k, of one f16 row scale per
    /// output row; `None` (the default, and what [`QuantSpec::new`] makes) = free f16 scales.
    /// Needs a group size; k in [`SCALE_BITS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_bits: Option<u8>,
}

impl QuantSpec {
    pub fn new(bits: u8, group_size: Option<usize>, symmetric: bool) -> Self {
        Self {
            bits,
            group_size,
            symmetric,
            scale_bits: None,
        }
    }

    /// This spec with group scales coded on `scale_bits` bits against a row scale (`None`:
    /// free f16 scales).
    pub fn with_scale_bits(self, scale_bits: Option<u8>) -> Self {
        Self { scale_bits, ..self }
    }

    /// Largest code, 2^bits − 1.
    pub fn maxq(&self) -> u8 {
        debug_assert!((1..=8).contains(&self.bits));
        ((1u16 << self.bits) - 1) as u8
    }

    /// Number of groups per row for a weight with `cols` input columns.
    pub fn n_groups(&self, cols: usize) -> usize {
        match self.group_size {
            None => 1,
            Some(g) => cols.div_ceil(g.max(1)),
        }
    }

    /// Columns per group for a weight with `cols` input columns (`cols` when per-channel).
    pub fn group_len(&self, cols: usize) -> usize {
        self.group_size.unwrap_or(cols)
    }

    /// Checks the bit width, and that the group size is positive.
    pub fn validate(&self, cols: usize) -> Result<()> {
        if !SUPPORTED_BITS.contains(&self.bits) {
            return Err(ReprError::UnsupportedBits(self.bits));
        }
        if let Some(g) = self.group_size {
            if g == 0 || cols == 0 {
                return Err(ReprError::BadGroupSize {
                    group_size: g,
                    cols,
                });
            }
        }
        if let Some(k) = self.scale_bits {
            if !SCALE_BITS.contains(&k) {
                return Err(ReprError::UnsupportedScaleBits(k));
            }
            if self.group_size.is_none() {
                return Err(ReprError::Inconsistent(
                    "coded group scales need groups: one scale per row is already the row \
                     scale (give a group size, or no scale bits)"
                        .into(),
                ));
            }
        }
        Ok(())
    }
}

impl QuantSpec {
    /// Checks the spec against a layer of `cols` input columns before any calibration: bit
    /// width, a group size of at least [`MIN_GROUP_SIZE`] and no wider than the layer, and,
    /// with [`GroupFit::Exact`], one that divides the columns. With
    /// [`GroupFit::ShortLastGroup`] a group that does not divide is accepted and described in
    /// the returned note (for the user and the recipe).
    pub fn check_layer(&self, cols: usize, fit: GroupFit) -> Result<Option<String>> {
        self.validate(cols)?;
        let Some(g) = self.group_size else {
            return Ok(None);
        };
        let refuse = |reason| {
            Err(ReprError::GroupSizeRefused {
                group_size: g,
                cols,
                reason,
            })
        };
        if g < MIN_GROUP_SIZE {
            return refuse(
                "groups smaller than 8 store more scale and zero-point bits than the codes \
                 save (group 1 costs over 24 bits per weight)",
            );
        }
        if g > cols {
            return refuse("a group wider than the layer is one group per row: use `channel`");
        }
        if cols % g == 0 {
            return Ok(None);
        }
        match fit {
            GroupFit::Exact => refuse(
                "the columns are not a multiple of the group size, and this output format \
                 (compressed-tensors, GPTQ) cannot store a shorter last group; pick a group \
                 size that divides every layer's columns, or `channel`",
            ),
            GroupFit::ShortLastGroup => Ok(Some(format!(
                "{cols} columns are not a multiple of group size {g}: the last group of each \
                 row holds {} columns",
                cols % g
            ))),
        }
    }
}

/// Checks a weight buffer's shape and values; shared by every quantizer.
pub fn validate_weight(weight: &[f32], rows: usize, cols: usize) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Err(ReprError::EmptyWeight { rows, cols });
    }
    if rows.checked_mul(cols) != Some(weight.len()) {
        return Err(ReprError::WeightShape {
            len: weight.len(),
            rows,
            cols,
        });
    }
    if let Some(i) = weight.iter().position(|v| !v.is_finite()) {
        return Err(ReprError::NonFiniteWeight {
            row: i / cols,
            col: i % cols,
            value: weight[i],
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_rejects_bad_bits_and_groups() {
        for bits in [0u8, 1, 9, 16] {
            assert_eq!(
                QuantSpec::new(bits, None, false).validate(64),
                Err(ReprError::UnsupportedBits(bits))
            );
        }
        for bits in SUPPORTED_BITS {
            assert!(QuantSpec::new(bits, Some(32), true).validate(64).is_ok());
        }
        assert!(matches!(
            QuantSpec::new(4, Some(0), false).validate(64),
            Err(ReprError::BadGroupSize { .. })
        ));
        assert!(QuantSpec::new(4, Some(48), false).validate(64).is_ok());
        assert_eq!(QuantSpec::new(4, Some(48), false).n_groups(64), 2);
        assert_eq!(QuantSpec::new(3, Some(16), false).n_groups(64), 4);
        assert_eq!(QuantSpec::new(3, None, false).n_groups(64), 1);
        assert_eq!(QuantSpec::new(3, None, false).maxq(), 7);
        assert_eq!(QuantSpec::new(8, None, false).maxq(), 255);
    }

    #[test]
    fn layer_checks_refuse_tiny_wide_and_ragged_groups() {
        let q = |g| QuantSpec::new(4, g, false);
        let refused = |g, cols, fit| {
            matches!(
                q(Some(g)).check_layer(cols, fit),
                Err(ReprError::GroupSizeRefused { .. })
            )
        };
        for fit in [GroupFit::Exact, GroupFit::ShortLastGroup] {
            assert!(refused(1, 576, fit));
            assert!(refused(7, 576, fit));
            assert!(refused(100000, 576, fit));
            assert_eq!(q(Some(64)).check_layer(576, fit), Ok(None));
            assert_eq!(q(None).check_layer(576, fit), Ok(None));
        }
        assert!(q(Some(0)).check_layer(576, GroupFit::Exact).is_err());
        assert!(refused(128, 576, GroupFit::Exact));
        let note = q(Some(128))
            .check_layer(576, GroupFit::ShortLastGroup)
            .unwrap()
            .unwrap();
        assert!(note.contains("holds 64 columns"), "{note}");
    }

    #[test]
    fn weight_validation() {
        assert!(validate_weight(&[0.0; 6], 2, 3).is_ok());
        assert!(matches!(
            validate_weight(&[0.0; 5], 2, 3),
            Err(ReprError::WeightShape { .. })
        ));
        assert!(matches!(
            validate_weight(&[], 0, 3),
            Err(ReprError::EmptyWeight { .. })
        ));
        let mut w = [0.0f32; 6];
        w[4] = f32::NAN;
        assert!(matches!(
            validate_weight(&w, 2, 3),
            Err(ReprError::NonFiniteWeight { row: 1, col: 1, .. })
        ));
    }
}
