//! The lookup-table form of one linear weight (decision 143): `bits`-bit codes, each indexing
//! a codebook of 2^bits f16 levels of its output row (or of its row and group of input
//! columns). Unlike [`crate::QuantizedWeight`] the levels need not be evenly spaced, so a
//! codebook can put its levels where a row's weights (and the Hessian's weight on them) are.

use crate::error::{ReprError, Result};
use half::f16;

/// Bit widths of a lookup-table weight: 2 to 4. A codebook costs 2^bits · 16 bits per row
/// (or group); at 5 bits and up that is 512+ bits, which a 576-column row pays as 0.9+ bits
/// per weight, more than a uniform grid's extra bit.
pub const LUT_BITS: [u8; 3] = [2, 3, 4];

/// The grid settings of a lookup-table weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LutSpec {
    /// Bits per code, one of [`LUT_BITS`].
    pub bits: u8,
    /// Input columns sharing one codebook; `None` = one codebook per output row. A group size
    /// that does not divide the columns leaves a shorter last group.
    pub group_size: Option<usize>,
}

impl LutSpec {
    pub fn new(bits: u8, group_size: Option<usize>) -> Self {
        Self { bits, group_size }
    }

    /// Levels per codebook, 2^bits.
    pub fn levels(&self) -> usize {
        1 << self.bits
    }

    /// Codebooks per row for a weight with `cols` input columns.
    pub fn n_groups(&self, cols: usize) -> usize {
        match self.group_size {
            None => 1,
            Some(g) => cols.div_ceil(g.max(1)),
        }
    }

    /// Checks the bit width and the group size against a layer of `cols` columns.
    pub fn validate(&self, cols: usize) -> Result<()> {
        if !LUT_BITS.contains(&self.bits) {
            return Err(ReprError::Inconsistent(format!(
                "a lookup-table weight has 2, 3 or 4 bits, not {}",
                self.bits
            )));
        }
        if let Some(g) = self.group_size {
            if g == 0 || cols == 0 {
                return Err(ReprError::BadGroupSize {
                    group_size: g,
                    cols,
                });
            }
        }
        Ok(())
    }

    /// Storage bits per weight of a `[rows, cols]` weight: `bits` per code plus 2^bits f16
    /// levels per codebook.
    pub fn bits_per_weight(&self, cols: usize) -> f64 {
        let book = (self.levels() * 16) as f64;
        self.bits as f64 + self.n_groups(cols) as f64 * book / cols.max(1) as f64
    }
}

/// W[r, c] = levels[r, group(c), code[r, c]], with W of shape [rows, cols].
#[derive(Clone, Debug, PartialEq)]
pub struct LutWeight {
    pub spec: LutSpec,
    pub rows: usize,
    pub cols: usize,
    /// rows·cols codes in [0, 2^bits − 1], row-major, original column order.
    pub codes: Vec<u8>,
    /// The codebooks, `[rows, groups, 2^bits]` row-major, each non-decreasing. f16 because the
    /// file stores f16 and crunch dequantizes exactly what it stores.
    pub levels: Vec<f16>,
}

impl LutWeight {
    /// Codebooks per row.
    pub fn n_groups(&self) -> usize {
        self.spec.n_groups(self.cols)
    }

    /// W in f32, row-major [rows, cols].
    pub fn dequantize(&self) -> Vec<f32> {
        crate::pack::by_rows(self.rows, self.cols, |r, row| self.dequantize_row(r, row))
    }

    /// Row `r` of [`dequantize`](Self::dequantize) into `row` (`cols` values).
    pub fn dequantize_row(&self, r: usize, row: &mut [f32]) {
        let (k, ng) = (self.spec.levels(), self.n_groups());
        let g = self.spec.group_size.unwrap_or(self.cols).max(1);
        let books = &self.levels[r * ng * k..(r + 1) * ng * k];
        let codes = &self.codes[r * self.cols..(r + 1) * self.cols];
        for ((w, c), book) in row.chunks_mut(g).zip(codes.chunks(g)).zip(books.chunks(k)) {
            for (w, &c) in w.iter_mut().zip(c) {
                *w = book[c as usize].to_f32();
            }
        }
    }

    /// Storage cost per weight ([`LutSpec::bits_per_weight`]).
    pub fn bits_per_weight(&self) -> f64 {
        self.spec.bits_per_weight(self.cols)
    }

