//! The search behind every encoder: choosing a block's grid to minimise the
//! importance-weighted squared error Σᵢ wᵢ·(xᵢ − x̂ᵢ)².
//!
//! Every ggml type crunch encodes has the same shape: a block of 32 or 256 values split into
//! sub-blocks (one for the 32-value types), value `i` of sub-block `j` decoding as
//! `sⱼ·ℓ(qᵢ) + oⱼ`, where `ℓ` is a fixed ascending level table (the integers −8..7, 0..15, …,
//! or IQ4_NL's non-uniform levels) and the sub-block scale `sⱼ` and offset `oⱼ` are built from
//! stored parameters: `sⱼ = d·scⱼ`, `oⱼ = −dmin·mⱼ` for the K types (`scⱼ`, `mⱼ` small
//! integers, `d`, `dmin` f16), `sⱼ = d`, `oⱼ = m` for Q4_1/Q5_1, `sⱼ = d`, `oⱼ = 0` for the
//! symmetric types.
//!
//! The search, per block:
//! 1. Each sub-block's real-valued `(s, o)`: candidate scales that map the largest value (or
//!    the range) onto the extreme levels, from one level short to one and a half levels past
//!    (clipping); for each, round every value and refit `(s, o)` by weighted least squares
//!    given the codes; the best candidate is then refined by alternating rounding and refitting
//!    (each step never increases the error) until it stops improving.
//! 2. Two-level types: the sub-block scales (and mins) are themselves quantized to the
//!    type's integer range under f16 `d` (and `dmin`), each weighted by how much its error
//!    costs (Σ w·ℓ² for a scale, Σ w for a min).
//! 3. Refinement against the stored grid: with every value rounded to its nearest code under
//!    the real (f16-rounded) parameters, refit `d` and `dmin` jointly by least squares over the
//!    whole block, and move each integer sub-block scale and min by ±1 where that lowers the
//!    block's error; repeat until nothing improves.
//!
//! Step 3 measures the exact error of the bytes that will be written, so the result is never
//! worse than the initial rounding. llama.cpp's encoders do step 1 with fewer candidates and a
//! different weighting (imatrix·√(σ² + x²)), and neither refit the super-block scales nor
//! adjust the integer sub-scales against the final error.

mod sweep;

use half::f16;
use sweep::{fit_sub, round_fast};

/// The values a code stands for before scaling, ascending; code `k` is level `k`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Levels {
    /// The integers `lo..=hi`.
    Int { lo: i32, hi: i32 },
    /// A fixed table (IQ4_NL's non-uniform levels).
    Table(&'static [f32]),
}

impl Levels {
    pub fn len(self) -> usize {
        match self {
            Levels::Int { lo, hi } => (hi - lo + 1) as usize,
            Levels::Table(t) => t.len(),
        }
    }

    pub fn at(self, k: usize) -> f32 {
        match self {
            Levels::Int { lo, .. } => (lo + k as i32) as f32,
            Levels::Table(t) => t[k],
        }
    }

    /// The code whose level is nearest `t` (a tie may go either way; NaN gives code 0).
    /// [`Shape::nearest`] settles ties and rounding exactly on the decoded values.
    #[inline]
    pub fn nearest(self, t: f32) -> usize {
        match self {
            Levels::Int { lo, hi } => {
                let r = round_fast(t);
                (r.clamp(lo as f32, hi as f32) as i32 - lo) as usize
            }
            Levels::Table(tab) => tab
                .windows(2)
                .take_while(|p| 0.5 * (p[0] + p[1]) < t)
                .count(),
        }
    }

    /// The code whose level has the smallest magnitude (what a zero scale rounds to).
    pub fn zero_code(self) -> usize {
        (0..self.len())
            .min_by(|&a, &b| self.at(a).abs().total_cmp(&self.at(b).abs()))
            .unwrap_or(0)
    }
}

/// How a sub-block's offset is formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Offset {
    /// No offset: `sⱼ·ℓ`, the scale may take either sign.
    None,
    /// One free f16 offset per block, added (Q4_1, Q5_1; levels 0..n).
    Free,
    /// `−dmin·mⱼ` with `mⱼ ≥ 0`: the offset is never positive (K types; levels 0..n).
    NonPositive,
}

/// One ggml type's grid shape.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    /// Values per block.
    pub n: usize,
    /// Values per sub-block (`n` for one-level types).
    pub sub: usize,
    pub levels: Levels,
    pub offset: Offset,
    /// Two-level types: the integer range of the sub-block scales, and the largest sub-block
    /// min (0 without mins).
    pub two_level: Option<(Levels, i32)>,
}

/// A block's stored grid parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Params {
    pub d: f16,
    pub dmin: f16,
    pub scales: [i32; 16],
    pub mins: [i32; 16],
}

