//! Record layouts: how the bytes of a tensor are split into planes before entropy coding.
//!
//! A tensor is a sequence of fixed-size records (one element for plain dtypes, one block for
//! GGUF block-quantised types). A layout lists the record's fields; each field becomes one or
//! more planes holding that field from every record of a chunk:
//! - `Bytes { start, len }`: the field's bytes as they are (quantised codes, i8 scales);
//! - `Float16 { at }`: a little-endian 16-bit float split into an exponent plane (bits 14..7,
//!   the whole exponent for BF16, exponent and top mantissa bits for F16) and a sign-mantissa
//!   plane (sign bit and bits 6..0). The exponent plane is where nearly all the redundancy is;
//! - `Float32 { at }`: an f32 split into exponent (bits 30..23), sign + high mantissa
//!   (bit 31, bits 22..16), and the two low mantissa bytes.
//!
//! Fields must tile the record exactly, so split and merge are inverse bijections; this is
//! checked for layouts read from a file before they are used.

use crate::error::{CodecError, CodecResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Bytes { start: u16, len: u16 },
    Float16 { at: u16 },
    Float32 { at: u16 },
}

impl Field {
    fn span(self) -> (usize, usize) {
        match self {
            Field::Bytes { start, len } => (start as usize, len as usize),
            Field::Float16 { at } => (at as usize, 2),
            Field::Float32 { at } => (at as usize, 4),
        }
    }
    fn planes(self) -> usize {
        match self {
            Field::Bytes { .. } => 1,
            Field::Float16 { .. } => 2,
            Field::Float32 { .. } => 4,
        }
    }
}

/// Output bytes merged per block in the general [`Layout::merge`] (a fraction of L1).
const MERGE_BLOCK: usize = 8 << 10;

/// Most planes a layout may have (bounds what a hostile file can make us allocate per chunk).
pub const MAX_PLANES: usize = 64;
/// Largest record (a GGUF Q8_K block is 292 bytes).
pub const MAX_RECORD: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub record: u16,
    pub fields: Vec<Field>,
}

impl Layout {
    /// One plane holding the bytes unchanged.
    pub fn identity() -> Self {
        Layout {
            record: 1,
            fields: vec![Field::Bytes { start: 0, len: 1 }],
        }
    }
    pub fn float16() -> Self {
        Layout {
            record: 2,
            fields: vec![Field::Float16 { at: 0 }],
        }
    }
    pub fn float32() -> Self {
        Layout {
            record: 4,
            fields: vec![Field::Float32 { at: 0 }],
        }
    }
    /// Byte `k` of every `width`-byte element in plane `k` (integers, f64).
    pub fn byte_planes(width: u16) -> Self {
        Layout {
            record: width,
            fields: (0..width)
                .map(|k| Field::Bytes { start: k, len: 1 })
                .collect(),
        }
    }

    pub fn planes(&self) -> usize {
        self.fields.iter().map(|f| f.planes()).sum()
    }

    /// Bytes per record of each plane, in plane order.
    pub fn plane_widths(&self) -> Vec<usize> {
        let mut w = Vec::with_capacity(self.planes());
        for f in &self.fields {
            match *f {
                Field::Bytes { len, .. } => w.push(len as usize),
                _ => w.extend(std::iter::repeat_n(1, f.planes())),
            }
        }
        w
    }

    /// A readable name per plane, for reports: "exponent" and "sign_mantissa" for a lone
    /// float field, "f16@2.exponent" or "bytes@4+16" inside a block, "byte3" for integers.
    pub fn plane_names(&self) -> Vec<String> {
        let single = self.fields.len() == 1;
        let bytewise = self
            .fields
            .iter()
            .all(|f| matches!(f, Field::Bytes { len: 1, .. }));
        let mut names = Vec::with_capacity(self.planes());
        for f in &self.fields {
            match *f {
                Field::Bytes { .. } if single => names.push("bytes".to_string()),
                Field::Bytes { start, .. } if bytewise => names.push(format!("byte{start}")),
                Field::Bytes { start, len } => names.push(format!("bytes@{start}+{len}")),
                Field::Float16 { at } => {
                    for p in ["exponent", "sign_mantissa"] {
                        names.push(if single {
                            p.to_string()
                        } else {
                            format!("f16@{at}.{p}")
                        });
                    }
                }
                Field::Float32 { at } => {
                    for p in [
                        "exponent",
                        "sign_mantissa_hi",
                        "mantissa_mid",
                        "mantissa_lo",
                    ] {
                        names.push(if single {
                            p.to_string()
                        } else {
                            format!("f32@{at}.{p}")
                        });
                    }
                }
            }
        }
        names
    }

