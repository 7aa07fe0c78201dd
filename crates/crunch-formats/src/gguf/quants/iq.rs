//! The "IQ" types: IQ4_NL and IQ4_XS (a non-uniform 16-level grid; crunch encodes and decodes
//! them), and the lattice-codebook types IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S
//! (decoded only, so crunch can evaluate every file llama.cpp makes).
//!
//! The codebook types store, per group of 8 (or 4) values, an index into a fixed grid of
//! magnitude patterns ([`super::iq_grids`], format data) plus sign bits; a 4-bit (or 3-bit)
//! scale per 32 values (or 16) multiplies an f16 super-block scale. Decoding follows ggml's f32
//! operation order, so results are bit-identical to llama.cpp's and gguf-py's.

use super::iq_grids::{IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID};
use super::{GgmlBlock, Grid};
use crate::DType;
use half::f16;

/// The 16 levels of IQ4_NL and IQ4_XS, ascending (ggml's `kvalues_iq4nl`).
pub const IQ4_LEVELS: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

ggml_blocks! {
    /// IQ4_NL: `y = d · IQ4_LEVELS[q]`, 32 values. 4.5 bits per value.
    BlockIQ4NL: IQ4NL {
        d: f16,
        /// Value j in the low nibble of byte j, value j+16 in the high nibble.
        qs: [u8; 16],
    }
    /// IQ4_XS: 8 sub-blocks of 32 with signed 6-bit scales: `y = (d·(ls − 32))·IQ4_LEVELS[q]`.
    /// 4.25 bits per value.
    BlockIQ4XS: IQ4XS {
        d: f16,
        /// Bits 2j..2j+2: the high two bits of sub-block j's biased scale `ls`.
        scales_h: u16,
        /// Nibble j % 2 of byte j / 2: the low four bits of sub-block j's `ls`.
        scales_l: [u8; 4],
        /// Sub-block j: 16 bytes, value j·32 + i in the low nibble of byte i, + 16 in the high.
        qs: [u8; 128],
    }
}

impl GgmlBlock for BlockIQ4NL {
    const DTYPE: DType = DType::IQ4NL;
    fn decode(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for j in 0..16 {
            y[j] = d * IQ4_LEVELS[(self.qs[j] & 0xF) as usize] as f32;
            y[j + 16] = d * IQ4_LEVELS[(self.qs[j] >> 4) as usize] as f32;
        }
    }
}

impl BlockIQ4NL {
    /// The block of `grid` (its `d`) and 32 level indices in 0..16.
    pub fn pack(grid: &Grid, codes: &[u8]) -> Self {
        Self {
            d: grid.d,
            qs: std::array::from_fn(|j| (codes[j] & 0xF) | (codes[j + 16] << 4)),
        }
    }
}

impl BlockIQ4XS {
    /// The signed scale of sub-block `j` (-32..32).
    pub fn scale(&self, j: usize) -> i32 {
        let low = (self.scales_l[j / 2] >> (4 * (j % 2))) & 0xF;
        let high = (self.scales_h >> (2 * j)) & 3;
        (low as i32 | ((high as i32) << 4)) - 32
    }

    /// `grid.scales` in -32..32 per sub-block, 256 level indices in 0..16.
    pub fn pack(grid: &Grid, codes: &[u8]) -> Self {
        let (mut scales_h, mut scales_l) = (0u16, [0u8; 4]);
        for j in 0..8 {
            let ls = (grid.scales[j] as i32 + 32) as u16 & 63;
            scales_l[j / 2] |= ((ls & 0xF) as u8) << (4 * (j % 2));
            scales_h |= (ls >> 4) << (2 * j);
        }
        Self {
            d: grid.d,
            scales_h,
            scales_l,
            qs: std::array::from_fn(|i| {
                let (j, b) = (i / 16, i % 16);
                (codes[32 * j + b] & 0xF) | (codes[32 * j + 16 + b] << 4)
            }),
        }
    }
}

