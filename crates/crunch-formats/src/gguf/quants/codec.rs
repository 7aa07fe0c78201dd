//! Encoding: [`Codec`], one per encodable ggml type, in two steps (fit a block's grid, then
//! quantize values under it) so that error-feedback quantizers can use the grids too.

use super::fit::{Levels, Offset, Params, Shape};
use super::iq::IQ4_LEVELS;
use super::legacy::*;
use super::{kquants::*, BlockIQ4NL, BlockIQ4XS};
use crate::DType;
use half::f16;
use rayon::prelude::*;

/// The types crunch can encode.
pub const ENCODABLE: [DType; 12] = [
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q8_0,
    DType::Q2K,
    DType::Q3K,
    DType::Q4K,
    DType::Q5K,
    DType::Q6K,
    DType::IQ4NL,
    DType::IQ4XS,
];

/// The grid of one block: every stored parameter except the codes.
///
/// Per type: `d` is the block scale (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) or the
/// super-block scale (K types, IQ4_XS). `dmin` is the added offset `m` of Q4_1/Q5_1, the
/// super-block min scale of Q2_K/Q4_K/Q5_K, else 0. `scales[j]`/`mins[j]` are sub-block `j`'s
/// integer scale and min as stored (Q2_K: 0..16 each; Q3_K, IQ4_XS: −32..32; Q4_K, Q5_K:
/// 0..64 each; Q6_K: i8), unused (`scales[0] = 1`) for the one-level types.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Grid {
    pub d: f16,
    pub dmin: f16,
    pub scales: [i8; 16],
    pub mins: [u8; 16],
}

impl Grid {
    fn params(&self) -> Params {
        Params {
            d: self.d,
            dmin: self.dmin,
            scales: self.scales.map(i32::from),
            mins: self.mins.map(i32::from),
        }
    }

    fn from_params(p: &Params) -> Self {
        Self {
            d: p.d,
            dmin: p.dmin,
            scales: p.scales.map(|v| v as i8),
            mins: p.mins.map(|v| v as u8),
        }
    }
}

static IQ4_LEVELS_F32: [f32; 16] = {
    let mut t = [0f32; 16];
    let mut i = 0;
    while i < 16 {
        t[i] = IQ4_LEVELS[i] as f32;
        i += 1;
    }
    t
};

/// Encoder of one ggml type.
///
/// Codes are level indices in ascending order of the value they stand for: for every type but
/// Q8_0 that is exactly the unsigned code ggml stores (Q4_0 code 0 is −8·d); Q8_0's code `c`
/// stands for the i8 `c − 128`.
///
/// ```
/// use crunch_formats::gguf::quants::Codec;
/// use crunch_formats::DType;
/// let codec = Codec::new(DType::Q4K).unwrap();
/// let x: Vec<f32> = (0..256).map(|i| (i as f32 * 0.37).sin()).collect();
/// let grid = codec.fit(&x, None);                     // 1. the block's grid
/// let codes: Vec<u8> = x.iter().enumerate()
///     .map(|(i, &v)| codec.quantize(&grid, i, v))      // 2. value by value (GPTQ would
///     .collect();                                      //    update the rest in between)
/// let mut block = vec![0u8; codec.block_bytes()];
/// codec.pack(&grid, &codes, &mut block);               // 3. the stored bytes
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Codec {
    dtype: DType,
    shape: Shape,
}

