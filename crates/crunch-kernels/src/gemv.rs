//! The fused product for a few activation rows (decoding): each stored block is decoded into
//! registers (`Block::codes_avx2`) and multiplied at once, never written out, so the loop
//! costs little more than reading the weights.
//!
//! Each weight row takes two passes. The first reads every block's scales (for 32-weight
//! blocks, 16 or 8 blocks at once with a gather and one `vcvtph2ps`) and turns them into a
//! scale per 32-bit lane of the integer products, `d·dx`, and the row's offset term
//! `Σ m·(dx·Σq)`, both plain vector arithmetic. The second decodes the codes and accumulates
//! `cvt(Σ_lane u·q) · (d·dx)`: with AVX-512, 64 weights (two chunks) per instruction. Same
//! arithmetic as `body.rs`, arranged for one streaming read of the weights.

use crate::act::{ActBits, Acts};
use crate::formats::{Block, F16c};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// One activation row's pointers.
#[derive(Clone, Copy)]
pub(crate) struct ActRow {
    pub a: *const i8,
    pub b: *const i8,
    pub xc: *const f32,
    pub e16: *const f32,
    pub e32: *const f32,
    /// The planes in nibble order (`Acts::an`, `bn`; null when the activations have none).
    pub an: *const i8,
    pub bn: *const i8,
    /// Chunk scales in the row (`kp / 32`).
    pub chunks: usize,
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
            e32: acts.e32(i).as_ptr(),
            an: if acts.kq > 0 {
                acts.an(i).as_ptr()
            } else {
                std::ptr::null()
            },
            bn: match (acts.kq > 0, acts.bits) {
                (true, ActBits::I16) => acts.bn(i).as_ptr(),
                _ => std::ptr::null(),
            },
            chunks: acts.kp / 32,
        }
    }
}

/// Per-row scratch: per-16 scales and offsets, and per activation row a scale per lane.
#[derive(Default)]
pub(crate) struct Scratch {
    d16: Vec<f32>,
    m16: Vec<f32>,
    lane: Vec<f32>,
}

/// `Σ a·b` in 8 partial sums (vectorises in the callers' target features).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Sum of the 16 lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn hsum512(v: __m512) -> f32 {
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    crate::body::hsum256(_mm256_add_ps(_mm512_castps512_ps256(v), hi))
}

/// How far ahead of the row being multiplied its bytes are requested from memory: the first
/// pass touches a row's blocks scattered (a scale per block), which the hardware prefetcher
/// alone does not keep ahead of; about a DRAM latency's worth of rows.
const PREFETCH_BYTES: usize = 4096;