/// A real-valued (scale, offset) pair and its weighted error.
#[derive(Clone, Copy, Debug)]
struct Fit {
    s: f32,
    o: f32,
    err: f64,
}

/// f16 as a decoder reads it back, saturating instead of overflowing to infinity.
fn to_f16(v: f32) -> f16 {
    f16::from_f32(v.clamp(-65504.0, 65504.0))
}

impl Shape {
    pub fn subs(&self) -> usize {
        self.n / self.sub
    }

    /// Sub-block `j`'s (scale, offset) under `p`, each computed with the decoder's f32
    /// operations so that `value` is bit-identical to decoding.
    pub fn sub_params(&self, p: &Params, j: usize) -> (f32, f32) {
        let d = p.d.to_f32();
        match (self.two_level, self.offset) {
            (None, Offset::Free) => (d, p.dmin.to_f32()),
            (None, _) => (d, 0.0),
            (Some(_), Offset::NonPositive) => (
                d * p.scales[j] as f32,
                -(p.dmin.to_f32() * p.mins[j] as f32),
            ),
            (Some(_), _) => (d * p.scales[j] as f32, 0.0),
        }
    }

    /// The value of code `k` under sub-block parameters `(s, o)`: `s·ℓ + o` (no addition when
    /// the type has no offset, so that signed zeros match the decoder too).
    pub fn value(&self, s: f32, o: f32, k: usize) -> f32 {
        let v = s * self.levels.at(k);
        if self.offset == Offset::None {
            v
        } else {
            v + o
        }
    }

    /// The code nearest `x` under `(s, o)`, judged on the exact decoded values.
    pub fn nearest(&self, s: f32, o: f32, x: f32) -> usize {
        if s == 0.0 || !s.is_finite() {
            return self.levels.zero_code();
        }
        let k = self.levels.nearest((x - o) / s);
        let vk = self.value(s, o, k);
        // The approximate rounding is off by at most one code, toward x's side of v_k.
        let up = (x > vk) == (s > 0.0);
        let c = if up { k + 1 } else { k.wrapping_sub(1) };
        if c < self.levels.len() {
            let (ek, ec) = ((x - vk).abs(), (x - self.value(s, o, c)).abs());
            if ec < ek || (ec == ek && c < k) {
                return c;
            }
        }
        k
    }

    /// Σ w·(x − x̂)² of one sub-block under `(s, o)` with every value at its nearest code.
    fn sub_error(&self, x: &[f32], w: &[f32], s: f32, o: f32) -> f64 {
        x.iter()
            .zip(w)
            .map(|(&x, &w)| {
                let e = x - self.value(s, o, self.nearest(s, o, x));
                w as f64 * (e as f64) * (e as f64)
            })
            .sum()
    }

    /// Fits the grid of one block of `n` values with importance `w` (same length, ≥ 0).
    pub fn fit(&self, x: &[f32], w: &[f32]) -> Params {
        debug_assert_eq!(x.len(), self.n);
        // A sub-block whose importance is all zero is fitted by plain squared error: any grid
        // is equally right for the objective, and this one is right for everything else.
        let mut wl = w.to_vec();
        for (ws, xs) in wl.chunks_mut(self.sub).zip(x.chunks(self.sub)) {
            if ws.iter().all(|&v| v <= 0.0) || xs.iter().all(|&v| v == 0.0) {
                ws.fill(1.0);
            }
        }
        let (p, err) = match self.two_level {
            None => self.fit_one_level(x, &wl),
            Some((scale_levels, max_min)) => self.fit_two_level(x, &wl, scale_levels, max_min),
        };
        // Values too small for f16 scales (or a degenerate fit) can do worse than zero (every
        // value decoded as 0): never store a block that errs more than storing nothing.
        let zero_err: f64 = x
            .iter()
            .zip(&wl)
            .map(|(&v, &wv)| wv as f64 * (v as f64) * (v as f64))
            .sum();
        if zero_err <= err {
            let mut zero = Params::default();
            zero.scales[0] = 1;
            zero
        } else {
            p
        }
    }