impl Codec {
    /// The encoder of `dtype`, or `None` if crunch does not encode it (see [`ENCODABLE`]).
    pub fn new(dtype: DType) -> Option<Self> {
        use DType::*;
        let int = |lo, hi| Levels::Int { lo, hi };
        let one = |n, levels, offset| Shape {
            n,
            sub: n,
            levels,
            offset,
            two_level: None,
        };
        let two = |sub, levels, offset, scales, max_min| Shape {
            n: 256,
            sub,
            levels,
            offset,
            two_level: Some((scales, max_min)),
        };
        let shape = match dtype {
            Q4_0 => one(32, int(-8, 7), Offset::None),
            Q4_1 => one(32, int(0, 15), Offset::Free),
            Q5_0 => one(32, int(-16, 15), Offset::None),
            Q5_1 => one(32, int(0, 31), Offset::Free),
            Q8_0 => one(32, int(-128, 127), Offset::None),
            IQ4NL => one(32, Levels::Table(&IQ4_LEVELS_F32), Offset::None),
            Q2K => two(16, int(0, 3), Offset::NonPositive, int(0, 15), 15),
            Q3K => two(16, int(-4, 3), Offset::None, int(-32, 31), 0),
            Q4K => two(32, int(0, 15), Offset::NonPositive, int(0, 63), 63),
            Q5K => two(32, int(0, 31), Offset::NonPositive, int(0, 63), 63),
            Q6K => two(16, int(-32, 31), Offset::None, int(-128, 127), 0),
            IQ4XS => two(
                32,
                Levels::Table(&IQ4_LEVELS_F32),
                Offset::None,
                int(-32, 31),
                0,
            ),
            _ => return None,
        };
        Some(Self { dtype, shape })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Values per block (32 or 256).
    pub fn block_values(&self) -> usize {
        self.shape.n
    }

    /// Bytes per block.
    pub fn block_bytes(&self) -> usize {
        self.dtype.block().1
    }

    /// Values per sub-block (the block itself for the one-level types): positions `i` and
    /// `i'` share a scale (and offset) exactly when `i / sub_block() == i' / sub_block()`.
    pub fn sub_block(&self) -> usize {
        self.shape.sub
    }

    /// Step 1: the grid of one block of `block_values()` values minimising
    /// Σ importance[i]·(x[i] − x̂[i])² (plain squared error with `None`). `importance` holds
    /// one non-negative weight per value, e.g. E[xⱼ²] of the input column value `i` multiplies
    /// (llama.cpp's imatrix), or a Hessian diagonal.
    ///
    /// Panics if `x` (or `importance`) does not hold exactly one block.
    pub fn fit(&self, x: &[f32], importance: Option<&[f32]>) -> Grid {
        assert_eq!(x.len(), self.shape.n, "one block of values");
        let ones;
        let w = match importance {
            Some(w) => {
                assert_eq!(w.len(), x.len(), "one importance weight per value");
                w
            }
            None => {
                ones = vec![1.0; x.len()];
                &ones
            }
        };
        Grid::from_params(&self.shape.fit(x, w))
    }

    /// Step 2: the code of value `x` at position `i` of a block with grid `grid`: the nearest
    /// of the values the block can hold there (judged on the exact decoded values; ties to the
    /// lower code).
    pub fn quantize(&self, grid: &Grid, i: usize, x: f32) -> u8 {
        let (s, o) = self.shape.sub_params(&grid.params(), i / self.shape.sub);
        self.shape.nearest(s, o, x) as u8
    }

    /// Step 2 for a whole block: the codes of `x` (one block) under `grid`.
    pub fn quantize_block(&self, grid: &Grid, x: &[f32]) -> Vec<u8> {
        x.iter()
            .enumerate()
            .map(|(i, &v)| self.quantize(grid, i, v))
            .collect()
    }

    /// The value code `code` stands for at position `i` under `grid`: bit-identical to what
    /// the decoder gives for the packed block.
    pub fn dequantize(&self, grid: &Grid, i: usize, code: u8) -> f32 {
        let (s, o) = self.shape.sub_params(&grid.params(), i / self.shape.sub);
        self.shape.value(s, o, code as usize)
    }

    /// Step 3: the block's bytes from its grid and `block_values()` codes.
    pub fn pack(&self, grid: &Grid, codes: &[u8], out: &mut [u8]) {
        use DType::*;
        assert_eq!(codes.len(), self.shape.n, "one code per value");
        fn put<B: bytemuck::Pod>(b: B, out: &mut [u8]) {
            out.copy_from_slice(bytemuck::bytes_of(&b));
        }
        match self.dtype {
            Q4_0 => put(BlockQ4_0::pack(grid, codes), out),
            Q4_1 => put(BlockQ4_1::pack(grid, codes), out),
            Q5_0 => put(BlockQ5_0::pack(grid, codes), out),
            Q5_1 => put(BlockQ5_1::pack(grid, codes), out),
            Q8_0 => put(BlockQ8_0::pack(grid, codes), out),
            IQ4NL => put(BlockIQ4NL::pack(grid, codes), out),
            Q2K => put(BlockQ2K::pack(grid, codes), out),
            Q3K => put(BlockQ3K::pack(grid, codes), out),
            Q4K => put(BlockQ4K::pack(grid, codes), out),
            Q5K => put(BlockQ5K::pack(grid, codes), out),
            Q6K => put(BlockQ6K::pack(grid, codes), out),
            IQ4XS => put(BlockIQ4XS::pack(grid, codes), out),
            _ => unreachable!("Codec::new accepts only encodable types"),
        }
    }

    /// Steps 1–3 for one block.
    pub fn encode_block(&self, x: &[f32], importance: Option<&[f32]>, out: &mut [u8]) {
        let grid = self.fit(x, importance);
        self.pack(&grid, &self.quantize_block(&grid, x), out);
    }

    /// Encodes a row-major `[rows, cols]` tensor (blocks run along rows, as ggml stores
    /// them), rows in parallel. `importance` holds one weight per column (shared by every row),
    /// e.g. the mean squared input of each column over calibration data.
    ///
    /// Fails when `cols` is not a whole number of blocks, the lengths disagree, or a value or
    /// weight is not finite (or a weight is negative).
    pub fn encode_rows(
        &self,
        data: &[f32],
        cols: usize,
        importance: Option<&[f32]>,
    ) -> Result<Vec<u8>, String> {
        let name = self.dtype.ggml_name();
        let n = self.shape.n;
        if cols == 0 || !cols.is_multiple_of(n) {
            return Err(format!(
                "{name} needs rows of a multiple of {n} values, got {cols}"
            ));
        }
        if !data.len().is_multiple_of(cols) {
            return Err(format!(
                "{} values are not a whole number of rows of {cols}",
                data.len()
            ));
        }
        if let Some(w) = importance {
            if w.len() != cols {
                return Err(format!(
                    "{} importance weights for rows of {cols} values",
                    w.len()
                ));
            }
            if let Some(i) = w.iter().position(|v| !v.is_finite() || *v < 0.0) {
                return Err(format!(
                    "importance weight {i} is {} (must be finite and non-negative)",
                    w[i]
                ));
            }
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "value {i} (row {}, column {}) is {}",
                i / cols,
                i % cols,
                data[i]
            ));
        }
        let row_bytes = cols / n * self.block_bytes();
        let mut out = vec![0u8; data.len() / cols * row_bytes];
        out.par_chunks_mut(row_bytes)
            .zip(data.par_chunks(cols))
            .for_each(|(dst, row)| {
                for (b, (x, o)) in row
                    .chunks(n)
                    .zip(dst.chunks_mut(self.block_bytes()))
                    .enumerate()
                {
                    let w = importance.map(|w| &w[b * n..(b + 1) * n]);
                    self.encode_block(x, w, o);
                }
            });
        Ok(out)
    }
}
