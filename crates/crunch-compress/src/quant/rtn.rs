//! Round-to-nearest quantization: each row or group gets its own min–max grid (optionally
//! clipped by the MSE search) and every weight is rounded onto it independently.

use super::{coded_grid, grid};
use crate::error::Result;
use crunch_repr::{validate_weight, QuantSpec, QuantizedWeight};
use rayon::prelude::*;

/// Round-to-nearest quantization of a row-major [rows, cols] weight.
pub fn rtn(
    weight: &[f32],
    rows: usize,
    cols: usize,
    spec: QuantSpec,
    mse_clip: bool,
) -> Result<QuantizedWeight> {
    spec.validate(cols)?;
    validate_weight(weight, rows, cols)?;
    let n_groups = spec.n_groups(cols);
    let group_len = spec.group_len(cols);
    let mut codes = vec![0u8; rows * cols];
    let mut params = vec![grid::GridParams::new(half::f16::ZERO, 0, 1); rows * n_groups];
    // Rows are independent, so parallelizing over them cannot change any result.
    codes
        .par_chunks_mut(cols)
        .zip(params.par_chunks_mut(n_groups))
        .zip(weight.par_chunks(cols))
        .try_for_each(|((codes, params), row)| -> Result<()> {
            // Two-level scales (decision 145): the row scale first, then each group's scale
            // among its allowed values.
            let rs = match spec.scale_bits {
                Some(_) => Some(coded_grid::row_scale(row, group_len, spec, mse_clip)?),
                None => None,
            };
            for ((values, codes), p) in row
                .chunks(group_len)
                .zip(codes.chunks_mut(group_len))
                .zip(params.iter_mut())
            {
                *p = match rs {
                    Some(rs) => coded_grid::fit_coded(values, spec, mse_clip, rs)?,
                    None => grid::fit(values, spec, mse_clip)?,
                };
                for (code, &x) in codes.iter_mut().zip(values) {
                    *code = p.code(x);
                }
            }
            Ok(())
        })?;
    Ok(grid::quantized_weight(spec, (rows, cols), codes, &params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    const SPECS: [(u8, Option<usize>, bool); 8] = [
        (2, None, false),
        (3, Some(32), true),
        (4, Some(64), false),
        (4, Some(128), true),
        (8, Some(32), false),
        (8, None, true),
        (3, None, false),
        (2, Some(128), true),
    ];

    fn weight(rng: &mut Rng, rows: usize, cols: usize) -> Vec<f32> {
        // Heavy-ish tails and an offset so asymmetric grids matter.
        (0..rows * cols)
            .map(|_| rng.normal() * (1.0 + rng.uniform()) + 0.3 * rng.uniform())
            .collect()
    }

    #[test]
    fn codes_in_range_and_error_within_half_step() {
        let mut rng = Rng::new(1);
        let (rows, cols) = (12, 256);
        for (bits, group, sym) in SPECS {
            let spec = QuantSpec::new(bits, group, sym);
            let w = weight(&mut rng, rows, cols);
            let q = rtn(&w, rows, cols, spec, false).unwrap();
            q.validate().unwrap();
            assert_eq!(q.n_groups(), group.map_or(1, |g| cols / g));
            let deq = q.dequantize();
            for r in 0..rows {
                for c in 0..cols {
                    let g = q.group_of(c);
                    let scale = q.scales[r * q.n_groups() + g].to_f32();
                    let err = (deq[r * cols + c] - w[r * cols + c]).abs();
                    // Half a step, plus f32 rounding of x/scale and of the product.
                    assert!(
                        err <= scale * 0.5 * (1.0 + 1e-5) + 1e-6,
                        "{spec:?} r{r} c{c}: err {err} scale {scale}"
                    );
                }
            }
            if sym {
                assert!(
                    q.zeros.iter().all(|&z| z as u16 == 1 << (bits - 1)),
                    "{spec:?}"
                );
            }
        }
    }

    #[test]
    fn groups_are_fitted_independently() {
        // A row whose second group is 100× larger: per-channel uses one coarse scale, groups of 4
        // give the small group its own fine scale.
        let w: Vec<f32> = [0.01f32, -0.02, 0.03, 0.015, 1.0, -2.0, 3.0, 1.5].to_vec();
        let per_channel = rtn(&w, 1, 8, QuantSpec::new(4, None, false), false).unwrap();
        let grouped = rtn(&w, 1, 8, QuantSpec::new(4, Some(4), false), false).unwrap();
        assert_eq!((per_channel.scales.len(), grouped.scales.len()), (1, 2));
        assert!(grouped.scales[0].to_f32() < grouped.scales[1].to_f32() / 50.0);
        // The second group alone has the same range as the whole row.
        assert_eq!(grouped.scales[1], per_channel.scales[0]);
        let err = |q: &QuantizedWeight| -> f32 {
            q.dequantize()[..4]
                .iter()
                .zip(&w)
                .map(|(a, b)| (a - b).abs())
                .sum()
        };
        assert!(err(&grouped) < err(&per_channel) / 10.0);
    }

    #[test]
    fn mse_clip_never_increases_the_clipping_objective() {
        let mut rng = Rng::new(2);
        let (rows, cols) = (16, 128);
        let mut improved = 0;
        for (bits, group, sym) in SPECS {
            let spec = QuantSpec::new(bits, group, sym);
            let mut w = weight(&mut rng, rows, cols);
            // A few outliers, where clipping pays off.
            for i in (0..w.len()).step_by(97) {
                w[i] *= 6.0;
            }
            let plain = rtn(&w, rows, cols, spec, false).unwrap();
            let clipped = rtn(&w, rows, cols, spec, true).unwrap();
            let (dp, dc) = (plain.dequantize(), clipped.dequantize());
            let group_len = spec.group_len(cols);
            for (i, ((wg, pg), cg)) in w
                .chunks(group_len)
                .zip(dp.chunks(group_len))
                .zip(dc.chunks(group_len))
                .enumerate()
            {
                let objective = |d: &[f32]| -> f64 {
                    wg.iter()
                        .zip(d)
                        .map(|(a, b)| (a - b).abs().powf(2.4) as f64)
                        .sum()
                };
                let (op, oc) = (objective(pg), objective(cg));
                // Same f32 terms, same order as the search: exact comparison.
                assert!(oc <= op, "{spec:?} group {i}: clipped {oc} > plain {op}");
                improved += (oc < op * 0.999) as usize;
            }
        }
        // The search must actually do something on data with outliers.
        assert!(improved > 20, "clipping improved only {improved} groups");
    }

    proptest::proptest! {
        /// Any spec, any shape, any finite values (including all-equal rows and tiny or large
        /// magnitudes): codes in range, error within half a step, same output twice.
        #[test]
        fn half_step_bound_holds_for_any_weight(
            bits in proptest::sample::select(crunch_repr::SUPPORTED_BITS.to_vec()),
            sym: bool,
            group in proptest::sample::select(vec![None, Some(1), Some(2), Some(4)]),
            rows in 1usize..5,
            groups in 1usize..4,
            magnitude in -30i32..12,
            seed: u64,
        ) {
            let cols = group.unwrap_or(3) * groups;
            let mut rng = Rng::new(seed);
            let w: Vec<f32> = (0..rows * cols).map(|_| rng.normal() * 2f32.powi(magnitude)).collect();
            let spec = QuantSpec::new(bits, group, sym);
            let q = rtn(&w, rows, cols, spec, false).unwrap();
            q.validate().unwrap();
            proptest::prop_assert_eq!(&q, &rtn(&w, rows, cols, spec, false).unwrap());
            let deq = q.dequantize();
            for k in 0..rows * cols {
                let scale = q.scales[k / cols * q.n_groups() + q.group_of(k % cols)].to_f32();
                let err = (deq[k] - w[k]).abs();
                proptest::prop_assert!(err <= scale * 0.5 * (1.0 + 1e-5), "index {}: err {} scale {}", k, err, scale);
            }
        }
    }

    #[test]
    fn rejects_bad_inputs() {
        let w = vec![0.5f32; 64];
        assert!(rtn(&w, 2, 32, QuantSpec::new(9, None, false), false).is_err());
        assert!(rtn(&w, 2, 32, QuantSpec::new(4, Some(0), false), false).is_err());
        // A group size that does not divide the columns leaves a shorter last group.
        let q = rtn(&w, 2, 32, QuantSpec::new(4, Some(24), false), false).unwrap();
        assert_eq!(q.n_groups(), 2);
        assert!(q.dequantize().iter().all(|v| (v - 0.5).abs() < 0.02));
        assert!(rtn(&w, 2, 31, QuantSpec::new(4, None, false), false).is_err());
        let mut bad = w.clone();
        bad[40] = f32::INFINITY;
        assert!(rtn(&bad, 2, 32, QuantSpec::new(4, None, false), false).is_err());
    }
}
