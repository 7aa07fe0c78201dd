//! The "values + indices" layout of N:M sparse weights (2:4 is the one sparse tensor cores run):
//! every group of m consecutive input columns of a row stores exactly n values, its kept
//! weights in column order, and their in-group positions in ⌈log2 m⌉ bits each.
//!
//! A group with fewer than n kept weights is padded with zero values at its lowest unused
//! positions, so every group has the same size (the hardware layout has no room for a count).
//! Decoding therefore returns the weight exactly, and the mask exactly when every group keeps n
//! weights (as every pruner here produces); otherwise the padding slots come back as kept zeros.
//!
//! Indices use crunch's dense packing ([`crate::pack_codes`]): index i of the stream occupies
//! bits [i·b, (i+1)·b), least significant first. m ≤ 16, so b ≤ 4.

use crate::error::{ReprError, Result};
use crate::mask::Bitmask;
use crate::pack::{pack_codes, packed_len, unpack_codes};

/// Largest group size the codec packs (indices of at most 4 bits).
pub const NM_MAX_M: usize = 16;

/// An N:M-sparse weight in values + indices form.
#[derive(Clone, Debug, PartialEq)]
pub struct NmPacked {
    pub rows: usize,
    pub cols: usize,
    pub n: usize,
    pub m: usize,
    /// rows·(cols/m)·n values, group by group, row-major.
    pub values: Vec<f32>,
    /// The values' in-group positions, ⌈log2 m⌉ bits each, packed.
    pub indices: Vec<u8>,
}

/// Bits per in-group index: ⌈log2 m⌉.
pub fn nm_index_bits(m: usize) -> u8 {
    (usize::BITS - (m.max(2) - 1).leading_zeros()) as u8
}

fn check_pattern(n: usize, m: usize, cols: usize) -> Result<()> {
    if !(2..=NM_MAX_M).contains(&m) || n == 0 || n >= m || cols % m != 0 {
        return Err(ReprError::InvalidSparsity(format!(
            "cannot pack {n}:{m} with {cols} columns: needs 0 < n < m ≤ {NM_MAX_M} and m | cols"
        )));
    }
    Ok(())
}

impl NmPacked {
    /// Packs the kept weights of `weight` (row-major [mask.rows(), mask.cols()]); an error if a
    /// group keeps more than n.
    pub fn encode(weight: &[f32], mask: &Bitmask, n: usize, m: usize) -> Result<Self> {
        let (rows, cols) = (mask.rows(), mask.cols());
        check_pattern(n, m, cols)?;
        if weight.len() != rows * cols {
            return Err(ReprError::WeightShape {
                len: weight.len(),
                rows,
                cols,
            });
        }
        let kept = mask.to_bools();
        let groups = rows * cols / m;
        let mut values = Vec::with_capacity(groups * n);
        let mut idx = Vec::with_capacity(groups * n);
        for (g, (w, k)) in weight.chunks(m).zip(kept.chunks(m)).enumerate() {
            let count = k.iter().filter(|&&b| b).count();
            if count > n {
                return Err(ReprError::BadMask(format!(
                    "row {}, columns {}..{} keep {count} weights, {n}:{m} allows {n}",
                    g * m / cols,
                    g * m % cols,
                    g * m % cols + m
                )));
            }
            // Kept positions plus the lowest unused ones as padding, in column order.
            let mut padding = n - count;
            for (i, &kept) in k.iter().enumerate() {
                let pad = !kept && padding > 0;
                if kept || pad {
                    padding -= pad as usize;
                    values.push(if kept { w[i] } else { 0.0 });
                    idx.push(i as u8);
                }
            }
        }
        Ok(Self {
            rows,
            cols,
            n,
            m,
            values,
            indices: pack_codes(&idx, nm_index_bits(m)),
        })
    }

