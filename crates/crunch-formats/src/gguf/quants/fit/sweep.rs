//! Step 1 of the search: the real-valued `(s, o)` of one sub-block, by an exact sweep over
//! every distinct rounding of a one-parameter family of scales, then alternating rounding and
//! least-squares refitting.

use super::{Fit, Levels, Offset};

/// The window of the sweeps, around the scale that maps the largest value onto the extreme
/// level: from a quarter of the range (at least one level, at most four) short of it — part
/// of the range unused, which can still round the other values luckily — to two levels past
/// it (the largest values clipped). The alternating refinement afterwards may move further.
/// The cap keeps the work per block bounded for many-level types (Q6_K, Q8_0), where four
/// levels are a small change of scale.
const SWEEP_SHORT_FRACTION: f32 = 0.25;
const SWEEP_SHORT_MAX: f32 = 4.0;
const SWEEP_PAST: f32 = 2.0;

/// Levels short of the extreme `e` (in spacings `sp`) the window starts at.
fn sweep_short(e: f32, sp: f32) -> f32 {
    (SWEEP_SHORT_FRACTION * e.abs()).clamp(sp, SWEEP_SHORT_MAX * sp)
}

/// Real-valued (scale, offset) of one sub-block: the best over every distinct rounding of a
/// one-parameter family of scales (an exact sweep, see [`sweep_sym`] and [`sweep_affine`]),
/// then alternating rounding and least-squares refitting from the best until it stops
/// improving.
pub(super) fn fit_sub(x: &[f32], w: &[f32], levels: Levels, offset: Offset) -> Fit {
    let zero = Fit {
        s: 0.0,
        o: 0.0,
        err: x.iter().zip(w).map(|(&v, &wv)| (wv * v * v) as f64).sum(),
    };
    if x.iter().all(|&v| v == 0.0) {
        return zero;
    }
    let mut best = zero;
    if offset == Offset::None {
        if let Some(f) = sweep_sym(x, w, levels) {
            if f.err < best.err {
                best = f;
            }
        }
        // Alternate: round at the best scale, refit, until the error stops falling.
        for _ in 0..8 {
            match refit_sym(x, w, levels, best.s) {
                Some(f) if f.err < best.err * (1.0 - 1e-9) => best = f,
                _ => break,
            }
        }
    } else {
        let nonpos = offset == Offset::NonPositive;
        let (mut min, max) = x
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        if nonpos {
            min = min.min(0.0);
        }
        if max <= min {
            // Every value equal: an offset alone is exact.
            return Fit {
                s: 0.0,
                o: min,
                err: x
                    .iter()
                    .zip(w)
                    .map(|(&v, &wv)| (wv * (v - min) * (v - min)) as f64)
                    .sum(),
            };
        }
        if let Some(f) = sweep_affine(x, w, levels, min, max, nonpos) {
            if f.err < best.err {
                best = f;
            }
        }
        for _ in 0..8 {
            match refit_affine(x, w, levels, best.s, best.o, nonpos) {
                Some(f) if f.err < best.err * (1.0 - 1e-9) => best = f,
                _ => break,
            }
        }
    }
    best
}

/// One code change in a sweep: at inverse scale `u` (> 0) value `i` moves one code further
/// from zero. Packed as `u`'s bits (monotonic for positive floats) above `i`, so that sorting
/// the integers orders the events by `u`, then by value.
fn event(u: f32, i: usize) -> u64 {
    ((u.to_bits() as u64) << 32) | i as u64
}

fn event_u(e: u64) -> u32 {
    (e >> 32) as u32
}

fn event_i(e: u64) -> usize {
    (e & 0xFFFF_FFFF) as usize
}

