//! Tensor-core products for 4-bit codes in groups of 128 (decision 132, `mma.cu`): 1–32
//! activation rows against crunch's int4 g128 weights (symmetric or with offsets), the codes
//! expanded to bf16 in registers, x split into bf16 hi + lo, f32 accumulation. One row reads
//! the f32 input directly (no activation pass); more rows have their hi/lo registers prepared
//! once per product by `mma_split_acts`.

use super::{Gemv, GpuPacked, Layout};
use crate::cuda::{err, Cuda, CudaTensor};
use crate::Result;
use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute_enum};
use cudarc::driver::{CudaFunction, CudaModule, CudaSlice, LaunchConfig, PushKernelArg};
use std::sync::Arc;

pub(super) const SOURCE: &str = include_str!("mma.cu");
/// `MMA_THREADS` and `MMA_WARPS` in mma.cu.
const THREADS: u32 = 256;
const WARPS: usize = 8;

/// The compiled tensor-core kernels, on devices that have them (sm_80+).
mod grouped;

pub(super) struct MmaKernels {
    /// One row: `[symmetric, with offsets]`.
    f: [CudaFunction; 2],
    /// 2–32 rows: `[symmetric, with offsets]` × `[≤ 4, ≤ 8, more, more with one tile]` rows
    /// per pass.
    gemm: [[CudaFunction; 4]; 2],
    split: CudaFunction,
    /// One row, decision 139's variants: `[2, 4 groups per buffer]` × `[symmetric, with
    /// offsets]`, 1–3 matrices per launch.
    wide: [[CudaFunction; 2]; 2],
    /// 2–16 rows, 1–3 matrices per launch (decision 144): `[≤ 4, ≤ 8, ≤ 16 rows]` ×
    /// `[symmetric, with offsets]`.
    grouped: [[CudaFunction; 2]; 3],
    /// 2–32 rows on the int8 tensor cores, symmetric codes, 1–3 matrices per launch (decision
    /// 155, the `cc` variants): `[≤ 4, ≤ 8, ≤ 16, ≤ 32 rows]`, and their activation split.
    int8: [CudaFunction; 4],
    split_i8: CudaFunction,
    /// `feed_rms_norm` and `feed_silu_mul` (`feed.cu`, decision 159): producers that write the
    /// int8 kernels' planes themselves.
    pub(super) feed: [CudaFunction; 2],
    /// Dynamic shared memory a one-row block may use (the device's opt-in maximum).
    smem_max: usize,
    sms: usize,
}

/// Dynamic shared memory of `mma_gemv` for rows of `k` weights: the staged activations
/// (16 bytes per 4 weights, planes padded by 16 bytes), one f32 sum per group, and the warps'
/// partial outputs.
fn smem_bytes(k: usize) -> usize {
    8 * (k / 32 + 1) * 16 + k / 128 * 4 + WARPS * 16 * 4
}

