//! GGUF K-quants kept packed on the GPU (decision 140, `kquant.cu`): Q4_K, Q5_K and Q6_K
//! matrices multiplied by `dp4a` kernels on decision 117's quantized activations, at every
//! batch size, and their rows dequantized on the device for embedding lookups.
//!
//! The GPU layout is the file's bytes split in two arrays (so that codes are 16-byte aligned
//! for the kernels' vector loads): per 256-weight super-block, the codes (Q4_K `qs[128]`; Q5_K
//! `qh[32]`, `qs[128]`; Q6_K `ql[128]`, `qh[64]`) into [`Repacked::codes`], and the scales
//! (Q4_K/Q5_K the 16-byte head `d, dmin, scales[12]`; Q6_K `scales[16]`, `d`) into
//! [`Repacked::d`] as little-endian `u16`. 144, 176 and 210 bytes per super-block: 4.5, 5.5 and
//! 6.5625 bits per weight, exactly the file's size.

use super::{err, Cuda, GpuPacked, Kernels, Layout, Repacked, THREADS};
use crate::{PackedMatrix, Result};
use crunch_kernels::DType;
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

pub(super) const SOURCE: &str = include_str!("kquant.cu");

/// The K-quant encodings the GPU keeps packed. The discriminant is `type` in `kquant.cu`
/// (`KQ_Q4K`, `KQ_Q5K`, `KQ_Q6K`) and the index of the kernel sets in [`Kernels`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KQuant {
    Q4K = 0,
    Q5K = 1,
    Q6K = 2,
}

impl KQuant {
    pub fn of(dtype: DType) -> Option<Self> {
        match dtype {
            DType::Q4K => Some(KQuant::Q4K),
            DType::Q5K => Some(KQuant::Q5K),
            DType::Q6K => Some(KQuant::Q6K),
            _ => None,
        }
    }

    /// (stored block bytes, code bytes per super-block (`KQ_REC`), where the codes start in
    /// the block, scale `u16`s per super-block).
    fn split(self) -> (usize, usize, usize, usize) {
        match self {
            KQuant::Q4K => (144, 128, 16, 8),
            KQuant::Q5K => (176, 160, 16, 8),
            KQuant::Q6K => (210, 192, 0, 9),
        }
    }

    /// Bits per weight of the format (what `Layout::bits` records for it).
    fn bits(self) -> u32 {
        match self {
            KQuant::Q4K => 4,
            KQuant::Q5K => 5,
            KQuant::Q6K => 6,
        }
    }

    /// Kernel name prefix in `kquant.cu`.
    pub fn name(self) -> &'static str {
        match self {
            KQuant::Q4K => "kquant_q4k",
            KQuant::Q5K => "kquant_q5k",
            KQuant::Q6K => "kquant_q6k",
        }
    }
}

/// `w` (Q4_K, Q5_K or Q6_K) in the GPU layout (see the module comment).
pub(super) fn repack(w: &PackedMatrix, kq: KQuant) -> Repacked {
    let (block, rec, code_at, scales) = kq.split();
    let blocks = w.bytes().len() / block;
    let mut codes = Vec::with_capacity(blocks * rec);
    let mut d = Vec::with_capacity(blocks * scales);
    for b in w.bytes().chunks_exact(block) {
        codes.extend_from_slice(&b[code_at..code_at + rec]);
        let head = if code_at == 0 {
            &b[rec..]
        } else {
            &b[..code_at]
        };
        d.extend(
            head.chunks_exact(2)
                .map(|p| u16::from_le_bytes([p[0], p[1]])),
        );
    }
    debug_assert_eq!(d.len(), blocks * scales);
    Repacked {
        layout: Layout {
            rows: w.rows(),
            cols: w.cols(),
            bits: kq.bits(),
            group: 256,
            kquant: Some(kq),
        },
        codes,
        d,
        m: None,
    }
}

/// Scale and min of sub-block `j` of a Q4_K/Q5_K head (`k4_scale_min` in `kquant.cu`: the
/// bytes of the head's words 1–3, `scales[0..12]`). The tests' transcriptions of the kernels.
#[cfg(test)]
fn k4_scale_min(head: &[u16], j: usize) -> (u32, u32) {
    let byte = |i: usize| (head[2 + i / 2] >> (8 * (i % 2))) as u32 & 0xff;
    let i = j & 3;
    let (b1, b2, b3) = (byte(i), byte(4 + i), byte(8 + i));
    if j < 4 {
        (b1 & 63, b2 & 63)
    } else {
        ((b3 & 15) | ((b1 >> 6) << 4), (b3 >> 4) | ((b2 >> 6) << 4))
    }
}

