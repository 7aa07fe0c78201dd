//! Activation rows quantized once per matrix product, so the inner loops multiply integers.
//!
//! Each row is cut into chunks of 32 values with one scale `dx = max|x| / Q` each, and every
//! value becomes an integer `q = round(x / dx)`. Two precisions:
//!
//! - [`ActBits::I16`] (`Q = 16256 = 127·128`): `q` is split into `q = 128·a + b` with `a` in
//!   [-127, 127] and `b` in [0, 127], two int8 planes (never -128, which the AVX2 sign trick
//!   cannot negate), so the same 8-bit dot-product
//!   instructions give a 15-bit activation at the cost of one more product per chunk. The
//!   rounding error is about 3e-5 of the chunk's largest value: products agree with the f32
//!   product to about 1e-5 relative, and logits with the dequantized f32 path well within 1e-3.
//! - [`ActBits::I8`] (`Q = 127`): one plane, what llama.cpp does (Q8_0 activations); about
//!   4e-3 of the chunk maximum per value, so products differ from f32 by a few 1e-3.
//!
//! Beside the planes the row keeps the chunk's scale `xc`, and `dx · Σq` per 16 and per 32
//! values, which multiply the weights' offsets (see `formats`). Rows are padded with zeros to
//! a multiple of 64. (A copy of the scale per 4 values, which the first blocked products
//! loaded as a vector, is not kept: it was four times the bytes of the 8-bit plane to write.)
//!
//! For a few rows (decoding) the planes are also kept in *nibble order* (`an`, `bn`): per 128
//! values (four 32-value chunks `c0..c3`), first the low halves `c0[0..16] c1[0..16] c2[0..16]
//! c3[0..16]`, then the high halves. That is how four Q4_0/Q4_1 blocks' codes come out of their
//! nibbles (`quad.rs`): byte `j` of a block holds weights `j` and `j + 16`, so the low nibbles of
//! four blocks side by side meet the first 64 bytes here, the high nibbles the next 64.

use crate::aligned::Aligned;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Padding unit of every row (one 512-bit vector of bytes).
pub const PAD: usize = 64;

/// Values per group of the nibble-order planes (four 32-value chunks).
pub(crate) const QUAD: usize = 128;

/// Rows up to which `quantize` also writes the nibble-order planes (the fused decode product's
/// limit, `matrix::FUSED_MAX_ROWS`).
pub(crate) const NIBBLE_ROWS: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActBits {
    I8,
    I16,
}

impl ActBits {
    /// The largest integer magnitude of a quantized value.
    pub fn qmax(self) -> f32 {
        match self {
            ActBits::I8 => 127.0,
            ActBits::I16 => 16256.0,
        }
    }
}

/// `n` rows of `k` activations, quantized.
pub struct Acts {
    pub bits: ActBits,
    pub n: usize,
    pub k: usize,
    /// `k` rounded up to a multiple of [`PAD`]: the stride of `a` and `b`.
    pub kp: usize,
    /// `k` rounded up to a multiple of [`QUAD`]: the stride of `an` and `bn` (empty when
    /// `n > NIBBLE_ROWS`).
    pub(crate) kq: usize,
    a: Aligned,
    b: Aligned,
    an: Aligned,
    bn: Aligned,
    xc: Aligned,
    e16: Aligned,
    e32: Aligned,
}

impl Acts {
    pub fn new(bits: ActBits) -> Self {
        Acts {
            bits,
            n: 0,
            k: 0,
            kp: 0,
            kq: 0,
            a: Aligned::default(),
            b: Aligned::default(),
            an: Aligned::default(),
            bn: Aligned::default(),
            xc: Aligned::default(),
            e16: Aligned::default(),
            e32: Aligned::default(),
        }
    }

