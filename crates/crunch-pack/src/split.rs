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
    // Blocks of 32 values, byte-wise, for the vectoriser (see `merge16`).
    let blocks = chunk
        .chunks_exact(64)
        .zip(a.chunks_exact_mut(32))
        .zip(b.chunks_exact_mut(32));
    for ((c, a), b) in blocks {
        // Whole 16-bit values, then narrowed: byte-wise indexing of `c` made the compiler
        // gather single bytes; this form loads vectors and packs them.
        let mut v = [0u16; 32];
        for (x, p) in v.iter_mut().zip(c.chunks_exact(2)) {
            *x = u16::from_le_bytes([p[0], p[1]]);
        }
        for i in 0..32 {
            a[i] = (v[i] >> 7) as u8;
            b[i] = ((v[i] >> 8) & 0x80 | v[i] & 0x7f) as u8;
        }
    }
    let done = chunk.len() / 64 * 32;
    let rest = chunk[done * 2..]
        .chunks_exact(2)
        .zip(a[done..].iter_mut())
        .zip(b[done..].iter_mut());
    for ((rec, ea), eb) in rest {
        (*ea, *eb) = f16_planes(u16::from_le_bytes([rec[0], rec[1]]));
    }
}

pub fn merge16(a: &[u8], b: &[u8], out: &mut [u8]) {
    // Byte-wise on blocks of 32 so the compiler vectorises it: the low byte of each value is
    // `a << 7 | b & 0x7f`, the high byte `b & 0x80 | a >> 1`, then the two are interleaved.
    let blocks = out
        .chunks_exact_mut(64)
        .zip(a.chunks_exact(32))
        .zip(b.chunks_exact(32));
    for ((o, a), b) in blocks {
        let (mut lo, mut hi) = ([0u8; 32], [0u8; 32]);
        for i in 0..32 {
            lo[i] = a[i] << 7 | b[i] & 0x7f;
            hi[i] = b[i] & 0x80 | a[i] >> 1;
        }
        for i in 0..32 {
            o[2 * i] = lo[i];
            o[2 * i + 1] = hi[i];
        }
    }
    let done = out.len() / 64 * 32;
    for ((rec, &ea), &eb) in out[done * 2..]
        .chunks_exact_mut(2)
        .zip(&a[done..])
        .zip(&b[done..])
    {
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

/// Interleaves `K` byte planes: byte `j` of record `i` is `planes[j][i]`.
pub fn merge_bytes<const K: usize>(planes: &[&[u8]], out: &mut [u8]) {
    let n = out.len() / K;
    let planes: [&[u8]; K] = std::array::from_fn(|j| &planes[j][..n]);
    for (i, rec) in out.chunks_exact_mut(K).enumerate() {
        let rec: &mut [u8; K] = rec.try_into().expect("K bytes");
        *rec = std::array::from_fn(|j| planes[j][i]);
    }
}

/// Records of f16 fields (at 0, 2, ..), each split into exponent and sign-mantissa planes
/// (`S` = 2 per field), followed by `L` bytes of codes (one plane of `L` bytes per record).
pub fn merge_scales_codes<const S: usize, const L: usize>(planes: &[&[u8]], out: &mut [u8]) {
    let r = S + L;
    let n = out.len() / r;
    let scales: [&[u8]; S] = std::array::from_fn(|p| &planes[p][..n]);
    let codes = planes[S][..n * L].chunks_exact(L);
    for (i, (rec, code)) in out.chunks_exact_mut(r).zip(codes).enumerate() {
        for h in 0..S / 2 {
            let x = f16_from_planes(scales[2 * h][i], scales[2 * h + 1][i]);
            rec[2 * h..2 * h + 2].copy_from_slice(&x.to_le_bytes());
        }
        let code: &[u8; L] = code.try_into().expect("L bytes");
        rec[S..].copy_from_slice(code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_loops_match_the_element_functions() {
        let chunk: Vec<u8> = (0..1000u32).map(|i| (i * 97 + i / 7) as u8).collect();
        let (mut a, mut b) = (vec![0u8; 500], vec![0u8; 500]);
        split16(&chunk, &mut a, &mut b);
        for (i, rec) in chunk.chunks_exact(2).enumerate() {
            assert_eq!(
                (a[i], b[i]),
                f16_planes(u16::from_le_bytes([rec[0], rec[1]]))
            );
        }
        let mut out = vec![0u8; 1000];
        merge16(&a, &b, &mut out);
        assert_eq!(out, chunk);
    }

    #[test]
    fn split16_matches_the_element_function_on_every_value() {
        let chunk: Vec<u8> = (0..=u16::MAX).flat_map(|x| x.to_le_bytes()).collect();
        let (mut a, mut b) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
        split16(&chunk, &mut a, &mut b);
        for (x, (&ea, &eb)) in (0..=u16::MAX).zip(a.iter().zip(&b)) {
            assert_eq!((ea, eb), f16_planes(x), "value {x:#06x}");
        }
    }

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