impl GgmlBlock for BlockIQ4XS {
    const DTYPE: DType = DType::IQ4XS;
    fn decode(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for j in 0..8 {
            let dl = d * self.scale(j) as f32;
            let (qs, y) = (&self.qs[16 * j..16 * j + 16], &mut y[32 * j..32 * j + 32]);
            for i in 0..16 {
                y[i] = dl * IQ4_LEVELS[(qs[i] & 0xF) as usize] as f32;
                y[i + 16] = dl * IQ4_LEVELS[(qs[i] >> 4) as usize] as f32;
            }
        }
    }
}

// --- Codebook types (decode only).

/// The eight sign bits of a group from a 7-bit index: the eighth bit makes the number of
/// negative signs even (ggml's `ksigns_iq2xs`, computed rather than transcribed).
const fn ksigns(i: u32) -> u8 {
    (i | ((i.count_ones() & 1) << 7)) as u8
}

/// `db · grid[j] · (±1)` for the 8 values of one group: ggml's order (`db * grid[j] * sign`).
fn put_signed(y: &mut [f32], db: f32, grid: [u8; 8], signs: u8) {
    for j in 0..8 {
        let sign = if signs >> j & 1 == 1 { -1.0 } else { 1.0 };
        y[j] = db * grid[j] as f32 * sign;
    }
}

/// The scales of the two 16-value halves of group `ib` in IQ2_XS/IQ2_S, from the byte holding
/// their 4-bit scales (low nibble first): ggml's `d · (0.5 + s) · 0.25`.
fn iq2_scales(d: f32, sc: u8) -> [f32; 2] {
    [sc & 0xF, sc >> 4].map(|s| d * (0.5 + s as f32) * 0.25)
}

/// The 8 magnitudes of an IQ3 group from its two 4-magnitude grid rows.
fn iq3_pair(g1: u32, g2: u32) -> [u8; 8] {
    (u64::from(g2) << 32 | u64::from(g1)).to_le_bytes()
}

ggml_blocks! {
    /// IQ2_XXS: per 32 values two u32s: four 8-bit grid indices, then four 7-bit sign indices and
    /// a 4-bit scale. 2.0625 bits per value.
    BlockIQ2XXS: IQ2XXS { d: f16, qs: [u16; 32] }
}

impl GgmlBlock for BlockIQ2XXS {
    const DTYPE: DType = DType::IQ2XXS;
    fn decode(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for ib in 0..8 {
            let q = |k: usize| u16::from_le(self.qs[4 * ib + k]) as u32;
            let (idx, aux) = (q(0) | q(1) << 16, q(2) | q(3) << 16);
            let db = d * (0.5 + (aux >> 28) as f32) * 0.25;
            for l in 0..4 {
                let grid = IQ2XXS_GRID[(idx >> (8 * l) & 0xFF) as usize].to_le_bytes();
                let signs = ksigns((aux >> (7 * l)) & 127);
                put_signed(&mut y[32 * ib + 8 * l..], db, grid, signs);
            }
        }
    }
}

ggml_blocks! {
    /// IQ2_XS: per 8 values a u16 (9-bit grid index, 7-bit sign index); a 4-bit scale per 16
    /// values. 2.3125 bits per value.
    BlockIQ2XS: IQ2XS { d: f16, qs: [u16; 32], scales: [u8; 8] }
}

impl GgmlBlock for BlockIQ2XS {
    const DTYPE: DType = DType::IQ2XS;
    fn decode(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for ib in 0..8 {
            let db = iq2_scales(d, self.scales[ib]);
            for l in 0..4 {
                let q = u16::from_le(self.qs[4 * ib + l]) as u32;
                let grid = IQ2XS_GRID[(q & 511) as usize].to_le_bytes();
                put_signed(&mut y[32 * ib + 8 * l..], db[l / 2], grid, ksigns(q >> 9));
            }
        }
    }
}

