//! The bit-level plane splits of 16- and 32-bit floats, and fast whole-chunk loops for the
//! common single-field layouts (written so that the compiler vectorises them).

/// BF16/F16 bits -> (exponent plane byte, sign-mantissa plane byte).
#[inline(always)]
pub fn f16_planes(x: u16) -> (u8, u8) {
    ((x >> 7) as u8, ((x >> 8) & 0x80 | (x & 0x7f)) as u8)
}

#[inline(always)]
pub fn f16_from_planes(a: u8, b: u8) -> u16 {
    ((b as u16 & 0x80) << 8) | ((a as u16) << 7) | (b as u16 & 0x7f)
}

/// f32 bits -> [exponent, sign + mantissa bits 22..16, mantissa bits 15..8, bits 7..0].
#[inline(always)]
pub fn f32_planes(x: u32) -> [u8; 4] {
    [
        (x >> 23) as u8,
        ((x >> 24) & 0x80 | (x >> 16) & 0x7f) as u8,
        (x >> 8) as u8,
        x as u8,
    ]
}

#[inline(always)]
pub fn f32_from_planes(p: [u8; 4]) -> u32 {
    ((p[1] as u32 & 0x80) << 24)
        | ((p[0] as u32) << 23)
        | ((p[1] as u32 & 0x7f) << 16)
        | ((p[2] as u32) << 8)
        | p[3] as u32
}

pub fn split16(chunk: &[u8], a: &mut [u8], b: &mut [u8]) {
    for ((rec, ea), eb) in chunk.chunks_exact(2).zip(a.iter_mut()).zip(b.iter_mut()) {
        (*ea, *eb) = f16_planes(u16::from_le_bytes([rec[0], rec[1]]));
    }
}

pub fn merge16(a: &[u8], b: &[u8], out: &mut [u8]) {
    for ((rec, &ea), &eb) in out.chunks_exact_mut(2).zip(a).zip(b) {
        rec.copy_from_slice(&f16_from_planes(ea, eb).to_le_bytes());
    }
}

pub fn split32(chunk: &[u8], a: &mut [u8], b: &mut [u8], c: &mut [u8], d: &mut [u8]) {
    let planes = a
        .iter_mut()
        .zip(b.iter_mut())
        .zip(c.iter_mut())
        .zip(d.iter_mut());
    for (rec, (((ea, eb), ec), ed)) in chunk.chunks_exact(4).zip(planes) {
        [*ea, *eb, *ec, *ed] = f32_planes(u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]));
    }
}

pub fn merge32(a: &[u8], b: &[u8], c: &[u8], d: &[u8], out: &mut [u8]) {
    let planes = a.iter().zip(b).zip(c).zip(d);
    for (rec, (((&ea, &eb), &ec), &ed)) in out.chunks_exact_mut(4).zip(planes) {
        rec.copy_from_slice(&f32_from_planes([ea, eb, ec, ed]).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_splits_are_bijections() {
        for x in 0..=u16::MAX {
            let (a, b) = f16_planes(x);
            assert_eq!(f16_from_planes(a, b), x);
        }
        for x in [
            0u32,
            1,
            0x8000_0000,
            0x3F80_0000,
            0xBF80_0001,
            0x7FC0_0000,
            u32::MAX,
            0x1234_5678,
        ] {
            assert_eq!(f32_from_planes(f32_planes(x)), x);
        }
        // -1.0f32: sign 1, exponent 127.
        assert_eq!(f32_planes(0xBF80_0000), [127, 0x80, 0, 0]);
    }
}
