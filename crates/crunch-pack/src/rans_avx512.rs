//! AVX-512 coding of whole 64-lane rANS groups: the same arithmetic as the scalar `rans::put`
//! and `rans::step`, sixteen lanes per vector, four vectors in flight so that the gathers of
//! one overlap the multiplies of the others. Both produce exactly the scalar results (tested).
//!
//! Renormalisation is where SIMD needs care: the lanes of a group that need a word take
//! consecutive words in lane order. `vpexpandd` does exactly that when decoding, placing the
//! next `popcount(mask)` words into the masked lanes in order; `vpcompressd` is its mirror
//! when encoding.
//!
//! The encoder's division `x / freq` uses an f32 reciprocal: with `x < freq * 2^20 <= 2^32`
//! the product is within 3/16 of the true quotient, so the truncated estimate is off by at
//! most one either way, and one signed correction step on the remainder makes it exact.

#![cfg(target_arch = "x86_64")]

use crate::freq::PROB_SCALE;
use crate::rans::{EncTables, LANES, STATE_LOW};
use std::arch::x86_64::*;
use std::sync::OnceLock;

const VECS: usize = LANES / 16;

/// Whether this CPU runs the vector path (detected once).
pub fn available() -> bool {
    static HAVE: OnceLock<bool> = OnceLock::new();
    *HAVE.get_or_init(|| {
        std::env::var_os("CRUNCH_PACK_NO_SIMD").is_none()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
    })
}

/// Same contract as `rans::GroupDecoder`.
pub(crate) fn decode_groups(
    x: &mut [u32; LANES],
    words: &[u8],
    t: &[u32; PROB_SCALE as usize],
    out: &mut [u8],
) -> (usize, usize) {
    assert!(available(), "AVX-512 decoder called on a CPU without it");
    // SAFETY: the CPU supports the features the function is compiled for (checked above).
    unsafe { decode_groups_avx512(x, words, t, out) }
}

#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn decode_groups_avx512(
    x: &mut [u32; LANES],
    words: &[u8],
    t: &[u32; PROB_SCALE as usize],
    out: &mut [u8],
) -> (usize, usize) {
    let nwords = words.len() / 2;
    let mask12 = _mm512_set1_epi32((PROB_SCALE - 1) as i32);
    let low = _mm512_set1_epi32(STATE_LOW as i32);
    let mut state = [_mm512_setzero_si512(); VECS];
    for (v, s) in state.iter_mut().enumerate() {
        // SAFETY: `x` holds LANES = 16 * VECS u32s; unaligned load of 16 of them.
        *s = _mm512_loadu_si512(x.as_ptr().add(16 * v) as *const _);
    }
    let (mut done, mut pos) = (0usize, 0usize);
    for group in out.chunks_exact_mut(LANES) {
        if pos + LANES > nwords {
            break;
        }
        let mut next = [_mm512_setzero_si512(); VECS];
        let mut need = [0u16; VECS];
        for v in 0..VECS {
            let slot = _mm512_and_si512(state[v], mask12);
            // SAFETY: every index is masked to 12 bits and the table has 2^12 entries.
            let e = _mm512_i32gather_epi32::<4>(slot, t.as_ptr() as *const i32);
            let freq = _mm512_and_si512(_mm512_srli_epi32::<8>(e), mask12);
            let scaled = _mm512_mullo_epi32(freq, _mm512_srli_epi32::<12>(state[v]));
            next[v] = _mm512_add_epi32(scaled, _mm512_srli_epi32::<20>(e));
            need[v] = _mm512_cmplt_epu32_mask(next[v], low);
            // SAFETY: `group` has LANES bytes; this stores bytes 16v..16v+16 (the symbols).
            _mm_storeu_si128(
                group.as_mut_ptr().add(16 * v) as *mut __m128i,
                _mm512_cvtepi32_epi8(e),
            );
        }
        for v in 0..VECS {
            // SAFETY: pos + LANES <= nwords at the group start and pos grows by at most 16 per
            // vector, so the 16 words (32 bytes) read here stay inside `words`.
            let raw = _mm256_loadu_si256(words.as_ptr().add(2 * pos) as *const __m256i);
            let fresh = _mm512_maskz_expand_epi32(need[v], _mm512_cvtepu16_epi32(raw));
            state[v] =
                _mm512_mask_or_epi32(next[v], need[v], _mm512_slli_epi32::<16>(next[v]), fresh);
            pos += need[v].count_ones() as usize;
        }
        done += LANES;
    }
    for (v, s) in state.iter().enumerate() {
        // SAFETY: writes 16 u32s at 16v within the LANES-long array.
        _mm512_storeu_si512(x.as_mut_ptr().add(16 * v) as *mut _, *s);
    }
    (done, pos)
}