impl MmaKernels {
    pub(super) fn new(cuda: &Cuda, module: &Arc<CudaModule>) -> Result<Option<Self>> {
        let ctx = cuda.stream.context();
        let (major, _) = ctx
            .compute_capability()
            .map_err(err("compute capability"))?;
        if major < 8 {
            return Ok(None);
        }
        let attr = |a| ctx.attribute(a).map_err(err("device attribute"));
        let smem_max =
            attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?;
        let sms = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        let f = |n: &str| module.load_function(n).map_err(err("loading a kernel"));
        // The one-row kernels stage x in dynamic shared memory: rows of 14336 weights take
        // 57 KiB, above the default 48 KiB, so they may use what the device allows beyond
        // their static shared memory (none).
        let staging = |n: &str| -> Result<(CudaFunction, usize)> {
            let f = f(n)?;
            let fixed = f
                .get_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)
                .map_err(err("shared memory size"))?;
            let dynamic = smem_max - fixed;
            f.set_attribute(
                CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                dynamic,
            )
            .map_err(err("shared memory limit"))?;
            Ok((f, dynamic as usize))
        };
        let set = |p: &str| -> Result<[CudaFunction; 4]> {
            Ok([
                f(&format!("{p}_n1"))?,
                f(&format!("{p}_n2"))?,
                f(&format!("{p}_n4"))?,
                f(&format!("{p}_n4w"))?,
            ])
        };
        let (sym, sym_smem) = staging("mma_u4")?;
        let (asym, asym_smem) = staging("mma_u4m")?;
        let mut smem_max = sym_smem.min(asym_smem);
        let mut wide = |n: &str| -> Result<CudaFunction> {
            let (f, smem) = staging(n)?;
            smem_max = smem_max.min(smem);
            Ok(f)
        };
        let wide = [
            [wide("mma_u4_w2")?, wide("mma_u4m_w2")?],
            [wide("mma_u4_w4")?, wide("mma_u4m_w4")?],
        ];
        Ok(Some(MmaKernels {
            f: [sym, asym],
            gemm: [set("mma_u4")?, set("mma_u4m")?],
            split: f("mma_split_acts")?,
            wide,
            grouped: [
                [f("mma_u4_g4")?, f("mma_u4m_g4")?],
                [f("mma_u4_g8")?, f("mma_u4m_g8")?],
                [f("mma_u4_g16")?, f("mma_u4m_g16")?],
            ],
            int8: [
                f("mma_i8_g4")?,
                f("mma_i8x_g8")?,
                f("mma_i8x_g16")?,
                f("mma_i8x_g32")?,
            ],
            split_i8: f("mma_split_i8")?,
            feed: [f("feed_rms_norm")?, f("feed_silu_mul")?],
            smem_max,
            sms: sms as usize,
        }))
    }

    /// Whether the tensor-core kernel reads `layout` (int4 in groups of 128, activations that
    /// fit in shared memory).
    fn reads(&self, layout: &Layout) -> bool {
        layout.kquant.is_none()
            && layout.bits == 4
            && layout.group == 128
            && layout.rows > 0
            && smem_bytes(layout.cols) <= self.smem_max
    }
}

/// Most activation rows the tensor-core kernels take (issue 17's batch range); more go to the
/// dp4a kernels.
pub(super) const MAX_ROWS: usize = 32;

/// Most activation rows `mma_gemm_wide` takes (4 per n-tile of the mma: its 8 columns are 4
/// rows' hi and lo; kernels for 1, 2 and 4 n-tiles).
pub(super) const GROUPED_ROWS: usize = 16;

