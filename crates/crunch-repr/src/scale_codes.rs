//! Two-level group scales (decision 145): a quantized weight whose [`crate::QuantSpec`] has
//! `scale_bits = Some(k)` has group scales that are each one of 2^k − 1 values of one f16
//! *row scale* per output row,
//!
//! ```text
//! scale(r, g) = f16(f32(row_scale[r]) · c[r, g] / (2^k − 1)),   c in 1 ..= 2^k − 1,
//! ```
//!
//! computed exactly so by [`coded_scale`] (the product is exact in f32, the division rounds
//! once, then to f16). `QuantizedWeight::scales` holds these f16 values, so every consumer
//! (kernels, CUDA, exports) dequantizes as with free scales; only crunch's own format stores
//! the codes and row scales instead ([`encode_scales`], [`decode_scales`]).
//!
//! Row scales are normal f16 numbers (≥ 2^-14): then the code of a scale is recoverable from
//! the scale alone (see [`encode_scales`]). Code 0 is not used (a zero scale would make a
//! whole group zero; the group's zero point does that already).

use crate::error::{ReprError, Result};
use half::f16;

/// The largest scale code at `k` bits, 2^k − 1 (the code of the row scale itself).
pub fn max_scale_code(k: u8) -> u8 {
    debug_assert!((1..=8).contains(&k));
    ((1u16 << k) - 1) as u8
}

/// The group scale of `code` against `row_scale` at `k` bits (module docs).
#[inline]
pub fn coded_scale(row_scale: f16, code: u8, k: u8) -> f16 {
    f16::from_f32(row_scale.to_f32() * f32::from(code) / f32::from(max_scale_code(k)))
}

/// Whether `s` may be a row scale: finite, positive and normal.
pub fn valid_row_scale(s: f16) -> bool {
    s.is_finite() && s.to_f32() >= f16::MIN_POSITIVE.to_f32()
}

/// Row scales and scale codes of a weight's group scales.
#[derive(Clone, Debug, PartialEq)]
pub struct CodedScales {
    /// One per row.
    pub row_scales: Vec<f16>,
    /// `[rows, groups]`, each in 1 ..= 2^k − 1.
    pub codes: Vec<u8>,
}

/// The codes of one row's `scales` against `row_scale`, if every scale is a coded scale of it.
/// The code of `s` is within one of `s · m / row_scale` (with a normal row scale the f16 and
/// f32 roundings move it by under 0.04), so three candidates are checked, by exact equality.
fn codes_against(scales: &[f16], row_scale: f16, k: u8) -> Option<Vec<u8>> {
    let m = max_scale_code(k);
    let (m_f, rs) = (f32::from(m), row_scale.to_f32());
    scales
        .iter()
        .map(|&s| {
            let x = (s.to_f32() * m_f / rs).round().clamp(1.0, m_f) as u8;
            [x, x.saturating_sub(1), x.saturating_add(1)]
                .into_iter()
                .find(|&c| (1..=m).contains(&c) && coded_scale(row_scale, c, k) == s)
        })
        .collect()
}

/// A row scale and codes for one row's `scales`, or `None` when none exists.
///
/// The largest scale s_max = coded_scale(rs, c*) for some code c*, so rs is within a few f16
/// steps of s_max · m / c*: each c* from m down is tried with the f16 values ±2 steps around
/// that estimate. Where rounding moved s_max further (s_max subnormal), every normal f16 from
/// s_max up to s_max · m (a scale is at most its row scale, at least 1/m of it) is tried in
/// turn, so a row scale is found whenever one exists (any one found reproduces the scales bit
/// for bit, which is all that matters).
fn encode_row(scales: &[f16], k: u8) -> Option<(f16, Vec<u8>)> {
    let m = max_scale_code(k);
    let s_max = scales.iter().copied().max_by(|a, b| a.total_cmp(b))?;
    if !(s_max.is_finite() && s_max.to_f32() > 0.0) {
        return None;
    }
    let try_rs = |rs: f16| {
        valid_row_scale(rs)
            .then(|| codes_against(scales, rs, k))
            .flatten()
            .map(|c| (rs, c))
    };
    for c in (1..=m).rev() {
        let guess = f16::from_f32(s_max.to_f32() * f32::from(m) / f32::from(c));
        for d in -2i32..=2 {
            let bits = guess.to_bits() as i32 + d;
            if (0..0x7c00).contains(&bits) {
                if let Some(found) = try_rs(f16::from_bits(bits as u16)) {
                    return Some(found);
                }
            }
        }
    }
    let top = f16::from_f32(s_max.to_f32() * f32::from(m) * 1.01);
    let top = if top.is_finite() {
        top.to_bits()
    } else {
        0x7bff
    };
    let start = s_max.to_bits().max(f16::MIN_POSITIVE.to_bits());
    (start..=top).find_map(|b| try_rs(f16::from_bits(b)))
}

