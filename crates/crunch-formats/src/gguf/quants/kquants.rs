//! The 256-value "K" super-block types: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (and Q8_K, which ggml
//! uses only for activations).
//!
//! A super-block holds f16 scales `d` (and `dmin`) and small integer scales (and mins) for each
//! sub-block of 16 or 32 values, so every sub-block's real scale is `d · sc` and its offset
//! `-dmin · m`. Codes are stored in bit planes; the layouts below are ggml's. Decoding uses
//! ggml's f32 operation order (`(d · sc) · q - (dmin · m)`), so results are bit-identical to
//! llama.cpp's and gguf-py's.
//!
//! Positions: value `e` of a super-block is in sub-block `e / 16` (Q2_K, Q3_K, Q6_K) or
//! `e / 32` (Q4_K, Q5_K); in the 2-bit planes of Q2_K/Q3_K, value `128·h + 32·k + l` is bits
//! `2k..2k+2` of `qs[32·h + l]`.

use super::{GgmlBlock, Grid};
use crate::DType;
use half::f16;

ggml_blocks! {
    /// Q2_K: 16 sub-blocks of 16, 4-bit scale and min each: `y = (d·sc)·q − dmin·m`, q ∈ 0..4.
    /// 2.625 bits per value.
    BlockQ2K: Q2K {
        /// Low nibble: scale, high nibble: min, per sub-block.
        scales: [u8; 16],
        qs: [u8; 64],
        d: f16,
        dmin: f16,
    }
    /// Q3_K: 16 sub-blocks of 16, signed 6-bit scales: `y = (d·sc)·(q − 4)`, q ∈ 0..8 (low two
    /// bits in `qs`, the third in `hmask`). 3.4375 bits per value.
    BlockQ3K: Q3K {
        hmask: [u8; 32],
        qs: [u8; 64],
        /// Sixteen 6-bit scales biased by 32 (see [`q3_k_scales`]).
        scales: [u8; 12],
        d: f16,
    }
    /// Q4_K: 8 sub-blocks of 32, 6-bit scale and min each: `y = (d·sc)·q − dmin·m`, q ∈ 0..16.
    /// 4.5 bits per value.
    BlockQ4K: Q4K {
        d: f16,
        dmin: f16,
        /// Eight 6-bit (scale, min) pairs (see [`k4_scale_min`]).
        scales: [u8; 12],
        /// 32-byte groups hold two sub-blocks: values `64g + l` (low nibble), `64g + 32 + l` (high).
        qs: [u8; 128],
    }
    /// Q5_K: Q4_K plus a fifth bit per value (bit `2g` / `2g+1` of `qh[l]` for values `64g + l` /
    /// `64g + 32 + l`), q ∈ 0..32. 5.5 bits per value.
    BlockQ5K: Q5K { d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128] }
    /// Q6_K: 16 sub-blocks of 16, i8 scales: `y = (d·sc)·(q − 32)`, q ∈ 0..64 (low four bits in
    /// `ql`, high two in `qh`). 6.5625 bits per value.
    BlockQ6K: Q6K { ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16 }
    /// Q8_K: `y = d · q` with an f32 `d` (ggml's activation format; `bsums` serve its dot products).
    BlockQ8K: Q8K { d: f32, qs: [i8; 256], bsums: [i16; 16] }
}

/// Where value `e` (of 256) sits in the 2-bit planes of Q2_K/Q3_K: (byte of `qs`, shift).
fn plane2(e: usize) -> (usize, usize) {
    let (h, r) = (e / 128, e % 128);
    (32 * h + r % 32, 2 * (r / 32))
}

impl GgmlBlock for BlockQ2K {
    const DTYPE: DType = DType::Q2K;
    fn decode(&self, y: &mut [f32]) {
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        for (e, y) in y[..256].iter_mut().enumerate() {
            let sc = self.scales[e / 16];
            let dl = d * (sc & 0xF) as f32;
            let ml = dmin * (sc >> 4) as f32;
            let (byte, shift) = plane2(e);
            *y = dl * ((self.qs[byte] >> shift) & 3) as f32 - ml;
        }
    }
}

impl BlockQ2K {
    /// `grid.scales`/`grid.mins` in 0..16 per sub-block, 256 codes in 0..4.
    pub fn pack(grid: &Grid, codes: &[u8]) -> Self {
        let mut qs = [0u8; 64];
        for (e, &c) in codes.iter().enumerate() {
            let (byte, shift) = plane2(e);
            qs[byte] |= (c & 3) << shift;
        }
        Self {
            scales: std::array::from_fn(|s| (grid.scales[s] as u8 & 0xF) | (grid.mins[s] << 4)),
            qs,
            d: grid.d,
            dmin: grid.dmin,
        }
    }
}

