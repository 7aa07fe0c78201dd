//! The inner products of the blocked (prefill) path on AVX2 and scalar code (AVX-512 VNNI
//! takes `panel.rs`): unpacked weight rows (codes `u`, a scale
//! per 4 weights and an offset per 16, see `tile.rs`) against quantized activation rows
//! (`act.rs`), `R` weight rows by `C` activation rows at a time so that each load serves
//! several products.
//!
//! Every path computes, for each weight row and activation row,
//! `Σ_lanes dl·dx·(Σ_{4 j} u_j·q_j) + Σ_{16 j} m16·e16` where a lane is 4 consecutive weights
//! (one 32-bit lane of a vector product), `dl` the weights' scale of that lane and `dx` the
//! activation scale of its 32-value chunk, `m16` the weights' offset per 16 weights and `e16 = dx·Σ_{16} q` the
//! activations' scaled sum over the same 16, and `q = 128·a + b` (I16) or `a` (I8). Integer
//! sums never overflow: a lane adds 4 products of at most 255 × 16256 (2^24).
//!
//! Per 32 weights and (weight row, activation row) pair the AVX2 loop issues a
//! `vpmaddubsw`/`vpmaddwd` pair (two for I16), a conversion, a multiply of the two scales
//! and one FMA; the offsets cost one FMA per 128 weights. (An AVX-512 version of this loop,
//! 64 weights per step, ran at half the speed of the panels and was removed.)

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// One unpacked weight row: `kp` codes (or, in signed form, codes - 128), `kp / 4` lane
/// scales and `kp / 16` offsets.
#[derive(Clone, Copy)]
pub(crate) struct WRow {
    pub u: *const u8,
    pub dl: *const f32,
    pub m16: *const f32,
}

/// One quantized activation row: planes `a` and `b` (`b` unused in I8 mode), `kp / 32`
/// chunk scales and `kp / 16` scaled sums.
#[derive(Clone, Copy)]
pub(crate) struct XRow {
    pub a: *const i8,
    pub b: *const i8,
    pub xc: *const f32,
    pub e16: *const f32,
}

// SAFETY: both point to read-only buffers that outlive every task of a product.
unsafe impl Send for WRow {}
unsafe impl Sync for WRow {}
unsafe impl Send for XRow {}
unsafe impl Sync for XRow {}

/// The reference: plain integer arithmetic, lane by lane.
///
/// # Safety
/// Every pointer must be valid for `kp` bytes (`kp / 4` weight scales, `kp / 32` chunk
/// scales, `kp / 16` offsets); `kp` a multiple of 64.
pub(crate) unsafe fn dot_scalar(w: WRow, x: XRow, kp: usize, wide_act: bool) -> f32 {
    let mut acc = 0f32;
    for lane in 0..kp / 4 {
        let mut s = 0i32;
        for t in 0..4 {
            let j = 4 * lane + t;
            let q = if wide_act {
                128 * *x.a.add(j) as i32 + *x.b.add(j) as i32
            } else {
                *x.a.add(j) as i32
            };
            s += *w.u.add(j) as i32 * q;
        }
        acc += s as f32 * (*w.dl.add(lane) * *x.xc.add(lane / 8));
    }
    for g in 0..kp / 16 {
        acc += *w.m16.add(g) * *x.e16.add(g);
    }
    acc
}

/// AVX2: `vpmaddubsw` multiplies unsigned by signed bytes into 16-bit pair sums and
/// `vpmaddwd` widens them. With `SIGNED` the rows hold `u - 128` (8-bit codes, whose pair
/// sums could overflow 16 bits unsigned): the sign trick multiplies |w| by x·sign(w).
///
/// # Safety
/// The CPU must have AVX2 and FMA; pointers as for [`dot_scalar`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_avx2<
    const R: usize,
    const C: usize,
    const WIDE_ACT: bool,
    const SIGNED: bool,
>(
    w: &[WRow; R],
    x: &[XRow; C],
    kp: usize,
    out: &mut [[f32; C]; R],
) {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let mut p = 0;
    while p < kp {
        let mut uy = [_mm256_setzero_si256(); R];
        let mut absw = [_mm256_setzero_si256(); R];
        let mut dy = [_mm256_setzero_ps(); R];
        for r in 0..R {
            uy[r] = _mm256_loadu_si256(w[r].u.add(p).cast());
            if SIGNED {
                absw[r] = _mm256_abs_epi8(uy[r]);
            }
            dy[r] = _mm256_loadu_ps(w[r].dl.add(p / 4));
        }
        for c in 0..C {
            let ay = _mm256_loadu_si256(x[c].a.add(p).cast());
            // One 32-value chunk per step: its scale in every lane.
            let xy = _mm256_set1_ps(*x[c].xc.add(p / 32));
            let by = if WIDE_ACT {
                _mm256_loadu_si256(x[c].b.add(p).cast())
            } else {
                _mm256_setzero_si256()
            };
            for r in 0..R {
                let (uu, aa, bb) = if SIGNED {
                    (
                        absw[r],
                        _mm256_sign_epi8(ay, uy[r]),
                        _mm256_sign_epi8(by, uy[r]),
                    )
                } else {
                    (uy[r], ay, by)
                };
                let mut i = _mm256_madd_epi16(_mm256_maddubs_epi16(uu, aa), ones);
                if WIDE_ACT {
                    let lo = _mm256_madd_epi16(_mm256_maddubs_epi16(uu, bb), ones);
                    i = _mm256_add_epi32(_mm256_slli_epi32(i, 7), lo);
                }
                let scale = _mm256_mul_ps(dy[r], xy);
                acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), scale, acc[r][c]);
            }
        }
        p += 32;
    }
    // The offsets, 8 groups of 16 weights per vector (`kp / 16` is a multiple of 4: the
    // last step may take half a vector, the other half masked off).
    let groups = kp / 16;
    let mut g = 0;
    while g < groups {
        let mask = if groups - g >= 8 {
            _mm256_set1_epi32(-1)
        } else {
            _mm256_setr_epi32(-1, -1, -1, -1, 0, 0, 0, 0)
        };
        let mut my = [_mm256_setzero_ps(); R];
        for r in 0..R {
            my[r] = _mm256_maskload_ps(w[r].m16.add(g), mask);
        }
        for c in 0..C {
            let ey = _mm256_maskload_ps(x[c].e16.add(g), mask);
            for r in 0..R {
                acc[r][c] = _mm256_fmadd_ps(my[r], ey, acc[r][c]);
            }
        }
        g += 8;
    }
    for r in 0..R {
        for c in 0..C {
            out[r][c] = hsum256(acc[r][c]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}