    /// Checks that the buffers agree with the shape and spec, every code indexes its codebook,
    /// and every codebook is finite and non-decreasing (for weights read from disk).
    pub fn validate(&self) -> Result<()> {
        self.spec.validate(self.cols)?;
        let bad = |what: String| Err(ReprError::Inconsistent(what));
        let n = self.rows * self.cols;
        if self.codes.len() != n {
            return bad(format!(
                "{} codes for a {}×{} lookup-table weight",
                self.codes.len(),
                self.rows,
                self.cols
            ));
        }
        let k = self.spec.levels();
        let want = self.rows * self.n_groups() * k;
        if self.levels.len() != want {
            return bad(format!(
                "{} codebook levels, expected {want} ({} rows × {} groups × {k})",
                self.levels.len(),
                self.rows,
                self.n_groups()
            ));
        }
        if let Some(i) = self.codes.iter().position(|&c| c as usize >= k) {
            return bad(format!(
                "code {} at index {i} is past the {k} levels of its codebook",
                self.codes[i]
            ));
        }
        for (b, book) in self.levels.chunks(k).enumerate() {
            if book.iter().any(|v| !v.is_finite()) {
                return bad(format!("codebook {b} holds a non-finite level"));
            }
            if book.windows(2).any(|w| w[1].to_f32() < w[0].to_f32()) {
                return bad(format!("codebook {b} is not in increasing order"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LutWeight {
        LutWeight {
            spec: LutSpec::new(2, Some(3)),
            rows: 2,
            cols: 4,
            codes: vec![0, 3, 1, 2, 3, 3, 0, 1],
            levels: [
                -1.0, 0.0, 0.5, 2.0, // row 0, columns 0..3
                -4.0, -3.0, -2.0, -1.0, // row 0, column 3
                0.0, 1.0, 2.0, 3.0, // row 1, columns 0..3
                -0.5, 0.25, 0.75, 8.0, // row 1, column 3
            ]
            .map(f16::from_f32)
            .to_vec(),
        }
    }

    #[test]
    fn dequantize_reads_each_groups_codebook() {
        let q = sample();
        q.validate().unwrap();
        assert_eq!(
            q.dequantize(),
            vec![-1.0, 2.0, 0.0, -2.0, 3.0, 3.0, 0.0, 0.25]
        );
    }

    #[test]
    fn bits_per_weight_counts_the_codebooks() {
        // 2-bit codes + 2 codebooks × 4 levels × 16 bits per row of 4 weights = 2 + 32.
        assert_eq!(sample().bits_per_weight(), 34.0);
        // SmolLM2's shapes, one codebook per row: 3 + 128/576 and 3 + 128/1536.
        let s = LutSpec::new(3, None);
        assert!((s.bits_per_weight(576) - (3.0 + 128.0 / 576.0)).abs() < 1e-12);
        assert!((s.bits_per_weight(1536) - (3.0 + 128.0 / 1536.0)).abs() < 1e-12);
    }

    #[test]
    fn validate_catches_inconsistencies() {
        let mut q = sample();
        q.codes[2] = 4;
        assert!(q.validate().is_err());
        let mut q = sample();
        q.levels.pop();
        assert!(q.validate().is_err());
        let mut q = sample();
        q.levels.swap(0, 1);
        assert!(q.validate().unwrap_err().to_string().contains("order"));
        let mut q = sample();
        q.levels[5] = f16::NAN;
        assert!(q.validate().is_err());
        let mut q = sample();
        q.spec.bits = 5;
        assert!(q.validate().is_err());
    }

    use proptest::prelude::*;

    proptest! {
        /// Writing a lookup-table layer's tensors and decoding them as the reader does gives
        /// back the same codes and levels, hence the same dense weight.
        #[test]
        fn codec_round_trips(
            bits in 2u8..=4,
            rows in 1usize..6,
            cols in 1usize..40,
            group in prop::option::of(1usize..20),
            seed in any::<u64>(),
        ) {
            let spec = LutSpec::new(bits, group);
            let (k, ng) = (spec.levels(), spec.n_groups(cols));
            let mut x = seed | 1;
            let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
            let codes: Vec<u8> = (0..rows * cols).map(|_| (next() % k as u64) as u8).collect();
            let mut levels = Vec::with_capacity(rows * ng * k);
            for _ in 0..rows * ng {
                let mut book: Vec<f32> =
                    (0..k).map(|_| (next() % 2001) as f32 / 100.0 - 10.0).collect();
                book.sort_by(f32::total_cmp);
                levels.extend(book.into_iter().map(f16::from_f32));
            }
            let q = LutWeight { spec, rows, cols, codes, levels };
            q.validate().unwrap();
            let layer = crate::CompressedLayer::new("lut", crate::Compressed::Lut(q.clone()));
            let tensors = crate::format::layer_tensors("p", &layer).unwrap();
            prop_assert_eq!(tensors.len(), 2);
            prop_assert_eq!(&tensors[1].shape, &vec![rows, ng, k]);
            let back = LutWeight {
                spec,
                rows,
                cols,
                codes: crate::unpack_codes(&tensors[0].data, bits, rows * cols).unwrap(),
                levels: crate::f16s_le(&tensors[1].data),
            };
            prop_assert_eq!(back.dequantize(), q.dequantize());
            prop_assert_eq!(back, q);
            let entry = crate::format::layer_recipe(&layer);
            prop_assert!(entry.codebook && entry.bits == bits && entry.group_size == group);
        }
    }
}
