//! Quantized weights a backend keeps as codes and expands into a weight itself
//! ([`Backend::upload_codes`](crate::Backend::upload_codes),
//! [`Backend::dequantize_codes`](crate::Backend::dequantize_codes); decision 137).
//!
//! A budget search swaps many variants of the same layers in and out of one model. Where the
//! backend is a GPU, keeping every variant's codes on the device and expanding one there costs
//! a kernel per swap instead of a host dequantization and an f32 upload. This module holds what
//! the backends share: the description of such a weight ([`QuantCodes`], borrowed: the caller
//! owns the codes), the device layout of the codes ([`QuantCodes::pack_words`]: bit-packed at
//! their width in 32-bit words) and the host transcription of the kernel's reading of them
//! ([`code_at`], [`QuantCodes::value`]), which the tests check against the plain definition.

use crate::{Error, Result};
use half::f16;
use rayon::prelude::*;

/// A quantized weight matrix `[rows, cols]`: `W[r][c] = (code − zero) · f32(scale)` computed in
/// f32, with static groups (column `c` is in group `c / group` of its row). The same arithmetic
/// as crunch-repr's `QuantizedWeight::dequantize` for weights without `g_idx`, so a backend that
/// expands these gives the same bits.
#[derive(Clone, Copy, Debug)]
pub struct QuantCodes<'a> {
    pub rows: usize,
    pub cols: usize,
    /// Bits per code, 1 to 8.
    pub bits: u8,
    /// Columns per group (`cols` for one group per row; the last group of a row may be short).
    pub group: usize,
    /// `rows · cols` codes, each below `2^bits`, row-major.
    pub codes: &'a [u8],
    /// `rows · n_groups` scales, row-major.
    pub scales: &'a [f16],
    /// `rows · n_groups` zero points.
    pub zeros: &'a [u8],
}

impl QuantCodes<'_> {
    /// Groups per row.
    pub fn n_groups(&self) -> usize {
        if self.cols == 0 {
            0
        } else {
            self.cols.div_ceil(self.group.max(1))
        }
    }

    /// Checks that the buffers agree with the shape and that every code fits in `bits`: an
    /// error names the first disagreement.
    pub fn check(&self) -> Result<()> {
        let bad = |what: String| Err(Error(format!("quantized codes: {what}")));
        if !(1..=8).contains(&self.bits) {
            return bad(format!("{} bits (1 to 8 are supported)", self.bits));
        }
        if self.group == 0 {
            return bad("a group of 0 columns".into());
        }
        if self.codes.len() != self.rows * self.cols {
            return bad(format!(
                "{} codes for a {}×{} weight",
                self.codes.len(),
                self.rows,
                self.cols
            ));
        }
        let per_group = self.rows * self.n_groups();
        if self.scales.len() != per_group || self.zeros.len() != per_group {
            return bad(format!(
                "{} scales and {} zero points, expected {per_group}",
                self.scales.len(),
                self.zeros.len()
            ));
        }
        let max = ((1u16 << self.bits) - 1) as u8;
        if let Some(i) = self.codes.iter().position(|&c| c > max) {
            return bad(format!(
                "code {} at index {i} does not fit in {} bits",
                self.codes[i], self.bits
            ));
        }
        Ok(())
    }

    /// Whether every scale is finite. A backend may refuse other weights: a NaN's bits after
    /// arithmetic differ between a CPU and a GPU, so their expansions could not be bit-identical.
    pub fn scales_finite(&self) -> bool {
        self.scales.iter().all(|s| s.is_finite())
    }

    /// 32-bit words holding the codes: code `k = r·cols + c` at bits `k·bits .. k·bits + bits`
    /// of the little-endian bit stream the words make (so a code may straddle two words). The
    /// stream is padded with zero bits to a whole number of 32-code chunks (`bits` words each).
    /// Packed on the rayon pool, one chunk per task.
    pub fn pack_words(&self) -> Vec<u32> {
        let bits = self.bits as usize;
        let chunks = self.codes.len().div_ceil(32);
        let mut words = vec![0u32; chunks * bits];
        words
            .par_chunks_mut(bits)
            .zip(self.codes.par_chunks(32))
            .for_each(|(w, c)| {
                // 32 codes fill exactly `bits` words, so a chunk starts on a word.
                for (i, &code) in c.iter().enumerate() {
                    let at = i * bits;
                    let (word, shift) = (at / 32, at % 32);
                    w[word] |= (code as u32) << shift;
                    if shift + bits > 32 {
                        w[word + 1] |= (code as u32) >> (32 - shift);
                    }
                }
            });
        words
    }

    /// Device bytes of these codes in [`pack_words`](Self::pack_words)'s layout, with 16-bit
    /// scales and 8-bit zero points.
    pub fn device_bytes(&self) -> u64 {
        let words = self.codes.len().div_ceil(32) * self.bits as usize;
        (4 * words + 3 * self.scales.len()) as u64
    }

    /// Weight `(r, c)` as the kernel computes it from the packed `words` (host transcription
    /// of `codes_value` in `cuda/kernels.cu`: the same reads, the same f32 operations).
    pub fn value(&self, words: &[u32], r: usize, c: usize) -> f32 {
        let k = (r * self.cols + c) as u64;
        let code = code_at(words, k, self.bits as u32);
        let g = r * self.n_groups() + c / self.group;
        (code as f32 - self.zeros[g] as f32) * self.scales[g].to_f32()
    }
}