    fn fit_one_level(&self, x: &[f32], w: &[f32]) -> (Params, f64) {
        let f = fit_sub(x, w, self.levels, self.offset);
        let mut p = Params {
            d: to_f16(f.s),
            dmin: if self.offset == Offset::Free {
                to_f16(f.o)
            } else {
                f16::ZERO
            },
            ..Params::default()
        };
        p.scales[0] = 1;
        // Codes and error under the stored (f16) parameters in one pass.
        let coded = |p: &Params| {
            let (s, o) = self.sub_params(p, 0);
            let mut err = 0f64;
            let codes: Vec<f32> = x
                .iter()
                .zip(w)
                .map(|(&v, &wv)| {
                    let k = self.nearest(s, o, v);
                    let e = (v - self.value(s, o, k)) as f64;
                    err += wv as f64 * e * e;
                    self.levels.at(k)
                })
                .collect();
            (codes, err)
        };
        let (mut codes, mut err) = coded(&p);
        // Refit (d, m) on the codes the stored f16 parameters give, until it stops helping.
        for _ in 0..3 {
            let Some((s2, o2)) = lsq(x, w, &codes, None, self.offset == Offset::Free, false) else {
                break;
            };
            let mut q = p;
            q.d = to_f16(s2);
            if self.offset == Offset::Free {
                q.dmin = to_f16(o2);
            }
            if q == p {
                break;
            }
            let (c, e) = coded(&q);
            if e < err {
                (p, err, codes) = (q, e, c);
            } else {
                break;
            }
        }
        (p, err)
    }