/// Pass one for 32-weight blocks with their scale at a fixed offset: `G` (16 or 8) blocks'
/// scales per gather. Writes 8 lane scales per block for each activation row and returns
/// the offset terms.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn scales_gathered<F: Block, const C: usize, const AVX512: bool>(
    row: &[u8],
    nblk: usize,
    x: &[ActRow; C],
    signed: bool,
    lane: &mut [f32],
) -> [f32; C] {
    let at = F::SCALE_AT.expect("gathered scales") as i32;
    let stride = F::BYTES as i32;
    let mut accm = [0f32; C];
    let g = if AVX512 { 16 } else { 8 };
    let groups = nblk / g;
    let base = row.as_ptr();
    let fix = if signed { 128.0 } else { 0.0 };
    // d and m of G blocks: the f16 pair at `at` (m only used when stored).
    let mut dv = [0f32; 16];
    let mut mv = [0f32; 16];
    for grp in 0..groups {
        let b0 = grp * g;
        let p = base.add(b0 * F::BYTES);
        if AVX512 {
            let idx = _mm512_mullo_epi32(
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                _mm512_set1_epi32(stride),
            );
            let w =
                _mm512_i32gather_epi32::<1>(_mm512_add_epi32(idx, _mm512_set1_epi32(at)), p.cast());
            let d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(w));
            let m = if F::MIN_STORED {
                _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(w, 16)))
            } else {
                _mm512_mul_ps(d, _mm512_set1_ps(F::M_PER_D))
            };
            let m = _mm512_fmadd_ps(d, _mm512_set1_ps(fix), m);
            _mm512_storeu_ps(dv.as_mut_ptr(), d);
            _mm512_storeu_ps(mv.as_mut_ptr(), m);
        } else {
            let idx = _mm256_mullo_epi32(
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                _mm256_set1_epi32(stride),
            );
            let w =
                _mm256_i32gather_epi32::<1>(p.cast(), _mm256_add_epi32(idx, _mm256_set1_epi32(at)));
            let lo16 = |v: __m256i| {
                let v = _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF));
                _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1))
            };
            let d = _mm256_cvtph_ps(lo16(w));
            let m = if F::MIN_STORED {
                _mm256_cvtph_ps(lo16(_mm256_srli_epi32(w, 16)))
            } else {
                _mm256_mul_ps(d, _mm256_set1_ps(F::M_PER_D))
            };
            let m = _mm256_fmadd_ps(d, _mm256_set1_ps(fix), m);
            _mm256_storeu_ps(dv.as_mut_ptr(), d);
            _mm256_storeu_ps(mv.as_mut_ptr(), m);
        }
        for c in 0..C {
            let xc = std::slice::from_raw_parts(x[c].xc.add(b0), g);
            let e32 = std::slice::from_raw_parts(x[c].e32.add(b0), g);
            accm[c] += dot(&mv[..g], e32);
            let out = &mut lane[(c * nblk + b0) * 8..(c * nblk + b0 + g) * 8];
            for i in 0..g {
                out[8 * i..8 * i + 8].fill(dv[i] * xc[i]);
            }
        }
    }
    // The blocks after the last whole group.
    let mut d2 = [0f32; 2];
    let mut m2 = [0f32; 2];
    for blk in groups * g..nblk {
        let b = &row[blk * F::BYTES..(blk + 1) * F::BYTES];
        F::scales::<F16c>(b, &mut d2, &mut m2);
        let m = m2[0] + fix * d2[0];
        for c in 0..C {
            accm[c] += m * *x[c].e32.add(blk);
            let s = d2[0] * *x[c].xc.add(blk);
            lane[(c * nblk + blk) * 8..(c * nblk + blk + 1) * 8].fill(s);
        }
    }
    accm
}

/// `acc + (Σ u·q) · scale` for the two chunks `ch`, `ch + 1` of activation row `x` (codes `u`
/// of both in one 512-bit vector, one scale per 32-bit lane).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pair_product<const I16: bool>(
    u: __m512i,
    x: &ActRow,
    ch: usize,
    scale: __m512,
    acc: __m512,
) -> __m512 {
    let xa = _mm512_loadu_si512(x.a.add(32 * ch).cast());
    let mut it = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, xa);
    if I16 {
        let xb = _mm512_loadu_si512(x.b.add(32 * ch).cast());
        it = _mm512_dpbusd_epi32(_mm512_slli_epi32(it, 7), u, xb);
    }
    _mm512_fmadd_ps(_mm512_cvtepi32_ps(it), scale, acc)
}