    /// Checks that the fields tile the record exactly.
    pub fn validate(&self) -> CodecResult<()> {
        let r = self.record as usize;
        if r == 0 || r > MAX_RECORD || self.fields.is_empty() || self.planes() > MAX_PLANES {
            return Err(CodecError::new("record layout out of range"));
        }
        let mut covered = vec![false; r];
        for f in &self.fields {
            let (start, len) = f.span();
            if len == 0 || start + len > r {
                return Err(CodecError::new("record field outside its record"));
            }
            for c in &mut covered[start..start + len] {
                if *c {
                    return Err(CodecError::new("record fields overlap"));
                }
                *c = true;
            }
        }
        if covered.iter().any(|c| !c) {
            return Err(CodecError::new("record fields leave a gap"));
        }
        Ok(())
    }

    /// Splits `chunk` (a whole number of records) into `planes`, each resized to fit.
    pub fn split(&self, chunk: &[u8], planes: &mut [Vec<u8>]) {
        let r = self.record as usize;
        debug_assert_eq!(chunk.len() % r, 0);
        let n = chunk.len() / r;
        // Every byte of every plane is written below, so old contents need no clearing.
        for (p, w) in planes.iter_mut().zip(self.plane_widths()) {
            p.resize(n * w, 0);
        }
        if let [Field::Float16 { at: 0 }] = self.fields[..] {
            let (a, b) = two(planes);
            crate::split::split16(chunk, a, b);
            return;
        }
        if let [Field::Float32 { at: 0 }] = self.fields[..] {
            let [a, b, c, d] = planes else { unreachable!() };
            crate::split::split32(chunk, a, b, c, d);
            return;
        }
        let mut plane = 0;
        for f in &self.fields {
            match *f {
                Field::Bytes { start, len } => {
                    let (s, l) = (start as usize, len as usize);
                    let dst = &mut planes[plane];
                    if l == 1 {
                        for (d, rec) in dst.iter_mut().zip(chunk.chunks_exact(r)) {
                            *d = rec[s];
                        }
                    } else {
                        gather_field(chunk, r, s, l, dst);
                    }
                    plane += 1;
                }
                Field::Float16 { at } => {
                    let at = at as usize;
                    let (a, b) = two(&mut planes[plane..plane + 2]);
                    for ((ea, eb), rec) in a.iter_mut().zip(b.iter_mut()).zip(chunk.chunks_exact(r))
                    {
                        let x = u16::from_le_bytes([rec[at], rec[at + 1]]);
                        (*ea, *eb) = crate::split::f16_planes(x);
                    }
                    plane += 2;
                }
                Field::Float32 { at } => {
                    let at = at as usize;
                    for (i, rec) in chunk.chunks_exact(r).enumerate() {
                        let x =
                            u32::from_le_bytes([rec[at], rec[at + 1], rec[at + 2], rec[at + 3]]);
                        let p = crate::split::f32_planes(x);
                        for k in 0..4 {
                            planes[plane + k][i] = p[k];
                        }
                    }
                    plane += 4;
                }
            }
        }
    }

    /// Inverse of [`split`](Self::split): `planes` must have the lengths `split` produces for
    /// an `out.len()`-byte chunk (checked by the caller).
    pub fn merge(&self, planes: &[&[u8]], out: &mut [u8]) {
        let r = self.record as usize;
        if let [Field::Float16 { at: 0 }] = self.fields[..] {
            crate::split::merge16(planes[0], planes[1], out);
            return;
        }
        if let [Field::Float32 { at: 0 }] = self.fields[..] {
            crate::split::merge32(planes[0], planes[1], planes[2], planes[3], out);
            return;
        }
        if self.merge_common(planes, out) {
            return;
        }
        // Field by field over blocks of records that fit in L1, rather than over the whole
        // chunk: each field pass then writes cache lines the previous pass already brought
        // in, instead of fetching the whole output again per field (measured: merge time of a
        // Q4_1 GGUF chunk halved).
        let per_block = (MERGE_BLOCK / r).max(1);
        let widths = self.plane_widths();
        let mut block: Vec<&[u8]> = Vec::with_capacity(planes.len());
        for (b, out) in out.chunks_mut(per_block * r).enumerate() {
            let n = out.len() / r;
            block.clear();
            for (p, w) in planes.iter().zip(&widths) {
                block.push(&p[b * per_block * w..][..n * w]);
            }
            self.merge_fields(&block, out);
        }
    }

