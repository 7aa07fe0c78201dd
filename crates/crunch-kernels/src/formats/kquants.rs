//! GGUF's 256-weight "K" super-blocks: sub-blocks of 16 (Q2_K, Q3_K, Q6_K) or 32 (Q4_K,
//! Q5_K) weights with small integer scales (and mins) under one or two f16 super-scales. The
//! per-16 `d`/`m` of the unpacked form carry the products of the two levels of scales.

use super::{Block, Half};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

pub(crate) struct Q2K;
pub(crate) struct Q3K;
pub(crate) struct Q4K;
pub(crate) struct Q5K;
pub(crate) struct Q6K;

/// The trait constants every 256-weight type shares.
macro_rules! block256 {
    ($bytes:expr) => {
        const ELEMS: usize = 256;
        const BYTES: usize = $bytes;
        const WIDE: bool = false;
    };
}

impl Block for Q2K {
    block256!(84);

    /// scales[16] (low nibble: scale, high nibble: min), qs[64] (2-bit codes), d, dmin.
    /// Sub-block `s` takes bit pair `2·((s % 8) / 2)` of 16 bytes at `32·(s / 8) + 16·(s % 2)`.
    fn codes(b: &[u8], u: &mut [u8]) {
        let qs = &b[16..80];
        for s in 0..16 {
            let (half, shift, lo) = (s / 8, 2 * ((s % 8) / 2), 16 * (s % 2));
            let q = &qs[32 * half + lo..32 * half + lo + 16];
            for (l, &q) in q.iter().enumerate() {
                u[16 * s + l] = (q >> shift) & 3;
            }
        }
    }

    fn scales<H: Half>(b: &[u8], d: &mut [f32], m: &mut [f32]) {
        let (dd, dmin) = (H::at(b, 80), H::at(b, 82));
        for (s, &sc) in b[0..16].iter().enumerate() {
            d[s] = dd * (sc & 0xF) as f32;
            m[s] = -(dmin * (sc >> 4) as f32);
        }
    }
}

/// The sixteen signed 6-bit scales of a Q3_K block: 4 low bits in bytes 0..8 (low nibbles
/// first, then high nibbles), 2 high bits in bytes 8..12.
fn q3k_scales(s: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (k, o) in out.iter_mut().enumerate() {
        let low = if k < 8 { s[k] & 0xF } else { s[k - 8] >> 4 };
        let high = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
        *o = (low | (high << 4)) as i8 - 32;
    }
    out
}

impl Block for Q3K {
    block256!(110);

    /// hmask[32], qs[64] (2 low bits), scales[12], d. Weight = d·sc·(q - 4) when its hmask
    /// bit is clear, d·sc·q when set: `u = q + 4·bit`, `m = -4·d·sc`.
    fn codes(b: &[u8], u: &mut [u8]) {
        let (hmask, qs) = (&b[0..32], &b[32..96]);
        for s in 0..16 {
            let (half, pair, lo) = (s / 8, (s % 8) / 2, 16 * (s % 2));
            let (shift, bit) = (2 * pair, 4 * half + pair);
            for l in 0..16 {
                let q = (qs[32 * half + lo + l] >> shift) & 3;
                let h = (hmask[lo + l] >> bit) & 1;
                u[16 * s + l] = q + 4 * h;
            }
        }
    }

    fn scales<H: Half>(b: &[u8], d: &mut [f32], m: &mut [f32]) {
        let dd = H::at(b, 108);
        for (s, &sc) in q3k_scales(&b[96..108]).iter().enumerate() {
            let dl = dd * sc as f32;
            d[s] = dl;
            m[s] = -4.0 * dl;
        }
    }
}

/// Scale and min of sub-block `j` of a Q4_K/Q5_K block: eight 6-bit pairs in 12 bytes.
fn k4_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// The per-16 scales and offsets of a Q4_K/Q5_K block (each 32-weight sub-block twice).
#[inline(always)]
fn k4_scales<H: Half>(b: &[u8], d: &mut [f32], m: &mut [f32]) {
    let (dd, dmin) = (H::at(b, 0), H::at(b, 2));
    let scales = &b[4..16];
    for j in 0..8 {
        let (sc, mn) = k4_scale_min(j, scales);
        let (dl, ml) = (dd * sc as f32, -(dmin * mn as f32));
        d[2 * j..2 * j + 2].fill(dl);
        m[2 * j..2 * j + 2].fill(ml);
    }
}

impl Block for Q4K {
    block256!(144);

    /// d, dmin, scales[12], qs[128]: each 32-byte group holds two sub-blocks (low nibbles,
    /// then high nibbles).
    fn codes(b: &[u8], u: &mut [u8]) {
        let qs = &b[16..144];
        for g in 0..4 {
            for l in 0..32 {
                u[64 * g + l] = qs[32 * g + l] & 0xF;
                u[64 * g + 32 + l] = qs[32 * g + l] >> 4;
            }
        }
    }

    #[inline(always)]
    fn scales<H: Half>(b: &[u8], d: &mut [f32], m: &mut [f32]) {
        k4_scales::<H>(b, d, m);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn codes_avx2(b: *const u8, out: &mut [__m256i; 8]) {
        let mask = _mm256_set1_epi8(0xF);
        for g in 0..4 {
            let q = _mm256_loadu_si256(b.add(16 + 32 * g).cast());
            out[2 * g] = _mm256_and_si256(q, mask);
            out[2 * g + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), mask);
        }
    }
}