/// One row of a 32-weight block type with its scale at a fixed offset, on AVX-512 VNNI, in
/// one pass, two chunks (64 weights) per step: the pair's two f16 scales (and minimums) are
/// read with plain loads and widened together, `d·dx` of both is spread over the two halves
/// of a 512-bit vector with one permute, and the offset terms `m·(dx·Σq)` accumulate in a
/// vector. No lane-scale array is written or read (the two-pass form below does, for AVX2).
/// A gather of 16 blocks' scales at once measured slower (kernel_bench under load: Q4_0
/// 5.8 against 6.8 GMAC/s, Q8_0 4.5 against 6.8): the products wait on it. An odd last chunk
/// is paired with zero codes and a zero scale (the activation rows are padded to 64 values,
/// so its activations and scales can be read).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn row_pairs_vnni<F: Block, const C: usize, const I16: bool>(
    row: *const u8,
    nblk: usize,
    x: &[ActRow; C],
) -> [f32; C] {
    let at = F::SCALE_AT.expect("scale offset");
    let pair = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    let mut acc = [_mm512_setzero_ps(); C];
    let mut accm = [_mm_setzero_ps(); C];
    let mut regs = [_mm256_setzero_si256(); 8];
    let mut j = 0;
    while j < nblk {
        let p = row.add(j * F::BYTES);
        let two = j + 1 < nblk;
        let w0 = std::ptr::read_unaligned(p.add(at).cast::<u32>());
        let w1 = if two {
            std::ptr::read_unaligned(p.add(F::BYTES + at).cast::<u32>())
        } else {
            0
        };
        // [d0, d1] (and the stored minimums [m0, m1]) as f32.
        let hv = _mm_cvtsi32_si128(((w0 & 0xFFFF) | (w1 << 16)) as i32);
        let d = _mm_cvtph_ps(hv);
        let m = if F::MIN_STORED {
            _mm_cvtph_ps(_mm_cvtsi32_si128(((w0 >> 16) | (w1 & 0xFFFF_0000)) as i32))
        } else {
            _mm_mul_ps(d, _mm_set1_ps(F::M_PER_D))
        };
        F::codes_avx2(p, &mut regs);
        let u0 = regs[0];
        let u1 = if two {
            F::codes_avx2(p.add(F::BYTES), &mut regs);
            regs[0]
        } else {
            _mm256_setzero_si256()
        };
        let u = _mm512_inserti64x4(_mm512_castsi256_si512(u0), u1, 1);
        for c in 0..C {
            // The activation rows are padded to 64 values: chunk j + 1's scale is readable
            // (and zero past the row).
            let xc = _mm_castpd_ps(_mm_load_sd(x[c].xc.add(j).cast()));
            let e32 = _mm_castpd_ps(_mm_load_sd(x[c].e32.add(j).cast()));
            accm[c] = _mm_fmadd_ps(m, e32, accm[c]);
            let sv = _mm512_castps128_ps512(_mm_mul_ps(d, xc));
            let scale = _mm512_permutexvar_ps(pair, sv);
            acc[c] = pair_product::<I16>(u, &x[c], j, scale, acc[c]);
        }
        j += 2;
    }
    std::array::from_fn(|c| {
        let m = _mm_add_ps(accm[c], _mm_movehl_ps(accm[c], accm[c]));
        hsum512(acc[c]) + _mm_cvtss_f32(_mm_add_ss(m, _mm_shuffle_ps(m, m, 1)))
    })
}

