//! Dequantization of ggml block formats to f32.
//!
//! Each block type is a function from one block's bytes to its `block_size` outputs, written
//! from the block layouts; the arithmetic follows the reference order (e.g. `(d * sc) * q - (dmin
//! * m)`) so results are bit-identical to ggml's and gguf-py's, which the fixture tests check.

use crate::DType;
use half::{bf16, f16};
use rayon::prelude::*;

/// Tensors with at least this many elements are dequantized on the rayon pool.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 16;
/// Elements per rayon task: large enough that scheduling costs nothing, small enough to
/// balance across cores.
const TASK_ELEMENTS: usize = 1 << 14;

/// Dequantizes `bytes` of type `dtype` into `out`, whose length is the element count.
/// Fails (with a message) when the byte count does not match, or for integer types.
pub fn dequantize(dtype: DType, bytes: &[u8], out: &mut [f32]) -> Result<(), String> {
    let kernel = kernel(dtype)?;
    let (per_block, block_bytes) = dtype.block();
    match dtype.bytes_for(out.len()) {
        Some(n) if n == bytes.len() => {}
        Some(n) => {
            return Err(format!(
                "{} {dtype:?} elements need {n} bytes, got {}",
                out.len(),
                bytes.len()
            ))
        }
        None => {
            return Err(format!(
                "{} elements are not a whole number of {dtype:?} blocks of {per_block}",
                out.len()
            ))
        }
    }
    let run = |(src, dst): (&[u8], &mut [f32])| {
        for (b, y) in src
            .chunks_exact(block_bytes)
            .zip(dst.chunks_exact_mut(per_block))
        {
            kernel(b, y);
        }
    };
    if out.len() >= PARALLEL_MIN_ELEMENTS {
        let blocks_per_task = (TASK_ELEMENTS / per_block).max(1);
        bytes
            .par_chunks(blocks_per_task * block_bytes)
            .zip(out.par_chunks_mut(blocks_per_task * per_block))
            .for_each(run);
    } else {
        run((bytes, out));
    }
    Ok(())
}

type Kernel = fn(&[u8], &mut [f32]);

fn kernel(dtype: DType) -> Result<Kernel, String> {
    use DType::*;
    Ok(match dtype {
        F32 => |b, y| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        F16 => |b, y| y[0] = half(b, 0),
        BF16 => |b, y| y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        F64 => |b, y| y[0] = f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
        Q4_0 => q4_0,
        Q4_1 => q4_1,
        Q5_0 => q5_0,
        Q5_1 => q5_1,
        Q8_0 => q8_0,
        Q2K => q2_k,
        Q3K => q3_k,
        Q4K => q4_k,
        Q5K => q5_k,
        Q6K => q6_k,
        Q8K => q8_k,
        I64 | I32 | I16 | I8 | U8 | U32 | Bool => {
            return Err(format!(
                "dtype {dtype:?} is an integer type, not a (quantized) float"
            ))
        }
    })
}

/// The little-endian f16 at `at`, widened.
fn half(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

// --- 32-element blocks: an f16 scale (and min), packed quants. Quant j and j+16 share a
// byte (low and high nibble).

fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = half(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = ((qs[j] & 0xF) as i32 - 8) as f32 * d;
        y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half(b, 0), half(b, 2));
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = d * (qs[j] & 0xF) as f32 + m;
        y[j + 16] = d * (qs[j] >> 4) as f32 + m;
    }
}

/// The fifth bits of Q5 blocks: bit j of a little-endian u32 belongs to quant j.
fn high_bits(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = half(b, 0);
    let qh = high_bits(&b[2..6]);
    let qs = &b[6..22];
    for j in 0..16 {
        let h0 = ((qh >> j) & 1) << 4;
        let h1 = ((qh >> (j + 16)) & 1) << 4;
        y[j] = (((qs[j] & 0xF) as u32 | h0) as i32 - 16) as f32 * d;
        y[j + 16] = (((qs[j] >> 4) as u32 | h1) as i32 - 16) as f32 * d;
    }
}

fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half(b, 0), half(b, 2));
    let qh = high_bits(&b[4..8]);
    let qs = &b[8..24];
    for j in 0..16 {
        let h0 = ((qh >> j) & 1) << 4;
        let h1 = ((qh >> (j + 16)) & 1) << 4;
        y[j] = d * ((qs[j] & 0xF) as u32 | h0) as f32 + m;
        y[j + 16] = d * ((qs[j] >> 4) as u32 | h1) as f32 + m;
    }
}

fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = half(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..34]) {
        *y = q as i8 as f32 * d;
    }
}

// --- 256-element "K" super-blocks: sub-blocks of 16 or 32 with their own small scales.

fn q2_k(b: &[u8], y: &mut [f32]) {
    // scales[16] (low nibble: scale, high: min), qs[64] (2 bits), d, dmin.
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (half(b, 80), half(b, 82));
    // Output sub-block s (16 values) takes bit pair `shift` of qs[32*half + (0..16 or 16..32)].
    for (s, &sc) in scales.iter().enumerate() {
        let (half_, shift, lo) = (s / 8, 2 * ((s % 8) / 2), 16 * (s % 2));
        let dl = d * (sc & 0xF) as f32;
        let ml = dmin * (sc >> 4) as f32;
        let q = &qs[32 * half_ + lo..32 * half_ + lo + 16];
        for (l, &q) in q.iter().enumerate() {
            y[16 * s + l] = dl * ((q >> shift) & 3) as f32 - ml;
        }
    }
}

/// The sixteen signed 6-bit scales of a Q3_K block, packed as 4 low bits in bytes 0..8
/// (low nibbles first, then high nibbles) and 2 high bits in bytes 8..12.
fn q3_k_scales(s: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (k, o) in out.iter_mut().enumerate() {
        let low = if k < 8 { s[k] & 0xF } else { s[k - 8] >> 4 };
        let high = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
        *o = (low | (high << 4)) as i8 - 32;
    }
    out
}

fn q3_k(b: &[u8], y: &mut [f32]) {
    // hmask[32], qs[64] (2 low bits), scales[12], d.
    let (hmask, qs) = (&b[0..32], &b[32..96]);
    let scales = q3_k_scales(&b[96..108]);
    let d = half(b, 108);
    for (s, &sc) in scales.iter().enumerate() {
        let (half_, pair, lo) = (s / 8, (s % 8) / 2, 16 * (s % 2));
        let shift = 2 * pair;
        // The high bit of every quant lives in hmask, one bit plane per 32-value group.
        let bit = 4 * half_ + pair;
        let dl = d * sc as f32;
        for l in 0..16 {
            let q = ((qs[32 * half_ + lo + l] >> shift) & 3) as i32;
            let h = if hmask[lo + l] >> bit & 1 == 1 { 0 } else { 4 };
            y[16 * s + l] = dl * (q - h) as f32;
        }
    }
}

/// Scale and min of sub-block `j` of a Q4_K/Q5_K block: eight 6-bit pairs in 12 bytes.
fn k4_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

fn q4_k(b: &[u8], y: &mut [f32]) {
    // d, dmin, scales[12], qs[128]: 32-byte groups hold two sub-blocks (low, high nibbles).
    let (d, dmin) = (half(b, 0), half(b, 2));
    let (scales, qs) = (&b[4..16], &b[16..144]);
    for g in 0..4 {
        let (sc0, m0) = k4_scale_min(2 * g, scales);
        let (sc1, m1) = k4_scale_min(2 * g + 1, scales);
        let (d0, min0) = (d * sc0 as f32, dmin * m0 as f32);
        let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
        let q = &qs[32 * g..32 * g + 32];
        for l in 0..32 {
            y[64 * g + l] = d0 * (q[l] & 0xF) as f32 - min0;
            y[64 * g + 32 + l] = d1 * (q[l] >> 4) as f32 - min1;
        }
    }
}

fn q5_k(b: &[u8], y: &mut [f32]) {
    // d, dmin, scales[12], qh[32] (bit 2g / 2g+1 is the fifth bit), qs[128].
    let (d, dmin) = (half(b, 0), half(b, 2));
    let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    for g in 0..4 {
        let (sc0, m0) = k4_scale_min(2 * g, scales);
        let (sc1, m1) = k4_scale_min(2 * g + 1, scales);
        let (d0, min0) = (d * sc0 as f32, dmin * m0 as f32);
        let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
        let q = &qs[32 * g..32 * g + 32];
        for l in 0..32 {
            let h0 = ((qh[l] >> (2 * g)) & 1) << 4;
            let h1 = ((qh[l] >> (2 * g + 1)) & 1) << 4;
            y[64 * g + l] = d0 * ((q[l] & 0xF) | h0) as f32 - min0;
            y[64 * g + 32 + l] = d1 * ((q[l] >> 4) | h1) as f32 - min1;
        }
    }
}

