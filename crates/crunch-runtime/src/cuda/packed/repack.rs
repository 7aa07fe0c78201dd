//! The GPU layout of a packed matrix, made once on the host at upload ([`Repacked`]; the byte
//! order is in `packed.cu`), and what the host and device copies share ([`Layout`]).

use super::kquant::{self, KQuant};
use crate::PackedMatrix;
use crunch_kernels::DType;

/// The shape of a packed matrix and how its codes are read: what the host copy and the device
/// copy have in common.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub rows: usize,
    pub cols: usize,
    /// 4 (unsigned codes, weight `d·u + m` or `d·(u − 8)`) or 8 (signed codes, `d·c`).
    pub bits: u32,
    /// Weights per scale: 32, 64 or 128 (256, the super-block, for K-quants).
    pub group: usize,
    /// A GGUF K-quant kept in its own blocks (decision 140, `packed/kquant.rs`): then `bits`
    /// is its nominal width (4, 5, 6) and the other kernels do not read it.
    pub kquant: Option<KQuant>,
}

/// A weight matrix in the GPU layout, on the host (see `packed.cu` for the byte order).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Repacked {
    pub layout: Layout,
    pub codes: Vec<u8>,
    /// f16 bit patterns, `[rows][cols / group]`.
    pub d: Vec<u16>,
    /// Offsets (f16), present for Q4_1 only.
    pub m: Option<Vec<u16>>,
    // K-quants (`kquant::repack`): `codes` holds the super-blocks' code bytes and `d` their
    // scale bytes as u16 (see packed/kquant.rs), `m` is None.
}

fn f16_le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

impl Repacked {
    /// The GPU layout of `w`, or `None` for an encoding the kernels do not read.
    pub fn new(w: &PackedMatrix) -> Option<Self> {
        if let Some(kq) = KQuant::of(w.dtype()) {
            return Some(kquant::repack(w, kq));
        }
        let (bits, has_m, code_at, block_bytes) = match w.dtype() {
            DType::Q4_0 => (4, false, 2, 18),
            DType::Q4_1 => (4, true, 4, 20),
            DType::Q8_0 => (8, false, 2, 34),
            _ => return None,
        };
        let (rows, cols) = (w.rows(), w.cols());
        let blocks = rows * cols / 32;
        let bytes = w.bytes();
        let code_bytes = bits as usize * 4;
        let mut codes = Vec::with_capacity(blocks * code_bytes);
        let mut d32 = Vec::with_capacity(blocks);
        let mut m32 = Vec::with_capacity(if has_m { blocks } else { 0 });
        for b in bytes.chunks_exact(block_bytes) {
            d32.push(f16_le(b, 0));
            if has_m {
                m32.push(f16_le(b, 2));
            }
            // Both layouts are GGUF's own: Q4_0/Q4_1 nibbles (byte j: weights j and j + 16),
            // Q8_0 signed bytes in order.
            codes.extend_from_slice(&b[code_at..code_at + code_bytes]);
        }
        debug_assert_eq!(d32.len(), blocks);
        // The longest group over which every row repeats its block scales (and offsets).
        let per_row = cols / 32;
        let group = [4usize, 2]
            .into_iter()
            .find(|&g| {
                per_row.is_multiple_of(g)
                    && [&d32, &m32]
                        .iter()
                        .all(|v| v.chunks_exact(g).all(|c| c.iter().all(|&x| x == c[0])))
            })
            .unwrap_or(1);
        let pick = |v: Vec<u16>| -> Vec<u16> { v.into_iter().step_by(group).collect() };
        Some(Repacked {
            layout: Layout {
                rows,
                cols,
                bits,
                group: 32 * group,
                kquant: None,
            },
            codes,
            d: pick(d32),
            m: has_m.then(|| pick(m32)),
        })
    }

    /// Bytes the GPU holds for this matrix.
    pub fn device_bytes(&self) -> usize {
        self.codes.len() + 2 * self.d.len() * if self.m.is_some() { 2 } else { 1 }
    }

    /// Weight `(r, j)` as the kernels and `packed_rows` compute it (test reference).
    #[cfg(test)]
    pub(in crate::cuda::packed) fn weight(&self, r: usize, j: usize) -> f32 {
        if let Some(kq) = self.layout.kquant {
            return self.kquant_weight(kq, r, j);
        }
        let h = |b: u16| half::f16::from_bits(b).to_f32();
        let g = r * (self.layout.cols / self.layout.group) + j / self.layout.group;
        let d = h(self.d[g]);
        if self.layout.bits == 4 {
            let b = self.codes[(r * self.layout.cols / 32 + j / 32) * 16 + j % 16];
            let u = if j % 32 < 16 { b & 15 } else { b >> 4 } as f32;
            match &self.m {
                Some(m) => d * u + h(m[g]),
                None => d * (u - 8.0),
            }
        } else {
            d * self.codes[r * self.layout.cols + j] as i8 as f32
        }
    }
}
