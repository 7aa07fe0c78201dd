//! Decoding rows of the 4-bit 32-weight types (Q4_0, Q4_1) on AVX-512 VNNI, four blocks per
//! step (decision 108).
//!
//! `gemv.rs` takes two blocks (64 weights) per step and spends most of the step outside the
//! integer products: it unpacks each block's nibbles in its own 128-bit register and joins two,
//! reads and combines the two f16 scales with scalar loads, and spreads their products with the
//! activation scales over the two halves of a vector. Here four blocks (128 weights, 72 bytes
//! of Q4_0) are handled at once, with the block layout's regularity:
//!
//! - their 16-byte nibble arrays sit at a fixed stride of 2-byte words, so one two-source word
//!   permute (`vpermt2w`) of the bytes at the step (a 64-byte load and the next 8 or 16) puts
//!   block `i`'s nibbles in 128-bit lane `i`; one mask and one shift + mask give the low
//!   nibbles (weights 0..15 of each block) and the high ones (16..31);
//! - the activations are kept in the same order (`Acts::an`/`bn`, "nibble order"): the low
//!   nibbles meet their 64 activation bytes, the high nibbles the next 64, and since a block's
//!   low and high sums land in the same lanes, both go into one accumulator per plane (two
//!   `vpdpbusd` per plane per 128 weights, no joining of registers);
//! - the four f16 scales (and Q4_1's minimums) come out of the first 64 bytes with one word
//!   permute and one `vcvtph2ps`; multiplied by the four chunks' activation scales, one
//!   permute spreads them over the four lanes' quarters.
//!
//! Per 128 weights and activation row: 4 `vpdpbusd` and a shift (15-bit activations; 2
//! with 8-bit ones), one conversion and one FMA, against 4 + 2 + 2 conversions, FMAs and
//! permutes and the unpacking of four blocks one by one in `gemv.rs`. The offsets `m·(dx·Σq)`
//! accumulate in a 4-wide vector (Q4_0's `m = −8d` is applied once at the end).
//!
//! Four weight rows go through the loop together (two when there are more than two activation
//! rows, for registers): each step's activation loads serve all four, and the four results
//! are reduced and stored together (no call per output). Kernel alone, one thread, SmolLM2's
//! layer shapes in cache (`kernel_bench`'s `best_gmacs`, 15-bit activations): 19.9 GMAC/s
//! with `gemv.rs`'s pairs, 35.6 here (8-bit: 22 → 44).
//!
//! A row whose block count is not a multiple of four ends with a partial step: its bytes are
//! read with a mask (nothing past the row is touched), so missing blocks have zero codes and
//! zero scales, and the activation scales past the row are masked too (the nibble-order
//! planes are padded with zeros to 128 values).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::formats::Block;
#[cfg(target_arch = "x86_64")]
use crate::gemv::{ActRow, RowsJob};

/// Whether `F` is a 4-bit 32-weight type this file multiplies: 16 nibble bytes at a fixed
/// offset after an f16 scale at 0 (and an f16 minimum at 2 when stored).
pub(crate) fn handles<F: Block>() -> bool {
    F::NIBBLES_AT.is_some() && F::ELEMS == 32 && F::SCALE_AT == Some(0)
}

/// Word indices for `vpermt2w`: output word `w` (lane `w / 8`, word `w % 8` of it) takes the
/// source word at `(BYTES / 2)·lane + NIB / 2 + w % 8` (the first source is words 0..31, the
/// second 32..63).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn nibble_index<F: Block>() -> __m512i {
    let nib = F::NIBBLES_AT.expect("nibble type");
    let mut idx = [0i16; 32];
    for (w, v) in idx.iter_mut().enumerate() {
        *v = ((F::BYTES / 2) * (w / 8) + nib / 2 + w % 8) as i16;
    }
    _mm512_loadu_si512(idx.as_ptr().cast())
}

/// Word indices for `vpermw`: words 0..3 the four blocks' scales, 4..7 their minimums.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn scale_index<F: Block>() -> __m512i {
    let mut idx = [0i16; 32];
    for i in 0..4 {
        idx[i] = ((F::BYTES / 2) * i) as i16;
        idx[4 + i] = ((F::BYTES / 2) * i + 1) as i16;
    }
    _mm512_loadu_si512(idx.as_ptr().cast())
}

/// How far ahead of the rows being multiplied their bytes are requested (as `gemv.rs`).
const PREFETCH_BYTES: usize = 4096;

/// Requests bytes `from..to` of `packed` (`total` readable), shifted `PREFETCH_BYTES` ahead.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn prefetch(packed: *const u8, total: usize, from: usize, to: usize) {
    let (from, to) = (
        (from + PREFETCH_BYTES).min(total),
        (to + PREFETCH_BYTES).min(total),
    );
    // Into L2, not L1 (decision 128): at one thread this took SmolLM2 Q4_0's decode from
    // 133 to 160 tokens/s. The requests run ahead of the loads by 3 row groups; sent to L1
    // they compete with the loads for its few miss buffers and the step waits on them.
    for line in (from & !63..to).step_by(64) {
        _mm_prefetch::<_MM_HINT_T1>(packed.add(line).cast());
    }
}

