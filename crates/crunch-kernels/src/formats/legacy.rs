//! GGUF's 32-weight blocks: an f16 scale (and, for the `_1` types, an f16 minimum), then
//! packed codes. In Q4 and Q5 blocks, byte `j` of the nibble array holds weight `j` (low
//! nibble) and weight `j + 16` (high nibble); Q5's fifth bits are bit `j` of a 32-bit word.

use super::{Block, Half};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

pub(crate) struct Q4_0;
pub(crate) struct Q4_1;
pub(crate) struct Q5_0;
pub(crate) struct Q5_1;
pub(crate) struct Q8_0;

fn nibbles(qs: &[u8], u: &mut [u8]) {
    for j in 0..16 {
        u[j] = qs[j] & 0xF;
        u[j + 16] = qs[j] >> 4;
    }
}

fn fifth_bits(qh: &[u8], u: &mut [u8]) {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    for (j, u) in u.iter_mut().enumerate().take(32) {
        *u |= (((qh >> j) & 1) << 4) as u8;
    }
}

fn set(d: &mut [f32], m: &mut [f32], dv: f32, mv: f32) {
    d[..2].fill(dv);
    m[..2].fill(mv);
}

/// Low and high nibbles of 16 bytes at `qs` into `u[0..16]` and `u[16..32]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn nibbles_avx2(qs: *const u8) -> __m256i {
    let x = _mm_loadu_si128(qs.cast());
    let mask = _mm_set1_epi8(0xF);
    let lo = _mm_and_si128(x, mask);
    let hi = _mm_and_si128(_mm_srli_epi16(x, 4), mask);
    _mm256_set_m128i(hi, lo)
}

/// Bit `j` of the little-endian u32 at `qh`, as 0x10 in byte `j`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn fifth_bits_avx2(qh: *const u8) -> __m256i {
    let word = std::ptr::read_unaligned(qh.cast::<i32>());
    let v = _mm256_set1_epi32(word);
    // Byte j of the result takes byte j / 8 of the word...
    let spread = _mm256_shuffle_epi8(
        v,
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    // ...and keeps bit j % 8 of it.
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// The trait items every 32-weight type shares.
macro_rules! block32 {
    ($bytes:expr, $wide:expr, $min_stored:expr, $m_per_d:expr) => {
        const ELEMS: usize = 32;
        const BYTES: usize = $bytes;
        const WIDE: bool = $wide;
        const SCALE_AT: Option<usize> = Some(0);
        const MIN_STORED: bool = $min_stored;
        const M_PER_D: f32 = $m_per_d;
    };
}

impl Block for Q4_0 {
    block32!(18, false, false, -8.0);
    const NIBBLES_AT: Option<usize> = Some(2);

    fn codes(b: &[u8], u: &mut [u8]) {
        nibbles(&b[2..18], u);
    }

    #[inline(always)]
    fn scales<H: Half>(b: &[u8], d: &mut [f32], m: &mut [f32]) {
        let dv = H::at(b, 0);
        set(d, m, dv, -8.0 * dv);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn codes_avx2(b: *const u8, out: &mut [__m256i; 8]) {
        out[0] = nibbles_avx2(b.add(2));
    }
}

impl Block for Q4_1 {
    block32!(20, false, true, 0.0);
    const NIBBLES_AT: Option<usize> = Some(4);

    fn codes(b: &[u8], u: &mut [u8]) {
        nibbles(&b[4..20], u);
    }

    #[inline(always)]
    fn scales<H: Half>(b: &[u8], d: &mut [f32], m: &mut [f32]) {
        set(d, m, H::at(b, 0), H::at(b, 2));
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn codes_avx2(b: *const u8, out: &mut [__m256i; 8]) {
        out[0] = nibbles_avx2(b.add(4));
    }
}

impl Block for Q5_0 {
    block32!(22, false, false, -16.0);

    fn codes(b: &[u8], u: &mut [u8]) {
        nibbles(&b[6..22], u);
        fifth_bits(&b[2..6], u);
    }

    #[inline(always)]
    fn scales<H: Half>(b: &[u8], d: &mut [f32], m: &mut [f32]) {
        let dv = H::at(b, 0);
        set(d, m, dv, -16.0 * dv);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn codes_avx2(b: *const u8, out: &mut [__m256i; 8]) {
        out[0] = _mm256_or_si256(nibbles_avx2(b.add(6)), fifth_bits_avx2(b.add(2)));
    }
}

impl Block for Q5_1 {
    block32!(24, false, true, 0.0);

    fn codes(b: &[u8], u: &mut [u8]) {
        nibbles(&b[8..24], u);
        fifth_bits(&b[4..8], u);
    }

    #[inline(always)]
    fn scales<H: Half>(b: &[u8], d: &mut [f32], m: &mut [f32]) {
        set(d, m, H::at(b, 0), H::at(b, 2));
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn codes_avx2(b: *const u8, out: &mut [__m256i; 8]) {
        out[0] = _mm256_or_si256(nibbles_avx2(b.add(8)), fifth_bits_avx2(b.add(4)));
    }
}

impl Block for Q8_0 {
    block32!(34, true, false, -128.0);

    fn codes(b: &[u8], u: &mut [u8]) {
        for (u, &q) in u.iter_mut().zip(&b[2..34]) {
            *u = q ^ 0x80;
        }
    }

    #[inline(always)]
    fn scales<H: Half>(b: &[u8], d: &mut [f32], m: &mut [f32]) {
        let dv = H::at(b, 0);
        set(d, m, dv, -128.0 * dv);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn codes_avx2(b: *const u8, out: &mut [__m256i; 8]) {
        let q = _mm256_loadu_si256(b.add(2).cast());
        out[0] = _mm256_xor_si256(q, _mm256_set1_epi8(0x80u8 as i8));
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check_against_dequant, random_blocks};
    use super::*;
    use crunch_formats::DType;

    #[test]
    fn unpacked_blocks_equal_their_dequantization() {
        check_against_dequant::<Q4_0>(DType::Q4_0, &random_blocks(1, 18 * 64, 18, &[0]));
        check_against_dequant::<Q4_1>(DType::Q4_1, &random_blocks(2, 20 * 64, 20, &[0, 2]));
        check_against_dequant::<Q5_0>(DType::Q5_0, &random_blocks(3, 22 * 64, 22, &[0]));
        check_against_dequant::<Q5_1>(DType::Q5_1, &random_blocks(4, 24 * 64, 24, &[0, 2]));
        check_against_dequant::<Q8_0>(DType::Q8_0, &random_blocks(5, 34 * 64, 34, &[0]));
    }
}
