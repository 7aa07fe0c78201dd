//! Tensor-core products for 4-bit codes in groups of 128 (decision 132, `mma.cu`): one
//! activation row against crunch's int4 g128 weights (symmetric or with offsets), the codes
//! expanded to bf16 in registers, x split into bf16 hi + lo, f32 accumulation. No activation
//! quantization pass: the kernel reads the f32 input directly.

use super::{GpuPacked, Layout};
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
pub(super) struct MmaKernels {
    /// `[symmetric, with offsets]`.
    f: [CudaFunction; 2],
    /// Shared memory a block may use (the device's opt-in maximum).
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
        let f = |n: &str| -> Result<CudaFunction> {
            let f = module.load_function(n).map_err(err("loading a kernel"))?;
            // Rows of 14336 weights stage 57 KiB of activations: above the default 48 KiB.
            f.set_attribute(
                CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                smem_max,
            )
            .map_err(err("shared memory limit"))?;
            Ok(f)
        };
        Ok(Some(MmaKernels {
            f: [f("mma_u4")?, f("mma_u4m")?],
            smem_max: smem_max as usize,
            sms: sms as usize,
        }))
    }

    /// Whether the tensor-core kernel reads `layout` (int4 in groups of 128, activations that
    /// fit in shared memory).
    fn reads(&self, layout: &Layout) -> bool {
        layout.bits == 4
            && layout.group == 128
            && layout.rows > 0
            && smem_bytes(layout.cols) <= self.smem_max
    }
}