/// The bytes of one step (four blocks from `p`): the first 64 and the next 8 or 16, or for a
/// partial step of `blocks` blocks the same with a mask (nothing past them is read).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn step_bytes<F: Block, const FULL: bool>(
    p: *const u8,
    m0: __mmask64,
    m1: __mmask64,
) -> (__m512i, __m512i) {
    if FULL {
        let hi = if 4 * F::BYTES - 64 <= 8 {
            _mm512_castsi128_si512(_mm_loadl_epi64(p.add(64).cast()))
        } else {
            _mm512_castsi128_si512(_mm_loadu_si128(p.add(64).cast()))
        };
        (_mm512_loadu_si512(p.cast()), hi)
    } else {
        (
            _mm512_maskz_loadu_epi8(m0, p.cast()),
            _mm512_maskz_loadu_epi8(m1, p.wrapping_add(64).cast()),
        )
    }
}

/// The constants of a row group's loop.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Consts {
    nidx: __m512i,
    sidx: __m512i,
    quarter: __m512i,
    low: __m512i,
}

/// A row group's accumulators: the products per (weight row, activation row), and the offset
/// terms per block lane.
#[cfg(target_arch = "x86_64")]
struct Sums<const R: usize, const C: usize> {
    acc: [[__m512; C]; R],
    accm: [[__m128; C]; R],
}

/// One step (blocks `j..j + 4`, fewer in a partial step) of `R` weight rows (`row_bytes`
/// apart from `p`) times `C` activation rows, into the accumulators.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn step<F: Block, const R: usize, const C: usize, const I16: bool, const FULL: bool>(
    k: &Consts,
    p: *const u8,
    row_bytes: usize,
    j: usize,
    x: &[ActRow; C],
    masks: (__mmask64, __mmask64, __mmask8),
    sums: &mut Sums<R, C>,
) {
    let Sums { acc, accm } = sums;
    // The activations of this step, shared by the R weight rows: group j / 4 of the
    // nibble-order planes (128 values from 32·j) and the four chunks' scales (masked past
    // the row's chunks: the planes are padded, the scales are not).
    let mut xa = [[_mm512_setzero_si512(); 2]; C];
    let mut xb = [[_mm512_setzero_si512(); 2]; C];
    let mut xc = [_mm_setzero_ps(); C];
    let mut e32 = [_mm_setzero_ps(); C];
    for c in 0..C {
        let xr = &x[c];
        let at = 32 * j;
        xa[c] = [
            _mm512_load_si512(xr.an.add(at).cast()),
            _mm512_load_si512(xr.an.add(at + 64).cast()),
        ];
        if I16 {
            xb[c] = [
                _mm512_load_si512(xr.bn.add(at).cast()),
                _mm512_load_si512(xr.bn.add(at + 64).cast()),
            ];
        }
        let cm = if FULL && j + 4 <= xr.chunks {
            0xF
        } else {
            masks.2 & ((1u16 << (xr.chunks - j).min(8)) - 1) as u8
        };
        xc[c] = _mm_maskz_loadu_ps(cm, xr.xc.add(j));
        e32[c] = _mm_maskz_loadu_ps(cm, xr.e32.add(j));
    }
    for r in 0..R {
        let (src0, src1) = step_bytes::<F, FULL>(p.add(r * row_bytes), masks.0, masks.1);
        let q = _mm512_permutex2var_epi16(src0, k.nidx, src1);
        let lo = _mm512_and_si512(q, k.low);
        let hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), k.low);
        // [d0..d3, m0..m3] as f32.
        let dm = _mm256_cvtph_ps(_mm512_castsi512_si128(_mm512_permutexvar_epi16(
            k.sidx, src0,
        )));
        let d = _mm256_castps256_ps128(dm);
        let m = if F::MIN_STORED {
            _mm256_extractf128_ps(dm, 1)
        } else {
            d
        };
        for c in 0..C {
            // A block's low and high sums land in the same lanes: one chain per plane.
            let mut it = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, xa[c][0]);
            it = _mm512_dpbusd_epi32(it, hi, xa[c][1]);
            if I16 {
                it = _mm512_dpbusd_epi32(_mm512_slli_epi32(it, 7), lo, xb[c][0]);
                it = _mm512_dpbusd_epi32(it, hi, xb[c][1]);
            }
            accm[r][c] = _mm_fmadd_ps(m, e32[c], accm[r][c]);
            let s = _mm512_permutexvar_ps(k.quarter, _mm512_castps128_ps512(_mm_mul_ps(d, xc[c])));
            acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(it), s, acc[r][c]);
        }
    }
}

