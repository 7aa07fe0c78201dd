//! Products with unquantized weights (F32, F16, BF16), in f32 throughout: no activation
//! quantization, so a float model runs as its checkpoint says.
//!
//! A few activation rows (decoding): each weight row is widened to f32 in a small buffer and
//! dotted with every activation row. Many rows (prefill): tiles of 64 weight rows are widened
//! once and multiplied with faer's matrix product.

use crate::math::{dot16 as dot, SharedOut};
use crate::matrix::PackedMatrix;
use crate::Isa;
use crunch_formats::DType;
use faer::linalg::matmul::matmul as faer_matmul;
use faer::{Accum, MatMut, MatRef, Par};
use half::f16;
use std::cell::RefCell;

pub(crate) fn supported(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

/// Widens `bytes` (stored `dtype` values) into `out`.
#[inline(always)]
fn widen(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        DType::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        DType::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        DType::BF16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
            }
        }
        _ => unreachable!("not a float dtype"),
    }
}

/// One weight row widened into `buf`, dotted with the activation rows `x` (`out.len()` rows
/// of `buf.len()`): `out[c] = x_c · w`.
#[inline(always)]
fn widen_and_dot_generic(dtype: DType, bytes: &[u8], buf: &mut [f32], x: &[f32], out: &mut [f32]) {
    let k = buf.len();
    widen(dtype, bytes, buf);
    for (c, o) in out.iter_mut().enumerate() {
        *o = dot(buf, &x[c * k..(c + 1) * k]);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn widen_and_dot_avx2(
    dtype: DType,
    bytes: &[u8],
    buf: &mut [f32],
    x: &[f32],
    out: &mut [f32],
) {
    widen_and_dot_generic(dtype, bytes, buf, x, out)
}

fn widen_and_dot(
    isa: Isa,
    dtype: DType,
    bytes: &[u8],
    buf: &mut [f32],
    x: &[f32],
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 {
        // SAFETY: `isa` was detected on this CPU.
        unsafe { widen_and_dot_avx2(dtype, bytes, buf, x, out) };
        return;
    }
    let _ = isa;
    widen_and_dot_generic(dtype, bytes, buf, x, out)
}

thread_local! {
    static BUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn matmul(w: &PackedMatrix, x: &[f32], n: usize, y: &mut [f32], isa: Isa) {
    let (m, k, dtype) = (w.rows(), w.cols(), w.dtype());
    let rb = w.row_bytes();
    let bytes = w.bytes();
    let out = SharedOut::new(y);
    if n <= 4 {
        const TILE: usize = 16;
        let task = |t: usize| {
            BUF.with(|buf| {
                let mut buf = buf.borrow_mut();
                buf.resize(k, 0.0);
                let mut o = [0f32; 4];
                for r in t * TILE..((t + 1) * TILE).min(m) {
                    widen_and_dot(
                        isa,
                        dtype,
                        &bytes[r * rb..(r + 1) * rb],
                        &mut buf,
                        x,
                        &mut o[..n],
                    );
                    for (c, &v) in o.iter().enumerate().take(n) {
                        // SAFETY: column r of y belongs to this task.
                        unsafe { *out.at(c * m + r) = v };
                    }
                }
            })
        };
        let tiles = m.div_ceil(TILE);
        if m * k * n >= 1 << 16 {
            crate::pool::run(tiles, &task);
        } else {
            (0..tiles).for_each(task);
        }
        return;
    }
    const TILE: usize = 64;
    let xs = MatRef::from_row_major_slice(x, n, k);
    let task = |t: usize| {
        let r0 = t * TILE;
        let tr = TILE.min(m - r0);
        BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.resize(tr * k, 0.0);
            widen(dtype, &bytes[r0 * rb..(r0 + tr) * rb], &mut buf[..tr * k]);
            // The tile is [tr, k] row-major: as a k × tr column-major matrix it is Wᵀ.
            let wt = MatRef::from_column_major_slice(&buf[..tr * k], k, tr);
            // SAFETY: columns r0..r0+tr of y (row stride m) belong to this task, in bounds.
            let dst = unsafe { MatMut::from_raw_parts_mut(out.at(r0), n, tr, m as isize, 1) };
            faer_matmul(dst, Accum::Replace, xs, wt, 1.0f32, Par::Seq);
        })
    };
    crate::pool::run(m.div_ceil(TILE), &task);
}