    fn fit_two_level(
        &self,
        x: &[f32],
        w: &[f32],
        scale_levels: Levels,
        max_min: i32,
    ) -> (Params, f64) {
        let m = self.subs();
        let with_mins = self.offset == Offset::NonPositive;
        // 1. Each sub-block on its own.
        let mut s = [0f32; 16];
        let mut mins = [0f32; 16];
        let mut ws = [0f32; 16];
        let mut wm = [0f32; 16];
        for j in 0..m {
            let r = j * self.sub..(j + 1) * self.sub;
            let (xj, wj) = (&x[r.clone()], &w[r]);
            let f = fit_sub(xj, wj, self.levels, self.offset);
            s[j] = f.s;
            mins[j] = -f.o;
            // How much a unit of scale (or offset) error costs this sub-block.
            ws[j] = xj
                .iter()
                .zip(wj)
                .map(|(&v, &wv)| {
                    let l = self.levels.at(self.nearest(f.s, f.o, v));
                    wv * l * l
                })
                .sum::<f32>()
                .max(1e-30);
            wm[j] = wj.iter().sum::<f32>().max(1e-30);
        }
        // 2. Quantize the sub-block scales (and mins) under f16 super-block scales.
        let mut p = Params::default();
        let fd = fit_sub(&s[..m], &ws[..m], scale_levels, Offset::None);
        p.d = to_f16(fd.s);
        let d = p.d.to_f32();
        for (sc, &sj) in p.scales.iter_mut().zip(&s[..m]) {
            *sc = int_level(scale_levels, d, sj);
        }
        if with_mins {
            let mut dm = fit_sub(
                &mins[..m],
                &wm[..m],
                Levels::Int { lo: 0, hi: max_min },
                Offset::None,
            );
            if dm.s < 0.0 {
                dm.s = 0.0;
            }
            p.dmin = to_f16(dm.s);
            let dmin = p.dmin.to_f32();
            for (mn, &mj) in p.mins.iter_mut().zip(&mins[..m]) {
                *mn = int_level(Levels::Int { lo: 0, hi: max_min }, dmin, mj);
            }
        }
        // 3. Refine against the exact error of the stored grid.
        let mut sub_err: Vec<f64> = (0..m).map(|j| self.sub_err_p(x, w, &p, j)).collect();
        let mut err: f64 = sub_err.iter().sum();
        let (slo, shi) = match scale_levels {
            Levels::Int { lo, hi } => (lo, hi),
            Levels::Table(_) => unreachable!("sub-block scales are integers"),
        };
        for _round in 0..4 {
            let mut changed = false;
            // (a) d and dmin by least squares on the current codes and integer sub-scales.
            if let Some(q) = self.refit_super(x, w, &p) {
                let e: Vec<f64> = (0..m).map(|j| self.sub_err_p(x, w, &q, j)).collect();
                let total: f64 = e.iter().sum();
                if total < err {
                    (p, sub_err, err) = (q, e, total);
                    changed = true;
                }
            }
            // (b) Each integer sub-scale and min by ±1.
            for (j, sub_e) in sub_err.iter_mut().enumerate() {
                let mut best: Option<(Params, f64)> = None;
                let current = *sub_e;
                let consider = |q: Params, best: &mut Option<(Params, f64)>| {
                    let e = self.sub_err_p(x, w, &q, j);
                    if e < best.map_or(current, |b| b.1) {
                        *best = Some((q, e));
                    }
                };
                for delta in [-1, 1] {
                    let v = p.scales[j] + delta;
                    if (slo..=shi).contains(&v) {
                        let mut q = p;
                        q.scales[j] = v;
                        consider(q, &mut best);
                    }
                    if with_mins {
                        let v = p.mins[j] + delta;
                        if (0..=max_min).contains(&v) {
                            let mut q = p;
                            q.mins[j] = v;
                            consider(q, &mut best);
                        }
                    }
                }
                if let Some((q, e)) = best {
                    err += e - *sub_e;
                    *sub_e = e;
                    p = q;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        (p, err)
    }

    fn sub_err_p(&self, x: &[f32], w: &[f32], p: &Params, j: usize) -> f64 {
        let r = j * self.sub..(j + 1) * self.sub;
        let (s, o) = self.sub_params(p, j);
        self.sub_error(&x[r.clone()], &w[r], s, o)
    }

    /// Least-squares `d` (and `dmin`) over the whole block, given every value's code and the
    /// integer sub-block scales and mins of `p`.
    fn refit_super(&self, x: &[f32], w: &[f32], p: &Params) -> Option<Params> {
        let mut a = Vec::with_capacity(self.n);
        let mut b = Vec::with_capacity(self.n);
        for j in 0..self.subs() {
            let (s, o) = self.sub_params(p, j);
            for &v in &x[j * self.sub..(j + 1) * self.sub] {
                let l = self.levels.at(self.nearest(s, o, v));
                a.push(p.scales[j] as f32 * l);
                b.push(-(p.mins[j] as f32));
            }
        }
        let with_mins = self.offset == Offset::NonPositive;
        let (d, dmin) = lsq(x, w, &a, with_mins.then_some(&b[..]), false, true)?;
        let mut q = *p;
        q.d = to_f16(d);
        if with_mins {
            q.dmin = to_f16(dmin);
        }
        (q != *p).then_some(q)
    }
}

/// The integer level of `v / d` (clamped), or the smallest-magnitude level for `d = 0`.
fn int_level(levels: Levels, d: f32, v: f32) -> i32 {
    let Levels::Int { lo, .. } = levels else {
        unreachable!("integer levels")
    };
    if d == 0.0 {
        return lo + levels.zero_code() as i32;
    }
    lo + levels.nearest(v / d) as i32
}

/// Weighted least squares for `x ≈ α·a + β·b` (with `b` given) or `x ≈ α·a + β` (with
/// `intercept`) or `x ≈ α·a`. With `nonneg_beta`, a negative β is clamped to 0 and α refitted.
/// `None` when the system is degenerate.
fn lsq(
    x: &[f32],
    w: &[f32],
    a: &[f32],
    b: Option<&[f32]>,
    intercept: bool,
    nonneg_beta: bool,
) -> Option<(f32, f32)> {
    let (mut saa, mut sab, mut sbb, mut sax, mut sbx) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for i in 0..x.len() {
        let (wi, ai, xi) = (w[i] as f64, a[i] as f64, x[i] as f64);
        let bi = match b {
            Some(b) => b[i] as f64,
            None if intercept => 1.0,
            None => 0.0,
        };
        saa += wi * ai * ai;
        sab += wi * ai * bi;
        sbb += wi * bi * bi;
        sax += wi * ai * xi;
        sbx += wi * bi * xi;
    }
    let two = b.is_some() || intercept;
    if two {
        let det = saa * sbb - sab * sab;
        if det > 1e-12 * saa * sbb && det > 0.0 {
            let alpha = (sbb * sax - sab * sbx) / det;
            let beta = (saa * sbx - sab * sax) / det;
            if !nonneg_beta || beta >= 0.0 {
                return Some((alpha as f32, beta as f32));
            }
        }
    }
    (saa > 0.0).then(|| ((sax / saa) as f32, 0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_levels() {
        let int = Levels::Int { lo: -8, hi: 7 };
        assert_eq!(int.at(int.nearest(-9.3)), -8.0);
        assert_eq!(int.at(int.nearest(2.5)), 2.0);
        assert_eq!(int.at(int.nearest(2.51)), 3.0);
        assert_eq!(int.at(int.nearest(100.0)), 7.0);
        assert_eq!(int.zero_code(), 8);
        static T: [f32; 4] = [-3.0, -1.0, 2.0, 6.0];
        let tab = Levels::Table(&T);
        assert_eq!(tab.nearest(-5.0), 0);
        assert_eq!(tab.nearest(-2.0), 0);
        assert_eq!(tab.nearest(-1.9), 1);
        assert_eq!(tab.nearest(0.6), 2);
        assert_eq!(tab.nearest(9.0), 3);
        assert_eq!(tab.zero_code(), 1);
    }

    #[test]
    fn lsq_recovers_exact_lines() {
        let a: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let x: Vec<f32> = a.iter().map(|&v| 0.25 * v - 1.5).collect();
        let w = vec![1.0; 16];
        let (al, be) = lsq(&x, &w, &a, None, true, false).unwrap();
        assert!(
            (al - 0.25).abs() < 1e-6 && (be + 1.5).abs() < 1e-6,
            "{al} {be}"
        );
        let (al, be) = lsq(&x, &w, &a, None, false, false).unwrap();
        assert!(be == 0.0 && al > 0.0);
    }
}
