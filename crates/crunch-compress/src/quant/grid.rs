//! The integer grid of one row or group: fitting its scale and zero point (min–max, optionally
//! with an MSE clipping search) and rounding values onto it.
//!
//! The scale is rounded to f16 *before* codes and zero point are computed, so the codes are the
//! best ones for the scale that is stored. It is rounded *up* (the smallest f16 ≥ the exact
//! scale): the grid then still spans the whole min–max range, so round-to-nearest without
//! clipping keeps every error within scale/2 (rounding to nearest could shrink the grid by up to
//! 2^-11 and clip the extreme value by up to maxq·2^-11 steps).

use crate::error::{CompressError, Result};
use crunch_repr::{QuantSpec, QuantizedWeight};
use half::f16;

/// Shrink factors tried by the MSE search: p = 1 − i/100 for i in 0..=20 (1.00 … 0.80).
pub(crate) const SHRINK_STEPS: usize = 20;
/// Exponent of the clipping objective Σ|q(w) − w|^NORM, as GPTQ's quantizer uses.
pub(crate) const CLIP_NORM: f32 = 2.4;

/// Scale and zero point of one row or group, with the f32 values used for arithmetic.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct GridParams {
    pub scale: f16,
    pub zero: u8,
    scale_f32: f32,
    zero_f32: f32,
    maxq_f32: f32,
}

impl GridParams {
    pub fn new(scale: f16, zero: u8, maxq: u8) -> Self {
        Self {
            scale,
            zero,
            scale_f32: scale.to_f32(),
            zero_f32: zero as f32,
            maxq_f32: maxq as f32,
        }
    }

    /// Nearest code (ties to even, as torch.round) clamped to [0, maxq].
    #[inline]
    pub fn code(&self, x: f32) -> u8 {
        ((x / self.scale_f32).round_ties_even() + self.zero_f32).clamp(0.0, self.maxq_f32) as u8
    }

    /// The value a code stands for: (code − zero) · scale, in f32 exactly as
    /// [`crunch_repr::QuantizedWeight::dequantize`] computes it.
    #[inline]
    pub fn value(&self, code: u8) -> f32 {
        (code as f32 - self.zero_f32) * self.scale_f32
    }

    #[inline]
    pub fn round_trip(&self, x: f32) -> f32 {
        self.value(self.code(x))
    }
}

/// The quantized weight of `codes` ([rows, cols], original column order) on the grids
/// `params` ([rows, groups]), with static groups (no `g_idx`).
pub(crate) fn quantized_weight(
    spec: QuantSpec,
    (rows, cols): (usize, usize),
    codes: Vec<u8>,
    params: &[GridParams],
) -> QuantizedWeight {
    QuantizedWeight {
        spec,
        rows,
        cols,
        codes,
        scales: params.iter().map(|p| p.scale).collect(),
        zeros: params.iter().map(|p| p.zero).collect(),
        g_idx: None,
    }
}

