//! Grids with two-level scales (decision 145): each group's scale is one of the 2^k − 1 values
//! `crunch_repr::coded_scale(row_scale, c, k)` of its row's f16 scale, so a scale costs k bits
//! instead of 16 and small groups become affordable (k-quants' idea, llama.cpp).
//!
//! - The row scale is fixed before GPTQ's column loop from the original weights: the largest of
//!   the row's groups' fitted scales ([`grid::fit`], with the same clipping search), so the
//!   code of the widest group is 2^k − 1 and other groups rarely need a scale above it. Groups
//!   fitted later on updated weights (dynamic groups) whose range grew beyond it are clipped at
//!   code 2^k − 1.
//! - A group's grid ([`fit_coded`]) is searched over the allowed scales directly: for each
//!   clipping factor p of the MSE search (1.00 … 0.80, or 1.00 alone without it), the allowed
//!   scales just below and just above the range's scale p·(hi − lo)/maxq, with the zero point
//!   that keeps p·lo representable; the pair with the smallest Σ|q(x) − x|^2.4 wins (the first
//!   one on ties). Without the MSE search only the scale just above (no clipping, as
//!   [`grid::fit`]) is tried. Pairs already tried are skipped, so the cost is at most twice
//!   [`grid::fit`]'s.

use super::grid::{self, GridParams};
use crate::error::Result;
use crunch_repr::{coded_scale, max_scale_code, QuantSpec};
use half::f16;

/// The row scale of `row` (original column order, dead columns zeroed) for groups of
/// `group_size`: the largest group scale [`grid::fit`] gives, at least the smallest normal
/// f16 (2^-14: row scales are normal, see `crunch_repr::valid_row_scale`).
pub(crate) fn row_scale(
    row: &[f32],
    group_size: usize,
    spec: QuantSpec,
    mse_clip: bool,
) -> Result<f16> {
    let free = QuantSpec {
        scale_bits: None,
        ..spec
    };
    let mut best = f16::MIN_POSITIVE;
    for values in row.chunks(group_size.max(1)) {
        let s = grid::fit(values, free, mse_clip)?.scale;
        if s > best {
            best = s;
        }
    }
    Ok(best)
}

