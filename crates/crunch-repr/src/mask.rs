//! Which weights a pruned layer keeps: one bit per weight, packed.
//!
//! Bit k = r·cols + c (row-major, like the weight) is bit k % 8, least significant first, of
//! byte k / 8 — the bit order of [`crate::pack_codes`] with 1-bit codes — and the final byte is
//! zero-padded. 1 = kept, 0 = pruned. A kept weight may still be 0 (a kept weight quantized to
//! 0, or a dead input column); the mask, not the value, says what was pruned.

use crate::error::{ReprError, Result};

/// A packed keep-mask of a row-major [rows, cols] weight (1 = kept).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Bitmask {
    rows: usize,
    cols: usize,
    bits: Vec<u8>,
}

impl Bitmask {
    /// Every weight kept.
    pub fn all_kept(rows: usize, cols: usize) -> Self {
        let n = rows * cols;
        let mut bits = vec![0xFFu8; n.div_ceil(8)];
        if n % 8 != 0 {
            *bits.last_mut().expect("n > 0") = (1u8 << (n % 8)) - 1;
        }
        Self { rows, cols, bits }
    }

    /// Packs one bool per weight (row-major, `true` = kept).
    pub fn from_bools(rows: usize, cols: usize, kept: &[bool]) -> Result<Self> {
        check_len(kept.len(), rows, cols)?;
        let mut bits = vec![0u8; kept.len().div_ceil(8)];
        for (k, _) in kept.iter().enumerate().filter(|(_, &b)| b) {
            bits[k / 8] |= 1 << (k % 8);
        }
        Ok(Self { rows, cols, bits })
    }

    /// Keeps exactly the non-zero weights.
    pub fn from_nonzero(weight: &[f32], rows: usize, cols: usize) -> Result<Self> {
        let kept: Vec<bool> = weight.iter().map(|&w| w != 0.0).collect();
        Self::from_bools(rows, cols, &kept)
    }

    /// Reads a packed mask, checking its length and that the padding bits are 0.
    pub fn from_bytes(rows: usize, cols: usize, bytes: Vec<u8>) -> Result<Self> {
        let n = rows * cols;
        if bytes.len() != n.div_ceil(8) {
            return Err(ReprError::BadMask(format!(
                "{} bytes for a {rows}×{cols} mask, expected {}",
                bytes.len(),
                n.div_ceil(8)
            )));
        }
        if n % 8 != 0 && bytes[n / 8] >> (n % 8) != 0 {
            return Err(ReprError::BadMask("padding bits are not zero".into()));
        }
        Ok(Self {
            rows,
            cols,
            bits: bytes,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The packed bits, (rows·cols).div_ceil(8) bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    /// One bool per weight, row-major (`true` = kept).
    pub fn to_bools(&self) -> Vec<bool> {
        (0..self.rows * self.cols).map(|k| self.bit(k)).collect()
    }

    /// Whether weight (row, col) is kept.
    #[inline]
    pub fn get(&self, row: usize, col: usize) -> bool {
        assert!(
            row < self.rows && col < self.cols,
            "mask index out of range"
        );
        self.bit(row * self.cols + col)
    }

    pub fn set(&mut self, row: usize, col: usize, kept: bool) {
        assert!(
            row < self.rows && col < self.cols,
            "mask index out of range"
        );
        let k = row * self.cols + col;
        if kept {
            self.bits[k / 8] |= 1 << (k % 8);
        } else {
            self.bits[k / 8] &= !(1 << (k % 8));
        }
    }

    /// Number of kept weights.
    pub fn count_kept(&self) -> usize {
        self.bits.iter().map(|b| b.count_ones() as usize).sum()
    }

    /// Fraction of weights pruned (0 for an empty mask).
    pub fn sparsity(&self) -> f64 {
        let n = self.rows * self.cols;
        if n == 0 {
            0.0
        } else {
            1.0 - self.count_kept() as f64 / n as f64
        }
    }

    /// Sets the pruned weights of a row-major [rows, cols] buffer to 0.
    pub fn apply(&self, weight: &mut [f32]) -> Result<()> {
        check_len(weight.len(), self.rows, self.cols)?;
        for (k, w) in weight.iter_mut().enumerate() {
            if !self.bit(k) {
                *w = 0.0;
            }
        }
        Ok(())
    }

    #[inline]
    fn bit(&self, k: usize) -> bool {
        self.bits[k / 8] >> (k % 8) & 1 == 1
    }
}

fn check_len(len: usize, rows: usize, cols: usize) -> Result<()> {
    if rows.checked_mul(cols) == Some(len) {
        Ok(())
    } else {
        Err(ReprError::BadMask(format!(
            "{len} values for a {rows}×{cols} mask"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::pack_codes;
    use proptest::prelude::*;

    #[test]
    fn layout_is_row_major_lsb_first() {
        let kept = [
            true, false, true, true, false, false, false, false, false, true,
        ];
        let m = Bitmask::from_bools(2, 5, &kept).unwrap();
        assert_eq!(m.as_bytes(), &[0b0000_1101, 0b10]);
        // The same bits as 1-bit codes in crunch's packing order.
        let codes: Vec<u8> = kept.iter().map(|&b| b as u8).collect();
        assert_eq!(m.as_bytes(), pack_codes(&codes, 1).as_slice());
        assert!(m.get(1, 4) && !m.get(1, 3) && m.get(0, 3));
        assert_eq!((m.count_kept(), m.sparsity()), (4, 0.6));
        assert_eq!(Bitmask::all_kept(2, 5).as_bytes(), &[0xFF, 0b11]);
        assert_eq!(Bitmask::all_kept(2, 4).as_bytes(), &[0xFF]);
        let mut w = vec![1.0f32; 10];
        m.apply(&mut w).unwrap();
        assert_eq!(Bitmask::from_nonzero(&w, 2, 5).unwrap(), m);
    }

    #[test]
    fn bad_buffers_are_rejected() {
        assert!(Bitmask::from_bools(2, 3, &[true; 5]).is_err());
        assert!(Bitmask::from_bytes(2, 5, vec![0]).is_err());
        // Bit 10 is padding in a 10-bit mask.
        assert!(Bitmask::from_bytes(2, 5, vec![0, 0b100]).is_err());
        assert!(Bitmask::all_kept(2, 5).apply(&mut [0.0; 9]).is_err());
    }

    proptest! {
        #[test]
        fn pack_unpack_round_trips(
            (rows, cols, kept) in (1usize..9, 1usize..40).prop_flat_map(|(r, c)| {
                (Just(r), Just(c), proptest::collection::vec(any::<bool>(), r * c))
            })
        ) {
            let m = Bitmask::from_bools(rows, cols, &kept).unwrap();
            prop_assert_eq!(m.to_bools(), kept.clone());
            let again = Bitmask::from_bytes(rows, cols, m.as_bytes().to_vec()).unwrap();
            prop_assert_eq!(&again, &m);
            let mut edited = Bitmask::all_kept(rows, cols);
            for (k, &b) in kept.iter().enumerate() {
                edited.set(k / cols, k % cols, b);
            }
            prop_assert_eq!(edited, m);
        }
    }
}