/// Symmetric grids (`x̂ = s·ℓ`): every rounding `qᵢ = nearest(xᵢ·u)` for inverse scales `u` of
/// either sign in a window around the one that maps the largest value onto the extreme level,
/// each scored by its least-squares scale `s* = Σwxℓ/Σwℓ²` (error `Σwx² − (Σwxℓ)²/Σwℓ²`).
/// As `|u|` grows the codes move away from zero one level at a time, so the roundings are
/// enumerated exactly by sorting the crossings of the level midpoints and updating the sums
/// at each: the result is the best least-squares fit over the whole family, not a sample of it.
fn sweep_sym(x: &[f32], w: &[f32], levels: Levels) -> Option<Fit> {
    let n = levels.len();
    let (amax, xmax) = x.iter().fold((0f32, 0f32), |(a, m), &v| {
        if v.abs() > a {
            (v.abs(), v)
        } else {
            (a, m)
        }
    });
    if amax == 0.0 || !amax.is_finite() {
        return None;
    }
    let sxx: f64 = x.iter().zip(w).map(|(&v, &wv)| (wv * v * v) as f64).sum();
    let mut best: Option<Fit> = None;
    let mut codes = vec![0usize; x.len()];
    let mut events = Vec::with_capacity(4 * x.len());
    for sigma in [1f32, -1.0] {
        // The extreme level the largest value reaches for this sign of u.
        let (ext, inner) = if xmax * sigma > 0.0 {
            (n - 1, n - 2)
        } else {
            (0, 1)
        };
        let (e, sp) = (levels.at(ext), (levels.at(ext) - levels.at(inner)).abs());
        if e == 0.0 || e.signum() != (xmax * sigma).signum() {
            continue;
        }
        let ulo = (e.abs() - sweep_short(e, sp)).max(0.5 * sp) / amax;
        let uhi = (e.abs() + SWEEP_PAST * sp) / amax;
        let (mut sxl, mut sll) = (0f64, 0f64);
        events.clear();
        for (i, (&v, &wv)) in x.iter().zip(w).enumerate() {
            let t = v * sigma;
            let k = levels.nearest(t * ulo);
            codes[i] = k;
            let l = levels.at(k) as f64;
            sxl += (wv * v) as f64 * l;
            sll += wv as f64 * l * l;
            if t == 0.0 {
                continue;
            }
            // Crossings as |u| grows: toward the top level for t > 0, the bottom for t < 0.
            let mut k = k;
            loop {
                let next = if t > 0.0 { k + 1 } else { k.wrapping_sub(1) };
                if next >= n {
                    break;
                }
                let mid = 0.5 * (levels.at(k) + levels.at(next));
                let u = mid / t;
                if u > uhi {
                    break;
                }
                events.push(event(u, i));
                k = next;
            }
        }
        events.sort_unstable();
        let mut consider = |sxl: f64, sll: f64| {
            if sll > 0.0 {
                let err = (sxx - sxl * sxl / sll).max(0.0);
                if best.is_none_or(|b| err < b.err) {
                    best = Some(Fit {
                        s: (sxl / sll) as f32,
                        o: 0.0,
                        err,
                    });
                }
            }
        };
        consider(sxl, sll);
        for (idx, &ev) in events.iter().enumerate() {
            let i = event_i(ev);
            let k = if x[i] * sigma > 0.0 {
                codes[i] + 1
            } else {
                codes[i] - 1
            };
            let (old, new) = (levels.at(codes[i]) as f64, levels.at(k) as f64);
            let (v, wv) = (x[i] as f64, w[i] as f64);
            sxl += wv * v * (new - old);
            sll += wv * (new * new - old * old);
            codes[i] = k;
            if events
                .get(idx + 1)
                .is_none_or(|&nx| event_u(nx) != event_u(ev))
            {
                consider(sxl, sll);
            }
        }
    }
    best
}

/// Affine grids (`x̂ = s·q + o`, `q ∈ 0..=n`): every rounding `qᵢ = round((xᵢ − min)·u)` for
/// `u` in a window around `n / (max − min)`, each scored by its least-squares `(s, o)` (with
/// `o ≤ 0` enforced for the K types); enumerated exactly as in [`sweep_sym`].
fn sweep_affine(
    x: &[f32],
    w: &[f32],
    levels: Levels,
    min: f32,
    max: f32,
    nonpos: bool,
) -> Option<Fit> {
    let Levels::Int { lo: 0, hi } = levels else {
        unreachable!("offset types have levels 0..=n")
    };
    let top = hi as f32;
    let range = max - min;
    let ulo = (top - sweep_short(top, 1.0)).max(0.5) / range;
    let uhi = (top + SWEEP_PAST) / range;
    let mut s = [0f64; 6]; // Σw, Σwq, Σwq², Σwx, Σwxq, Σwx²
    let mut codes = vec![0u16; x.len()];
    let mut events = Vec::with_capacity(4 * x.len());
    for (i, (&v, &wv)) in x.iter().zip(w).enumerate() {
        let t = v - min;
        let q = round_fast(t * ulo).clamp(0.0, top);
        codes[i] = q as u16;
        let (q, v, wv) = (q as f64, v as f64, wv as f64);
        s[0] += wv;
        s[1] += wv * q;
        s[2] += wv * q * q;
        s[3] += wv * v;
        s[4] += wv * v * q;
        s[5] += wv * v * v;
        if t <= 0.0 {
            continue;
        }
        let mut k = codes[i] as i32;
        while k < hi {
            let u = (k as f32 + 0.5) / t;
            if u > uhi {
                break;
            }
            k += 1;
            events.push(event(u, i));
        }
    }
    events.sort_unstable();
    let mut best: Option<Fit> = None;
    let mut consider = |s: &[f64; 6]| {
        if let Some(f) = affine_lsq(s, nonpos) {
            if best.is_none_or(|b| f.err < b.err) {
                best = Some(f);
            }
        }
    };
    consider(&s);
    for (idx, &ev) in events.iter().enumerate() {
        let i = event_i(ev);
        let (old, new) = (codes[i] as f64, codes[i] as f64 + 1.0);
        let (v, wv) = (x[i] as f64, w[i] as f64);
        s[1] += wv * (new - old);
        s[2] += wv * (new * new - old * old);
        s[4] += wv * v * (new - old);
        codes[i] += 1;
        if events
            .get(idx + 1)
            .is_none_or(|&nx| event_u(nx) != event_u(ev))
        {
            consider(&s);
        }
    }
    best
}