/// `R` consecutive weight rows from `p` times `C` activation rows: per activation row, the
/// `R` results.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn group<F: Block, const R: usize, const C: usize, const I16: bool>(
    k: &Consts,
    p: *const u8,
    nblk: usize,
    x: &[ActRow; C],
) -> [[f32; R]; C] {
    let row_bytes = nblk * F::BYTES;
    let mut s = Sums {
        acc: [[_mm512_setzero_ps(); C]; R],
        accm: [[_mm_setzero_ps(); C]; R],
    };
    let full = nblk / 4 * 4;
    let mut j = 0;
    while j < full {
        let at = p.add(j * F::BYTES);
        step::<F, R, C, I16, true>(k, at, row_bytes, j, x, (0, 0, 0xF), &mut s);
        j += 4;
    }
    if j < nblk {
        let blocks = nblk - j;
        let bytes = blocks * F::BYTES;
        let m0: __mmask64 = if bytes >= 64 { !0 } else { (1u64 << bytes) - 1 };
        let m1: __mmask64 = if bytes > 64 {
            (1u64 << (bytes - 64)) - 1
        } else {
            0
        };
        let masks = (m0, m1, (1u8 << blocks) - 1);
        let at = p.add(j * F::BYTES);
        step::<F, R, C, I16, false>(k, at, row_bytes, j, x, masks, &mut s);
    }
    let (acc, accm) = (s.acc, s.accm);
    // Each accumulator's four 128-bit lanes added, the offsets folded in (Q4_0's `m = −8d`
    // once here), then the four lanes of each summed.
    let per_d = _mm_set1_ps(if F::MIN_STORED { 1.0 } else { F::M_PER_D });
    // (Plain loops: closures do not inherit the caller's target features, so intrinsics
    // inside `array::from_fn` would become calls.)
    let mut out = [[0f32; R]; C];
    for c in 0..C {
        for r in 0..R {
            let v = acc[r][c];
            let h = _mm256_add_ps(
                _mm512_castps512_ps256(v),
                _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)),
            );
            let q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
            let q = _mm_fmadd_ps(accm[r][c], per_d, q);
            let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
            out[c][r] = _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
        }
    }
    out
}

/// The job's rows `0..rows` of `packed` (rows of `k / 32` blocks of `F`, back to back)
/// times the `C` activation rows `x`: the value of weight row `r` and activation row `c`
/// goes to `y[c·stride + r]`, and prefetches may run `after` bytes past the rows. Four
/// weight rows at a time share the activations' loads and the loop (`R = 4` for one or two
/// activation rows, 2 for more: registers).
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C (the caller's target features); `packed` holds
/// `rows` rows and is followed by `after` readable bytes; each `x` row has its nibble-order
/// planes (at least `k` values, padded to a multiple of 128, 64-byte aligned) and
/// `x.chunks ≥ k / 32` chunk scales; `y` is valid for those writes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn rows<F: Block, const C: usize, const I16: bool>(
    job: RowsJob,
    x: &[ActRow; C],
) {
    debug_assert!(handles::<F>());
    let RowsJob {
        packed,
        rows,
        k: weights,
        y,
        stride,
        after,
    } = job;
    let (packed, nblk) = (packed.as_ptr(), weights / F::ELEMS);
    let k = Consts {
        nidx: nibble_index::<F>(),
        sidx: scale_index::<F>(),
        quarter: _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
        low: _mm512_set1_epi8(0x0F),
    };
    let row_bytes = nblk * F::BYTES;
    let total = rows * row_bytes + after;
    for line in (0..PREFETCH_BYTES.min(total)).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(packed.add(line).cast());
    }
    const R: usize = 4;
    let mut r = 0;
    if C <= 2 {
        while r + R <= rows {
            prefetch(packed, total, r * row_bytes, (r + R) * row_bytes);
            let v = group::<F, R, C, I16>(&k, packed.add(r * row_bytes), nblk, x);
            for (c, vc) in v.iter().enumerate() {
                std::ptr::copy_nonoverlapping(vc.as_ptr(), y.add(c * stride + r), R);
            }
            r += R;
        }
    }
    while r + 2 <= rows {
        prefetch(packed, total, r * row_bytes, (r + 2) * row_bytes);
        let v = group::<F, 2, C, I16>(&k, packed.add(r * row_bytes), nblk, x);
        for (c, vc) in v.iter().enumerate() {
            std::ptr::copy_nonoverlapping(vc.as_ptr(), y.add(c * stride + r), 2);
        }
        r += 2;
    }
    if r < rows {
        prefetch(packed, total, r * row_bytes, rows * row_bytes);
        let v = group::<F, 1, C, I16>(&k, packed.add(r * row_bytes), nblk, x);
        for (c, vc) in v.iter().enumerate() {
            *y.add(c * stride + r) = vc[0];
        }
    }
}