/// Same contract as `rans::GroupEncoder`.
pub(crate) fn encode_groups(
    x: &mut [u32; LANES],
    groups: &[u8],
    t: &EncTables,
    buf: &mut [u16],
    top: &mut usize,
) {
    assert!(available(), "AVX-512 encoder called on a CPU without it");
    assert!(*top >= groups.len(), "word buffer too small");
    // SAFETY: CPU features checked above; `buf` has room for one word per symbol below `top`.
    unsafe { encode_groups_avx512(x, groups, t, buf, top) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn encode_groups_avx512(
    x: &mut [u32; LANES],
    groups: &[u8],
    t: &EncTables,
    buf: &mut [u16],
    top: &mut usize,
) {
    let mask12 = _mm512_set1_epi32((PROB_SCALE - 1) as i32);
    let one = _mm512_set1_epi32(1);
    let mut state = [_mm512_setzero_si512(); VECS];
    for (v, s) in state.iter_mut().enumerate() {
        // SAFETY: 16 u32s at 16v within the LANES-long array.
        *s = _mm512_loadu_si512(x.as_ptr().add(16 * v) as *const _);
    }
    let mut pos = *top;
    for group in groups.chunks_exact(LANES).rev() {
        for v in (0..VECS).rev() {
            // SAFETY: 16 bytes at 16v within the LANES-byte group.
            let bytes = _mm_loadu_si128(group.as_ptr().add(16 * v) as *const __m128i);
            let sym = _mm512_cvtepu8_epi32(bytes);
            // SAFETY: symbols are bytes and both tables have 256 entries.
            let info = _mm512_i32gather_epi32::<4>(sym, t.info.as_ptr() as *const i32);
            let rcp = _mm512_castsi512_ps(_mm512_i32gather_epi32::<4>(
                sym,
                t.rcp.as_ptr() as *const i32,
            ));
            let freq = _mm512_and_si512(info, mask12);
            let cum = _mm512_srli_epi32::<12>(info);
            let x_max = _mm512_slli_epi32::<20>(freq);
            let s = state[v];
            let shed = _mm512_cmpge_epu32_mask(s, x_max);
            let n = shed.count_ones() as usize;
            pos -= n;
            let words = _mm512_cvtepi32_epi16(_mm512_maskz_compress_epi32(shed, s));
            // SAFETY: writes `n` u16s at [pos, pos + n), below the previous `pos`; the caller
            // reserved one slot per symbol.
            _mm256_mask_storeu_epi16(
                buf.as_mut_ptr().add(pos) as *mut i16,
                ((1u32 << n) - 1) as u16,
                words,
            );
            let s = _mm512_mask_srli_epi32(s, shed, s, 16);
            // q = trunc(x * (1/f)), then one correction each way makes it floor(x / f).
            let mut q = _mm512_cvttps_epu32(_mm512_mul_ps(_mm512_cvtepu32_ps(s), rcp));
            let mut r = _mm512_sub_epi32(s, _mm512_mullo_epi32(q, freq));
            let neg = _mm512_cmplt_epi32_mask(r, _mm512_setzero_si512());
            q = _mm512_mask_sub_epi32(q, neg, q, one);
            r = _mm512_mask_add_epi32(r, neg, r, freq);
            let big = _mm512_cmpge_epi32_mask(r, freq);
            q = _mm512_mask_add_epi32(q, big, q, one);
            r = _mm512_mask_sub_epi32(r, big, r, freq);
            state[v] = _mm512_add_epi32(_mm512_add_epi32(_mm512_slli_epi32::<12>(q), r), cum);
        }
    }
    for (v, s) in state.iter().enumerate() {
        // SAFETY: 16 u32s at 16v within the LANES-long array.
        _mm512_storeu_si512(x.as_mut_ptr().add(16 * v) as *mut _, *s);
    }
    *top = pos;
}