/// Code `k` of `bits` bits from the word stream of [`QuantCodes::pack_words`], read as the
/// kernel reads it: the word holding its first bit shifted down, and the next word's low bits
/// above them when the code straddles two words.
pub fn code_at(words: &[u32], k: u64, bits: u32) -> u32 {
    let bit = k * bits as u64;
    let (w, sh) = ((bit >> 5) as usize, (bit & 31) as u32);
    let mut v = words[w] >> sh;
    if sh + bits > 32 {
        v |= words[w + 1] << (32 - sh);
    }
    v & ((1u32 << bits) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes, scales and zero points of a `rows × cols` weight with `bits` and `group`,
    /// pseudo-random over the whole range (zero points too, beyond the codes' range at 8 bits
    /// they are not).
    fn sample(rows: usize, cols: usize, bits: u8, group: usize) -> (Vec<u8>, Vec<f16>, Vec<u8>) {
        let mut rng = crunch_rng::SplitMix64(u64::from(bits) * 1000 + cols as u64);
        let max = (1u64 << bits) - 1;
        let codes = (0..rows * cols)
            .map(|_| (rng.next_u64() % (max + 1)) as u8)
            .collect();
        let groups = rows * cols.div_ceil(group);
        // Scales of both signs and of every magnitude f16 holds, subnormals included.
        let scales = (0..groups)
            .map(|_| {
                let b = (rng.next_u64() & 0xffff) as u16;
                let s = f16::from_bits((b & !0x7c00) | ((b % 31) << 10));
                if s.is_finite() {
                    s
                } else {
                    f16::from_f32(0.5)
                }
            })
            .collect();
        let zeros = (0..groups)
            .map(|_| (rng.next_u64() % (max + 1)) as u8)
            .collect();
        (codes, scales, zeros)
    }

    /// The definition, written as crunch-repr writes it (static groups, row by row).
    fn reference(q: &QuantCodes) -> Vec<f32> {
        let mut out = vec![0f32; q.rows * q.cols];
        for r in 0..q.rows {
            for c in 0..q.cols {
                let g = r * q.n_groups() + c / q.group;
                let (s, z) = (q.scales[g].to_f32(), q.zeros[g] as f32);
                out[r * q.cols + c] = (q.codes[r * q.cols + c] as f32 - z) * s;
            }
        }
        out
    }

    #[test]
    fn packed_words_unpack_to_the_definition_at_every_width() {
        // Odd sizes: codes that straddle words, rows that end mid-word, a last partial chunk
        // of 32 codes, a short last group, one group per row.
        for bits in 1..=8u8 {
            for (rows, cols, group) in [
                (1, 1, 1),
                (3, 37, 8),
                (5, 100, 32),
                (7, 64, 64),
                (2, 33, 33),
            ] {
                let (codes, scales, zeros) = sample(rows, cols, bits, group);
                let q = QuantCodes {
                    rows,
                    cols,
                    bits,
                    group,
                    codes: &codes,
                    scales: &scales,
                    zeros: &zeros,
                };
                q.check().unwrap();
                let words = q.pack_words();
                assert_eq!(words.len(), (rows * cols).div_ceil(32) * bits as usize);
                assert_eq!(
                    q.device_bytes(),
                    4 * words.len() as u64 + 3 * scales.len() as u64
                );
                for (k, &c) in codes.iter().enumerate() {
                    assert_eq!(
                        code_at(&words, k as u64, bits as u32),
                        c as u32,
                        "{bits} bits, code {k}"
                    );
                }
                let want = reference(&q);
                for r in 0..rows {
                    for c in 0..cols {
                        assert_eq!(
                            q.value(&words, r, c).to_bits(),
                            want[r * cols + c].to_bits(),
                            "{bits} bits, ({r}, {c})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn bad_buffers_are_refused_by_name() {
        let (codes, scales, zeros) = sample(2, 8, 3, 4);
        let q = QuantCodes {
            rows: 2,
            cols: 8,
            bits: 3,
            group: 4,
            codes: &codes,
            scales: &scales,
            zeros: &zeros,
        };
        q.check().unwrap();
        let too_wide = [8u8; 16];
        let e = QuantCodes {
            codes: &too_wide,
            ..q
        }
        .check()
        .unwrap_err();
        assert!(e.to_string().contains("does not fit in 3 bits"), "{e}");
        let e = QuantCodes {
            codes: &codes[1..],
            ..q
        }
        .check()
        .unwrap_err();
        assert!(e.to_string().contains("15 codes"), "{e}");
        let e = QuantCodes {
            scales: &scales[1..],
            ..q
        }
        .check()
        .unwrap_err();
        assert!(e.to_string().contains("expected 4"), "{e}");
        assert!(QuantCodes { bits: 9, ..q }.check().is_err());
        assert!(QuantCodes { group: 0, ..q }.check().is_err());
        let nan = [f16::NAN; 4];
        assert!(!QuantCodes { scales: &nan, ..q }.scales_finite());
        assert!(q.scales_finite());
    }
}