/// The grid of one group on the allowed scales of `row_scale` (module docs).
pub(crate) fn fit_coded(
    values: &[f32],
    spec: QuantSpec,
    mse_clip: bool,
    row_scale: f16,
) -> Result<GridParams> {
    let k = spec
        .scale_bits
        .expect("fit_coded is called for specs with scale bits only");
    let (maxq, m) = (spec.maxq(), max_scale_code(k));
    let (xmin, xmax) = grid::value_range(values);
    let (lo, hi) = grid::base_range(xmin, xmax, spec.symmetric);
    let rs = row_scale.to_f32();
    let steps = if mse_clip { grid::SHRINK_STEPS } else { 0 };
    let mut tried: Vec<(u8, u8)> = Vec::new();
    let mut best: Option<(f64, GridParams)> = None;
    for i in 0..=steps {
        let p = grid::shrink_factor(i);
        let (plo, phi) = (p * lo, p * hi);
        let x = grid::raw_scale(plo, phi, maxq) * f32::from(m) / rs;
        let up = (x.ceil().clamp(1.0, f32::from(m))) as u8;
        let down = (x.floor().clamp(1.0, f32::from(m))) as u8;
        // Just above first: without the MSE search it is the only one (no clipping).
        let codes: &[u8] = if mse_clip { &[up, down] } else { &[up] };
        for &c in codes {
            let scale = coded_scale(row_scale, c, k);
            let zero = if spec.symmetric {
                1u8 << (spec.bits - 1)
            } else {
                (-plo / scale.to_f32())
                    .round_ties_even()
                    .clamp(0.0, maxq as f32) as u8
            };
            if tried.contains(&(c, zero)) {
                continue;
            }
            tried.push((c, zero));
            let params = GridParams::new(scale, zero, maxq);
            if !mse_clip {
                return Ok(params);
            }
            let err = grid::clip_objective(values, &params);
            if best.is_none_or(|(e, _)| err < e) {
                best = Some((err, params));
            }
        }
    }
    Ok(best.expect("at least one grid is tried").1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_use_allowed_scales_and_cover_the_range() {
        let spec = QuantSpec::new(3, Some(4), false).with_scale_bits(Some(6));
        let row = [0.1f32, -0.4, 0.3, 0.2, 0.01, 0.02, -0.03, 0.0];
        let rs = row_scale(&row, 4, spec, false).unwrap();
        // The widest group's min–max scale: 0.7/7, rounded up to f16.
        assert_eq!(rs, grid::f16_at_least(0.7 / 7.0).unwrap());
        for mse in [false, true] {
            for values in row.chunks(4) {
                let p = fit_coded(values, spec, mse, rs).unwrap();
                let c = (1..=63u8).find(|&c| coded_scale(rs, c, 6) == p.scale);
                assert!(c.is_some(), "{:?} is not an allowed scale", p.scale);
                if !mse {
                    // Just above the range's scale: nothing clips by more than half a step.
                    for &v in values {
                        assert!((p.round_trip(v) - v).abs() <= 0.5 * p.scale.to_f32() + 1e-7);
                    }
                }
            }
        }
        // A group wider than the row scale allows is clipped at the top code.
        let p = fit_coded(&[-10.0, 10.0], spec, false, rs).unwrap();
        assert_eq!(p.scale, rs);
    }

    /// GPTQ with 6-bit coded scales at group 16, against free f16 scales at groups 16 and 32
    /// (3 bits, correlated inputs): every scale is on its row's grid; the output error is well
    /// below g32's and within 5% of free g16's (measured: 0.995× g16, 0.62× g32 with
    /// act-order; 0.990×, 0.66× without; the coded search tries the allowed scales on both
    /// sides of each clipping range, the free one only rounds up, so it can even win), the
    /// same on any thread count.
    #[test]
    fn gptq_with_coded_scales_at_g16_is_near_free_g16_and_below_g32() {
        use crate::quant::gptq::{gptq, GptqOptions};
        use crate::testutil::{output_error, problem};
        let (rows, cols) = (64, 128);
        let (mut w, h) = problem(11, rows, cols, 2.0);
        // Rows of different magnitude and a few large columns, as in real layers.
        for (i, v) in w.iter_mut().enumerate() {
            let (r, c) = (i / cols, i % cols);
            *v *= 0.02 * (1.0 + (r % 7) as f32) * if c % 29 == 3 { 4.0 } else { 1.0 };
        }
        for act_order in [true, false] {
            let opts = GptqOptions {
                act_order,
                ..GptqOptions::default()
            };
            let err = |spec: QuantSpec| {
                let q = crate::testutil::same_on_any_thread_count(|| {
                    gptq(&w, rows, cols, &h, spec, &opts).unwrap()
                });
                q.validate().unwrap();
                (output_error(&w, &q.dequantize(), &h), q)
            };
            let (e16, _) = err(QuantSpec::new(3, Some(16), false));
            let (e32, _) = err(QuantSpec::new(3, Some(32), false));
            let coded = QuantSpec::new(3, Some(16), false).with_scale_bits(Some(6));
            let (e16s6, q) = err(coded);
            assert!(q.coded_scales().unwrap().is_some());
            eprintln!(
                "act-order {act_order}: g16 {e16:.4} g16s6 {e16s6:.4} g32 {e32:.4} \
                 (g16s6/g16 {:.3}, g16s6/g32 {:.3})",
                e16s6 / e16,
                e16s6 / e32
            );
            assert!(
                e16s6 < 1.05 * e16 && e16s6 < 0.8 * e32,
                "{e16} {e16s6} {e32}"
            );
        }
    }
}