impl Block for Q5K {
    block256!(176);

    /// d, dmin, scales[12], qh[32] (bits 2g and 2g+1 are the fifth bits of group g's two
    /// sub-blocks), qs[128].
    fn codes(b: &[u8], u: &mut [u8]) {
        let (qh, qs) = (&b[16..48], &b[48..176]);
        for g in 0..4 {
            for l in 0..32 {
                let h0 = ((qh[l] >> (2 * g)) & 1) << 4;
                let h1 = ((qh[l] >> (2 * g + 1)) & 1) << 4;
                u[64 * g + l] = (qs[32 * g + l] & 0xF) | h0;
                u[64 * g + 32 + l] = (qs[32 * g + l] >> 4) | h1;
            }
        }
    }

    #[inline(always)]
    fn scales<H: Half>(b: &[u8], d: &mut [f32], m: &mut [f32]) {
        k4_scales::<H>(b, d, m);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn codes_avx2(b: *const u8, out: &mut [__m256i; 8]) {
        let mask = _mm256_set1_epi8(0xF);
        let bit5 = _mm256_set1_epi8(0x10);
        let qh = _mm256_loadu_si256(b.add(16).cast());
        for g in 0..4 {
            let q = _mm256_loadu_si256(b.add(48 + 32 * g).cast());
            let h0 = shift_bit_to_0x10(qh, 2 * g as i32);
            let h1 = shift_bit_to_0x10(qh, 2 * g as i32 + 1);
            out[2 * g] = _mm256_or_si256(_mm256_and_si256(q, mask), _mm256_and_si256(h0, bit5));
            out[2 * g + 1] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(q, 4), mask),
                _mm256_and_si256(h1, bit5),
            );
        }
    }
}

/// Moves bit `bit` of every byte of `v` to bit 4 (other bits are garbage; mask with 0x10).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn shift_bit_to_0x10(v: __m256i, bit: i32) -> __m256i {
    // A 16-bit shift by at most 4 (left) or 3 (right) moves bit 4 (and bit 12) of each word
    // from a bit of the same byte, so no bit crosses into another byte's bit 4.
    let count = _mm_cvtsi32_si128((4 - bit).abs());
    if bit <= 4 {
        _mm256_sll_epi16(v, count)
    } else {
        _mm256_srl_epi16(v, count)
    }
}

impl Block for Q6K {
    block256!(210);

    /// ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (i8), d. Weight =
    /// d·sc·(q - 32): `u = q`, `m = -32·d·sc`.
    fn codes(b: &[u8], u: &mut [u8]) {
        let (ql, qh) = (&b[0..128], &b[128..192]);
        for h in 0..2 {
            let (ql, qh, u) = (&ql[64 * h..], &qh[32 * h..], &mut u[128 * h..]);
            for l in 0..32 {
                u[l] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
                u[32 + l] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
                u[64 + l] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                u[96 + l] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
            }
        }
    }

    #[inline(always)]
    fn scales<H: Half>(b: &[u8], d: &mut [f32], m: &mut [f32]) {
        q6k_scales::<H>(b, d, m);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn codes_avx2(b: *const u8, out: &mut [__m256i; 8]) {
        let mask = _mm256_set1_epi8(0xF);
        let top = _mm256_set1_epi8(0x30);
        for h in 0..2 {
            let ql0 = _mm256_loadu_si256(b.add(64 * h).cast());
            let ql1 = _mm256_loadu_si256(b.add(64 * h + 32).cast());
            let qh = _mm256_loadu_si256(b.add(128 + 32 * h).cast());
            out[4 * h] = _mm256_or_si256(
                _mm256_and_si256(ql0, mask),
                _mm256_and_si256(_mm256_slli_epi16(qh, 4), top),
            );
            out[4 * h + 1] = _mm256_or_si256(
                _mm256_and_si256(ql1, mask),
                _mm256_and_si256(_mm256_slli_epi16(qh, 2), top),
            );
            out[4 * h + 2] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(ql0, 4), mask),
                _mm256_and_si256(qh, top),
            );
            out[4 * h + 3] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(ql1, 4), mask),
                _mm256_and_si256(_mm256_srli_epi16(qh, 2), top),
            );
        }
    }
}

#[inline(always)]
fn q6k_scales<H: Half>(b: &[u8], d: &mut [f32], m: &mut [f32]) {
    let dd = H::at(b, 208);
    let scales = &b[192..208];
    for s in 0..16 {
        let dl = dd * scales[s] as i8 as f32;
        d[s] = dl;
        m[s] = -32.0 * dl;
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check_against_dequant, random_blocks};
    use super::*;
    use crunch_formats::DType;

    #[test]
    fn unpacked_blocks_equal_their_dequantization() {
        check_against_dequant::<Q2K>(DType::Q2K, &random_blocks(6, 84 * 16, 84, &[80, 82]));
        check_against_dequant::<Q3K>(DType::Q3K, &random_blocks(7, 110 * 16, 110, &[108]));
        check_against_dequant::<Q4K>(DType::Q4K, &random_blocks(8, 144 * 16, 144, &[0, 2]));
        check_against_dequant::<Q5K>(DType::Q5K, &random_blocks(9, 176 * 16, 176, &[0, 2]));
        check_against_dequant::<Q6K>(DType::Q6K, &random_blocks(10, 210 * 16, 210, &[208]));
    }
}