/// One row of a 256-weight (K) block type on AVX-512 VNNI, in one pass: each block's 16
/// per-16 scales and offsets are unpacked once into a register pair, multiplied by the
/// activation scales (each chunk's `dx` spread over its two halves by a permute), and every
/// pair of chunks picks its four scales out of them with a permute, as
/// [`row_pairs_vnni`] does for the 32-weight types.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn row_k_vnni<F: Block, const C: usize, const I16: bool>(
    row: *const u8,
    nblk: usize,
    x: &[ActRow; C],
) -> [f32; C] {
    debug_assert_eq!(F::ELEMS, 256);
    let twice = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    let quad = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    let mut acc = [_mm512_setzero_ps(); C];
    let mut accm = [_mm512_setzero_ps(); C];
    let mut regs = [_mm256_setzero_si256(); 8];
    let (mut d16, mut m16) = ([0f32; 16], [0f32; 16]);
    for blk in 0..nblk {
        let b = row.add(blk * F::BYTES);
        F::scales::<F16c>(std::slice::from_raw_parts(b, F::BYTES), &mut d16, &mut m16);
        F::codes_avx2(b, &mut regs);
        let d = _mm512_loadu_ps(d16.as_ptr());
        let m = _mm512_loadu_ps(m16.as_ptr());
        let ch0 = 8 * blk;
        let mut sv = [_mm512_setzero_ps(); C];
        for c in 0..C {
            let xc = _mm512_castps256_ps512(_mm256_loadu_ps(x[c].xc.add(ch0)));
            let e16 = _mm512_loadu_ps(x[c].e16.add(2 * ch0));
            accm[c] = _mm512_fmadd_ps(m, e16, accm[c]);
            sv[c] = _mm512_mul_ps(d, _mm512_permutexvar_ps(twice, xc));
        }
        for p in 0..4 {
            let u = _mm512_inserti64x4(_mm512_castsi256_si512(regs[2 * p]), regs[2 * p + 1], 1);
            let sel = _mm512_add_epi32(quad, _mm512_set1_epi32(4 * p as i32));
            let ch = ch0 + 2 * p;
            for c in 0..C {
                let scale = _mm512_permutexvar_ps(sel, sv[c]);
                acc[c] = pair_product::<I16>(u, &x[c], ch, scale, acc[c]);
            }
        }
    }
    std::array::from_fn(|c| hsum512(_mm512_add_ps(acc[c], accm[c])))
}

/// Pass one for any block type: each block's scales, then per chunk the lane scales (the
/// two halves of a chunk may differ).
#[inline(always)]
unsafe fn scales_per_block<F: Block, const C: usize>(
    row: &[u8],
    nch: usize,
    x: &[ActRow; C],
    signed: bool,
    scratch: &mut Scratch,
) -> [f32; C] {
    let per = 2 * F::ELEMS / 32;
    let n16 = 2 * nch;
    scratch.d16.resize(n16, 0.0);
    scratch.m16.resize(n16, 0.0);
    let (d16, m16) = (&mut scratch.d16[..], &mut scratch.m16[..]);
    for (blk, b) in row.chunks_exact(F::BYTES).enumerate() {
        F::scales::<F16c>(
            b,
            &mut d16[blk * per..(blk + 1) * per],
            &mut m16[blk * per..(blk + 1) * per],
        );
    }
    if signed {
        for (m, d) in m16.iter_mut().zip(d16.iter()) {
            *m += 128.0 * d;
        }
    }
    let mut accm = [0f32; C];
    for c in 0..C {
        let e16 = std::slice::from_raw_parts(x[c].e16, n16);
        let xc = std::slice::from_raw_parts(x[c].xc, nch);
        accm[c] = dot(m16, e16);
        let out = &mut scratch.lane[c * nch * 8..(c + 1) * nch * 8];
        for ch in 0..nch {
            out[8 * ch..8 * ch + 4].fill(d16[2 * ch] * xc[ch]);
            out[8 * ch + 4..8 * ch + 8].fill(d16[2 * ch + 1] * xc[ch]);
        }
    }
    accm
}

/// The integer products of one chunk's codes `u` with activation row `x` at chunk `ch`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn chunk_dot<const I16: bool, const VNNI: bool>(
    u: __m256i,
    absw: __m256i,
    signed: bool,
    x: &ActRow,
    ch: usize,
) -> __m256i {
    let xa = _mm256_loadu_si256(x.a.add(32 * ch).cast());
    let xb = if I16 {
        _mm256_loadu_si256(x.b.add(32 * ch).cast())
    } else {
        _mm256_setzero_si256()
    };
    if VNNI {
        let hi = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, xa);
        if I16 {
            _mm256_dpbusd_epi32(_mm256_slli_epi32(hi, 7), u, xb)
        } else {
            hi
        }
    } else {
        let ones = _mm256_set1_epi16(1);
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
    }
}