#[cfg(test)]
fn f16(b: u16) -> f32 {
    half::f16::from_bits(b).to_f32()
}

impl Repacked {
    /// Weight `(r, j)` of a K-quant layout as `kquant_rows` computes it (test reference).
    #[cfg(test)]
    pub(super) fn kquant_weight(&self, kq: KQuant, r: usize, j: usize) -> f32 {
        let (_, rec, _, scales) = kq.split();
        let blk = r * (self.layout.cols / 256) + j / 256;
        let (e, l) = (j % 256, j % 32);
        let c = &self.codes[blk * rec..(blk + 1) * rec];
        let s = &self.d[blk * scales..(blk + 1) * scales];
        if kq == KQuant::Q6K {
            let (h, kk) = (e >> 7, (e >> 5) & 3);
            let (ql, qh) = (c[64 * h + 32 * (kk & 1) + l], c[128 + 32 * h + l]);
            let q = ((ql >> (4 * (kk >> 1))) & 15) | (((qh >> (2 * kk)) & 3) << 4);
            let sc = (s[(e >> 4) / 2] >> (8 * ((e >> 4) % 2))) as u8 as i8;
            f16(s[8]) * sc as f32 * (q as i32 - 32) as f32
        } else {
            let q5 = kq == KQuant::Q5K;
            let (g, half) = (e >> 6, (e >> 5) & 1);
            let qs = c[if q5 { 32 } else { 0 } + 32 * g + l];
            let mut q = if half == 1 { qs >> 4 } else { qs & 15 };
            if q5 {
                q |= ((c[l] >> (2 * g + half)) & 1) << 4;
            }
            let (sc, mn) = k4_scale_min(s, 2 * g + half);
            f16(s[0]) * sc as f32 * q as f32 - f16(s[1]) * mn as f32
        }
    }
}

