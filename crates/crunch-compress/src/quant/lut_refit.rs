//! The codebook update after GPTQ's loop (GPTVQ, arXiv 2402.15319, §3 "codebook update"):
//! with a row's codes fixed, its levels c that minimise the layer's output error
//! (w − A·c)ᵀ H (w − A·c) — w the row's original weights, A the one-hot map from columns to
//! their (group, code) — solve the small system (AᵀHA) c = AᵀH w: 2^bits unknowns per codebook.
//! The loop's levels are one feasible c, so the exact optimum is never worse; after rounding
//! to f16 the result is kept only if its error is not above the loop's levels' (checked).
//!
//! Cost per row: two passes over H (O(cols²)), then a K×K solve (K = groups · 2^bits).

use crunch_repr::LutSpec;
use half::f16;

/// The row's Hessian-weighted error (w − q)ᵀ H (w − q), `h` the full [cols, cols] f64 matrix.
fn error(h: &[f64], w: &[f32], q: &[f64]) -> f64 {
    let n = w.len();
    let d: Vec<f64> = w.iter().zip(q).map(|(&a, &b)| a as f64 - b).collect();
    (0..n)
        .map(|i| d[i] * (0..n).map(|j| h[i * n + j] * d[j]).sum::<f64>())
        .sum()
}

/// Solves `m · x = v` (K×K, row-major) by Gaussian elimination with partial pivoting; `None`
/// if a pivot vanishes.
fn solve(mut m: Vec<f64>, mut v: Vec<f64>) -> Option<Vec<f64>> {
    let k = v.len();
    for c in 0..k {
        let p = (c..k).max_by(|&a, &b| m[a * k + c].abs().total_cmp(&m[b * k + c].abs()))?;
        if m[p * k + c].abs() < 1e-300 {
            return None;
        }
        for j in 0..k {
            m.swap(c * k + j, p * k + j);
        }
        v.swap(c, p);
        for r in c + 1..k {
            let f = m[r * k + c] / m[c * k + c];
            for j in c..k {
                m[r * k + j] -= f * m[c * k + j];
            }
            v[r] -= f * v[c];
        }
    }
    let mut x = vec![0.0; k];
    for c in (0..k).rev() {
        let s: f64 = (c + 1..k).map(|j| m[c * k + j] * x[j]).sum();
        x[c] = (v[c] - s) / m[c * k + c];
    }
    Some(x)
}

/// Refits one row's codebooks in place: `w` the original row, `codes` its codes (remapped
/// if the refitted levels of a codebook change order), `levels` its [groups, k] f16
/// codebooks, `h` the [cols, cols] Hessian in f64. Returns whether the row changed.
pub(crate) fn refit_row(
    spec: LutSpec,
    h: &[f64],
    w: &[f32],
    codes: &mut [u8],
    levels: &mut [f16],
) -> bool {
    let n = w.len();
    let k = spec.levels();
    let group = spec.group_size.unwrap_or(n).max(1);
    let big_k = levels.len();
    let label = |j: usize, codes: &[u8]| (j / group) * k + codes[j] as usize;
    let dense = |codes: &[u8], levels: &[f64]| -> Vec<f64> {
        (0..n).map(|j| levels[label(j, codes)]).collect()
    };
    let old: Vec<f64> = levels.iter().map(|v| v.to_f64()).collect();
    // M = AᵀHA and v = AᵀHw, from one pass over H.
    let mut m = vec![0.0f64; big_k * big_k];
    let mut v = vec![0.0f64; big_k];
    for i in 0..n {
        let a = label(i, codes);
        let hrow = &h[i * n..(i + 1) * n];
        let mut hw = 0.0;
        for (j, &hij) in hrow.iter().enumerate() {
            m[a * big_k + label(j, codes)] += hij;
            hw += hij * w[j] as f64;
        }
        v[a] += hw;
    }
    // A ridge toward the loop's levels keeps unused levels (and levels of dead columns only)
    // where they were and the system well posed; 1e-6 of the mean diagonal moves a used level
    // by a negligible amount.
    let mean_diag = (0..big_k).map(|a| m[a * big_k + a]).sum::<f64>() / big_k as f64;
    let ridge = 1e-6 * mean_diag.max(f64::MIN_POSITIVE);
    for a in 0..big_k {
        m[a * big_k + a] += ridge;
        v[a] += ridge * old[a];
    }
    let Some(new) = solve(m, v) else {
        return false;
    };
    let rounded: Vec<f16> = new.iter().map(|&x| f16::from_f64(x)).collect();
    if rounded.iter().any(|x| !x.is_finite()) {
        return false;
    }
    let new_f64: Vec<f64> = rounded.iter().map(|x| x.to_f64()).collect();
    if error(h, w, &dense(codes, &new_f64)) > error(h, w, &dense(codes, &old)) {
        return false;
    }
    // Each codebook in increasing order, its codes renamed to follow.
    for (g, book) in rounded.chunks(k).enumerate() {
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by(|&a, &b| book[a].to_f32().total_cmp(&book[b].to_f32()));
        let mut rename = vec![0u8; k];
        for (to, &from) in order.iter().enumerate() {
            rename[from] = to as u8;
            levels[g * k + to] = book[from];
        }
        let cols = g * group..((g + 1) * group).min(n);
        for c in &mut codes[cols] {
            *c = rename[*c as usize];
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solve_solves_and_refit_never_worsens() {
        let x = solve(vec![2.0, 1.0, 1.0, 3.0], vec![3.0, 5.0]).unwrap();
        assert!(
            (x[0] - 0.8).abs() < 1e-12 && (x[1] - 1.4).abs() < 1e-12,
            "{x:?}"
        );
        assert!(solve(vec![0.0; 4], vec![1.0, 1.0]).is_none());
        // A diagonal H: the optimum of each level is the weighted mean of its weights.
        let n = 6;
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            h[i * n + i] = 1.0 + i as f64;
        }
        let w = [0.0f32, 0.2, 0.4, 1.0, 1.2, -3.0];
        let mut codes = vec![1u8, 1, 1, 2, 2, 0];
        let mut levels: Vec<f16> = [-2.0f32, 0.5, 1.5, 9.0].map(f16::from_f32).to_vec();
        assert!(refit_row(
            LutSpec::new(2, None),
            &h,
            &w,
            &mut codes,
            &mut levels
        ));
        let want1 = (0.0 * 1.0 + 0.2 * 2.0 + 0.4 * 3.0) / 6.0;
        assert!((levels[1].to_f64() - want1).abs() < 1e-3, "{levels:?}");
        assert!((levels[0].to_f64() + 3.0).abs() < 1e-3);
        // The unused level stays (the ridge), the book stays in order.
        assert_eq!(levels[3], f16::from_f32(9.0));
        assert!(levels.windows(2).all(|p| p[0] <= p[1]));
    }
}
