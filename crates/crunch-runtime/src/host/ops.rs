//! The small element-wise operations, as plain loops. Each is compiled twice, as is and with
//! AVX2/FMA enabled (the compiler vectorises the loops), and the second runs where the CPU
//! has it. They are cheap next to the products (one pass over a row each), so they run on the
//! calling thread unless the input is large (prefill).

use crunch_kernels::Isa;
use rayon::prelude::*;

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

#[inline(always)]
fn silu_mul_rows(g: &[f32], u: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
        *o = g / (1.0 + (-g).exp()) * u;
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

/// Splits `len` values in pieces of whole rows of `row` for the pool.
fn piece(len: usize, row: usize) -> usize {
    let rows = len / row.max(1);
    rows.div_ceil(4 * rayon::current_num_threads()).max(1) * row.max(1)
}

pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; a.len()];
    let run = |o: &mut [f32], a: &[f32], b: &[f32]| {
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { add_rows_avx2(a, b, o) };
        }
        add_rows(a, b, o)
    };
    if a.len() < PARALLEL_MIN {
        run(&mut out, a, b);
    } else {
        let p = piece(a.len(), 1024);
        out.par_chunks_mut(p)
            .zip(a.par_chunks(p))
            .zip(b.par_chunks(p))
            .for_each(|((o, a), b)| run(o, a, b));
    }
    out
}

pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    let run = |o: &mut [f32], x: &[f32]| {
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { rms_rows_avx2(x, w, eps, o) };
        }
        rms_rows(x, w, eps, o)
    };
    if x.len() < PARALLEL_MIN {
        run(&mut out, x);
    } else {
        let p = piece(x.len(), w.len());
        out.par_chunks_mut(p)
            .zip(x.par_chunks(p))
            .for_each(|(o, x)| run(o, x));
    }
    out
}

pub fn rope(x: &[f32], cos: &[f32], sin: &[f32], t: usize, h: usize, d: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    let half = d / 2;
    let run = |t0: usize, o: &mut [f32], x: &[f32]| {
        let t1 = t0 + x.len() / (h * d);
        let (c, s) = (&cos[t0 * half..t1 * half], &sin[t0 * half..t1 * half]);
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { rope_rows_avx2(x, c, s, h, d, o) };
        }
        rope_rows(x, c, s, h, d, o)
    };
    if x.len() < PARALLEL_MIN || t < 2 {
        run(0, &mut out, x);
    } else {
        let p = piece(x.len(), h * d);
        let rows = p / (h * d);
        out.par_chunks_mut(p)
            .zip(x.par_chunks(p))
            .enumerate()
            .for_each(|(i, (o, x))| run(i * rows, o, x));
    }
    out
}

pub fn silu_mul(g: &[f32], u: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; g.len()];
    let run = |o: &mut [f32], g: &[f32], u: &[f32]| {
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { silu_mul_rows_avx2(g, u, o) };
        }
        silu_mul_rows(g, u, o)
    };
    if g.len() < PARALLEL_MIN {
        run(&mut out, g, u);
    } else {
        let p = piece(g.len(), 1024);
        out.par_chunks_mut(p)
            .zip(g.par_chunks(p))
            .zip(u.par_chunks(p))
            .for_each(|((o, g), u)| run(o, g, u));
    }
    out
}