/// What a fused decode product reads and writes: `rows` packed weight rows of `k` weights
/// (`packed`), and the output, value (activation row `c`, weight row `r`) at
/// `y[c * stride + r]`.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct RowsJob<'a> {
    pub packed: &'a [u8],
    pub rows: usize,
    pub k: usize,
    pub y: *mut f32,
    pub stride: usize,
    /// Bytes of the matrix after `packed`, which may be prefetched: the same thread's next
    /// task usually starts there (`pool::run_ranges`), so its first rows are requested
    /// before it begins.
    pub after: usize,
}

/// Rows `0..rows` of `packed` (stored rows of `k` weights, back to back) times `C`
/// activation rows: the value of weight row `r` and activation row `c` goes to
/// `y[c·stride + r]`.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C (and AVX-512 F/BW/VL/VNNI when `VNNI`); the
/// activation rows must hold at least `k` values in the layout of `Acts`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn rows_generic<F: Block, const C: usize, const I16: bool, const VNNI: bool>(
    job: RowsJob,
    x: &[ActRow; C],
    scratch: &mut Scratch,
) {
    let RowsJob {
        packed,
        rows,
        k,
        y,
        stride,
        after,
    } = job;
    let blocks = k / F::ELEMS;
    if VNNI && crate::quad::handles::<F>() && !x[0].an.is_null() {
        return crate::quad::rows::<F, C, I16>(job, x);
    }
    let put = |c: usize, r: usize, v: f32| *y.add(c * stride + r) = v;
    let per_block = F::ELEMS / 32;
    let nch = k / 32;
    let row_bytes = blocks * F::BYTES;
    // Without VNNI, 8-bit codes are re-centred for the signed-by-signed trick.
    let signed = F::WIDE && !VNNI;
    let flip = _mm256_set1_epi8(0x80u8 as i8);
    scratch.lane.resize(C * nch * 8, 0.0);
    let mut regs = [_mm256_setzero_si256(); 8];
    let mut next = [_mm256_setzero_si256(); 8];
    // Prefetches may run past this task's rows into the rest of the matrix.
    let total_bytes = rows * row_bytes + after;
    // The first rows now, then one row's worth each step.
    for line in (0..PREFETCH_BYTES.min(total_bytes)).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(packed.as_ptr().add(line).cast());
    }
    for r in 0..rows {
        let row = &packed[r * row_bytes..(r + 1) * row_bytes];
        let (from, to) = (
            (r * row_bytes + PREFETCH_BYTES).min(total_bytes),
            ((r + 1) * row_bytes + PREFETCH_BYTES).min(total_bytes),
        );
        for line in (from & !63..to).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(packed.as_ptr().add(line).cast());
        }
        if VNNI && (F::SCALE_AT.is_some() || F::ELEMS == 256) {
            let total = if F::ELEMS == 256 {
                row_k_vnni::<F, C, I16>(row.as_ptr(), blocks, x)
            } else {
                row_pairs_vnni::<F, C, I16>(row.as_ptr(), blocks, x)
            };
            for (c, &v) in total.iter().enumerate() {
                put(c, r, v);
            }
            continue;
        }
        let accm = if F::SCALE_AT.is_some() {
            let mut lane = std::mem::take(&mut scratch.lane);
            let a = scales_gathered::<F, C, VNNI>(row, blocks, x, signed, &mut lane);
            scratch.lane = lane;
            a
        } else {
            scales_per_block::<F, C>(row, nch, x, signed, scratch)
        };
        let lane = scratch.lane.as_ptr();
        let mut total = [0f32; C];
        if VNNI {
            // Two chunks per 512-bit product.
            let mut acc = [_mm512_setzero_ps(); C];
            let mut acc_tail = [_mm256_setzero_ps(); C];
            let mut ch = 0;
            while ch < nch {
                let (u0, u1, pair) = if per_block == 1 {
                    F::codes_avx2(row.as_ptr().add(ch * F::BYTES), &mut regs);
                    if ch + 1 < nch {
                        F::codes_avx2(row.as_ptr().add((ch + 1) * F::BYTES), &mut next);
                        (regs[0], next[0], true)
                    } else {
                        (regs[0], regs[0], false)
                    }
                } else {
                    let i = ch % per_block;
                    if i == 0 {
                        F::codes_avx2(row.as_ptr().add(ch / per_block * F::BYTES), &mut regs);
                    }
                    (regs[i], regs[i + 1], true)
                };
                if pair {
                    let u = _mm512_inserti64x4(_mm512_castsi256_si512(u0), u1, 1);
                    for c in 0..C {
                        let xa = _mm512_loadu_si512(x[c].a.add(32 * ch).cast());
                        let mut it = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, xa);
                        if I16 {
                            let xb = _mm512_loadu_si512(x[c].b.add(32 * ch).cast());
                            it = _mm512_dpbusd_epi32(_mm512_slli_epi32(it, 7), u, xb);
                        }
                        let scale = _mm512_loadu_ps(lane.add((c * nch + ch) * 8));
                        acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(it), scale, acc[c]);
                    }
                    ch += 2;
                } else {
                    for c in 0..C {
                        let it = chunk_dot::<I16, true>(u0, u0, false, &x[c], ch);
                        let scale = _mm256_loadu_ps(lane.add((c * nch + ch) * 8));
                        acc_tail[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(it), scale, acc_tail[c]);
                    }
                    ch += 1;
                }
            }
            for c in 0..C {
                total[c] = hsum512(acc[c]) + crate::body::hsum256(acc_tail[c]);
            }
        } else {
            let mut acc = [_mm256_setzero_ps(); C];
            for blk in 0..blocks {
                F::codes_avx2(row.as_ptr().add(blk * F::BYTES), &mut regs);
                for (i, &reg) in regs.iter().enumerate().take(per_block) {
                    let ch = blk * per_block + i;
                    let mut u = reg;
                    let mut absw = u;
                    if signed {
                        u = _mm256_xor_si256(u, flip);
                        absw = _mm256_abs_epi8(u);
                    }
                    for c in 0..C {
                        let it = chunk_dot::<I16, false>(u, absw, signed, &x[c], ch);
                        let scale = _mm256_loadu_ps(lane.add((c * nch + ch) * 8));
                        acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(it), scale, acc[c]);
                    }
                }
            }
            for c in 0..C {
                total[c] = crate::body::hsum256(acc[c]);
            }
        }
        for c in 0..C {
            put(c, r, total[c] + accm[c]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_avx2<F: Block, const C: usize, const I16: bool>(
    job: RowsJob,
    x: &[ActRow; C],
    scratch: &mut Scratch,
) {
    rows_generic::<F, C, I16, false>(job, x, scratch)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn rows_avx512<F: Block, const C: usize, const I16: bool>(
    job: RowsJob,
    x: &[ActRow; C],
    scratch: &mut Scratch,
) {
    rows_generic::<F, C, I16, true>(job, x, scratch)
}

/// Rows `0..rows` of `packed` times the activation rows `x` (1 to 4 of them), on AVX2 or
/// AVX-512 (`vnni`).
///
/// # Safety
/// As for [`rows_generic`]; `x.len()` in 1..=4; `y` valid for the writes.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn rows<F: Block>(
    vnni: bool,
    i16: bool,
    job: RowsJob,
    x: &[ActRow],
    scratch: &mut Scratch,
) {
    macro_rules! go {
        ($c:literal) => {{
            let xs: &[ActRow; $c] = x.try_into().expect("row count");
            match (vnni, i16) {
                (true, true) => rows_avx512::<F, $c, true>(job, xs, scratch),
                (true, false) => rows_avx512::<F, $c, false>(job, xs, scratch),
                (false, true) => rows_avx2::<F, $c, true>(job, xs, scratch),
                (false, false) => rows_avx2::<F, $c, false>(job, xs, scratch),
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