/// min(0, min x) and max(0, max x): the range always contains 0, so 0 is representable.
pub(crate) fn value_range(values: &[f32]) -> (f32, f32) {
    values
        .iter()
        .fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// The range the grid must span before shrinking: symmetric grids use ±max|x|; an all-zero
/// range becomes [−1, 1] so the scale is never zero.
pub(crate) fn base_range(xmin: f32, xmax: f32, symmetric: bool) -> (f32, f32) {
    if symmetric {
        let m = xmax.max(-xmin);
        let m = if m == 0.0 { 1.0 } else { m };
        (-m, m)
    } else if xmin == 0.0 && xmax == 0.0 {
        (-1.0, 1.0)
    } else {
        (xmin, xmax)
    }
}

/// Shrink factor of MSE search step `i`.
pub(crate) fn shrink_factor(i: usize) -> f32 {
    1.0 - i as f32 / 100.0
}

/// Unrounded scale of a grid spanning [lo, hi].
pub(crate) fn raw_scale(lo: f32, hi: f32, maxq: u8) -> f32 {
    (hi - lo) / maxq as f32
}

/// Smallest f16 that is ≥ `x` (x > 0); an error if that does not exist.
pub(crate) fn f16_at_least(x: f32) -> Result<f16> {
    if x <= 0.0 {
        // Only reachable when the range underflows f32 (weights ~1e-45): keep the scale non-zero.
        return Ok(f16::from_bits(1));
    }
    let h = f16::from_f32(x);
    // x > 0, so h is +0 or positive and the next f16 up is the next bit pattern.
    let h = if h.to_f32() < x {
        f16::from_bits(h.to_bits() + 1)
    } else {
        h
    };
    if h.is_finite() {
        Ok(h)
    } else {
        Err(CompressError::ScaleOverflow { scale: x })
    }
}

/// Grid spanning [lo, hi] (lo ≤ 0 ≤ hi, lo < hi).
pub(crate) fn params_for_range(lo: f32, hi: f32, spec: QuantSpec) -> Result<GridParams> {
    let maxq = spec.maxq();
    let scale = f16_at_least(raw_scale(lo, hi, maxq))?;
    let zero = if spec.symmetric {
        1u8 << (spec.bits - 1) // (maxq + 1) / 2
    } else {
        (-lo / scale.to_f32())
            .round_ties_even()
            .clamp(0.0, maxq as f32) as u8
    };
    Ok(GridParams::new(scale, zero, maxq))
}

/// Σ |q(x) − x|^2.4 over `values`, summed in f64.
pub(crate) fn clip_objective(values: &[f32], params: &GridParams) -> f64 {
    values
        .iter()
        .map(|&x| (params.round_trip(x) - x).abs().powf(CLIP_NORM) as f64)
        .sum()
}

/// Fits the grid of one row or group: min–max, then (if `mse_clip`) the shrink factor among
/// 1.00, 0.99, …, 0.80 with the smallest clipping objective (the first one on ties).
pub(crate) fn fit(values: &[f32], spec: QuantSpec, mse_clip: bool) -> Result<GridParams> {
    let (xmin, xmax) = value_range(values);
    let (lo, hi) = base_range(xmin, xmax, spec.symmetric);
    let mut best = params_for_range(lo, hi, spec)?;
    if mse_clip {
        let mut best_err = clip_objective(values, &best);
        for i in 1..=SHRINK_STEPS {
            let p = shrink_factor(i);
            let candidate = params_for_range(p * lo, p * hi, spec)?;
            let err = clip_objective(values, &candidate);
            if err < best_err {
                best = candidate;
                best_err = err;
            }
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_rounds_up_to_f16() {
        for x in [1.0e-9f32, 3.3e-5, 0.1, 1.0 / 3.0, 2.0 / 15.0, 1.0, 1234.567] {
            let h = f16_at_least(x).unwrap();
            assert!(h.to_f32() >= x, "{x}");
            let below = f16::from_bits(h.to_bits() - 1).to_f32();
            assert!(below < x, "{x}: {below} would do");
        }
        assert_eq!(f16_at_least(0.5).unwrap(), f16::from_f32(0.5));
        assert!(matches!(
            f16_at_least(1.0e6),
            Err(CompressError::ScaleOverflow { .. })
        ));
    }

    #[test]
    fn minmax_details() {
        let asym = QuantSpec::new(4, None, false);
        // All positive: the range is widened to include 0, so zero = 0.
        let p = fit(&[1.0, 2.0, 3.0], asym, false).unwrap();
        assert_eq!(p.zero, 0);
        assert!(p.scale.to_f32() >= 3.0 / 15.0);
        // All zero: [−1, 1].
        let p = fit(&[0.0; 4], asym, false).unwrap();
        assert_eq!(p.scale, f16_at_least(2.0 / 15.0).unwrap());
        assert_eq!(p.code(0.0), p.zero);
        // Symmetric: zero 2^(bits−1), scale from max|x|.
        let sym = QuantSpec::new(3, None, true);
        let p = fit(&[-4.0, 1.0], sym, false).unwrap();
        assert_eq!(p.zero, 4);
        assert_eq!(p.scale, f16_at_least(8.0 / 7.0).unwrap());
        // Ties round to even, like torch.round: 2.5 steps → 2, 3.5 → 4.
        let p = GridParams::new(f16::from_f32(1.0), 0, 15);
        assert_eq!(
            (p.code(2.5), p.code(3.5), p.code(-1.0), p.code(99.0)),
            (2, 4, 0, 15)
        );
    }
}