impl Cuda {
    /// `y [rows] = W · x` for one activation row on the tensor cores, or `Ok(None)` when the
    /// kernel does not apply (not int4 g128, more than one row, a misaligned input, no kernels).
    pub(super) fn mma_matmul(
        &self,
        mk: &MmaKernels,
        x: &CudaTensor,
        w: &GpuPacked,
    ) -> Result<Option<CudaSlice<f32>>> {
        if !mk.reads(&w.layout) {
            return Ok(None);
        }
        let Some(xv) = x.f32_view() else {
            return Ok(None);
        };
        // One row, read as float4 (16-byte aligned: cudarc's buffers are).
        if xv.len() != w.layout.cols || !x.offset.is_multiple_of(4) {
            return Ok(None);
        }
        let mut y = self.alloc(w.layout.rows)?;
        let f = &mk.f[w.m.is_some() as usize];
        let m = w.m.as_ref().unwrap_or(&w.d); // not read without offsets
        let (rows, cols, bf16) = (
            w.layout.rows as i32,
            w.layout.cols as i32,
            (self.precision == crate::Precision::Bf16) as i32,
        );
        // One wave of blocks, each taking tiles of 16 rows in turn.
        let smem = smem_bytes(w.layout.cols);
        let per_sm = f
            .occupancy_max_active_blocks_per_multiprocessor(THREADS, smem, None)
            .map_err(err("occupancy"))?
            .max(1) as usize;
        let blocks = w.layout.rows.div_ceil(16).min(per_sm * mk.sms);
        let mut l = self.stream.launch_builder(f);
        l.arg(&w.codes)
            .arg(&w.d)
            .arg(m)
            .arg(&xv)
            .arg(&mut y)
            .arg(&rows)
            .arg(&cols)
            .arg(&bf16);
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        unsafe { l.launch(cfg) }.map_err(err("packed product (mma)"))?;
        Ok(Some(y))
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

    /// A transcription of `mma_gemv` on the host: the staging layout, each lane's A and B
    /// registers placed into the m16n8k16 fragments as PTX defines them, the scale terms and
    /// the warps' sum. Returns y for one activation row.
    fn emulate(r: &Repacked, x: &[f32], bf16_mode: bool) -> Vec<f32> {
        let Layout { rows, cols: k, .. } = r.layout;
        let (c_n, g_n, p) = (k / 32, k / 128, k / 32 + 1);
        let h = |b: u16| half::f16::from_bits(b).to_f32();
        // Staging.
        let mut act = vec![[0u32; 4]; 8 * p];
        let mut gsum = vec![0f32; g_n];
        for i in 0..k / 4 {
            let mut f = [x[4 * i], x[4 * i + 1], x[4 * i + 2], x[4 * i + 3]];
            if bf16_mode {
                f = f.map(|v| bf16::from_f32(v).to_f32());
            }
            let (h0, h1) = (pair(f[0], f[2]), pair(f[1], f[3]));
            let l0 = pair(f[0] - low(h0), f[2] - high(h0));
            let l1 = pair(f[1] - low(h1), f[3] - high(h1));
            act[(i & 7) * p + (i >> 3)] = [h0, h1, l0, l1];
            gsum[i >> 5] += (low(h0) + low(l0))
                + (high(h0) + high(l0))
                + (low(h1) + low(l1))
                + (high(h1) + high(l1));
        }
        let words: Vec<u32> = r
            .codes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let off = if r.m.is_some() { 0 } else { 8 };
        let per = g_n.div_ceil(WARPS);
        let mut y = vec![0f32; rows];
        for tile in 0..rows.div_ceil(16) {
            let mut red = vec![0f32; WARPS * 16];
            for warp in 0..WARPS {
                let gb = (warp * per).min(g_n);
                let ge = (gb + per).min(g_n);
                let row = |g: usize, e: usize| (tile * 16 + g + 8 * e).min(rows - 1);
                for (gg, &sx) in gsum.iter().enumerate().take(ge).skip(gb) {
                    let c0 = 4 * gg;
                    {
                        // acc[parity][16 rows][8 columns]
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
                                let st = act[s * p + c0 + t];
                                let (b0, b1) = (st[2 * (g & 1)], st[2 * (g & 1) + 1]);
                                for (i, reg) in [b0, b1].iter().enumerate() {
                                    let [v0, v1] = halves(*reg);
                                    b[2 * t + 8 * i][g] = v0;
                                    b[2 * t + 8 * i + 1][g] = v1;
                                }
                            }
                            for i in 0..16 {
                                for n in 0..8 {
                                    acc[s & 1][i][n] +=
                                        (0..16).map(|kk| a[i][kk] * b[kk][n]).sum::<f32>();
                                }
                            }
                        }
                        // Lane (g, 0): d0, d1 = columns 0, 1 of rows g; d2, d3 of rows g + 8.
                        for g in 0..8 {
                            for e in 0..2 {
                                let rr = row(g, e);
                                let gi = rr * g_n + gg;
                                let v = (acc[0][g + 8 * e][0] + acc[0][g + 8 * e][1])
                                    + (acc[1][g + 8 * e][0] + acc[1][g + 8 * e][1]);
                                let slot = &mut red[warp * 16 + g + 8 * e];
                                *slot += h(r.d[gi]) * v;
                                if let Some(m) = &r.m {
                                    *slot += h(m[gi]) * sx;
                                }
                            }
                        }
                    }
                }
            }
            for i in 0..16 {
                let rr = tile * 16 + i;
                if rr < rows {
                    y[rr] = (0..WARPS).map(|w| red[w * 16 + i]).sum();
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

    /// The host transcription of the tensor-core kernel's indexing against a direct f64 dot
    /// product with the CPU's dequantized weights (relative 1e-5 of Σ|w·x|) and against
    /// `PackedMatrix::matmul` (1e-3 of the largest output, the GPU checks' tolerance): int4
    /// g128 symmetric and with offsets, a row tail, fewer groups
    /// than warps and more, f32 and bf16 activations.
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
            for bf16_mode in [false, true] {
                let mut x: Vec<f32> = (0..cols)
                    .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 337.0 + 0.3)
                    .collect();
                if bf16_mode {
                    x.iter_mut().for_each(|v| *v = bf16::from_f32(*v).to_f32());
                }
                let got = emulate(&r, &x, bf16_mode);
                let mut cpu = vec![0f32; rows];
                w.matmul(&x, 1, &mut cpu);
                let scale = cpu.iter().fold(0f32, |m, v| m.max(v.abs()));
                for i in 0..rows {
                    let wr = &dense[i * cols..(i + 1) * cols];
                    let exact: f64 = wr.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
                    let mag: f64 = wr
                        .iter()
                        .zip(&x)
                        .map(|(&a, &b)| (a as f64 * b as f64).abs())
                        .sum();
                    let what = format!("{dtype:?} {rows}x{cols} bf16 {bf16_mode} row {i}");
                    assert!(
                        (got[i] as f64 - exact).abs() <= 1e-5 * mag,
                        "{what}: {} vs {exact}",
                        got[i]
                    );
                    assert!(
                        (got[i] - cpu[i]).abs() <= 1e-3 * scale,
                        "{what}: vs CPU {}",
                        cpu[i]
                    );
                }
            }
        }
    }
}
