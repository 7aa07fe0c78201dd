//! The fused product for a few activation rows (decoding): each stored block is decoded into
//! registers (`Block::codes_avx2`) and multiplied at once, never written out, so the loop
//! costs little more than reading the weights. Per 32-weight chunk and activation row:
//!
//! `acc += cvt(Σ_lanes u·q) · (d·dx)` and `accm += m₀·e₀ + m₁·e₁`
//!
//! with `d`/`m` the chunk's scales and offsets (per 16-weight half when they differ) and
//! `e = dx·Σq` per half from `Acts`. Same arithmetic as `body.rs`, grouped per chunk.

use crate::act::{ActBits, Acts};
use crate::formats::Block;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// One activation row's pointers.
#[derive(Clone, Copy)]
pub(crate) struct ActRow {
    a: *const i8,
    b: *const i8,
    xc: *const f32,
    e16: *const f32,
}

// SAFETY: read-only buffers that outlive every task of a product.
unsafe impl Send for ActRow {}
unsafe impl Sync for ActRow {}

impl ActRow {
    pub fn new(acts: &Acts, i: usize) -> Self {
        ActRow {
            a: acts.a(i).as_ptr(),
            b: match acts.bits {
                ActBits::I16 => acts.b(i).as_ptr(),
                ActBits::I8 => std::ptr::null(),
            },
            xc: acts.xc(i).as_ptr(),
            e16: acts.e16(i).as_ptr(),
        }
    }
}

/// Rows `0..rows` of `packed` (stored rows of `k` weights, back to back) times `C`
/// activation rows: `put(c, r, value)`.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C (and AVX-512 VL/VNNI when `VNNI`); the activation
/// rows must hold at least `k` values in the layout of `Acts`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn rows_generic<F: Block, const C: usize, const I16: bool, const VNNI: bool>(
    packed: &[u8],
    rows: usize,
    k: usize,
    x: &[ActRow; C],
    put: &mut dyn FnMut(usize, usize, f32),
) {
    let blocks = k / F::ELEMS;
    let chunks = F::ELEMS / 32;
    let row_bytes = blocks * F::BYTES;
    // Without VNNI, 8-bit codes are re-centred for the signed-by-signed trick.
    let signed = F::WIDE && !VNNI;
    let ones = _mm256_set1_epi16(1);
    let flip = _mm256_set1_epi8(0x80u8 as i8);
    let mut regs = [_mm256_setzero_si256(); 8];
    let mut d16 = [0f32; 16];
    let mut m16 = [0f32; 16];
    for r in 0..rows {
        let row = &packed[r * row_bytes..(r + 1) * row_bytes];
        let mut acc = [_mm256_setzero_ps(); C];
        let mut accm = [0f32; C];
        for blk in 0..blocks {
            let b = &row[blk * F::BYTES..(blk + 1) * F::BYTES];
            F::codes_avx2(b.as_ptr(), &mut regs);
            F::scales(b, &mut d16[..2 * chunks], &mut m16[..2 * chunks]);
            for i in 0..chunks {
                let ch = blk * chunks + i;
                let mut u = regs[i];
                let (mut m0, mut m1) = (m16[2 * i], m16[2 * i + 1]);
                let (d0, d1) = (d16[2 * i], d16[2 * i + 1]);
                let mut absw = u;
                if signed {
                    u = _mm256_xor_si256(u, flip);
                    absw = _mm256_abs_epi8(u);
                    m0 += 128.0 * d0;
                    m1 += 128.0 * d1;
                }
                for c in 0..C {
                    let xa = _mm256_loadu_si256(x[c].a.add(32 * ch).cast());
                    let xb = if I16 {
                        _mm256_loadu_si256(x[c].b.add(32 * ch).cast())
                    } else {
                        _mm256_setzero_si256()
                    };
                    let it = if VNNI {
                        let hi = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, xa);
                        if I16 {
                            _mm256_dpbusd_epi32(_mm256_slli_epi32(hi, 7), u, xb)
                        } else {
                            hi
                        }
                    } else {
                        let (uu, aa, bb) = if signed {
                            (absw, _mm256_sign_epi8(xa, u), _mm256_sign_epi8(xb, u))
                        } else {
                            (u, xa, xb)
                        };
                        let hi = _mm256_madd_epi16(_mm256_maddubs_epi16(uu, aa), ones);
                        if I16 {
                            let lo = _mm256_madd_epi16(_mm256_maddubs_epi16(uu, bb), ones);
                            _mm256_add_epi32(_mm256_slli_epi32(hi, 7), lo)
                        } else {
                            hi
                        }
                    };
                    let dx = *x[c].xc.add(ch);
                    let scale = if F::HALVES {
                        _mm256_set_m128(_mm_set1_ps(d1 * dx), _mm_set1_ps(d0 * dx))
                    } else {
                        _mm256_set1_ps(d0 * dx)
                    };
                    acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(it), scale, acc[c]);
                    let (e0, e1) = (*x[c].e16.add(2 * ch), *x[c].e16.add(2 * ch + 1));
                    accm[c] += m0 * e0 + m1 * e1;
                }
            }
        }
        for c in 0..C {
            put(c, r, crate::body::hsum256(acc[c]) + accm[c]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_avx2<F: Block, const C: usize, const I16: bool>(
    packed: &[u8],
    rows: usize,
    k: usize,
    x: &[ActRow; C],
    put: &mut dyn FnMut(usize, usize, f32),
) {
    rows_generic::<F, C, I16, false>(packed, rows, k, x, put)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn rows_avx512<F: Block, const C: usize, const I16: bool>(
    packed: &[u8],
    rows: usize,
    k: usize,
    x: &[ActRow; C],
    put: &mut dyn FnMut(usize, usize, f32),
) {
    rows_generic::<F, C, I16, true>(packed, rows, k, x, put)
}

/// Rows `0..rows` of `packed` times the activation rows `x` (1 to 4 of them), on AVX2 or
/// AVX-512 (`vnni`).
///
/// # Safety
/// As for [`rows_generic`]; `x.len()` in 1..=4.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn rows<F: Block>(
    vnni: bool,
    i16: bool,
    packed: &[u8],
    rows: usize,
    k: usize,
    x: &[ActRow],
    put: &mut dyn FnMut(usize, usize, f32),
) {
    macro_rules! go {
        ($c:literal) => {{
            let xs: &[ActRow; $c] = x.try_into().expect("row count");
            match (vnni, i16) {
                (true, true) => rows_avx512::<F, $c, true>(packed, rows, k, xs, put),
                (true, false) => rows_avx512::<F, $c, false>(packed, rows, k, xs, put),
                (false, true) => rows_avx2::<F, $c, true>(packed, rows, k, xs, put),
                (false, false) => rows_avx2::<F, $c, false>(packed, rows, k, xs, put),
            }
        }};
    }
    match x.len() {
        1 => go!(1),
        2 => go!(2),
        3 => go!(3),
        4 => go!(4),
        n => unreachable!("{n} activation rows in the fused product"),
    }
}