impl Cuda {
    /// `y [n, rows] = x [n, cols] · Wᵀ` for a K-quant `w`, on quantized activations.
    pub(super) fn kquant_matmul(
        &self,
        k: &Kernels,
        kq: KQuant,
        x: &crate::cuda::CudaTensor,
        w: &GpuPacked,
    ) -> Result<CudaSlice<f32>> {
        let guard = self.quantize_acts(x, w.layout.cols)?;
        let acts = guard.as_ref().expect("quantize_acts fills the scratch");
        let n = x.len() / w.layout.cols;
        let mut y = self.alloc(n * w.layout.rows)?;
        if n == 0 || w.layout.rows == 0 {
            return Ok(y);
        }
        let per_pass = match n {
            1 => 0,
            2..=4 => 1,
            _ => 2,
        };
        let f = &k.kq[kq as usize][per_pass];
        let (rows, cols, n_i) = (w.layout.rows as i32, w.layout.cols as i32, n as i32);
        let mut l = self.stream.launch_builder(f);
        l.arg(&w.codes)
            .arg(&w.d)
            .arg(&acts.qa)
            .arg(&acts.qb)
            .arg(&acts.dx)
            .arg(&acts.e32)
            .arg(&mut y)
            .arg(&rows)
            .arg(&cols)
            .arg(&n_i);
        // One warp per weight row (KQ_WARPS = THREADS / 32 rows per block).
        let cfg = LaunchConfig {
            grid_dim: (w.layout.rows.div_ceil(THREADS as usize / 32) as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { l.launch(cfg) }.map_err(err("packed product (K-quant)"))?;
        Ok(y)
    }

    /// Rows `ids` (checked by the caller) of a K-quant matrix, dequantized as the CPU does.
    pub(super) fn kquant_rows(
        &self,
        k: &Kernels,
        kq: KQuant,
        w: &GpuPacked,
        ids: &CudaSlice<u32>,
        out: &mut CudaSlice<f32>,
        count: usize,
    ) -> Result<()> {
        let (cols, ty) = (w.layout.cols as i32, kq as i32);
        let mut l = self.stream.launch_builder(&k.kq_rows);
        l.arg(&w.codes)
            .arg(&w.d)
            .arg(ids)
            .arg(out)
            .arg(&cols)
            .arg(&ty);
        unsafe { l.launch(self.rows_cfg(count)) }.map_err(err("packed rows (K-quant)"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::kmatrix;
    use super::*;

    const TYPES: [(DType, KQuant); 3] = [
        (DType::Q4K, KQuant::Q4K),
        (DType::Q5K, KQuant::Q5K),
        (DType::Q6K, KQuant::Q6K),
    ];

    /// The GPU layout dequantizes to exactly the CPU's weights (crunch-formats' decode, itself
    /// bit-exact against gguf-py), and holds exactly the file's bytes.
    #[test]
    fn repacked_kquants_equal_the_cpu_dequantization() {
        for (dtype, kq) in TYPES {
            for (rows, cols) in [(1, 256), (5, 768), (3, 1536)] {
                let w = kmatrix(dtype, rows, cols, (rows * cols) as u64 + kq as u64);
                let r = Repacked::new(&w).unwrap();
                assert_eq!(r.layout.kquant, Some(kq));
                assert_eq!(r.device_bytes(), w.bytes().len(), "{dtype:?}");
                assert_eq!(r.codes.len() % 16, 0);
                let cpu = w.dequantize();
                for i in 0..rows {
                    for j in 0..cols {
                        let (a, b) = (r.weight(i, j), cpu[i * cols + j]);
                        assert_eq!(a.to_bits(), b.to_bits(), "{dtype:?} ({i}, {j}): {a} vs {b}");
                    }
                }
            }
        }
    }

    /// A host transcription of `kquant_mm` (units of 64 weights per lane, the chunks and
    /// high bits each unit reads, dp4a over the two activation planes, Q6_K's signed codes,
    /// the scale terms) against `PackedMatrix::matmul`, and against the exact (f64) product of
    /// the CPU's weights with the same quantized activations: checks the layout and indexing
    /// the GPU reads.
    #[test]
    fn kquant_indexing_matches_the_cpu_product() {
        use crunch_kernels::{ActBits, Acts};
        for (dtype, kq) in TYPES {
            let (rows, cols, n) = (6, 1280, 3);
            let w = kmatrix(dtype, rows, cols, 11 + kq as u64);
            let r = Repacked::new(&w).unwrap();
            let x: Vec<f32> = (0..n * cols)
                .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 337.0)
                .collect();
            let mut want = vec![0f32; n * rows];
            w.matmul(&x, n, &mut want);
            let mut acts = Acts::new(ActBits::I16);
            acts.quantize(&x, n, cols);
            let got = emulate(&r, kq, &acts, n);
            let dense = w.dequantize();
            for j in 0..n {
                for i in 0..rows {
                    // Exact product of the CPU's weights with the quantized activations, and
                    // the sum of magnitudes that bounds f32 rounding.
                    let (mut exact, mut mag) = (0f64, 0f64);
                    for c in 0..cols / 32 {
                        let xs = acts.xc(j)[c] as f64;
                        for t in 0..32 {
                            let col = 32 * c + t;
                            let q = 128 * acts.a(j)[col] as i32 + acts.b(j)[col] as i32;
                            let p = dense[i * cols + col] as f64 * xs * q as f64;
                            exact += p;
                            mag += p.abs();
                        }
                    }
                    let (g, c) = (got[j * rows + i], want[j * rows + i]);
                    let what = format!("{dtype:?} [{j}, {i}]");
                    assert!(
                        (g as f64 - exact).abs() <= 1e-6 * mag,
                        "{what}: {g} vs {exact}"
                    );
                    assert!(
                        (c as f64 - exact).abs() <= 1e-5 * mag,
                        "{what}: CPU {c} vs {exact}"
                    );
                }
            }
        }
    }

    /// `kquant_mm` on the host: y [n][rows].
    fn emulate(r: &Repacked, kq: KQuant, acts: &crunch_kernels::Acts, n: usize) -> Vec<f32> {
        let Layout { rows, cols: k, .. } = r.layout;
        let (_, rec, _, scales) = kq.split();
        let (spr, units) = (k / 256, k / 64);
        let word = |b: &[u8], t: usize| {
            u32::from_le_bytes([b[4 * t], b[4 * t + 1], b[4 * t + 2], b[4 * t + 3]])
        };
        let dp4a = |c: u32, a: &[i8]| -> i32 {
            (0..4)
                .map(|t| (c >> (8 * t)) as u8 as i8 as i32 * a[t] as i32)
                .sum()
        };
        // Σ over words w0..w0+nw of the chunk at activation chunk `at` of row j.
        let dot = |c: &[u32; 8], plane: &[i8], at: usize, w0: usize, nw: usize| -> i32 {
            (w0..w0 + nw)
                .map(|t| dp4a(c[t], &plane[32 * at + 4 * t..]))
                .sum()
        };
        let mut y = vec![0f32; n * rows];
        for r_ in 0..rows {
            for j in 0..n {
                // Per lane, then the warp's sum (the order of f32 sums only).
                let mut lanes = [0f32; 32];
                for p in 0..units {
                    let (sb, u) = (p >> 2, p & 3);
                    let blk = r_ * spr + sb;
                    let c = &r.codes[blk * rec..(blk + 1) * rec];
                    let qat = if kq == KQuant::Q5K { 32 } else { 0 } + 32 * u;
                    let q: [u32; 8] = std::array::from_fn(|t| word(&c[qat..], t));
                    let hat = match kq {
                        KQuant::Q4K => 0,
                        KQuant::Q5K => 0,
                        KQuant::Q6K => 128 + 32 * (u >> 1),
                    };
                    let h: [u32; 8] = std::array::from_fn(|t| word(&c[hat..], t));
                    let (mut clo, mut chi) = ([0u32; 8], [0u32; 8]);
                    for t in 0..8 {
                        let (mut a, mut b) = (q[t] & 0x0f0f_0f0f, (q[t] >> 4) & 0x0f0f_0f0f);
                        match kq {
                            KQuant::Q4K => {}
                            KQuant::Q5K => {
                                a |= ((h[t] >> (2 * u)) & 0x0101_0101) << 4;
                                b |= ((h[t] >> (2 * u + 1)) & 0x0101_0101) << 4;
                            }
                            KQuant::Q6K => {
                                let s = 2 * (u & 1);
                                a |= ((h[t] >> s) & 0x0303_0303) << 4;
                                b |= ((h[t] >> (s + 4)) & 0x0303_0303) << 4;
                                a = ((a | 0x8080_8080).wrapping_sub(0x2020_2020)) ^ 0x8080_8080;
                                b = ((b | 0x8080_8080).wrapping_sub(0x2020_2020)) ^ 0x8080_8080;
                            }
                        }
                        clo[t] = a;
                        chi[t] = b;
                    }
                    let s = &r.d[blk * scales..(blk + 1) * scales];
                    // (chunk, d0, d1, m) for the unit's two chunks
                    let parts: [(usize, f32, f32, f32); 2] = if kq == KQuant::Q6K {
                        let lo = 4 * (u >> 1) + (u & 1);
                        let d = f16(s[8]);
                        let sc = |c: usize, i: usize| d * ((s[c] >> (8 * i)) as u8 as i8) as f32;
                        [
                            (lo, sc(lo, 0), sc(lo, 1), 0.0),
                            (lo + 2, sc(lo + 2, 0), sc(lo + 2, 1), 0.0),
                        ]
                    } else {
                        let (d, dmin) = (f16(s[0]), f16(s[1]));
                        let part = |c: usize| {
                            let (sc, mn) = k4_scale_min(s, c);
                            (c, d * sc as f32, 0.0, -(dmin * mn as f32))
                        };
                        [part(2 * u), part(2 * u + 1)]
                    };
                    for ((ch, d0, d1, m), cw) in parts.into_iter().zip([&clo, &chi]) {
                        let at = sb * 8 + ch;
                        let (pa, pb) = (acts.a(j), acts.b(j));
                        let xs = acts.xc(j)[at];
                        let v = if kq == KQuant::Q6K {
                            let i0 = dot(cw, pa, at, 0, 4) * 128 + dot(cw, pb, at, 0, 4);
                            let i1 = dot(cw, pa, at, 4, 4) * 128 + dot(cw, pb, at, 4, 4);
                            d0 * (xs * i0 as f32) + d1 * (xs * i1 as f32)
                        } else {
                            let i = dot(cw, pa, at, 0, 8) * 128 + dot(cw, pb, at, 0, 8);
                            d0 * (xs * i as f32) + m * acts.e32(j)[at]
                        };
                        lanes[p % 32] += v;
                    }
                }
                y[j * rows + r_] = lanes.iter().sum();
            }
        }
        y
    }
}