    /// Quantizes `x` (`n` rows of `k`), reusing this value's buffers.
    pub fn quantize(&mut self, x: &[f32], n: usize, k: usize) {
        assert_eq!(x.len(), n * k, "activation buffer is not {n} x {k}");
        let kp = k.div_ceil(PAD) * PAD;
        self.n = n;
        self.k = k;
        self.kp = kp;
        self.a.reset(n * kp);
        let wide = self.bits == ActBits::I16;
        self.b.reset(if wide { n * kp } else { 0 });
        self.xc.reset(n * kp / 8); // kp / 32 floats per row
        self.e16.reset(n * kp / 4); // kp / 16 floats per row
        self.e32.reset(n * kp / 8); // kp / 32 floats per row
        let qmax = self.bits.qmax();
        let mut b_rows: Vec<Option<&mut [i8]>> = if wide {
            self.b.i8s_mut().chunks_mut(kp).map(Some).collect()
        } else {
            (0..n).map(|_| None).collect()
        };
        let rows: Vec<_> = self
            .a
            .i8s_mut()
            .chunks_mut(kp)
            .zip(b_rows.drain(..))
            .zip(self.xc.f32s_mut().chunks_mut(kp / 32))
            .zip(self.e16.f32s_mut().chunks_mut(kp / 16))
            .zip(self.e32.f32s_mut().chunks_mut(kp / 32))
            .enumerate()
            .collect();
        let run = |(i, ((((a, b), xc), e16), e32)): (usize, RowBufs)| {
            let out = RowOut { a, b, xc, e16, e32 };
            quantize_row(&x[i * k..(i + 1) * k], out, qmax)
        };
        if n > 1 && n * k >= 1 << 15 {
            // Each task takes its row's buffers out of the list (tasks touch disjoint rows).
            let rows: Vec<std::sync::Mutex<Option<(usize, RowBufs)>>> = rows
                .into_iter()
                .map(|r| std::sync::Mutex::new(Some(r)))
                .collect();
            crate::pool::run(rows.len(), &|i| {
                if let Some(r) = rows[i].lock().ok().and_then(|mut r| r.take()) {
                    run(r)
                }
            });
        } else {
            rows.into_iter().for_each(run);
        }
        self.nibble_order();
    }

    /// Writes `an` and `bn` from `a` and `b` for up to [`NIBBLE_ROWS`] rows (see the module
    /// comment): 16-byte pieces moved, a few hundred per product.
    fn nibble_order(&mut self) {
        let (n, kp) = (self.n, self.kp);
        let kq = if n <= NIBBLE_ROWS {
            kp.div_ceil(QUAD) * QUAD
        } else {
            0
        };
        self.kq = kq;
        let wide = self.bits == ActBits::I16;
        self.an.reset(n * kq);
        self.bn.reset(if wide { n * kq } else { 0 });
        if kq == 0 {
            return;
        }
        let planes = [(&self.a, &mut self.an), (&self.b, &mut self.bn)];
        for (src, dst) in planes.into_iter().take(if wide { 2 } else { 1 }) {
            let (src, dst) = (src.bytes(), dst.bytes_mut());
            for r in 0..n {
                let (s, d) = (&src[r * kp..(r + 1) * kp], &mut dst[r * kq..(r + 1) * kq]);
                // 16-value piece p of the row (chunk p / 2, half p % 2) goes to group
                // p / 8, half p % 2, slot (p / 2) % 4. The padding past kp stays zero.
                for (p, piece) in s.chunks_exact(16).enumerate() {
                    let at = (p / 8) * QUAD + (p % 2) * 64 + ((p / 2) % 4) * 16;
                    d[at..at + 16].copy_from_slice(piece);
                }
            }
        }
    }

    /// Row `i`'s high plane (the whole value in I8 mode), `kp` long.
    pub fn a(&self, i: usize) -> &[i8] {
        &self.a.i8s()[i * self.kp..(i + 1) * self.kp]
    }

    /// Row `i`'s low plane (I16 mode), `kp` long; empty in I8 mode.
    pub fn b(&self, i: usize) -> &[i8] {
        match self.bits {
            ActBits::I16 => &self.b.i8s()[i * self.kp..(i + 1) * self.kp],
            ActBits::I8 => &[],
        }
    }

    /// Row `i`'s high plane in nibble order, `kq` long (empty for more than
    /// [`NIBBLE_ROWS`] rows).
    pub(crate) fn an(&self, i: usize) -> &[i8] {
        &self.an.i8s()[i * self.kq..(i + 1) * self.kq]
    }

    /// Row `i`'s low plane in nibble order (I16 mode), `kq` long.
    pub(crate) fn bn(&self, i: usize) -> &[i8] {
        match self.bits {
            ActBits::I16 => &self.bn.i8s()[i * self.kq..(i + 1) * self.kq],
            ActBits::I8 => &[],
        }
    }