impl Cuda {
    /// `y [n, rows] = x [n, cols] · Wᵀ` on the tensor cores, or `Ok(None)` when they do not
    /// apply (not int4 g128, more than 32 rows, a misaligned input).
    pub(super) fn mma_matmul(
        &self,
        mk: &MmaKernels,
        x: &CudaTensor,
        w: &GpuPacked,
    ) -> Result<Option<CudaSlice<f32>>> {
        let Some(xv) = x.f32_view() else {
            return Ok(None);
        };
        let (rows, cols) = (w.layout.rows, w.layout.cols);
        // Rows of x are read as float4 (16-byte aligned: cudarc's buffers are).
        if !mk.reads(&w.layout)
            || !xv.len().is_multiple_of(cols)
            || !(1..=MAX_ROWS).contains(&(xv.len() / cols))
            || !x.offset.is_multiple_of(4)
        {
            return Ok(None);
        }
        let n = xv.len() / cols;
        let mut y = self.alloc(n * rows)?;
        let has_m = w.m.is_some() as usize;
        let bf16 = (self.precision == crate::Precision::Bf16) as i32;
        let (rows_i, cols_i, n_i) = (rows as i32, cols as i32, n as i32);
        // One wave of blocks, each taking tiles of weight rows in turn.
        let wave = |f: &CudaFunction, smem: usize, items: usize| -> Result<u32> {
            let per_sm = f
                .occupancy_max_active_blocks_per_multiprocessor(THREADS, smem, None)
                .map_err(err("occupancy"))?
                .max(1) as usize;
            Ok(items.min(per_sm * mk.sms) as u32)
        };
        if n == 1 {
            match self.gemv {
                Gemv::Wide { groups, .. } => {
                    return self.mma_gemv_wide(mk, &xv, &[w], groups).map(Some)
                }
                Gemv::Cc { .. } => return self.gemv_one_row(mk, &xv, &[w], 2).map(Some),
                Gemv::Reference => {}
            }
            let f = &mk.f[has_m];
            let smem = smem_bytes(cols);
            let cfg = LaunchConfig {
                grid_dim: (wave(f, smem, rows.div_ceil(16))?, 1, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: smem as u32,
            };
            let mut l = w.launch(&self.stream, f);
            l.arg(&xv).arg(&mut y).arg(&rows_i).arg(&cols_i).arg(&bf16);
            unsafe { l.launch(cfg) }.map_err(err("packed product (mma)"))?;
            return Ok(Some(y));
        }
        if n <= GROUPED_ROWS && matches!(self.gemv, Gemv::Wide { .. } | Gemv::Cc { .. }) {
            return self
                .mma_gemm_grouped(mk, &xv, &[w], n, x.feed.as_deref())
                .map(Some);
        }
        if self.int8_rows(&[w]) {
            return self
                .mma_gemm_int8(mk, &xv, &[w], n, x.feed.as_deref())
                .map(Some);
        }
        // hi/lo B registers of every row, [⌈n/4⌉][8][cols/32][8] pairs, and Σx per group.
        let ntiles = n.div_ceil(4);
        // SAFETY: mma_split_acts writes every pair of the n rows and every group sum; the
        // padding rows' pairs are multiplied into mma columns that are never read.
        let (frag, gsum) = self.split_acts(mk, &xv, n, cols)?;
        // (kernel, n-tiles per pass, tiles of 16 rows per block)
        // Two tiles per block when that still gives every SM two blocks (fewer B reads per
        // weight), else one (more codes in flight).
        let (which, nt, mt) = match n {
            ..=4 => (0, 1, 1),
            5..=8 => (1, 2, 1),
            _ if rows.div_ceil(32) >= 2 * mk.sms => (2, 4, 2),
            _ => (3, 4, 1),
        };
        let f = &mk.gemm[has_m][which];
        let items = rows.div_ceil(16 * mt) * ntiles.div_ceil(nt);
        let cfg = LaunchConfig {
            grid_dim: (wave(f, 0, items)?, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = w.launch(&self.stream, f);
        l.arg(&frag)
            .arg(&gsum)
            .arg(&mut y)
            .arg(&rows_i)
            .arg(&cols_i)
            .arg(&n_i);
        unsafe { l.launch(cfg) }.map_err(err("packed product (mma, rows)"))?;
        Ok(Some(y))
    }
}

/// Most matrices one `mma_u4*_w*` launch takes (its three pointer sets).
pub(super) const WIDE_MATS: usize = 3;

impl Cuda {
    /// `[x · W₀ᵀ | x · W₁ᵀ | …]` for one activation row `x` and 1–3 int4 g128 matrices of its
    /// width (all symmetric or all with offsets; the caller checks with
    /// [`MmaKernels::groupable`]) in one launch of the wide kernel with `groups` (2 or 4)
    /// groups per register buffer: the outputs back to back, matrix j's at the sum of the
    /// earlier matrices' rows.
    pub(super) fn mma_gemv_wide(
        &self,
        mk: &MmaKernels,
        xv: &cudarc::driver::CudaView<'_, f32>,
        ws: &[&GpuPacked],
        groups: u8,
    ) -> Result<CudaSlice<f32>> {
        debug_assert!((1..=WIDE_MATS).contains(&ws.len()));
        let cols = ws[0].layout.cols;
        let has_m = ws[0].m.is_some() as usize;
        let mut r = [0i32; WIDE_MATS];
        for (ri, w) in r.iter_mut().zip(ws) {
            *ri = w.layout.rows as i32;
        }
        let total: usize = ws.iter().map(|w| w.layout.rows).sum();
        let tiles: usize = ws.iter().map(|w| w.layout.rows.div_ceil(16)).sum();
        let mut y = self.alloc(total)?;
        let f = &mk.wide[usize::from(groups == 4)][has_m];
        let smem = smem_bytes(cols);
        let per_sm = f
            .occupancy_max_active_blocks_per_multiprocessor(THREADS, smem, None)
            .map_err(err("occupancy"))?
            .max(1) as usize;
        let cfg = LaunchConfig {
            grid_dim: (tiles.min(per_sm * mk.sms) as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        let bf16 = (self.precision == crate::Precision::Bf16) as i32;
        let cols_i = cols as i32;
        // Missing matrices: the first one's buffers again, with 0 rows (never read).
        let mut l = self.stream.launch_builder(f);
        for j in 0..WIDE_MATS {
            let w = ws.get(j).unwrap_or(&ws[0]);
            l.arg(&w.codes).arg(&w.d).arg(w.m.as_ref().unwrap_or(&w.d));
        }
        l.arg(xv).arg(&mut y);
        for ri in &r {
            l.arg(ri);
        }
        l.arg(&cols_i).arg(&bf16);
        unsafe { l.launch(cfg) }.map_err(err("packed product (mma, wide)"))?;
        Ok(y)
    }
}

impl MmaKernels {
    /// Whether `ws` can run as one launch of the wide kernel: 1–3 matrices the tensor-core
    /// kernels read, of one width, all symmetric or all with offsets.
    pub(super) fn groupable(&self, ws: &[&GpuPacked]) -> bool {
        (1..=WIDE_MATS).contains(&ws.len())
            && ws.iter().all(|w| {
                self.reads(&w.layout)
                    && w.layout.cols == ws[0].layout.cols
                    && w.m.is_some() == ws[0].m.is_some()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::matrix;
    use super::super::Repacked;
    use super::*;
    use crunch_kernels::DType;
    use half::bf16;

    fn pair(lo: f32, hi: f32) -> u32 {
        bf16::from_f32(lo).to_bits() as u32 | (bf16::from_f32(hi).to_bits() as u32) << 16
    }
    fn low(p: u32) -> f32 {
        f32::from_bits(p << 16)
    }
    fn high(p: u32) -> f32 {
        f32::from_bits(p & 0xffff_0000)
    }
    fn halves(p: u32) -> [f32; 2] {
        [low(p), high(p)]
    }
    /// `nibbles_bf16<off>`: the lop3 with 0x4300 and the bf16 fma with 1 and −(128 + off).
    fn nibbles(v: u32, off: u32) -> u32 {
        let b = (v & 0x000f_000f) | 0x4300_4300;
        let neg = if off == 8 { 0xc308 } else { 0xc300 };
        let sub = |h: u32| {
            let r = bf16::from_bits(h as u16).to_f32() * bf16::from_bits(0x3f80).to_f32()
                + bf16::from_bits(neg).to_f32();
            bf16::from_f32(r).to_bits() as u32
        };
        sub(b & 0xffff) | sub(b >> 16) << 16
    }

    /// x split as the kernels split it: per float4 the B registers (hi b0, hi b1, lo b0, lo b1)
    /// and Σ(hi + lo).
    fn split(f: [f32; 4], bf16_mode: bool) -> ([u32; 4], f32) {
        let f = if bf16_mode {
            f.map(|v| bf16::from_f32(v).to_f32())
        } else {
            f
        };
        let (h0, h1) = (pair(f[0], f[2]), pair(f[1], f[3]));
        let l0 = pair(f[0] - low(h0), f[2] - high(h0));
        let l1 = pair(f[1] - low(h1), f[3] - high(h1));
        let s = (low(h0) + low(l0))
            + (high(h0) + high(l0))
            + (low(h1) + low(l1))
            + (high(h1) + high(l1));
        ([h0, h1, l0, l1], s)
    }

    /// Where the kernels read the B registers of a lane in quad row `g` for n-tile `nt`,
    /// step `s`, chunk `c` (the lane's own chunk c0 + t).
    enum BSource {
        /// `mma_gemv`'s shared memory: `[s][chunk]` planes of `p` entries.
        Staged { act: Vec<[u32; 4]>, p: usize },
        /// `mma_split_acts`'s buffer: `[n-tile][s][chunk][8]` pairs.
        Global { frag: Vec<[u32; 2]>, chunks: usize },
    }

    impl BSource {
        fn get(&self, g: usize, nt: usize, s: usize, c: usize) -> [u32; 2] {
            match self {
                BSource::Staged { act, p } => {
                    let e = act[s * p + c];
                    [e[2 * (g & 1)], e[2 * (g & 1) + 1]]
                }
                BSource::Global { frag, chunks } => frag[((nt * 8 + s) * chunks + c) * 8 + g],
            }
        }
    }

    /// The B source and group sums of `x [n][k]` as `mma_gemv` (n = 1) or `mma_split_acts`
    /// (n > 1) lay them out.
    fn stage(x: &[f32], n: usize, k: usize, bf16_mode: bool) -> (BSource, Vec<f32>) {
        let (chunks, groups) = (k / 32, k / 128);
        let mut gsum = vec![0f32; n * groups];
        if n == 1 {
            let p = chunks + 1;
            let mut act = vec![[0u32; 4]; 8 * p];
            for i in 0..k / 4 {
                let (regs, sum) = split(x[4 * i..4 * i + 4].try_into().unwrap(), bf16_mode);
                act[(i & 7) * p + (i >> 3)] = regs;
                gsum[i >> 5] += sum;
            }
            return (BSource::Staged { act, p }, gsum);
        }
        let mut frag = vec![[0u32; 2]; n.div_ceil(4) * 8 * chunks * 8];
        for j in 0..n {
            for i in 0..k / 4 {
                let at = j * k + 4 * i;
                let (regs, sum) = split(x[at..at + 4].try_into().unwrap(), bf16_mode);
                let e = (((j >> 2) * 8 + (i & 7)) * chunks + (i >> 3)) * 8 + 2 * (j & 3);
                frag[e] = [regs[0], regs[1]];
                frag[e + 1] = [regs[2], regs[3]];
                gsum[j * groups + (i >> 5)] += sum;
            }
        }
        (BSource::Global { frag, chunks }, gsum)
    }

    /// A transcription of `mma_gemv` (n = 1) and `mma_gemm` (n > 1) on the host: the B
    /// layouts, each lane's A and B registers placed into the m16n8k16 fragments as PTX
    /// defines them, which lane holds which output, and the scale terms. (The warps' split of
    /// the groups and the passes over n-tiles only change the order of f32 sums.) y [n][rows].
    fn emulate(r: &Repacked, x: &[f32], n: usize, bf16_mode: bool) -> Vec<f32> {
        emulate_tiles(r, x, n, bf16_mode, 0..r.layout.rows.div_ceil(16))
    }

    /// [`emulate`] for the tiles of 16 weight rows in `tiles` only (other rows stay 0).
    pub(super) fn emulate_tiles(
        r: &Repacked,
        x: &[f32],
        n: usize,
        bf16_mode: bool,
        tiles: std::ops::Range<usize>,
    ) -> Vec<f32> {
        let Layout { rows, cols: k, .. } = r.layout;
        let (c_n, g_n) = (k / 32, k / 128);
        let h = |b: u16| half::f16::from_bits(b).to_f32();
        let (bsrc, gsum) = stage(x, n, k, bf16_mode);
        let words: Vec<u32> = r
            .codes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let off = if r.m.is_some() { 0 } else { 8 };
        let mut y = vec![0f32; n * rows];
        for tile in tiles {
            let row = |g: usize, e: usize| (tile * 16 + g + 8 * e).min(rows - 1);
            for nt in 0..n.div_ceil(4) {
                for gg in 0..g_n {
                    let c0 = 4 * gg;
                    // acc[parity][16 rows][8 columns] (mma_gemv's two accumulators)
                    let mut acc = [[[0f32; 8]; 16]; 2];
                    for s in 0..8 {
                        let (q, sh) = (s & 3, 4 * (s >> 2));
                        let mut a = [[0f32; 16]; 16];
                        let mut b = [[0f32; 8]; 16];
                        for lane in 0..32 {
                            let (g, t) = (lane >> 2, lane & 3);
                            let wd = |e: usize| words[(row(g, e) * c_n + c0 + t) * 4 + q];
                            let regs = [
                                nibbles(wd(0) >> sh, off),
                                nibbles(wd(1) >> sh, off),
                                nibbles(wd(0) >> (8 + sh), off),
                                nibbles(wd(1) >> (8 + sh), off),
                            ];
                            // a0: (g, 2t..), a1: (g + 8, 2t..), a2: (g, 2t + 8..), a3: (g + 8, 2t + 8..)
                            for (i, reg) in regs.iter().enumerate() {
                                let (rr, kk) = (g + 8 * (i & 1), 2 * t + 8 * (i >> 1));
                                let [v0, v1] = halves(*reg);
                                a[rr][kk] = v0;
                                a[rr][kk + 1] = v1;
                            }
                            // b0: (2t.., column g), b1: (2t + 8.., column g)
                            for (i, reg) in bsrc.get(g, nt, s, c0 + t).iter().enumerate() {
                                let [v0, v1] = halves(*reg);
                                b[2 * t + 8 * i][g] = v0;
                                b[2 * t + 8 * i + 1][g] = v1;
                            }
                        }
                        for i in 0..16 {
                            for col in 0..8 {
                                acc[s & 1][i][col] +=
                                    (0..16).map(|kk| a[i][kk] * b[kk][col]).sum::<f32>();
                            }
                        }
                    }
                    // Lane (g, t) holds columns 2t, 2t + 1 (row j = 4·nt + t's hi and lo) of
                    // rows g (d0, d1) and g + 8 (d2, d3).
                    for lane in 0..32 {
                        let (g, t) = (lane >> 2, lane & 3);
                        let j = 4 * nt + t;
                        if j >= n {
                            continue;
                        }
                        for e in 0..2 {
                            let rr = tile * 16 + g + 8 * e;
                            if rr >= rows {
                                continue;
                            }
                            let gi = rr * g_n + gg;
                            let v = (acc[0][g + 8 * e][2 * t] + acc[0][g + 8 * e][2 * t + 1])
                                + (acc[1][g + 8 * e][2 * t] + acc[1][g + 8 * e][2 * t + 1]);
                            let out = &mut y[j * rows + rr];
                            *out += h(r.d[gi]) * v;
                            if let Some(m) = &r.m {
                                *out += h(m[gi]) * gsum[j * g_n + gg];
                            }
                        }
                    }
                }
            }
        }
        y
    }

    #[test]
    fn magic_constants() {
        assert_eq!(bf16::from_bits(0x4300).to_f32(), 128.0);
        assert_eq!(bf16::from_bits(0x430f).to_f32(), 143.0);
        assert_eq!(bf16::from_bits(0xc308).to_f32(), -136.0);
        assert_eq!(bf16::from_bits(0xc300).to_f32(), -128.0);
        assert_eq!(halves(nibbles(0x0007_000f, 8)), [7.0, -1.0]);
        assert_eq!(halves(nibbles(0x0000_0003, 0)), [3.0, 0.0]);
    }

    /// The host transcription of the tensor-core kernels' indexing against a direct f64 dot
    /// product with the CPU's dequantized weights (relative 1e-5 of Σ|w·x|) and against
    /// `PackedMatrix::matmul` (1e-3 of the largest output, the GPU checks' tolerance): int4
    /// g128 symmetric and with offsets, 1, 2, 5 and 9 activation rows (n-tile tails), a row
    /// tail, fewer groups than warps and more, f32 and bf16 activations.
    #[test]
    fn mma_indexing_matches_the_cpu_product() {
        for (dtype, rows, cols) in [
            (DType::Q4_0, 21, 384),
            (DType::Q4_0, 40, 1280),
            (DType::Q4_1, 17, 1152),
            (DType::Q4_1, 33, 256),
        ] {
            let w = matrix(dtype, rows, cols, 4, (rows * cols) as u64);
            let r = Repacked::new(&w).unwrap();
            assert_eq!(r.layout.group, 128);
            let dense = w.dequantize();
            for (n, bf16_mode) in [(1, false), (1, true), (2, false), (5, true), (9, false)] {
                let mut x: Vec<f32> = (0..n * cols)
                    .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 337.0 + 0.3)
                    .collect();
                if bf16_mode {
                    x.iter_mut().for_each(|v| *v = bf16::from_f32(*v).to_f32());
                }
                let got = emulate(&r, &x, n, bf16_mode);
                let mut cpu = vec![0f32; n * rows];
                w.matmul(&x, n, &mut cpu);
                let scale = cpu.iter().fold(0f32, |m, v| m.max(v.abs()));
                for j in 0..n {
                    let xj = &x[j * cols..(j + 1) * cols];
                    for i in 0..rows {
                        let wr = &dense[i * cols..(i + 1) * cols];
                        let prods = wr.iter().zip(xj).map(|(&a, &b)| a as f64 * b as f64);
                        let exact: f64 = prods.clone().sum();
                        let mag: f64 = prods.map(f64::abs).sum();
                        let what =
                            format!("{dtype:?} {rows}x{cols} n {n} bf16 {bf16_mode} [{j}, {i}]");
                        let g = got[j * rows + i];
                        assert!(
                            (g as f64 - exact).abs() <= 1e-5 * mag,
                            "{what}: {g} vs {exact}"
                        );
                        let c = cpu[j * rows + i];
                        assert!((g - c).abs() <= 1e-3 * scale, "{what}: {g} vs CPU {c}");
                    }
                }
            }
        }
    }

    /// `double_buffered`'s control flow for one warp's groups `gb..ge` with `u` groups per
    /// buffer: the groups it multiplies, in order, and the groups each load requests (clamped
    /// to the last group, as `mma_load` does).
    fn double_buffered_order(
        gb: usize,
        ge: usize,
        g_n: usize,
        u: usize,
    ) -> (Vec<usize>, Vec<usize>) {
        let (mut used, mut loaded) = (Vec::new(), Vec::new());
        let load = |from: usize, loaded: &mut Vec<usize>| -> Vec<usize> {
            let v: Vec<usize> = (0..u).map(|i| (from + i).min(g_n - 1)).collect();
            loaded.extend(&v);
            v
        };
        // The caller's first loads (first_loads), then the loop.
        let mut wa = if gb < ge {
            load(gb, &mut loaded)
        } else {
            vec![]
        };
        let mut gs = gb;
        while gs < ge {
            let wb = if gs + u < ge {
                load(gs + u, &mut loaded)
            } else {
                vec![]
            };
            for (i, &held) in wa.iter().enumerate() {
                if gs + i < ge {
                    assert_eq!(held, gs + i, "buffer a holds group {}", gs + i);
                    used.push(gs + i);
                }
            }
            if gs + u < ge {
                if gs + 2 * u < ge {
                    wa = load(gs + 2 * u, &mut loaded);
                }
                for (i, &held) in wb.iter().enumerate() {
                    if gs + u + i < ge {
                        assert_eq!(held, gs + u + i, "buffer b holds group {}", gs + u + i);
                        used.push(gs + u + i);
                    }
                }
            }
            gs += 2 * u;
        }
        (used, loaded)
    }

    /// `mma_pick`: the matrix, its tile and the index of its row 0 in y for global tile `tile`
    /// of matrices of `rows` rows.
    pub(super) fn pick(tile: usize, rows: &[usize; 3]) -> (usize, usize, usize) {
        let t0 = rows[0].div_ceil(16);
        let t1 = t0 + rows[1].div_ceil(16);
        if tile < t0 {
            (0, tile, 0)
        } else if tile < t1 {
            (1, tile - t0, rows[0])
        } else {
            (2, tile - t1, rows[0] + rows[1])
        }
    }

    /// Every warp of the wide kernels (2 and 4 groups per buffer) multiplies each group of its
    /// range exactly once, in order, from the buffer that holds it; loads stay inside the row.
    #[test]
    fn wide_buffers_cover_each_group_once() {
        for g_n in [1usize, 2, 7, 8, 9, 32, 33, 112] {
            for u in [2, 4] {
                let per = g_n.div_ceil(WARPS);
                let mut all = Vec::new();
                for warp in 0..WARPS {
                    let gb = (warp * per).min(g_n);
                    let ge = (gb + per).min(g_n);
                    let (used, loaded) = double_buffered_order(gb, ge, g_n, u);
                    assert_eq!(
                        used,
                        (gb..ge).collect::<Vec<_>>(),
                        "G {g_n} U {u} warp {warp}"
                    );
                    assert!(loaded.iter().all(|&g| g < g_n));
                    all.extend(used);
                }
                assert_eq!(all, (0..g_n).collect::<Vec<_>>(), "G {g_n} U {u}");
            }
        }
    }

    /// A host transcription of the wide kernels (`mma_gemv_wide`): tiles of up to three
    /// matrices numbered one after the other (`mma_pick`), each tile's rows computed as
    /// `mma_gemv` computes them (the same `mma_group`), written at the matrix's place in y;
    /// every output written exactly once, and equal to each matrix's `PackedMatrix::matmul`
    /// within 1e-3 of the largest output (the GPU checks' tolerance) and to an f64 dot within
    /// 1e-5 of Σ|w·x|. Shapes with row tails (q/k/v- and gate/up-like), symmetric and with
    /// offsets, f32 and bf16 activations, one and two matrices too.
    #[test]
    fn wide_indexing_matches_the_cpu_product() {
        for (dtype, shapes, cols) in [
            (DType::Q4_0, vec![40, 9, 9], 512),
            (DType::Q4_0, vec![33, 33], 1152),
            (DType::Q4_1, vec![17, 5, 16], 256),
            (DType::Q4_0, vec![21], 384),
        ] {
            let ws: Vec<_> = shapes
                .iter()
                .enumerate()
                .map(|(i, &rows)| matrix(dtype, rows, cols, 4, (rows * cols + i) as u64))
                .collect();
            let reps: Vec<Repacked> = ws.iter().map(|w| Repacked::new(w).unwrap()).collect();
            let mut rows = [0usize; 3];
            rows[..shapes.len()].copy_from_slice(&shapes);
            let total: usize = shapes.iter().sum();
            let tiles: usize = shapes.iter().map(|r| r.div_ceil(16)).sum();
            for bf16_mode in [false, true] {
                let mut x: Vec<f32> = (0..cols)
                    .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 337.0 + 0.3)
                    .collect();
                if bf16_mode {
                    x.iter_mut().for_each(|v| *v = bf16::from_f32(*v).to_f32());
                }
                let mut y = vec![f32::NAN; total];
                let mut written = vec![0usize; total];
                for tile in 0..tiles {
                    let (j, lt, base) = pick(tile, &rows);
                    let part = emulate_tiles(&reps[j], &x, 1, bf16_mode, lt..lt + 1);
                    for lr in 0..16 {
                        let r = lt * 16 + lr;
                        if r < rows[j] {
                            y[base + r] = part[r];
                            written[base + r] += 1;
                        }
                    }
                }
                assert!(written.iter().all(|&c| c == 1), "{shapes:?}: {written:?}");
                let mut base = 0;
                for (w, &rws) in ws.iter().zip(&shapes) {
                    let mut cpu = vec![0f32; rws];
                    w.matmul(&x, 1, &mut cpu);
                    let dense = w.dequantize();
                    let scale = cpu.iter().fold(0f32, |m, v| m.max(v.abs()));
                    for i in 0..rws {
                        let g = y[base + i];
                        let what = format!("{dtype:?} {shapes:?} bf16 {bf16_mode} row {i}");
                        assert!(
                            (g - cpu[i]).abs() <= 1e-3 * scale,
                            "{what}: {g} vs {}",
                            cpu[i]
                        );
                        let prods = dense[i * cols..(i + 1) * cols]
                            .iter()
                            .zip(&x)
                            .map(|(&a, &b)| a as f64 * b as f64);
                        let exact: f64 = prods.clone().sum();
                        let mag: f64 = prods.map(f64::abs).sum();
                        assert!(
                            (g as f64 - exact).abs() <= 1e-5 * mag,
                            "{what}: {g} vs {exact}"
                        );
                    }
                    base += rws;
                }
            }
        }
    }

    #[test]
    fn gemv_names_round_trip() {
        for g in Gemv::ALL {
            assert_eq!(Gemv::parse(&g.name()).unwrap(), g);
        }
        let e = Gemv::parse("wide8").unwrap_err().to_string();
        assert!(
            e.contains("CRUNCH_GEMV") && e.contains("wide4+grouped"),
            "{e}"
        );
    }
}
