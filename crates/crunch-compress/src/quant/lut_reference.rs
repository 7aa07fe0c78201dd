//! Tests pinning [`gptq_lut`] against a direct, slow implementation: the codebooks fitted as
//! the fast code fits them (`lut::codebook` on the original rows, dead columns zeroed), then
//! Algorithm 1 of the GPTQ paper with the explicit f64 inverse Hessian of `gptq_reference.rs`
//! (its `column_loop`: OBS update of the remaining weights, Gaussian elimination of the
//! quantized column) and the nearest codebook level in place of the uniform grid's rounding.
//!
//! As there, f32 against f64 may legitimately disagree on a value within rounding noise of a
//! midpoint between two levels: the reference records the smallest distance of a value to a
//! midpoint (relative to the codebook's span), and a case closer than [`MID_MARGIN`] is
//! replaced by the next seed. Accepted cases must have identical codes and codebooks.

use super::gptq_reference::{column_loop, ordered_inverse, without_dead_columns};
use super::lut::{codebook, importance};
use crate::testutil::{on_seeds, reference_problem};
use crate::{gptq_lut, Hessian, LutOptions};
use crunch_repr::{LutSpec, LutWeight};
use half::f16;

/// Smallest accepted distance of a value to a midpoint, as a fraction of its codebook's span.
const MID_MARGIN: f64 = 1e-4;

/// Direct GPTQ onto codebooks; also the smallest relative distance to a midpoint seen.
fn lut_direct(
    weight: &[f32],
    hessian: &Hessian,
    rows: usize,
    spec: LutSpec,
    opts: &LutOptions,
) -> (LutWeight, f64) {
    let n = hessian.n;
    let (hd, zeroed) = without_dead_columns(weight, hessian);
    let (order, mut hinv) = ordered_inverse(&hd, n, opts.act_order, opts.damp);

    let (k, ng) = (spec.levels(), spec.n_groups(n));
    let group = spec.group_size.unwrap_or(n);
    let imp = importance(hessian);
    let mut levels: Vec<f16> = Vec::with_capacity(rows * ng * k);
    for r in 0..rows {
        let row = &zeroed[r * n..(r + 1) * n];
        for (values, weights) in row.chunks(group).zip(imp.chunks(group)) {
            levels.extend(codebook(values, weights, k, opts.iterations).unwrap());
        }
    }
    let mut w: Vec<f64> = (0..rows * n)
        .map(|i| zeroed[i - i % n + order[i % n]] as f64)
        .collect();
    let mut codes = vec![0u8; rows * n];
    let mut margin = f64::INFINITY;
    column_loop(&mut w, &mut hinv, rows, |r, q, row| {
        let g = order[q] / group;
        let book: Vec<f64> = levels[(r * ng + g) * k..(r * ng + g + 1) * k]
            .iter()
            .map(|v| v.to_f64())
            .collect();
        let x = row[q];
        // The nearest level, by distance (the lowest on a tie).
        let code = (0..k)
            .min_by(|&a, &b| (x - book[a]).abs().total_cmp(&(x - book[b]).abs()))
            .unwrap();
        let span = (book[k - 1] - book[0]).max(f64::MIN_POSITIVE);
        for pair in book.windows(2).filter(|p| p[1] > p[0]) {
            margin = margin.min((x - 0.5 * (pair[0] + pair[1])).abs() / span);
        }
        codes[r * n + order[q]] = code as u8;
        book[code]
    });
    let q = LutWeight {
        spec,
        rows,
        cols: n,
        codes,
        levels,
    };
    (q, margin)
}

fn check(name: &str, rows: usize, cols: usize, spec: LutSpec, opts: LutOptions, dead: bool) {
    // The loop itself (the refit after it is checked in `lut_refit.rs` and `lut.rs`).
    let opts = LutOptions {
        refit: false,
        ..opts
    };
    on_seeds(name, 3, |seed| {
        let dead_col = dead.then_some(cols / 3);
        let (w, x) = reference_problem(seed, rows, cols, dead_col);
        let mut h = Hessian::new(cols);
        h.add_batch(&x);
        let fast = gptq_lut(&w, rows, cols, &h, spec, &opts).unwrap();
        let (slow, margin) = lut_direct(&w, &h, rows, spec, &opts);
        if margin < MID_MARGIN {
            return false;
        }
        assert_eq!(fast.levels, slow.levels, "{name}, seed {seed}: codebooks");
        // Values, not codes: a codebook may hold a level twice (k-means on a group with fewer
        // distinct weights than levels), and which copy a code names does not matter.
        let (df, ds) = (fast.dequantize(), slow.dequantize());
        let differing = df.iter().zip(&ds).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "{name}, seed {seed}: margin {margin:.2e}");
        if let Some(d) = dead_col {
            // A dead column's zeroed weight lands on the level nearest 0.
            let dq = fast.dequantize();
            let near0 = |r: usize| {
                let g = d / spec.group_size.unwrap_or(cols);
                let ng = spec.n_groups(cols);
                let k = spec.levels();
                let book = &fast.levels[(r * ng + g) * k..(r * ng + g + 1) * k];
                book.iter()
                    .map(|v| v.to_f32().abs())
                    .fold(f32::INFINITY, f32::min)
            };
            assert!(
                (0..rows).all(|r| dq[r * cols + d].abs() == near0(r)),
                "{name}"
            );
        }
        true
    });
}

#[test]
fn matches_direct_per_row() {
    let opts = |block_size, act_order| LutOptions {
        block_size,
        act_order,
        ..LutOptions::default()
    };
    check(
        "3-bit per row",
        6,
        48,
        LutSpec::new(3, None),
        opts(16, false),
        false,
    );
    check(
        "2-bit act-order",
        6,
        48,
        LutSpec::new(2, None),
        opts(16, true),
        false,
    );
    check(
        "4-bit dead column",
        5,
        40,
        LutSpec::new(4, None),
        opts(128, true),
        true,
    );
}

#[test]
fn matches_direct_per_group() {
    let opts = LutOptions {
        block_size: 24,
        ..LutOptions::default()
    };
    check("3-bit g16", 4, 64, LutSpec::new(3, Some(16)), opts, false);
    // A group size that does not divide the columns: a shorter last group (64 = 3·20 + 4).
    check("2-bit g20", 4, 64, LutSpec::new(2, Some(20)), opts, true);
}
