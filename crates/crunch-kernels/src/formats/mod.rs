//! Every packed weight encoding, seen the same way by the products: a block of stored bytes
//! unpacks to unsigned codes `u` (one byte per weight) plus, per 16 weights, a scale `d` and
//! an offset `m`, so that weight `j` is `d·u_j + m`.
//!
//! That one shape covers all of them: Q4_0 is `u` = the nibble, `m = -8d`; Q8_0 stores a
//! signed byte, so `u` = byte + 128 and `m = -128d`; Q4_K's sub-block scale and min fold into
//! `d = d·sc`, `m = -dmin·mn`; Q6_K's 16-weight sub-blocks use both halves of the per-16
//! pair. A product with a quantized activation chunk (`x_j ≈ dx·q_j`) then splits into an
//! integer dot product and one offset term per 16 weights:
//!
//! `Σ_j (d·u_j + m)·dx·q_j = d·dx·Σ_j u_j·q_j + m·(dx·Σ_j q_j)`
//!
//! where `dx·Σq` is computed once per activation row (`act::Acts::e`). The scalar `unpack`
//! of each format is its reference, written from the block layout (the same layouts
//! crunch-formats dequantizes); the AVX2 versions must produce identical bytes and scales.

pub(crate) mod kquants;
pub(crate) mod legacy;

use crunch_formats::DType;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// One block encoding.
pub(crate) trait Block: Sync + 'static {
    /// Weights per block (32 or 256).
    const ELEMS: usize;
    /// Stored bytes per block.
    const BYTES: usize;
    /// Codes reach above 127 (8-bit encodings). The AVX2 product without VNNI multiplies
    /// unsigned by signed bytes into 16-bit sums, which such codes could overflow; it
    /// re-centres them first (`u - 128`, offset `m + 128·d`).
    const WIDE: bool;
    /// For 32-weight blocks whose only scale is an f16 `d` at byte `SCALE_AT` (and a minimum
    /// at `SCALE_AT + 2` when `MIN_STORED`, else `m = M_PER_D · d`): the products then read
    /// the scales of 16 blocks at once with a gather. `None` for other layouts.
    const SCALE_AT: Option<usize> = None;
    const MIN_STORED: bool = false;
    const M_PER_D: f32 = 0.0;
    /// For 32-weight 4-bit types: where the 16 bytes of nibbles start (byte `j` holds weight
    /// `j` low and `j + 16` high), for the four-block decode rows (`quad.rs`).
    const NIBBLES_AT: Option<usize> = None;

    /// The codes of `block` (`BYTES` long) into `u` (`ELEMS`).
    fn codes(block: &[u8], u: &mut [u8]);

    /// The per-16 scales and offsets of `block` into `d` and `m` (`ELEMS / 16` each), its
    /// f16 fields widened by `H`.
    fn scales<H: Half>(block: &[u8], d: &mut [f32], m: &mut [f32]);

    /// [`Block::codes`] and [`Block::scales`].
    #[inline]
    fn unpack(block: &[u8], u: &mut [u8], d: &mut [f32], m: &mut [f32]) {
        Self::codes(block, u);
        Self::scales::<SoftHalf>(block, d, m);
    }

    /// The codes of each 32-weight chunk of the block at `block` in a register (`ELEMS / 32`
    /// of `out` are written). Defaults to the scalar code through memory.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; `block` must point to `BYTES` readable bytes.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    unsafe fn codes_avx2(block: *const u8, out: &mut [__m256i; 8]) {
        let mut u = [0u8; 256];
        Self::codes(std::slice::from_raw_parts(block, Self::BYTES), &mut u);
        for (i, o) in out.iter_mut().enumerate().take(Self::ELEMS / 32) {
            *o = _mm256_loadu_si256(u.as_ptr().add(32 * i).cast());
        }
    }

    /// [`Block::unpack`] with AVX2 (identical output).
    ///
    /// # Safety
    /// As for [`Block::codes_avx2`]; slices as for [`Block::unpack`].
    #[cfg(target_arch = "x86_64")]
    #[inline]
    unsafe fn unpack_avx2(block: &[u8], u: &mut [u8], d: &mut [f32], m: &mut [f32]) {
        debug_assert!(block.len() >= Self::BYTES && u.len() >= Self::ELEMS);
        let mut regs = [_mm256_setzero_si256(); 8];
        Self::codes_avx2(block.as_ptr(), &mut regs);
        for (i, r) in regs.iter().enumerate().take(Self::ELEMS / 32) {
            _mm256_storeu_si256(u.as_mut_ptr().add(32 * i).cast(), *r);
        }
        Self::scales::<F16c>(block, d, m);
    }
}

/// How a block's f16 fields are widened: in integer operations anywhere ([`SoftHalf`]), or
/// with the F16C instruction inside AVX2 code ([`F16c`]). The products read one or two per
/// 32 weights, so a library call each would cost as much as the product itself.
pub(crate) trait Half {
    fn at(b: &[u8], at: usize) -> f32;
}

pub(crate) struct SoftHalf;
#[cfg(target_arch = "x86_64")]
pub(crate) struct F16c;

impl Half for SoftHalf {
    #[inline(always)]
    fn at(b: &[u8], at: usize) -> f32 {
        f16_at(b, at)
    }
}

/// Only for code compiled with F16C enabled (the AVX2 and AVX-512 paths), where the call
/// below becomes one `vcvtph2ps`.
#[cfg(target_arch = "x86_64")]
impl Half for F16c {
    #[inline(always)]
    fn at(b: &[u8], at: usize) -> f32 {
        let h = u16::from_le_bytes([b[at], b[at + 1]]);
        // SAFETY: used only from functions that require F16C (see the type's comment).
        unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32))) }
    }
}