/// Least-squares `(s, o)` from the sums `[Σw, Σwq, Σwq², Σwx, Σwxq, Σwx²]`, `o ≤ 0` when
/// `nonpos`; `None` when degenerate or the scale is not positive.
fn affine_lsq(s: &[f64; 6], nonpos: bool) -> Option<Fit> {
    let [sw, sl, sll, sx, sxl, sxx] = *s;
    let det = sw * sll - sl * sl;
    if !(det > 1e-12 * sw * sll && det > 0.0) {
        return None;
    }
    let (mut a, mut b) = ((sw * sxl - sl * sx) / det, (sll * sx - sl * sxl) / det);
    if nonpos && b > 0.0 {
        b = 0.0;
        a = if sll > 0.0 { sxl / sll } else { 0.0 };
    }
    if a <= 0.0 {
        return None;
    }
    let err = sxx - 2.0 * a * sxl - 2.0 * b * sx + a * a * sll + 2.0 * a * b * sl + b * b * sw;
    Some(Fit {
        s: a as f32,
        o: b as f32,
        err: err.max(0.0),
    })
}

/// Rounds every value at scale `s` (no offset) and refits the scale: `s* = Σwxℓ / Σwℓ²`.
fn refit_sym(x: &[f32], w: &[f32], levels: Levels, s: f32) -> Option<Fit> {
    if s == 0.0 || !s.is_finite() {
        return None;
    }
    let inv = 1.0 / s;
    let (mut sxl, mut sll, mut sxx) = (0f32, 0f32, 0f32);
    match levels {
        Levels::Int { lo, hi } => {
            let (lo, hi) = (lo as f32, hi as f32);
            for (&v, &wv) in x.iter().zip(w) {
                let l = round_fast(v * inv).clamp(lo, hi);
                sxl += wv * v * l;
                sll += wv * l * l;
                sxx += wv * v * v;
            }
        }
        Levels::Table(_) => {
            for (&v, &wv) in x.iter().zip(w) {
                let l = levels.at(levels.nearest(v * inv));
                sxl += wv * v * l;
                sll += wv * l * l;
                sxx += wv * v * v;
            }
        }
    }
    if sll <= 0.0 {
        return None;
    }
    let (sxl, sll, sxx) = (sxl as f64, sll as f64, sxx as f64);
    Some(Fit {
        s: (sxl / sll) as f32,
        o: 0.0,
        err: (sxx - sxl * sxl / sll).max(0.0),
    })
}

/// Rounds every value under `(s, o)` (levels 0..n) and refits scale and offset jointly.
fn refit_affine(x: &[f32], w: &[f32], levels: Levels, s: f32, o: f32, nonpos: bool) -> Option<Fit> {
    let Levels::Int { lo, hi } = levels else {
        unreachable!("offset types have integer levels")
    };
    if s <= 0.0 || !s.is_finite() {
        return None;
    }
    let inv = 1.0 / s;
    let (lo, hi) = (lo as f32, hi as f32);
    let (mut sw, mut sl, mut sll, mut sx, mut sxl, mut sxx) = (0f32, 0f32, 0f32, 0f32, 0f32, 0f32);
    for (&v, &wv) in x.iter().zip(w) {
        let l = round_fast((v - o) * inv).clamp(lo, hi);
        sw += wv;
        sl += wv * l;
        sll += wv * l * l;
        sx += wv * v;
        sxl += wv * v * l;
        sxx += wv * v * v;
    }
    affine_lsq(&[sw, sl, sll, sx, sxl, sxx].map(|v| v as f64), nonpos)
}

/// Round to nearest (ties to even) for |v| < 2²², in a form the compiler vectorises.
#[inline(always)]
pub(super) fn round_fast(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³
    let v = v.clamp(-4_194_304.0, 4_194_304.0);
    (v + MAGIC) - MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_fast_rounds() {
        for (v, r) in [(0.4, 0.0), (0.6, 1.0), (-1.6, -2.0), (2.5, 2.0), (3.5, 4.0)] {
            assert_eq!(round_fast(v), r);
        }
    }
}