ggml_blocks! {
    /// IQ2_S: per 8 values a 10-bit grid index (8 bits in `qs[0..32]`, 2 in `qh`) and 8 explicit
    /// sign bits (`qs[32..64]`); a 4-bit scale per 16 values. 2.5625 bits per value.
    BlockIQ2S: IQ2S { d: f16, qs: [u8; 64], qh: [u8; 8], scales: [u8; 8] }
}

impl GgmlBlock for BlockIQ2S {
    const DTYPE: DType = DType::IQ2S;
    fn decode(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let (qs, signs) = self.qs.split_at(32);
        for ib in 0..8 {
            let db = iq2_scales(d, self.scales[ib]);
            for l in 0..4 {
                let idx = qs[4 * ib + l] as usize | ((self.qh[ib] as usize >> (2 * l)) & 3) << 8;
                let grid = IQ2S_GRID[idx].to_le_bytes();
                put_signed(
                    &mut y[32 * ib + 8 * l..],
                    db[l / 2],
                    grid,
                    signs[4 * ib + l],
                );
            }
        }
    }
}

ggml_blocks! {
    /// IQ3_XXS: per 4 values an 8-bit index into a grid of 4 magnitudes (`qs[0..64]`); per 32
    /// values a u32 of four 7-bit sign indices and a 4-bit scale (`qs[64..96]`). 3.0625 bits per
    /// value.
    BlockIQ3XXS: IQ3XXS { d: f16, qs: [u8; 96] }
}

impl GgmlBlock for BlockIQ3XXS {
    const DTYPE: DType = DType::IQ3XXS;
    fn decode(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let (qs, scales_and_signs) = self.qs.split_at(64);
        for ib in 0..8 {
            let aux = u32::from_le_bytes(scales_and_signs[4 * ib..4 * ib + 4].try_into().unwrap());
            let db = d * (0.5 + (aux >> 28) as f32) * 0.5;
            for l in 0..4 {
                let row = |k: usize| IQ3XXS_GRID[qs[8 * ib + 2 * l + k] as usize];
                let grid = iq3_pair(row(0), row(1));
                let signs = ksigns((aux >> (7 * l)) & 127);
                put_signed(&mut y[32 * ib + 8 * l..], db, grid, signs);
            }
        }
    }
}

ggml_blocks! {
    /// IQ3_S: per 4 values a 9-bit index (8 bits in `qs`, 1 in `qh`) into a grid of 4 odd
    /// magnitudes; explicit sign bits; a 4-bit scale per 32 values: `d · (1 + 2·s)`. 3.4375 bits per
    /// value.
    BlockIQ3S: IQ3S { d: f16, qs: [u8; 64], qh: [u8; 8], signs: [u8; 32], scales: [u8; 4] }
}

impl GgmlBlock for BlockIQ3S {
    const DTYPE: DType = DType::IQ3S;
    fn decode(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for ib in 0..8 {
            let s = (self.scales[ib / 2] >> (4 * (ib % 2))) & 0xF;
            let db = d * (1 + 2 * s as i32) as f32;
            let qh = self.qh[ib] as usize;
            for l in 0..4 {
                let i1 = self.qs[8 * ib + 2 * l] as usize | ((qh >> (2 * l)) & 1) << 8;
                let i2 = self.qs[8 * ib + 2 * l + 1] as usize | ((qh >> (2 * l + 1)) & 1) << 8;
                let grid = iq3_pair(IQ3S_GRID[i1], IQ3S_GRID[i2]);
                put_signed(&mut y[32 * ib + 8 * l..], db, grid, self.signs[4 * ib + l]);
            }
        }
    }
}

/// The offset IQ1_S/IQ1_M add to every grid value (ggml's `IQ1S_DELTA`).
const IQ1_DELTA: f32 = 0.125;

/// `dl · (grid[j] + delta)` for one group of 8: ggml's order.
fn put_iq1(y: &mut [f32], dl: f32, idx: usize, delta: f32) {
    let grid = IQ1S_GRID[idx].to_le_bytes();
    for j in 0..8 {
        y[j] = dl * (grid[j] as i8 as f32 + delta);
    }
}

