//! crunch's grouped integer codes rewritten as GGUF 32-weight blocks, so that the CPU runtime's
//! packed-weight kernels (which multiply GGUF blocks) run crunch's own format without
//! expanding it to f32.
//!
//! A block holds 32 consecutive weights of one row, so the rewrite needs groups that are whole
//! blocks (group size a multiple of 32, or one group per row) and rows of whole blocks. Which
//! block type, and how exact:
//!
//! - 2–4-bit symmetric, 2–3-bit asymmetric → Q4_0 (`w = (q − 8)·d`) with `q = code − zero + 8`
//!   (in 0..=15 for these widths) and `d` = the f16 scale: the same values, bit for bit;
//! - 4-bit asymmetric → Q4_1 (`w = q·d + m`) with `q = code`, `d` = the scale and
//!   `m = −zero·scale` rounded to f16 (crunch computes `(code − zero)·scale` in f32): the offset
//!   may differ by up to half an f16 ulp of `zero·scale`, 2⁻¹² of it relative;
//! - 8-bit symmetric → Q8_0 (`w = q·d`, `q = code − 128` as a signed byte): exact;
//! - anything else (8-bit asymmetric, act-order `g_idx`, groups not a multiple of 32): `None`,
//!   and the runtime reads the layer as f32.
//!
//! Q4_0 costs 4.5 bits per weight in memory where crunch stores 4 + 20/group (4.16 at g128):
//! the scale is repeated in each of a group's blocks.

use crate::QuantizedWeight;
use crunch_formats::DType;
use half::f16;

impl QuantizedWeight {
    /// The weight as GGUF blocks of the returned type (see the module comment), or `None`
    /// when no block type holds it.
    pub fn to_gguf_blocks(&self) -> Option<(DType, Vec<u8>)> {
        let (bits, sym) = (self.spec.bits, self.spec.symmetric);
        let group = self.spec.group_len(self.cols);
        if self.g_idx.is_some() || self.cols % 32 != 0 || group % 32 != 0 {
            return None;
        }
        let dtype = match (bits, sym) {
            (2..=4, true) | (2..=3, false) => DType::Q4_0,
            (4, false) => DType::Q4_1,
            (8, true) => DType::Q8_0,
            _ => return None,
        };
        let (_, block_bytes) = dtype.block();
        let n_groups = self.n_groups();
        let mut out = Vec::with_capacity(self.rows * self.cols / 32 * block_bytes);
        for r in 0..self.rows {
            let codes = &self.codes[r * self.cols..(r + 1) * self.cols];
            for (b, q) in codes.chunks_exact(32).enumerate() {
                let g = r * n_groups + b * 32 / group;
                let (scale, zero) = (self.scales[g], self.zeros[g] as i32);
                out.extend_from_slice(&scale.to_le_bytes());
                match dtype {
                    DType::Q4_0 => {
                        let nib = |c: u8| (c as i32 - zero + 8) as u8;
                        out.extend((0..16).map(|j| nib(q[j]) | (nib(q[j + 16]) << 4)));
                    }
                    DType::Q4_1 => {
                        let m = f16::from_f32(-(zero as f32) * scale.to_f32());
                        out.extend_from_slice(&m.to_le_bytes());
                        out.extend((0..16).map(|j| q[j] | (q[j + 16] << 4)));
                    }
                    _ => out.extend(q.iter().map(|&c| (c as i32 - zero) as i8 as u8)),
                }
            }
        }
        Some((dtype, out))
    }
}

#[cfg(test)]
mod tests {
    use crate::{QuantSpec, QuantizedWeight};
    use crunch_formats::gguf::dequantize;
    use crunch_formats::DType;
    use half::f16;

    /// A random weight on `spec`'s grid (codes in range, zeros symmetric or random).
    fn random(spec: QuantSpec, rows: usize, cols: usize, seed: u64) -> QuantizedWeight {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let levels = 1u64 << spec.bits;
        let groups = rows * spec.n_groups(cols);
        QuantizedWeight {
            spec,
            rows,
            cols,
            codes: (0..rows * cols).map(|_| (next() % levels) as u8).collect(),
            scales: (0..groups)
                .map(|_| f16::from_f32(1e-3 + (next() % 1000) as f32 * 1e-5))
                .collect(),
            zeros: (0..groups)
                .map(|_| {
                    if spec.symmetric {
                        1 << (spec.bits - 1)
                    } else {
                        (next() % levels) as u8
                    }
                })
                .collect(),
            g_idx: None,
        }
    }

    #[test]
    fn blocks_dequantize_to_the_same_weights() {
        // SmolLM2's 576 columns at g128: four whole groups and a short one of 64.
        for (bits, sym, group, want) in [
            (4, true, Some(128), DType::Q4_0),
            (3, true, Some(64), DType::Q4_0),
            (2, false, Some(32), DType::Q4_0),
            (3, false, None, DType::Q4_0),
            (4, false, Some(128), DType::Q4_1),
            (8, true, Some(128), DType::Q8_0),
        ] {
            let w = random(QuantSpec::new(bits, group, sym), 5, 576, bits as u64);
            let (dtype, blocks) = w.to_gguf_blocks().expect("representable");
            assert_eq!(dtype, want);
            let mut got = vec![0f32; 5 * 576];
            dequantize(dtype, &blocks, &mut got).unwrap();
            let ref_ = w.dequantize();
            for (i, (g, r)) in got.iter().zip(&ref_).enumerate() {
                // Exact except Q4_1, whose f16 offset may be rounded (half an ulp of z·s).
                let tol = if dtype == DType::Q4_1 {
                    let gi = (i / 576) * w.n_groups() + (i % 576) / 128;
                    w.zeros[gi] as f32 * w.scales[gi].to_f32() * 2f32.powi(-11)
                } else {
                    0.0
                };
                assert!(
                    (g - r).abs() <= tol,
                    "{bits}-bit {dtype:?} weight {i}: {g} vs {r}"
                );
            }
        }
    }

    #[test]
    fn layouts_without_a_block_type_are_refused() {
        let w = random(QuantSpec::new(8, Some(128), false), 2, 256, 1);
        assert!(w.to_gguf_blocks().is_none(), "8-bit asymmetric");
        let w = random(QuantSpec::new(4, Some(48), true), 2, 96, 2);
        assert!(w.to_gguf_blocks().is_none(), "groups of 48");
        let mut w = random(QuantSpec::new(4, Some(32), true), 2, 64, 3);
        w.g_idx = Some(vec![0; 64]);
        assert!(w.to_gguf_blocks().is_none(), "act-order");
    }
}
