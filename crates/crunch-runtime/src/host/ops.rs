//! The small element-wise operations, as plain loops. Each is compiled twice, as is and with
//! AVX2/FMA enabled (the compiler vectorises the loops), and the second runs where the CPU
//! has it. They are cheap next to the products (one pass over a row each), so they run on the
//! calling thread unless the input is large (prefill).

use crunch_kernels::{pool, Isa, SharedOut};

/// Rows at or above this many values are split over the pool.
const PARALLEL_MIN: usize = 1 << 16;

#[inline(always)]
fn add_rows(a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
}

#[inline(always)]
fn rms_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        // Eight partial sums so the loop vectorises; the order differs from a serial sum
        // only in the last bits.
        let mut acc = [0f32; 8];
        let chunks = xr.chunks_exact(8);
        let tail = chunks.remainder();
        for c in chunks {
            for i in 0..8 {
                acc[i] += c[i] * c[i];
            }
        }
        let mut ss: f32 = acc.iter().sum();
        for v in tail {
            ss += v * v;
        }
        let r = 1.0 / (ss / d as f32 + eps).sqrt();
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * r * g;
        }
    }
}

#[inline(always)]
fn rope_rows(x: &[f32], cos: &[f32], sin: &[f32], h: usize, d: usize, out: &mut [f32]) {
    let half = d / 2;
    for (t, (xr, or)) in x
        .chunks_exact(h * d)
        .zip(out.chunks_exact_mut(h * d))
        .enumerate()
    {
        let (c, s) = (
            &cos[t * half..(t + 1) * half],
            &sin[t * half..(t + 1) * half],
        );
        for (xh, oh) in xr.chunks_exact(d).zip(or.chunks_exact_mut(d)) {
            let (x1, x2) = xh.split_at(half);
            let (o1, o2) = oh.split_at_mut(half);
            for i in 0..half {
                o1[i] = x1[i] * c[i] - x2[i] * s[i];
                o2[i] = x2[i] * c[i] + x1[i] * s[i];
            }
        }
    }
}

/// `silu(g)·u` with `e = exp(-|g|)` (never overflows, and vectorises, where libm's `exp` is
/// a call per value): `silu(g) = g / (1 + e)` for `g ≥ 0`, `g·e / (1 + e)` below.
#[inline(always)]
fn silu_mul_rows(g: &[f32], u: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
        let e = crunch_kernels::exp_nonpositive(-g.abs());
        let num = if g >= 0.0 { g } else { g * e };
        *o = num / (1.0 + e) * u;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn add_rows_avx2(a: &[f32], b: &[f32], out: &mut [f32]) {
    add_rows(a, b, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rms_rows_avx2(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    rms_rows(x, w, eps, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rope_rows_avx2(x: &[f32], cos: &[f32], sin: &[f32], h: usize, d: usize, out: &mut [f32]) {
    rope_rows(x, cos, sin, h, d, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_mul_rows_avx2(g: &[f32], u: &[f32], out: &mut [f32]) {
    silu_mul_rows(g, u, out)
}

fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        Isa::detect() >= Isa::Avx2
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Splits `len` values in pieces of whole rows of `row` for the team.
fn piece(len: usize, row: usize) -> usize {
    let rows = len / row.max(1);
    rows.div_ceil(4 * pool::threads()).max(1) * row.max(1)
}

/// A new `len`-value output, filled by `f(start, piece)` over pieces of whole rows of `row`
/// values: on the calling thread when small, else on the team.
fn map_rows(len: usize, row: usize, f: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = vec![0f32; len];
    if len < PARALLEL_MIN {
        f(0, &mut out);
    } else {
        let p = piece(len, row);
        let o = SharedOut::new(&mut out);
        pool::run(len.div_ceil(p), &|t| {
            let start = t * p;
            // SAFETY: piece t of the output belongs to task t.
            f(start, unsafe { o.piece(start, p.min(len - start)) })
        });
    }
    out
}

/// Calls the AVX2 build of a loop where the CPU has it, else the plain one.
macro_rules! dispatch {
    ($avx2:ident, $plain:ident ($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { $avx2($($arg),*) };
        }
        $plain($($arg),*)
    }};
}

pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    map_rows(a.len(), 1024, |s, o| {
        let (a, b) = (&a[s..s + o.len()], &b[s..s + o.len()]);
        dispatch!(add_rows_avx2, add_rows(a, b, o))
    })
}

pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    map_rows(x.len(), w.len(), |s, o| {
        let x = &x[s..s + o.len()];
        dispatch!(rms_rows_avx2, rms_rows(x, w, eps, o))
    })
}

pub fn rope(x: &[f32], cos: &[f32], sin: &[f32], t: usize, h: usize, d: usize) -> Vec<f32> {
    let half = d / 2;
    // One row per position: a piece starts at a whole position.
    let row = if t < 2 { x.len().max(1) } else { h * d };
    map_rows(x.len(), row, |s, o| {
        let (t0, t1) = (s / (h * d), (s + o.len()) / (h * d));
        let (c, sn) = (&cos[t0 * half..t1 * half], &sin[t0 * half..t1 * half]);
        let x = &x[s..s + o.len()];
        dispatch!(rope_rows_avx2, rope_rows(x, c, sn, h, d, o))
    })
}

pub fn silu_mul(g: &[f32], u: &[f32]) -> Vec<f32> {
    map_rows(g.len(), 1024, |s, o| {
        let (g, u) = (&g[s..s + o.len()], &u[s..s + o.len()]);
        dispatch!(silu_mul_rows_avx2, silu_mul_rows(g, u, o))
    })
}
