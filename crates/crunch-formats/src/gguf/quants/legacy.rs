//! The 32-value block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
//!
//! Each block holds one f16 scale `d` (and, for the `_1` types, an f16 offset `m`) and 32
//! codes. In the 4- and 5-bit types value `j` and value `j + 16` share byte `j` of `qs` (low
//! nibble, high nibble); the fifth bit of value `j` is bit `j` of the little-endian `qh`.
//! Decoding evaluates each value with the same f32 operations, in the same order, as ggml, so
//! the results are bit-identical to llama.cpp's and gguf-py's.

use super::{GgmlBlock, Grid};
use crate::DType;
use half::f16;

ggml_blocks! {
    /// Q4_0: `y = (q - 8) · d`, q ∈ 0..16. 4.5 bits per value.
    BlockQ4_0: Q4_0 { d: f16, qs: [u8; 16] }
    /// Q4_1: `y = d · q + m`, q ∈ 0..16. 5 bits per value.
    BlockQ4_1: Q4_1 { d: f16, m: f16, qs: [u8; 16] }
    /// Q5_0: `y = (q - 16) · d`, q ∈ 0..32. 5.5 bits per value.
    BlockQ5_0: Q5_0 { d: f16, qh: [u8; 4], qs: [u8; 16] }
    /// Q5_1: `y = d · q + m`, q ∈ 0..32. 6 bits per value.
    BlockQ5_1: Q5_1 { d: f16, m: f16, qh: [u8; 4], qs: [u8; 16] }
    /// Q8_0: `y = q · d`, q an i8. 8.5 bits per value.
    BlockQ8_0: Q8_0 { d: f16, qs: [i8; 32] }
}

/// The 4-bit codes of 32 values: value j in the low nibble of byte j, value j+16 in the high.
fn nibbles(qs: &[u8; 16]) -> impl Iterator<Item = (usize, u8)> + '_ {
    qs.iter()
        .enumerate()
        .flat_map(|(j, &b)| [(j, b & 0xF), (j + 16, b >> 4)])
}

fn pack_nibbles(codes: &[u8]) -> [u8; 16] {
    std::array::from_fn(|j| (codes[j] & 0xF) | (codes[j + 16] << 4))
}

/// The fifth bits of 32 codes, bit j of a little-endian u32 for code j.
fn pack_high_bits(codes: &[u8]) -> [u8; 4] {
    let bits = codes
        .iter()
        .enumerate()
        .fold(0u32, |acc, (j, &c)| acc | (((c >> 4) as u32 & 1) << j));
    bits.to_le_bytes()
}

impl GgmlBlock for BlockQ4_0 {
    const DTYPE: DType = DType::Q4_0;
    fn decode(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (j, q) in nibbles(&self.qs) {
            y[j] = (q as i32 - 8) as f32 * d;
        }
    }
}

impl BlockQ4_0 {
    /// The block of `grid` (its `d`) and 32 codes in 0..16.
    pub fn pack(grid: &Grid, codes: &[u8]) -> Self {
        Self {
            d: grid.d,
            qs: pack_nibbles(codes),
        }
    }
}

impl GgmlBlock for BlockQ4_1 {
    const DTYPE: DType = DType::Q4_1;
    fn decode(&self, y: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for (j, q) in nibbles(&self.qs) {
            y[j] = d * q as f32 + m;
        }
    }
}

impl BlockQ4_1 {
    /// The block of `grid` (`d`, and `dmin` as the offset `m`) and 32 codes in 0..16.
    pub fn pack(grid: &Grid, codes: &[u8]) -> Self {
        Self {
            d: grid.d,
            m: grid.dmin,
            qs: pack_nibbles(codes),
        }
    }
}

impl GgmlBlock for BlockQ5_0 {
    const DTYPE: DType = DType::Q5_0;
    fn decode(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let qh = u32::from_le_bytes(self.qh);
        for (j, q) in nibbles(&self.qs) {
            let q = q as u32 | (((qh >> j) & 1) << 4);
            y[j] = (q as i32 - 16) as f32 * d;
        }
    }
}

impl BlockQ5_0 {
    /// The block of `grid` (its `d`) and 32 codes in 0..32.
    pub fn pack(grid: &Grid, codes: &[u8]) -> Self {
        Self {
            d: grid.d,
            qh: pack_high_bits(codes),
            qs: pack_nibbles(codes),
        }
    }
}

impl GgmlBlock for BlockQ5_1 {
    const DTYPE: DType = DType::Q5_1;
    fn decode(&self, y: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        let qh = u32::from_le_bytes(self.qh);
        for (j, q) in nibbles(&self.qs) {
            let q = q as u32 | (((qh >> j) & 1) << 4);
            y[j] = d * q as f32 + m;
        }
    }
}

impl BlockQ5_1 {
    /// The block of `grid` (`d`, and `dmin` as the offset `m`) and 32 codes in 0..32.
    pub fn pack(grid: &Grid, codes: &[u8]) -> Self {
        Self {
            d: grid.d,
            m: grid.dmin,
            qh: pack_high_bits(codes),
            qs: pack_nibbles(codes),
        }
    }
}

impl GgmlBlock for BlockQ8_0 {
    const DTYPE: DType = DType::Q8_0;
    fn decode(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (y, &q) in y.iter_mut().zip(&self.qs) {
            *y = q as f32 * d;
        }
    }
}

impl BlockQ8_0 {
    /// The block of `grid` (its `d`) and 32 codes in 0..256, code `c` standing for the i8
    /// value `c - 128` (codes index the levels in ascending order, as for every type).
    pub fn pack(grid: &Grid, codes: &[u8]) -> Self {
        Self {
            d: grid.d,
            qs: std::array::from_fn(|j| (codes[j] as i32 - 128) as i8),
        }
    }
}
