//! The group codecs of the compressed key/value caches.
//!
//! - **min–max** (asymmetric, `bits` = 2, 4 or 8): a group `x` is stored as `z = min x`,
//!   `s = (max x − min x) / (2^bits − 1)` (both f16) and codes `c = round((x − z) / s)`
//!   clamped to `0..2^bits`; it decodes to `z + s·c`. KIVI's quantizer (arXiv 2402.02750, §3.1,
//!   `Q(X) = ⌊(X − z)/s⌉`), used for q4 and both KIVI modes.
//! - **absmax** (symmetric, 8 bits): `s = max |x| / 127` (f16) and codes `round(x / s)` in
//!   `−127..=127`, stored offset by 128; it decodes to `s·(c − 128)`. Used for q8.
//!
//! The codes are computed against the f16-rounded `s` and `z`, so that decoding reproduces
//! exactly what the encoder assumed. Error of one value: at most `s/2` plus the f16 rounding of
//! `z` and of `s` (≤ 2⁻¹¹ relative each, times the code). Limits: values beyond f16's range
//! (±65504) saturate; keys and values of real models stay far below it.

use half::f16;

/// How a group is quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// Asymmetric: scale and minimum, `bits` ∈ {2, 4, 8}.
    MinMax { bits: u8 },
    /// Symmetric 8-bit: one scale.
    AbsMax8,
}

impl Codec {
    pub fn bits(self) -> usize {
        match self {
            Codec::MinMax { bits } => bits as usize,
            Codec::AbsMax8 => 8,
        }
    }

    /// Metadata bytes of one group (f16 scale, and f16 minimum for min–max).
    pub fn meta_bytes(self) -> usize {
        match self {
            Codec::MinMax { .. } => 4,
            Codec::AbsMax8 => 2,
        }
    }

    /// Quantizes `x` into `codes` (one unpacked code per value); returns the group's
    /// `(scale, offset)` such that `x ≈ offset + scale·code`.
    pub fn encode(self, x: &[f32], codes: &mut [u8]) -> (f16, f16) {
        debug_assert_eq!(x.len(), codes.len());
        match self {
            Codec::MinMax { bits } => {
                let levels = ((1u32 << bits) - 1) as f32;
                let (lo, hi) = x
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                        (lo.min(v), hi.max(v))
                    });
                let z = saturate(lo);
                let s = saturate((hi - lo) / levels);
                let (zf, sf) = (z.to_f32(), s.to_f32());
                let inv = if sf > 0.0 { 1.0 / sf } else { 0.0 };
                for (c, &v) in codes.iter_mut().zip(x) {
                    *c = ((v - zf) * inv).round().clamp(0.0, levels) as u8;
                }
                (s, z)
            }
            Codec::AbsMax8 => {
                let amax = x.iter().fold(0f32, |m, &v| m.max(v.abs()));
                let s = saturate(amax / 127.0);
                let sf = s.to_f32();
                let inv = if sf > 0.0 { 1.0 / sf } else { 0.0 };
                for (c, &v) in codes.iter_mut().zip(x) {
                    *c = ((v * inv).round().clamp(-127.0, 127.0) + 128.0) as u8;
                }
                (s, f16::from_f32(-128.0 * sf))
            }
        }
    }

    /// `(scale, offset)` as f32 for decoding `offset + scale·code`.
    pub fn affine(self, scale: f16, offset: f16) -> (f32, f32) {
        match self {
            Codec::MinMax { .. } => (scale.to_f32(), offset.to_f32()),
            // −128·s in f32, not through the stored f16 (which only the encoder's return
            // value carries).
            Codec::AbsMax8 => {
                let s = scale.to_f32();
                (s, -128.0 * s)
            }
        }
    }
}

/// f16 of `v`, saturated at f16's largest finite value.
fn saturate(v: f32) -> f16 {
    f16::from_f32(v.clamp(-65504.0, 65504.0))
}

/// Bytes of `n` codes of `bits` bits packed.
pub fn packed_len(n: usize, bits: usize) -> usize {
    (n * bits).div_ceil(8)
}

/// Packs codes of `bits` ∈ {2, 4, 8} bits, first code in the lowest bits.
pub fn pack(codes: &[u8], bits: usize, out: &mut [u8]) {
    let per = 8 / bits;
    for (o, chunk) in out.iter_mut().zip(codes.chunks(per)) {
        *o = chunk
            .iter()
            .enumerate()
            .fold(0u8, |acc, (i, &c)| acc | (c << (i * bits)));
    }
}

/// Code `i` of a packed row.
#[inline(always)]
pub fn code_at(packed: &[u8], bits: usize, i: usize) -> u8 {
    let per = 8 / bits;
    let byte = packed[i / per];
    (byte >> ((i % per) * bits)) & ((1u16 << bits) - 1) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The stated bound: half a step, plus f16 rounding of the offset and of the scale times
    /// the largest code.
    fn bound(codec: Codec, x: &[f32]) -> f32 {
        let (lo, hi) = x
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let amax = lo.abs().max(hi.abs());
        let step = match codec {
            Codec::MinMax { bits } => (hi - lo) / ((1u32 << bits) - 1) as f32,
            Codec::AbsMax8 => amax / 127.0,
        };
        let levels = ((1u32 << codec.bits()) - 1) as f32;
        0.5 * step * (1.0 + 1e-3) + amax * 2f32.powi(-11) + levels * step * 2f32.powi(-11) + 1e-7
    }

    fn round_trip(codec: Codec, x: &[f32]) -> Vec<f32> {
        let mut codes = vec![0u8; x.len()];
        let (s, z) = codec.encode(x, &mut codes);
        let mut packed = vec![0u8; packed_len(x.len(), codec.bits())];
        pack(&codes, codec.bits(), &mut packed);
        let (sf, zf) = codec.affine(s, z);
        (0..x.len())
            .map(|i| {
                let c = code_at(&packed, codec.bits(), i);
                assert_eq!(c, codes[i], "packing changed code {i}");
                zf + sf * c as f32
            })
            .collect()
    }

    const CODECS: [Codec; 4] = [
        Codec::MinMax { bits: 2 },
        Codec::MinMax { bits: 4 },
        Codec::MinMax { bits: 8 },
        Codec::AbsMax8,
    ];

    proptest! {
        #[test]
        fn round_trip_within_the_stated_bound(
            x in prop::collection::vec(-300f32..300.0, 1..130),
            shift in -50f32..50.0,
            which in 0usize..4,
        ) {
            let x: Vec<f32> = x.iter().map(|v| v + shift).collect();
            let codec = CODECS[which];
            let y = round_trip(codec, &x);
            let b = bound(codec, &x);
            for (a, r) in x.iter().zip(&y) {
                prop_assert!((a - r).abs() <= b, "{codec:?}: {a} -> {r}, bound {b}");
            }
        }
    }

    #[test]
    fn constant_and_zero_groups_are_exact() {
        for codec in CODECS {
            assert_eq!(round_trip(codec, &[0.0; 32]), vec![0.0; 32]);
        }
        let y = round_trip(Codec::MinMax { bits: 2 }, &[0.5; 8]);
        assert_eq!(y, vec![0.5; 8]);
    }

    #[test]
    fn extremes_are_hit() {
        let x: Vec<f32> = (0..32).map(|i| i as f32 / 31.0 * 3.0 - 1.0).collect();
        let y = round_trip(Codec::MinMax { bits: 4 }, &x);
        assert!(
            (y[0] + 1.0).abs() < 1e-3 && (y[31] - 2.0).abs() < 2e-3,
            "{y:?}"
        );
    }
}