fn q6_k(b: &[u8], y: &mut [f32]) {
    // ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (i8), d.
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = half(b, 208);
    for h in 0..2 {
        let (ql, qh, y) = (&ql[64 * h..], &qh[32 * h..], &mut y[128 * h..]);
        let sc = &scales[8 * h..8 * h + 8];
        for l in 0..32 {
            let is = l / 16;
            let q = [
                (ql[l] & 0xF) | ((qh[l] & 3) << 4),
                (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4),
                (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
            ];
            for (k, &q) in q.iter().enumerate() {
                let dl = d * sc[is + 2 * k] as i8 as f32;
                y[32 * k + l] = dl * (q as i32 - 32) as f32;
            }
        }
    }
}

fn q8_k(b: &[u8], y: &mut [f32]) {
    // d (f32), qs[256] (i8), then per-16 sums used only by ggml's dot products.
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (y, &q) in y.iter_mut().zip(&b[4..260]) {
        *y = d * q as i8 as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q4_0_by_hand() {
        // d = 0.5; byte j = (hi << 4) | lo with lo = j, hi = 15 - j.
        let mut b = f16_bytes(0.5).to_vec();
        b.extend((0..16u8).map(|j| ((15 - j) << 4) | j));
        let mut y = [0f32; 32];
        dequantize(DType::Q4_0, &b, &mut y).unwrap();
        for j in 0..16 {
            assert_eq!(y[j], (j as f32 - 8.0) * 0.5);
            assert_eq!(y[j + 16], (7.0 - j as f32) * 0.5);
        }
    }

    #[test]
    fn q8_0_by_hand() {
        let mut b = f16_bytes(2.0).to_vec();
        b.extend((0..32).map(|j| (j as i8 - 16) as u8));
        let mut y = [0f32; 32];
        dequantize(DType::Q8_0, &b, &mut y).unwrap();
        assert_eq!(y[0], -32.0);
        assert_eq!(y[31], 30.0);
    }

    #[test]
    fn q8_k_by_hand() {
        let mut b = 0.25f32.to_le_bytes().to_vec();
        b.extend((0..256).map(|j| (j as u8).wrapping_sub(128)));
        b.extend([0u8; 32]);
        let mut y = vec![0f32; 256];
        dequantize(DType::Q8K, &b, &mut y).unwrap();
        for (j, &v) in y.iter().enumerate() {
            assert_eq!(v, 0.25 * (j as u8).wrapping_sub(128) as i8 as f32);
        }
    }

    #[test]
    fn q3_k_scales_unpack_each_field() {
        // Distinct scales spanning both signs, packed by hand as the layout describes.
        let want: Vec<i8> = (0..16).map(|k: i8| k - 32 + 2 * (k % 3)).collect();
        let mut s = [0u8; 12];
        for (k, &w) in want.iter().enumerate() {
            let u = (w + 32) as u8;
            if k < 8 {
                s[k] |= u & 0xF;
            } else {
                s[k - 8] |= (u & 0xF) << 4;
            }
            s[8 + k % 4] |= (u >> 4) << (2 * (k / 4));
        }
        assert_eq!(q3_k_scales(&s).to_vec(), want);
    }

    #[test]
    fn wrong_length_and_integer_types_are_errors() {
        let mut y = [0f32; 32];
        let err = dequantize(DType::Q4_0, &[0; 17], &mut y).unwrap_err();
        assert!(err.contains("need 18 bytes, got 17"), "{err}");
        let mut y = [0f32; 31];
        let err = dequantize(DType::Q4_0, &[0; 18], &mut y).unwrap_err();
        assert!(
            err.contains("not a whole number of Q4_0 blocks of 32"),
            "{err}"
        );
        let err = dequantize(DType::I32, &[0; 4], &mut [0f32; 1]).unwrap_err();
        assert!(err.contains("integer"), "{err}");
    }

    #[test]
    fn parallel_path_matches_serial() {
        // 4096 Q4_1 blocks: above the parallel threshold; compare against block-by-block.
        let n_blocks = PARALLEL_MIN_ELEMENTS / 32 * 2;
        let bytes: Vec<u8> = (0..n_blocks * 20)
            .map(|i| match i % 20 {
                1 | 3 => 0x30, // keep d and m small and finite
                _ => (i * 7919 % 251) as u8,
            })
            .collect();
        let mut par = vec![0f32; n_blocks * 32];
        dequantize(DType::Q4_1, &bytes, &mut par).unwrap();
        for (blk, want) in bytes.chunks(20).zip(par.chunks(32)) {
            let mut y = [0f32; 32];
            q4_1(blk, &mut y);
            assert_eq!(&y[..], want);
        }
    }
}