    /// Row `i`'s chunk scale per 32 values, `kp / 32` long.
    pub fn xc(&self, i: usize) -> &[f32] {
        &self.xc.f32s()[i * self.kp / 32..(i + 1) * self.kp / 32]
    }

    /// Row `i`'s `dx · Σq` per 16 values, `kp / 16` long.
    pub fn e16(&self, i: usize) -> &[f32] {
        &self.e16.f32s()[i * self.kp / 16..(i + 1) * self.kp / 16]
    }

    /// Row `i`'s `dx · Σq` per 32 values, `kp / 32` long.
    pub fn e32(&self, i: usize) -> &[f32] {
        &self.e32.f32s()[i * self.kp / 32..(i + 1) * self.kp / 32]
    }

    /// Row `i` quantized and restored: what the integer kernels effectively multiply by.
    pub fn dequantize_row(&self, i: usize) -> Vec<f32> {
        let (a, b, xc) = (self.a(i), self.b(i), self.xc(i));
        (0..self.k)
            .map(|j| {
                let q = match self.bits {
                    ActBits::I16 => 128 * a[j] as i32 + b[j] as i32,
                    ActBits::I8 => a[j] as i32,
                };
                q as f32 * xc[j / 32]
            })
            .collect()
    }
}

type RowBufs<'a> = (
    (
        ((&'a mut [i8], Option<&'a mut [i8]>), &'a mut [f32]),
        &'a mut [f32],
    ),
    &'a mut [f32],
);

/// One row's zeroed, padded output buffers.
struct RowOut<'a> {
    a: &'a mut [i8],
    b: Option<&'a mut [i8]>,
    xc: &'a mut [f32],
    e16: &'a mut [f32],
    e32: &'a mut [f32],
}

/// Quantizes one row.
fn quantize_row(x: &[f32], out: RowOut, qmax: f32) {
    #[cfg(target_arch = "x86_64")]
    if crate::Isa::detect() >= crate::Isa::Avx512 {
        // SAFETY: the CPU has AVX-512 F/BW (checked by `detect`).
        unsafe { quantize_row_avx512(x, out, qmax) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::Isa::detect() >= crate::Isa::Avx2 {
        // SAFETY: the CPU has AVX2 and FMA (checked by `detect`).
        unsafe { quantize_row_avx2(x, out, qmax) };
        return;
    }
    quantize_row_generic(x, out, qmax)
}

/// The same loops compiled with AVX2 enabled, so the compiler vectorises them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_row_avx2(x: &[f32], out: RowOut, qmax: f32) {
    quantize_row_generic(x, out, qmax)
}

/// The same arithmetic as [`quantize_row_generic`] written with AVX-512 (the compiler does not
/// vectorise the maximum of a chunk, a float reduction): a chunk is two vectors, the last one
/// loaded with a mask; `vcvtps2dq` rounds to nearest even like `round_ties_even`; the planes
/// are narrowed with `vpmovdb`. Identical output (the sums are exact integers).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn quantize_row_avx512(x: &[f32], mut out: RowOut, qmax: f32) {
    let k = x.len();
    let lim = _mm512_set1_epi32(qmax as i32);
    let nlim = _mm512_set1_epi32(-(qmax as i32));
    let low7 = _mm512_set1_epi32(127);
    for c in 0..k.div_ceil(32) {
        let at = 32 * c;
        let left = k - at;
        let m0: __mmask16 = if left >= 16 {
            0xFFFF
        } else {
            (1u16 << left) - 1
        };
        let m1: __mmask16 = if left >= 32 {
            0xFFFF
        } else if left > 16 {
            (1u16 << (left - 16)) - 1
        } else {
            0
        };
        // Masked-off elements are not read (no fault past the row's end); NaNs become 0, as
        // the generic code's `as i32` makes them (a chunk with an infinity is skipped).
        let v0 = _mm512_maskz_loadu_ps(m0, x.as_ptr().add(at));
        let v1 = _mm512_maskz_loadu_ps(m1, x.as_ptr().wrapping_add(at + 16));
        let v0 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(v0, v0), v0);
        let v1 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(v1, v1), v1);
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        if amax == 0.0 || !amax.is_finite() {
            continue;
        }
        let dx = amax / qmax;
        let inv = _mm512_set1_ps(qmax / amax);
        let q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, inv));
        let q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, inv));
        let q0 = _mm512_max_epi32(_mm512_min_epi32(q0, lim), nlim);
        let q1 = _mm512_max_epi32(_mm512_min_epi32(q1, lim), nlim);
        let a = out.a.as_mut_ptr().add(at);
        match out.b.as_deref_mut() {
            Some(b) => {
                let b = b.as_mut_ptr().add(at);
                for (h, q) in [q0, q1].into_iter().enumerate() {
                    let hi = _mm512_cvtepi32_epi8(_mm512_srai_epi32(q, 7));
                    let lo = _mm512_cvtepi32_epi8(_mm512_and_si512(q, low7));
                    _mm_storeu_si128(a.add(16 * h).cast(), hi);
                    _mm_storeu_si128(b.add(16 * h).cast(), lo);
                }
            }
            None => {
                _mm_storeu_si128(a.cast(), _mm512_cvtepi32_epi8(q0));
                _mm_storeu_si128(a.add(16).cast(), _mm512_cvtepi32_epi8(q1));
            }
        }
        let (s0, s1) = (_mm512_reduce_add_epi32(q0), _mm512_reduce_add_epi32(q1));
        out.xc[c] = dx;
        out.e16[2 * c] = dx * s0 as f32;
        out.e16[2 * c + 1] = dx * s1 as f32;
        out.e32[c] = dx * (s0 + s1) as f32;
    }
}