/// The row scales and codes of `scales` (`[rows, groups]`) at `k` bits; an error naming the
/// first row whose scales are not all coded scales of one normal f16 row scale.
pub fn encode_scales(scales: &[f16], groups: usize, k: u8) -> Result<CodedScales> {
    if groups == 0 || scales.len() % groups != 0 {
        return Err(ReprError::Inconsistent(format!(
            "{} scales are not rows of {groups} groups",
            scales.len()
        )));
    }
    let mut out = CodedScales {
        row_scales: Vec::with_capacity(scales.len() / groups),
        codes: Vec::with_capacity(scales.len()),
    };
    for (r, row) in scales.chunks(groups).enumerate() {
        let (rs, codes) = encode_row(row, k).ok_or_else(|| {
            ReprError::Inconsistent(format!(
                "the group scales of row {r} are not {k}-bit codes of one f16 row scale"
            ))
        })?;
        out.row_scales.push(rs);
        out.codes.extend(codes);
    }
    Ok(out)
}

/// The group scales (`[rows, groups]`) of `row_scales` and `codes` at `k` bits; an error for a
/// code outside 1 ..= 2^k − 1 or a row scale that is not a normal positive f16.
pub fn decode_scales(row_scales: &[f16], codes: &[u8], groups: usize, k: u8) -> Result<Vec<f16>> {
    if codes.len() != row_scales.len() * groups {
        return Err(ReprError::Inconsistent(format!(
            "{} scale codes for {} rows of {groups} groups",
            codes.len(),
            row_scales.len()
        )));
    }
    if let Some(r) = row_scales.iter().position(|&s| !valid_row_scale(s)) {
        return Err(ReprError::Inconsistent(format!(
            "row scale {} of row {r} is not a normal positive f16",
            row_scales[r]
        )));
    }
    let m = max_scale_code(k);
    if let Some(i) = codes.iter().position(|&c| c == 0 || c > m) {
        return Err(ReprError::Inconsistent(format!(
            "scale code {} at index {i} is outside 1..={m}",
            codes[i]
        )));
    }
    Ok(codes
        .iter()
        .enumerate()
        .map(|(i, &c)| coded_scale(row_scales[i / groups.max(1)], c, k))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn coded_scale_is_the_row_scale_at_the_top_code() {
        for k in 4..=8 {
            for rs in [f16::MIN_POSITIVE, f16::from_f32(0.0123), f16::MAX] {
                assert_eq!(coded_scale(rs, max_scale_code(k), k), rs);
            }
        }
        let rs = f16::from_f32(0.5);
        assert_eq!(coded_scale(rs, 21, 6), f16::from_f32(0.5 * 21.0 / 63.0));
    }

    #[test]
    fn encode_refuses_scales_off_the_grid() {
        // 1.0 and 0.05: a scale is at least 1/15 of its row scale, which is at least 1.0.
        let s = [1.0f32, 0.05].map(f16::from_f32);
        let err = encode_scales(&s, 2, 4).unwrap_err();
        assert!(err.to_string().contains("row 0"), "{err}");
        assert!(encode_scales(&s, 3, 4).is_err());
        let zero = [f16::ZERO, f16::ZERO];
        assert!(encode_scales(&zero, 2, 6).is_err());
    }

    #[test]
    fn decode_refuses_bad_codes_and_row_scales() {
        let one = [f16::ONE];
        assert!(decode_scales(&one, &[0], 1, 6).is_err());
        assert!(decode_scales(&one, &[64], 1, 6).is_err());
        assert!(decode_scales(&one, &[1, 2], 1, 6).is_err());
        for bad in [
            f16::ZERO,
            f16::from_bits(1),
            f16::NAN,
            f16::INFINITY,
            -f16::ONE,
        ] {
            assert!(decode_scales(&[bad], &[3], 1, 6).is_err(), "{bad}");
        }
        assert_eq!(decode_scales(&one, &[63, 1], 2, 6).unwrap()[0], f16::ONE);
    }

    proptest! {
        /// Any normal row scale and codes → scales → (row scale, codes) → the same scales,
        /// bit for bit (the row scale or codes found may differ only where they give the same
        /// scales).
        #[test]
        fn encode_inverts_decode(
            k in 4u8..=8,
            rs_bits in prop::collection::vec(0x0400u16..0x7c00, 1..4),
            raw in prop::collection::vec(any::<u8>(), 12),
        ) {
            let groups = 3;
            let rows = rs_bits.len();
            let m = max_scale_code(k);
            let codes: Vec<u8> = raw[..rows * groups].iter().map(|c| 1 + c % m).collect();
            let rs: Vec<f16> = rs_bits.iter().map(|&b| f16::from_bits(b)).collect();
            let scales = decode_scales(&rs, &codes, groups, k).unwrap();
            let enc = encode_scales(&scales, groups, k).unwrap();
            prop_assert_eq!(decode_scales(&enc.row_scales, &enc.codes, groups, k).unwrap(), scales);
        }
    }
}
