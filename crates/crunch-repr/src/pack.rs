//! Dense bit packing of integer codes, as crunch's own format stores them.
//!
//! Code i occupies bits [i·bits, (i+1)·bits) of the stream, where stream bit k is bit k % 8
//! (least significant first) of byte k / 8: little-endian bit order, no padding between codes,
//! the final byte zero-padded.

use crate::error::{ReprError, Result};

/// Bytes needed for `n` codes of `bits` bits.
pub fn packed_len(n: usize, bits: u8) -> usize {
    (n * bits as usize).div_ceil(8)
}

/// Packs `codes` (each < 2^bits) into `bits`-bit fields.
///
/// # Panics
/// If `bits` is not in 1..=8 or a code does not fit in `bits` bits: both are caller bugs, and
/// masking them away would corrupt the weight silently.
pub fn pack_codes(codes: &[u8], bits: u8) -> Vec<u8> {
    assert!(
        (1..=8).contains(&bits),
        "pack_codes: {bits} bits; 1 to 8 are supported"
    );
    let max = ((1u16 << bits) - 1) as u8;
    if let Some(i) = codes.iter().position(|&c| c > max) {
        panic!(
            "pack_codes: code {} at index {i} does not fit in {bits} bits",
            codes[i]
        );
    }
    if bits == 8 {
        return codes.to_vec();
    }
    let mut out = Vec::with_capacity(packed_len(codes.len(), bits));
    // Bit accumulator: `filled` low bits of `acc` are pending output.
    let (mut acc, mut filled) = (0u32, 0u32);
    for &c in codes {
        acc |= (c as u32) << filled;
        filled += bits as u32;
        while filled >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            filled -= 8;
        }
    }
    if filled > 0 {
        out.push(acc as u8);
    }
    out
}

/// Unpacks `n` codes of `bits` bits from the front of `packed`; bytes past them are ignored.
pub fn unpack_codes(packed: &[u8], bits: u8, n: usize) -> Result<Vec<u8>> {
    if !(1..=8).contains(&bits) {
        return Err(ReprError::UnsupportedPackBits(bits));
    }
    let needed = packed_len(n, bits);
    if packed.len() < needed {
        return Err(ReprError::PackedTooShort {
            got: packed.len(),
            needed,
            n,
            bits,
        });
    }
    if bits == 8 {
        return Ok(packed[..n].to_vec());
    }
    let mask = (1u32 << bits) - 1;
    let mut out = Vec::with_capacity(n);
    let mut bytes = packed[..needed].iter();
    let (mut acc, mut filled) = (0u32, 0u32);
    for _ in 0..n {
        if filled < bits as u32 {
            // `needed` bytes hold all n codes, so this byte exists.
            acc |= (*bytes.next().expect("length checked above") as u32) << filled;
            filled += 8;
        }
        out.push((acc & mask) as u8);
        acc >>= bits;
        filled -= bits as u32;
    }
    Ok(out)
}

/// Little-endian f16 values (how crunch's format and the search's variant cache store scales
/// and levels); a trailing odd byte is ignored (callers check lengths first).
pub fn f16s_le(bytes: &[u8]) -> Vec<half::f16> {
    bytes
        .chunks_exact(2)
        .map(|c| half::f16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// A [rows, cols] row-major matrix made one row at a time by `row_of(r, row)`: the
/// `dequantize` of the code-and-table weights, whose `dequantize_row` is what callers that make
/// rows in parallel use (the same bits either way).
pub(crate) fn by_rows(rows: usize, cols: usize, row_of: impl Fn(usize, &mut [f32])) -> Vec<f32> {
    let mut out = vec![0.0; rows * cols];
    if cols > 0 {
        for (r, row) in out.chunks_mut(cols).enumerate() {
            row_of(r, row);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    #[allow(clippy::unusual_byte_groupings)] // grouped by code field, not by nibble
    fn layout_is_little_endian_and_dense() {
        // 3-bit codes 1..=5: bits 001 010 011 100 101 → stream 100 010 110 001 101 (LSB first).
        assert_eq!(
            pack_codes(&[1, 2, 3, 4, 5], 3),
            vec![0b11_010_001, 0b0_101_100_0]
        );
        assert_eq!(pack_codes(&[0xA, 0x5, 0xF], 4), vec![0x5A, 0x0F]);
        assert_eq!(pack_codes(&[3, 0, 1, 2, 3], 2), vec![0b10_01_00_11, 0b11]);
        assert_eq!(pack_codes(&[], 4), Vec::<u8>::new());
    }

    #[test]
    fn too_short_buffer_is_an_error() {
        let packed = pack_codes(&[1, 2, 3, 4, 5], 3); // 15 bits → 2 bytes
        assert!(unpack_codes(&packed, 3, 5).is_ok());
        assert!(unpack_codes(&packed, 3, 6).is_err()); // 18 bits → 3 bytes
        assert_eq!(
            unpack_codes(&packed[..1], 3, 5),
            Err(ReprError::PackedTooShort {
                got: 1,
                needed: 2,
                n: 5,
                bits: 3
            })
        );
        assert!(unpack_codes(&[0u8; 3], 8, 4).is_err());
        assert!(unpack_codes(&[0u8; 3], 9, 1).is_err());
        assert_eq!(unpack_codes(&[], 2, 0), Ok(vec![]));
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn packing_an_oversized_code_panics() {
        pack_codes(&[1, 8], 3);
    }

    fn codes_and_bits() -> impl Strategy<Value = (Vec<u8>, u8)> {
        prop::sample::select(vec![2u8, 3, 4, 8]).prop_flat_map(|bits| {
            let max = ((1u16 << bits) - 1) as u8;
            (prop::collection::vec(0..=max, 0..300), Just(bits))
        })
    }

    proptest! {
        #[test]
        fn round_trip((codes, bits) in codes_and_bits()) {
            let packed = pack_codes(&codes, bits);
            prop_assert_eq!(packed.len(), packed_len(codes.len(), bits));
            prop_assert_eq!(unpack_codes(&packed, bits, codes.len()).unwrap(), codes.clone());
            // The padding of the final byte is zero.
            let used = codes.len() * bits as usize % 8;
            if used != 0 {
                prop_assert_eq!(packed.last().unwrap() >> used, 0);
            }
            // One byte short is an error whenever any byte is needed.
            if !packed.is_empty() {
                prop_assert!(unpack_codes(&packed[..packed.len() - 1], bits, codes.len()).is_err());
            }
        }
    }
}