ggml_blocks! {
    /// IQ1_S: per 8 values an 11-bit index into a grid of {-1, 0, 1} patterns; per 32 values a
    /// u16 holding the three high index bits of its four groups, a 3-bit scale and the sign of a
    /// ±1/8 offset. 1.5625 bits per value.
    BlockIQ1S: IQ1S { d: f16, qs: [u8; 32], qh: [u16; 8] }
}

impl GgmlBlock for BlockIQ1S {
    const DTYPE: DType = DType::IQ1S;
    fn decode(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for ib in 0..8 {
            let qh = u16::from_le(self.qh[ib]) as usize;
            let dl = d * (2 * ((qh >> 12) & 7) + 1) as f32;
            let delta = if qh & 0x8000 != 0 {
                -IQ1_DELTA
            } else {
                IQ1_DELTA
            };
            for l in 0..4 {
                let idx = self.qs[4 * ib + l] as usize | ((qh >> (3 * l)) & 7) << 8;
                put_iq1(&mut y[32 * ib + 8 * l..], dl, idx, delta);
            }
        }
    }
}

ggml_blocks! {
    /// IQ1_M: IQ1_S's grid with a 3-bit scale per 16 values and an offset sign per 8; the f16
    /// super-block scale is spread over the top nibbles of the four u16 scale words. 1.75 bits
    /// per value.
    BlockIQ1M: IQ1M { qs: [u8; 32], qh: [u8; 16], scales: [u8; 8] }
}

impl BlockIQ1M {
    /// The four little-endian u16 scale words.
    fn scale_words(&self) -> [u16; 4] {
        std::array::from_fn(|i| u16::from_le_bytes([self.scales[2 * i], self.scales[2 * i + 1]]))
    }

    /// The super-block scale, assembled from the top nibble of each scale word.
    pub fn d(&self) -> f16 {
        let sc = self.scale_words();
        f16::from_bits(
            (sc[0] >> 12) | ((sc[1] >> 8) & 0x00F0) | ((sc[2] >> 4) & 0x0F00) | (sc[3] & 0xF000),
        )
    }
}

impl GgmlBlock for BlockIQ1M {
    const DTYPE: DType = DType::IQ1M;
    fn decode(&self, y: &mut [f32]) {
        let sc = self.scale_words();
        let d = self.d().to_f32();
        for ib in 0..8 {
            let word = sc[ib / 2] as usize;
            let dl1 = d * (2 * ((word >> (6 * (ib % 2))) & 7) + 1) as f32;
            let dl2 = d * (2 * ((word >> (6 * (ib % 2) + 3)) & 7) + 1) as f32;
            let (qs, qh) = (&self.qs[4 * ib..], &self.qh[2 * ib..]);
            for l in 0..4 {
                let h = (qh[l / 2] >> (4 * (l % 2))) as usize;
                let idx = qs[l] as usize | (h & 7) << 8;
                let delta = if h & 8 != 0 { -IQ1_DELTA } else { IQ1_DELTA };
                let dl = if l < 2 { dl1 } else { dl2 };
                put_iq1(&mut y[32 * ib + 8 * l..], dl, idx, delta);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ksigns_match_ggml_table_prefix() {
        // The first row of ggml's ksigns_iq2xs.
        let want = [
            0x00, 0x81, 0x82, 0x03, 0x84, 0x05, 0x06, 0x87, 0x88, 0x09, 0x0a, 0x8b, 0x0c, 0x8d,
            0x8e, 0x0f,
        ];
        for (i, &w) in want.iter().enumerate() {
            assert_eq!(ksigns(i as u32), w);
        }
        assert_eq!(ksigns(127), 0xff);
    }

    #[test]
    fn iq4_xs_scales_round_trip() {
        let mut g = Grid::default();
        for j in 0..8 {
            g.scales[j] = 9 * j as i8 - 32;
        }
        let b = BlockIQ4XS::pack(&g, &[0; 256]);
        for j in 0..8 {
            assert_eq!(b.scale(j), g.scales[j] as i32);
        }
    }
}