/// The sixteen signed 6-bit scales of a Q3_K block, packed as 4 low bits in bytes 0..8
/// (low nibbles first, then high nibbles) and 2 high bits in bytes 8..12, biased by 32.
pub fn q3_k_scales(s: &[u8; 12]) -> [i8; 16] {
    std::array::from_fn(|k| {
        let low = if k < 8 { s[k] & 0xF } else { s[k - 8] >> 4 };
        let high = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
        (low | (high << 4)) as i8 - 32
    })
}

fn pack_q3_k_scales(scales: &[i8; 16]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for (k, &sc) in scales.iter().enumerate() {
        let u = (sc as i32 + 32) as u8 & 63;
        if k < 8 {
            s[k] |= u & 0xF;
        } else {
            s[k - 8] |= (u & 0xF) << 4;
        }
        s[8 + k % 4] |= (u >> 4) << (2 * (k / 4));
    }
    s
}

impl GgmlBlock for BlockQ3K {
    const DTYPE: DType = DType::Q3K;
    fn decode(&self, y: &mut [f32]) {
        let scales = q3_k_scales(&self.scales);
        let d = self.d.to_f32();
        for (e, y) in y[..256].iter_mut().enumerate() {
            let dl = d * scales[e / 16] as f32;
            let (byte, shift) = plane2(e);
            let q = ((self.qs[byte] >> shift) & 3) as i32;
            // The third bit lives in hmask: bit plane e / 32, byte e % 32. Clear means -4.
            let h = if self.hmask[e % 32] >> (e / 32) & 1 == 1 {
                0
            } else {
                4
            };
            *y = dl * (q - h) as f32;
        }
    }
}

impl BlockQ3K {
    /// `grid.scales` in -32..32 per sub-block, 256 codes in 0..8 (standing for -4..4).
    pub fn pack(grid: &Grid, codes: &[u8]) -> Self {
        let (mut qs, mut hmask) = ([0u8; 64], [0u8; 32]);
        for (e, &c) in codes.iter().enumerate() {
            let (byte, shift) = plane2(e);
            qs[byte] |= (c & 3) << shift;
            hmask[e % 32] |= ((c >> 2) & 1) << (e / 32);
        }
        Self {
            hmask,
            qs,
            scales: pack_q3_k_scales(&std::array::from_fn(|k| grid.scales[k])),
            d: grid.d,
        }
    }
}

/// Scale and min of sub-block `j` of a Q4_K/Q5_K block: eight 6-bit pairs in 12 bytes.
pub fn k4_scale_min(j: usize, s: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

fn pack_k4_scales(grid: &Grid) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        let (sc, m) = (grid.scales[j] as u8 & 63, grid.mins[j] & 63);
        if j < 4 {
            s[j] |= sc;
            s[j + 4] |= m;
        } else {
            s[j + 4] = (sc & 0xF) | ((m & 0xF) << 4);
            s[j - 4] |= (sc >> 4) << 6;
            s[j] |= (m >> 4) << 6;
        }
    }
    s
}

impl GgmlBlock for BlockQ4K {
    const DTYPE: DType = DType::Q4K;
    fn decode(&self, y: &mut [f32]) {
        decode_k4(y, self.d, self.dmin, &self.scales, &self.qs, |_, _| (0, 0));
    }
}

/// Decodes a Q4_K/Q5_K block; `fifth(g, l)` gives the fifth bits (0 or 16) of values `64g + l`
/// and `64g + 32 + l` (none for Q4_K).
fn decode_k4(
    y: &mut [f32],
    d: f16,
    dmin: f16,
    scales: &[u8; 12],
    qs: &[u8; 128],
    fifth: impl Fn(usize, usize) -> (u8, u8),
) {
    let (d, dmin) = (d.to_f32(), dmin.to_f32());
    for g in 0..4 {
        let (sc0, m0) = k4_scale_min(2 * g, scales);
        let (sc1, m1) = k4_scale_min(2 * g + 1, scales);
        let (d0, min0) = (d * sc0 as f32, dmin * m0 as f32);
        let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
        let q = &qs[32 * g..32 * g + 32];
        for l in 0..32 {
            let (h0, h1) = fifth(g, l);
            y[64 * g + l] = d0 * ((q[l] & 0xF) | h0) as f32 - min0;
            y[64 * g + 32 + l] = d1 * ((q[l] >> 4) | h1) as f32 - min1;
        }
    }
}

/// Low nibbles of the 256 codes in Q4_K/Q5_K order.
fn pack_k4_nibbles(codes: &[u8]) -> [u8; 128] {
    std::array::from_fn(|i| {
        let (g, l) = (i / 32, i % 32);
        (codes[64 * g + l] & 0xF) | ((codes[64 * g + 32 + l] & 0xF) << 4)
    })
}