    /// The dense weight and the mask of the stored positions.
    pub fn decode(&self) -> Result<(Vec<f32>, Bitmask)> {
        let (n, m) = (self.n, self.m);
        check_pattern(n, m, self.cols)?;
        let slots = self.rows * self.cols / m * n;
        let bits = nm_index_bits(m);
        if self.values.len() != slots || self.indices.len() != packed_len(slots, bits) {
            return Err(ReprError::BadMask(format!(
                "{} values and {} index bytes, expected {slots} and {}",
                self.values.len(),
                self.indices.len(),
                packed_len(slots, bits)
            )));
        }
        let idx = unpack_codes(&self.indices, bits, slots)?;
        let mut weight = vec![0.0f32; self.rows * self.cols];
        let mut kept = vec![false; self.rows * self.cols];
        for (g, (vals, idx)) in self.values.chunks(n).zip(idx.chunks(n)).enumerate() {
            // Strictly increasing positions inside the group: no duplicates, none out of range.
            if idx.windows(2).any(|p| p[0] >= p[1]) || idx[n - 1] as usize >= m {
                return Err(ReprError::BadMask(format!(
                    "group {g} has indices {idx:?}, not increasing below {m}"
                )));
            }
            for (&v, &i) in vals.iter().zip(idx) {
                weight[g * m + i as usize] = v;
                kept[g * m + i as usize] = true;
            }
        }
        Ok((weight, Bitmask::from_bools(self.rows, self.cols, &kept)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparsity::check_nm;
    use proptest::prelude::*;

    #[test]
    fn index_bits_and_layout() {
        let bits: Vec<u8> = [2, 3, 4, 5, 8, 9, 16].map(nm_index_bits).to_vec();
        assert_eq!(bits, [1, 2, 2, 3, 3, 4, 4]);
        let w = [0.0, 1.5, 0.0, -2.0, 3.0, 0.0, 0.0, 0.0];
        let mask = Bitmask::from_nonzero(&w, 1, 8).unwrap();
        let p = NmPacked::encode(&w, &mask, 2, 4).unwrap();
        // Group 2 keeps one weight and is padded with a zero at its lowest free position (1).
        assert_eq!(p.values, [1.5, -2.0, 3.0, 0.0]);
        // Indices 1, 3, 0, 1 in 2-bit fields, least significant first.
        assert_eq!(p.indices, [0b01_00_11_01]);
        let (dense, kept) = p.decode().unwrap();
        assert_eq!(dense, w);
        assert_eq!(
            kept.to_bools(),
            [false, true, false, true, true, true, false, false]
        );
    }

    #[test]
    fn rejects_bad_patterns_and_buffers() {
        let w = [1.0f32; 8];
        let all = Bitmask::all_kept(2, 4);
        assert!(matches!(
            NmPacked::encode(&w, &all, 2, 4),
            Err(ReprError::BadMask(_))
        ));
        assert!(NmPacked::encode(&w, &all, 2, 3).is_err());
        assert!(NmPacked::encode(&w, &Bitmask::all_kept(1, 32), 2, 32).is_err());
        let half = Bitmask::from_bools(2, 4, &[true, true, false, false].repeat(2)).unwrap();
        let mut p = NmPacked::encode(&w, &half, 2, 4).unwrap();
        p.indices = vec![0b0101_0101]; // duplicate positions
        assert!(p.decode().is_err());
        p.values.pop();
        assert!(p.decode().is_err());
    }

    /// A random [rows, cols] weight and mask with at most (or exactly) n kept per group.
    fn nm_case() -> impl Strategy<Value = (usize, usize, usize, usize, Vec<f32>, Vec<bool>, bool)> {
        (
            prop_oneof![
                Just((2usize, 4usize)),
                Just((4, 8)),
                Just((1, 2)),
                Just((5, 16))
            ],
            1usize..5,
            1usize..4,
            any::<bool>(),
        )
            .prop_flat_map(|((n, m), rows, groups, exact)| {
                let cols = groups * m;
                let len = rows * cols;
                (
                    Just((n, m, rows, cols, exact)),
                    proptest::collection::vec(-100.0f32..100.0, len),
                    proptest::collection::vec(any::<u64>(), len / m),
                )
            })
            .prop_map(|((n, m, rows, cols, exact), w, picks)| {
                // Each group keeps the positions of the n (or fewer) lowest keys of a shuffle.
                let mut kept = vec![false; rows * cols];
                for (g, &seed) in picks.iter().enumerate() {
                    let mut pos: Vec<usize> = (0..m).collect();
                    pos.sort_by_key(|&i| seed.rotate_left(i as u32 * 7) ^ (i as u64 * 0x9E37));
                    let count = if exact {
                        n
                    } else {
                        (seed % (n as u64 + 1)) as usize
                    };
                    for &i in &pos[..count] {
                        kept[g * m + i] = true;
                    }
                }
                (n, m, rows, cols, w, kept, exact)
            })
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips((n, m, rows, cols, w, kept, exact) in nm_case()) {
            let mask = Bitmask::from_bools(rows, cols, &kept).unwrap();
            let mut pruned = w.clone();
            mask.apply(&mut pruned).unwrap();
            prop_assert!(check_nm(&pruned, rows, cols, n, m));
            let packed = NmPacked::encode(&pruned, &mask, n, m).unwrap();
            prop_assert_eq!(packed.values.len(), rows * cols / m * n);
            let (dense, back) = packed.decode().unwrap();
            prop_assert_eq!(&dense, &pruned);
            if exact {
                prop_assert_eq!(back, mask);
            } else {
                // The decoded mask holds the original one, plus padding slots that are zero.
                for (k, (&b, &o)) in back.to_bools().iter().zip(&kept).enumerate() {
                    prop_assert!(b || !o, "lost kept weight {}", k);
                    prop_assert!(o || dense[k] == 0.0);
                }
            }
        }
    }
}