    /// Record-at-a-time merges with fixed sizes for the layouts of integer tensors and the
    /// common GGUF blocks (f16 scales, then codes); false for any other layout. The general
    /// field-by-field merge costs several nanoseconds per record in bounds checks and
    /// variable-size copies, which was a fifth of a Q4_1 file's decode time.
    fn merge_common(&self, planes: &[&[u8]], out: &mut [u8]) -> bool {
        use crate::split::{merge_bytes, merge_scales_codes};
        let bytewise = |k: u16| *self == Layout::byte_planes(k);
        match self.fields[..] {
            _ if bytewise(2) => merge_bytes::<2>(planes, out),
            _ if bytewise(4) => merge_bytes::<4>(planes, out),
            _ if bytewise(8) => merge_bytes::<8>(planes, out),
            // Q4_0, Q8_0; Q4_1, Q8_1.
            [Field::Float16 { at: 0 }, Field::Bytes { start: 2, len }] => match len {
                16 => merge_scales_codes::<2, 16>(planes, out),
                32 => merge_scales_codes::<2, 32>(planes, out),
                _ => return false,
            },
            [Field::Float16 { at: 0 }, Field::Float16 { at: 2 }, Field::Bytes { start: 4, len }] => {
                match len {
                    16 => merge_scales_codes::<4, 16>(planes, out),
                    32 => merge_scales_codes::<4, 32>(planes, out),
                    _ => return false,
                }
            }
            _ => return false,
        }
        true
    }

    /// The general merge: one pass per field over `out`.
    fn merge_fields(&self, planes: &[&[u8]], out: &mut [u8]) {
        let r = self.record as usize;
        let mut plane = 0;
        for f in &self.fields {
            match *f {
                Field::Bytes { start, len } => {
                    let (s, l) = (start as usize, len as usize);
                    let src = planes[plane];
                    if l == 1 {
                        for (rec, &b) in out.chunks_exact_mut(r).zip(src) {
                            rec[s] = b;
                        }
                    } else {
                        scatter_field(src, r, s, l, out);
                    }
                    plane += 1;
                }
                Field::Float16 { at } => {
                    let at = at as usize;
                    for ((rec, &a), &b) in out
                        .chunks_exact_mut(r)
                        .zip(planes[plane])
                        .zip(planes[plane + 1])
                    {
                        let x = crate::split::f16_from_planes(a, b);
                        rec[at..at + 2].copy_from_slice(&x.to_le_bytes());
                    }
                    plane += 2;
                }
                Field::Float32 { at } => {
                    let at = at as usize;
                    for (i, rec) in out.chunks_exact_mut(r).enumerate() {
                        let p = [
                            planes[plane][i],
                            planes[plane + 1][i],
                            planes[plane + 2][i],
                            planes[plane + 3][i],
                        ];
                        let x = crate::split::f32_from_planes(p);
                        rec[at..at + 4].copy_from_slice(&x.to_le_bytes());
                    }
                    plane += 4;
                }
            }
        }
    }
}

/// `$fixed::<L>(args)` when the field width `$l` is one of the common widths that get a copy of
/// constant size, else `$other`.
macro_rules! by_field_width {
    ($l:expr, $fixed:ident($($arg:expr),*), $other:block) => {
        match $l {
            2 => $fixed::<2>($($arg),*),
            4 => $fixed::<4>($($arg),*),
            12 => $fixed::<12>($($arg),*),
            16 => $fixed::<16>($($arg),*),
            32 => $fixed::<32>($($arg),*),
            64 => $fixed::<64>($($arg),*),
            128 => $fixed::<128>($($arg),*),
            _ => $other,
        }
    };
}

/// Copies bytes `[s, s + l)` of every `r`-byte record into `dst`. Common field widths get a
/// copy of constant size (a register move) instead of a `memcpy` call per record.
fn gather_field(chunk: &[u8], r: usize, s: usize, l: usize, dst: &mut [u8]) {
    fn fixed<const L: usize>(chunk: &[u8], r: usize, s: usize, dst: &mut [u8]) {
        for (d, rec) in dst.chunks_exact_mut(L).zip(chunk.chunks_exact(r)) {
            let src: &[u8; L] = rec[s..s + L].try_into().expect("L bytes");
            d.copy_from_slice(src);
        }
    }
    by_field_width!(l, fixed(chunk, r, s, dst), {
        for (d, rec) in dst.chunks_exact_mut(l).zip(chunk.chunks_exact(r)) {
            d.copy_from_slice(&rec[s..s + l]);
        }
    })
}