impl BlockQ4K {
    /// `grid.scales`/`grid.mins` in 0..64 per sub-block, 256 codes in 0..16.
    pub fn pack(grid: &Grid, codes: &[u8]) -> Self {
        Self {
            d: grid.d,
            dmin: grid.dmin,
            scales: pack_k4_scales(grid),
            qs: pack_k4_nibbles(codes),
        }
    }
}

impl GgmlBlock for BlockQ5K {
    const DTYPE: DType = DType::Q5K;
    fn decode(&self, y: &mut [f32]) {
        let bit = |g: usize, l: usize, k: usize| ((self.qh[l] >> (2 * g + k)) & 1) << 4;
        decode_k4(y, self.d, self.dmin, &self.scales, &self.qs, |g, l| {
            (bit(g, l, 0), bit(g, l, 1))
        });
    }
}

impl BlockQ5K {
    /// `grid.scales`/`grid.mins` in 0..64 per sub-block, 256 codes in 0..32.
    pub fn pack(grid: &Grid, codes: &[u8]) -> Self {
        let mut qh = [0u8; 32];
        for (e, &c) in codes.iter().enumerate() {
            let (g, half, l) = (e / 64, (e % 64) / 32, e % 32);
            qh[l] |= ((c >> 4) & 1) << (2 * g + half);
        }
        Self {
            d: grid.d,
            dmin: grid.dmin,
            scales: pack_k4_scales(grid),
            qh,
            qs: pack_k4_nibbles(codes),
        }
    }
}

/// Where value `e` of a Q6_K block keeps its bits: (index into `ql`, nibble shift, index into
/// `qh`, 2-bit shift).
fn q6_place(e: usize) -> (usize, usize, usize, usize) {
    let (h, r) = (e / 128, e % 128);
    let (k, l) = (r / 32, r % 32);
    (64 * h + l + 32 * (k % 2), 4 * (k / 2), 32 * h + l, 2 * k)
}

impl GgmlBlock for BlockQ6K {
    const DTYPE: DType = DType::Q6K;
    fn decode(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (e, y) in y.iter_mut().enumerate().take(256) {
            let (li, ls, hi, hs) = q6_place(e);
            let q = ((self.ql[li] >> ls) & 0xF) | (((self.qh[hi] >> hs) & 3) << 4);
            let dl = d * self.scales[e / 16] as f32;
            *y = dl * (q as i32 - 32) as f32;
        }
    }
}

impl BlockQ6K {
    /// `grid.scales` (i8) per sub-block, 256 codes in 0..64 (standing for -32..32).
    pub fn pack(grid: &Grid, codes: &[u8]) -> Self {
        let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
        for (e, &c) in codes.iter().enumerate() {
            let (li, ls, hi, hs) = q6_place(e);
            ql[li] |= (c & 0xF) << ls;
            qh[hi] |= ((c >> 4) & 3) << hs;
        }
        Self {
            ql,
            qh,
            scales: std::array::from_fn(|k| grid.scales[k]),
            d: grid.d,
        }
    }
}

impl GgmlBlock for BlockQ8K {
    const DTYPE: DType = DType::Q8K;
    fn decode(&self, y: &mut [f32]) {
        for (y, &q) in y.iter_mut().zip(&self.qs) {
            *y = self.d * q as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q3_k_scales_round_trip() {
        let want: [i8; 16] = std::array::from_fn(|k| k as i8 - 32 + 2 * (k as i8 % 3) + 3);
        assert_eq!(q3_k_scales(&pack_q3_k_scales(&want)), want);
    }

    #[test]
    fn k4_scales_round_trip() {
        let mut g = Grid::default();
        for j in 0..8 {
            g.scales[j] = (7 * j as i8 + 5) % 64;
            g.mins[j] = (63 - 9 * j as u8) % 64;
        }
        let packed = pack_k4_scales(&g);
        for j in 0..8 {
            assert_eq!(
                k4_scale_min(j, &packed),
                (g.scales[j] as u8, g.mins[j]),
                "{j}"
            );
        }
    }

    #[test]
    fn q6_places_cover_every_bit_once() {
        let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
        for e in 0..256 {
            let (li, ls, hi, hs) = q6_place(e);
            assert_eq!(ql[li] & (0xF << ls), 0);
            assert_eq!(qh[hi] & (3 << hs), 0);
            ql[li] |= 0xF << ls;
            qh[hi] |= 3 << hs;
        }
        assert!(ql.iter().chain(&qh).all(|&b| b == 0xFF));
    }
}