#[inline(always)]
fn quantize_row_generic(x: &[f32], mut out: RowOut, qmax: f32) {
    for (c, xs) in x.chunks(32).enumerate() {
        let mut v = [0f32; 32];
        v[..xs.len()].copy_from_slice(xs);
        let amax = v.iter().fold(0f32, |m, v| m.max(v.abs()));
        if amax == 0.0 || !amax.is_finite() {
            // Zero chunk (or a non-finite one, which no scale represents: it is zeroed here
            // and the model's own checks see the NaN/inf elsewhere).
            continue;
        }
        let dx = amax / qmax;
        let inv = qmax / amax;
        let mut q = [0i32; 32];
        for (q, v) in q.iter_mut().zip(&v) {
            *q = (v * inv).round_ties_even().clamp(-qmax, qmax) as i32;
        }
        let at = 32 * c;
        match out.b.as_deref_mut() {
            Some(b) => {
                for ((a, b), &q) in out.a[at..at + 32]
                    .iter_mut()
                    .zip(&mut b[at..at + 32])
                    .zip(&q)
                {
                    *a = (q >> 7) as i8;
                    *b = (q & 127) as i8;
                }
            }
            None => {
                for (a, &q) in out.a[at..at + 32].iter_mut().zip(&q) {
                    *a = q as i8;
                }
            }
        }
        let mut lanes = [0i32; 8];
        for (l, q) in q.chunks_exact(4).enumerate() {
            lanes[l] = q[0] + q[1] + q[2] + q[3];
        }
        out.xc[c] = dx;
        out.e16[2 * c] = dx * (lanes[0] + lanes[1] + lanes[2] + lanes[3]) as f32;
        out.e16[2 * c + 1] = dx * (lanes[4] + lanes[5] + lanes[6] + lanes[7]) as f32;
        out.e32[c] = dx * lanes.iter().sum::<i32>() as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_restore_the_row() {
        let x: Vec<f32> = (0..150)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        for bits in [ActBits::I8, ActBits::I16] {
            let mut acts = Acts::new(bits);
            acts.quantize(&x, 2, 75);
            assert_eq!(acts.kp, 128);
            for r in 0..2 {
                let row = &x[75 * r..75 * (r + 1)];
                let back = acts.dequantize_row(r);
                for (c, (xs, ys)) in row.chunks(32).zip(back.chunks(32)).enumerate() {
                    let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let step = amax / bits.qmax();
                    for (x, y) in xs.iter().zip(ys) {
                        assert!((x - y).abs() <= 0.5 * step * 1.0001, "{bits:?} chunk {c}");
                    }
                    // e16 is dx times the sum of each 16 values' integers.
                    let l0: f32 = ys.iter().take(16).sum();
                    assert!((acts.e16(r)[2 * c] - l0).abs() <= 1e-5 * amax * 16.0);
                }
                // Padding stays zero.
                assert!(acts.a(r)[75..].iter().all(|&v| v == 0));
                // Chunks past the last (partial) one stay zero.
                assert!(acts.xc(r)[3..].iter().all(|&v| v == 0.0));
            }
        }
    }

    /// Whatever path `quantize` takes on this CPU (AVX-512 here) writes exactly what the
    /// generic code does: row lengths with partial chunks and halves, a NaN (becomes 0) and
    /// an infinity (its chunk is zeroed).
    #[test]
    fn dispatched_quantization_equals_the_generic_code() {
        for bits in [ActBits::I8, ActBits::I16] {
            for k in [1usize, 16, 31, 33, 75, 150, 576] {
                let mut x: Vec<f32> = (0..k)
                    .map(|i| ((i * 53 % 97) as f32 - 48.0) / (1.0 + (i % 7) as f32))
                    .collect();
                if k > 40 {
                    x[35] = f32::NAN;
                }
                if k > 100 {
                    x[70] = f32::INFINITY;
                }
                let mut acts = Acts::new(bits);
                acts.quantize(&x, 1, k);
                let kp = acts.kp;
                let wide = bits == ActBits::I16;
                let (mut a, mut b) = (vec![0i8; kp], vec![0i8; kp]);
                let (mut xc, mut e16, mut e32) = (
                    vec![0f32; kp / 32],
                    vec![0f32; kp / 16],
                    vec![0f32; kp / 32],
                );
                let out = RowOut {
                    a: &mut a,
                    b: if wide { Some(&mut b) } else { None },
                    xc: &mut xc,
                    e16: &mut e16,
                    e32: &mut e32,
                };
                quantize_row_generic(&x, out, bits.qmax());
                assert_eq!(acts.a(0), &a[..], "{bits:?} k={k}");
                if wide {
                    assert_eq!(acts.b(0), &b[..], "{bits:?} k={k}");
                }
                assert_eq!(acts.xc(0), &xc[..], "{bits:?} k={k}");
                assert_eq!(acts.e16(0), &e16[..], "{bits:?} k={k}");
                assert_eq!(acts.e32(0), &e32[..], "{bits:?} k={k}");
            }
        }
    }

    /// The nibble-order planes hold the same bytes as `a` and `b`, moved by 16-byte halves of
    /// chunks (module comment), zero past the row; absent for more than `NIBBLE_ROWS` rows.
    #[test]
    fn nibble_order_moves_halves_of_chunks() {
        for bits in [ActBits::I8, ActBits::I16] {
            for (n, k) in [(1usize, 32usize), (2, 75), (3, 576), (4, 1536), (1, 200)] {
                let x: Vec<f32> = (0..n * k)
                    .map(|i| ((i * 29 % 83) as f32 - 41.0) / 5.0)
                    .collect();
                let mut acts = Acts::new(bits);
                acts.quantize(&x, n, k);
                assert_eq!(acts.kq, k.div_ceil(QUAD) * QUAD);
                for r in 0..n {
                    let planes = [(acts.a(r), acts.an(r)), (acts.b(r), acts.bn(r))];
                    for (src, dst) in planes {
                        if bits == ActBits::I8 && src.is_empty() {
                            assert!(dst.is_empty());
                            continue;
                        }
                        for (j, &got) in dst.iter().enumerate() {
                            let (g, half, slot, t) = (j / 128, j % 128 / 64, j % 64 / 16, j % 16);
                            let from = g * 128 + slot * 32 + half * 16 + t;
                            let want = if from < acts.kp { src[from] } else { 0 };
                            assert_eq!(got, want, "{bits:?} n={n} k={k} row {r} at {j}");
                        }
                        assert_eq!(dst.len(), acts.kq);
                    }
                }
            }
            let mut acts = Acts::new(bits);
            acts.quantize(&vec![1.0; 5 * 64], 5, 64);
            assert_eq!(acts.kq, 0);
            assert!(acts.an(0).is_empty());
        }
    }

    #[test]
    fn zero_and_tiny_rows() {
        let mut acts = Acts::new(ActBits::I16);
        acts.quantize(&[0.0; 40], 1, 40);
        assert!(acts.dequantize_row(0).iter().all(|&v| v == 0.0));
        acts.quantize(&[1e-30, -1e-30, 3.0], 1, 3);
        let back = acts.dequantize_row(0);
        assert!((back[2] - 3.0).abs() < 1e-6);
    }
}