/// Inverse of [`gather_field`].
fn scatter_field(src: &[u8], r: usize, s: usize, l: usize, out: &mut [u8]) {
    fn fixed<const L: usize>(src: &[u8], r: usize, s: usize, out: &mut [u8]) {
        for (rec, b) in out.chunks_exact_mut(r).zip(src.chunks_exact(L)) {
            let b: &[u8; L] = b.try_into().expect("L bytes");
            rec[s..s + L].copy_from_slice(b);
        }
    }
    by_field_width!(l, fixed(src, r, s, out), {
        for (rec, b) in out.chunks_exact_mut(r).zip(src.chunks_exact(l)) {
            rec[s..s + l].copy_from_slice(b);
        }
    })
}

fn two(planes: &mut [Vec<u8>]) -> (&mut Vec<u8>, &mut Vec<u8>) {
    let (a, rest) = planes.split_first_mut().expect("two planes");
    (a, &mut rest[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q4_1() -> Layout {
        Layout {
            record: 20,
            fields: vec![
                Field::Float16 { at: 0 },
                Field::Float16 { at: 2 },
                Field::Bytes { start: 4, len: 16 },
            ],
        }
    }

    /// `h` f16 scales then `len` code bytes (Q4_0, Q8_0, Q8_1 and an unspecialised width).
    fn gguf(at: u16, h: usize, len: u16) -> Layout {
        let mut fields: Vec<Field> = (0..h)
            .map(|k| Field::Float16 { at: 2 * k as u16 })
            .collect();
        fields.push(Field::Bytes { start: at, len });
        Layout {
            record: at + len,
            fields,
        }
    }

    #[test]
    fn specialised_merges_match_the_general_one() {
        let data: Vec<u8> = (0..36 * 500u64)
            .map(|i| ((i * 2654435761) >> 13) as u8)
            .collect();
        for layout in [
            q4_1(),
            gguf(2, 1, 32),
            gguf(2, 1, 16),
            gguf(4, 2, 32),
            Layout::byte_planes(4),
        ] {
            let r = layout.record as usize;
            let raw = &data[..data.len() / r * r];
            let mut planes = vec![Vec::new(); layout.planes()];
            layout.split(raw, &mut planes);
            let refs: Vec<&[u8]> = planes.iter().map(|p| &p[..]).collect();
            let (mut fast, mut general) = (vec![0u8; raw.len()], vec![0u8; raw.len()]);
            assert!(
                layout.merge_common(&refs, &mut fast),
                "{layout:?} not specialised"
            );
            layout.merge_fields(&refs, &mut general);
            assert_eq!(fast, general);
            assert_eq!(fast, raw);
        }
    }

    fn mixed() -> Layout {
        Layout {
            record: 11,
            fields: vec![
                Field::Bytes { start: 0, len: 1 },
                Field::Float32 { at: 1 },
                Field::Float16 { at: 5 },
                Field::Bytes { start: 7, len: 4 },
            ],
        }
    }

    #[test]
    fn bf16_planes_are_exponent_and_sign_mantissa() {
        let x: u16 = 0xBF80; // -1.0 in BF16: sign 1, exponent 127, mantissa 0
        let mut planes = vec![Vec::new(), Vec::new()];
        Layout::float16().split(&x.to_le_bytes(), &mut planes);
        assert_eq!(planes[0], [127]);
        assert_eq!(planes[1], [0x80]);
    }

    #[test]
    fn validation_rejects_bad_layouts() {
        let overlap = Layout {
            record: 4,
            fields: vec![Field::Float16 { at: 0 }, Field::Bytes { start: 1, len: 3 }],
        };
        assert!(overlap.validate().is_err());
        let gap = Layout {
            record: 4,
            fields: vec![Field::Float16 { at: 0 }],
        };
        assert!(gap.validate().is_err());
        assert!(q4_1().validate().is_ok());
        assert!(mixed().validate().is_ok());
    }

    proptest! {
        #[test]
        fn split_merge_round_trip(data in proptest::collection::vec(any::<u8>(), 0..4000), which in 0usize..12) {
            let layout = [Layout::identity(), Layout::float16(), Layout::float32(), Layout::byte_planes(4),
                          Layout::byte_planes(8), q4_1(), mixed(), Layout::byte_planes(2), gguf(2, 1, 32),
                          gguf(2, 1, 16), gguf(4, 2, 32), gguf(2, 1, 12)][which].clone();
            layout.validate().unwrap();
            let r = layout.record as usize;
            let data = &data[..data.len() / r * r];
            let mut planes = vec![Vec::new(); layout.planes()];
            layout.split(data, &mut planes);
            let refs: Vec<&[u8]> = planes.iter().map(|p| &p[..]).collect();
            let mut out = vec![0u8; data.len()];
            layout.merge(&refs, &mut out);
            prop_assert_eq!(&out[..], data);
        }
    }
}