/// The little-endian f16 at `at`, widened (exactly, subnormals included), in a few integer
/// operations.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    let h = u16::from_le_bytes([b[at], b[at + 1]]) as u32;
    let sign = (h & 0x8000) << 16;
    let exp = (h >> 10) & 0x1F;
    let man = h & 0x3FF;
    let bits = match exp {
        // Zero and subnormals: man · 2^-24, exact in f32.
        0 => (man as f32 * (1.0 / 16_777_216.0)).to_bits(),
        // Infinities and NaNs.
        31 => 0x7F80_0000 | (man << 13),
        _ => ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(sign | bits)
}

/// Whether the products have a kernel for `dtype` (else callers dequantize it).
pub fn supported(dtype: DType) -> bool {
    use DType::*;
    matches!(
        dtype,
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2K | Q3K | Q4K | Q5K | Q6K
    )
}

/// Calls `$f::<Format>($args)` for the block format of `$dtype` (a quantized GGUF type that
/// [`supported`] accepts).
macro_rules! with_block {
    ($dtype:expr, $f:ident, $($args:expr),*) => {{
        use crunch_formats::DType as D;
        use $crate::formats::{kquants, legacy};
        match $dtype {
            D::Q4_0 => $f::<legacy::Q4_0>($($args),*),
            D::Q4_1 => $f::<legacy::Q4_1>($($args),*),
            D::Q5_0 => $f::<legacy::Q5_0>($($args),*),
            D::Q5_1 => $f::<legacy::Q5_1>($($args),*),
            D::Q8_0 => $f::<legacy::Q8_0>($($args),*),
            D::Q2K => $f::<kquants::Q2K>($($args),*),
            D::Q3K => $f::<kquants::Q3K>($($args),*),
            D::Q4K => $f::<kquants::Q4K>($($args),*),
            D::Q5K => $f::<kquants::Q5K>($($args),*),
            D::Q6K => $f::<kquants::Q6K>($($args),*),
            other => unreachable!("no block kernel for {other:?}"),
        }
    }};
}
pub(crate) use with_block;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crunch_formats::gguf::dequantize;

    #[test]
    fn every_f16_widens_like_half() {
        for h in 0..=u16::MAX {
            let want = half::f16::from_bits(h).to_f32();
            let got = f16_at(&h.to_le_bytes(), 0);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{h:#x}: {got} vs {want}"
            );
        }
    }

    /// Deterministic bytes with finite, moderate f16 scales at the given offsets.
    pub(crate) fn random_blocks(
        seed: u64,
        bytes: usize,
        block: usize,
        f16_at: &[usize],
    ) -> Vec<u8> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut out: Vec<u8> = (0..bytes)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect();
        for blk in out.chunks_mut(block) {
            for (i, &at) in f16_at.iter().enumerate() {
                // Scales in about [2^-9, 2^-6] with both signs for the minimum slots.
                let mag = 0x1800u16 + (blk[at] as u16) * 16;
                let sign = if i == 1 && blk[at + 1] & 1 == 1 {
                    0x8000
                } else {
                    0
                };
                blk[at..at + 2].copy_from_slice(&(mag | sign).to_le_bytes());
            }
        }
        out
    }

    /// `d·u + m` of the unpacked form against crunch-formats' dequantization (the layouts'
    /// independent reading, itself checked bit-exact against gguf-py).
    pub(crate) fn check_against_dequant<F: Block>(dtype: DType, bytes: &[u8]) {
        let blocks = bytes.len() / F::BYTES;
        let mut want = vec![0f32; blocks * F::ELEMS];
        dequantize(dtype, bytes, &mut want).unwrap();
        let (mut u, mut d, mut m) = (
            vec![0u8; F::ELEMS],
            vec![0f32; F::ELEMS / 16],
            vec![0f32; F::ELEMS / 16],
        );
        for (b, want) in bytes.chunks(F::BYTES).zip(want.chunks(F::ELEMS)) {
            F::unpack(b, &mut u, &mut d, &mut m);
            // The layout constants the products' gathers rely on.
            if let Some(at) = F::SCALE_AT {
                let dv = f16_at(b, at);
                let mv = if F::MIN_STORED {
                    f16_at(b, at + 2)
                } else {
                    F::M_PER_D * dv
                };
                assert_eq!((d[0], m[0]), (dv, mv), "{dtype:?}: SCALE_AT / M_PER_D");
            }
            for j in 0..F::ELEMS {
                let got = d[j / 16] * u[j] as f32 + m[j / 16];
                let tol = 1e-6 * (d[j / 16].abs() * 256.0 + m[j / 16].abs());
                assert!(
                    (got - want[j]).abs() <= tol,
                    "{dtype:?} weight {j}: {got} vs {}",
                    want[j]
                );
            }
            #[cfg(target_arch = "x86_64")]
            if crate::Isa::available().contains(&crate::Isa::Avx2) {
                let (mut u2, mut d2, mut m2) = (u.clone(), d.clone(), m.clone());
                u2.fill(0xAA);
                // SAFETY: AVX2 is available (checked above).
                unsafe { F::unpack_avx2(b, &mut u2, &mut d2, &mut m2) };
                assert_eq!(u2, u, "{dtype:?}: AVX2 codes differ");
                assert_eq!(d2, d, "{dtype:?}: AVX2 scales differ");
                assert_eq!(m2, m, "{dtype:?}: AVX2 offsets differ");
            }
        }
    }
}
