//! 2–16 activation rows by int4 g128 weights, 1–3 matrices of one width per launch
//! (`mma_gemm_wide` in mma.cu, decision 144): `Backend::linears` and `linear` at 2–16 rows with
//! a wide one-row variant. The hi/lo B registers come from `mma_split_acts` once per input.

use super::{MmaKernels, GROUPED_ROWS, THREADS, WIDE_MATS};
use crate::cuda::packed::GpuPacked;
use crate::cuda::{err, Cuda};
use crate::Result;
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

impl Cuda {
    /// `mma_split_acts`: x's hi/lo B registers, `[⌈n/4⌉][8][cols/32][8]` pairs, and Σx per
    /// group. The pairs are u32 words held in an f32 buffer (a kernel argument is only its
    /// address), so that the buffer is recycled between products like every f32 output
    /// (recycle.rs) instead of a stream-ordered allocation per product.
    pub(in crate::cuda::packed) fn split_acts(
        &self,
        mk: &MmaKernels,
        xv: &cudarc::driver::CudaView<'_, f32>,
        n: usize,
        cols: usize,
    ) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
        // SAFETY (of using them uninitialised): mma_split_acts writes every pair of the n rows
        // and every group sum; the padding rows' pairs are multiplied into mma columns that
        // are never read.
        let mut frag = self.alloc(n.div_ceil(4) * 4 * cols)?;
        let mut gsum = self.alloc(n * (cols / 128))?;
        let (n_i, cols_i) = (n as i32, cols as i32);
        let bf16 = (self.precision == crate::Precision::Bf16) as i32;
        let mut l = self.stream.launch_builder(&mk.split);
        l.arg(xv)
            .arg(&mut frag)
            .arg(&mut gsum)
            .arg(&n_i)
            .arg(&cols_i)
            .arg(&bf16);
        let cfg = LaunchConfig {
            grid_dim: ((n * cols / 4).div_ceil(256) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { l.launch(cfg) }.map_err(err("split activations"))?;
        Ok((frag, gsum))
    }

    /// `[x · W₀ᵀ | x · W₁ᵀ | …]` for 2–16 activation rows `x [n, cols]` and 1–3 int4 g128
    /// matrices of that width (the caller checks [`MmaKernels::groupable`]) in one launch of
    /// `mma_gemm_wide` (decision 144): matrix j's `[n, rows_j]` output at `n·(rows_0 + … +
    /// rows_(j−1))`.
    pub(in crate::cuda::packed) fn mma_gemm_grouped(
        &self,
        mk: &MmaKernels,
        xv: &cudarc::driver::CudaView<'_, f32>,
        ws: &[&GpuPacked],
        n: usize,
    ) -> Result<CudaSlice<f32>> {
        debug_assert!((1..=WIDE_MATS).contains(&ws.len()) && (1..=GROUPED_ROWS).contains(&n));
        let cols = ws[0].layout.cols;
        let (frag, gsum) = self.split_acts(mk, xv, n, cols)?;
        let has_m = ws[0].m.is_some() as usize;
        let mut r = [0i32; WIDE_MATS];
        for (ri, w) in r.iter_mut().zip(ws) {
            *ri = w.layout.rows as i32;
        }
        let total: usize = ws.iter().map(|w| w.layout.rows).sum();
        let tiles: usize = ws.iter().map(|w| w.layout.rows.div_ceil(16)).sum();
        let mut y = self.alloc(n * total)?;
        let f = &mk.grouped[match n {
            ..=4 => 0,
            5..=8 => 1,
            _ => 2,
        }][has_m];
        let per_sm = f
            .occupancy_max_active_blocks_per_multiprocessor(THREADS, 0, None)
            .map_err(err("occupancy"))?
            .max(1) as usize;
        let cfg = LaunchConfig {
            grid_dim: (tiles.min(per_sm * mk.sms) as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let (cols_i, n_i) = (cols as i32, n as i32);
        let mut l = self.stream.launch_builder(f);
        for j in 0..WIDE_MATS {
            let w = ws.get(j).unwrap_or(&ws[0]);
            l.arg(&w.codes).arg(&w.d).arg(w.m.as_ref().unwrap_or(&w.d));
        }
        l.arg(&frag).arg(&gsum).arg(&mut y);
        for ri in &r {
            l.arg(ri);
        }
        l.arg(&cols_i).arg(&n_i);
        unsafe { l.launch(cfg) }.map_err(err("packed product (mma, grouped rows)"))?;
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{emulate_tiles, pick};
    use crate::cuda::packed::tests::matrix;
    use crate::cuda::packed::Repacked;
    use crunch_kernels::DType;
    use half::bf16;

    /// A host transcription of `mma_gemm_wide`: tiles of up to three matrices numbered one
    /// after the other (`mma_pick`), each tile's rows for all n activation rows computed as
    /// `mma_gemm` computes them (the same `gemm_group` on `mma_split_acts`'s B layout), written
    /// at `n·base + row·rows_j + r`; every output written exactly once, and equal to each
    /// matrix's `PackedMatrix::matmul` within 1e-3 of the largest output (the GPU checks'
    /// tolerance). 2–16 rows, shapes with row tails, symmetric and with offsets, f32 and bf16.
    #[test]
    fn grouped_indexing_matches_the_cpu_product() {
        for (dtype, shapes, cols) in [
            (DType::Q4_0, vec![40, 9, 9], 512),
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
            for n in 2..=super::GROUPED_ROWS {
                for bf16_mode in [false, true] {
                    let mut x: Vec<f32> = (0..n * cols)
                        .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 337.0 + 0.3)
                        .collect();
                    if bf16_mode {
                        x.iter_mut().for_each(|v| *v = bf16::from_f32(*v).to_f32());
                    }
                    let mut y = vec![f32::NAN; n * total];
                    let mut written = vec![0usize; n * total];
                    for tile in 0..tiles {
                        let (j, lt, base) = pick(tile, &rows);
                        let part = emulate_tiles(&reps[j], &x, n, bf16_mode, lt..lt + 1);
                        for a in 0..n {
                            for lr in 0..16 {
                                let r = lt * 16 + lr;
                                if r < rows[j] {
                                    let at = n * base + a * rows[j] + r;
                                    y[at] = part[a * rows[j] + r];
                                    written[at] += 1;
                                }
                            }
                        }
                    }
                    assert!(written.iter().all(|&c| c == 1), "{shapes:?} n {n}");
                    let mut base = 0;
                    for (w, &rws) in ws.iter().zip(&shapes) {
                        let mut cpu = vec![0f32; n * rws];
                        w.matmul(&x, n, &mut cpu);
                        let scale = cpu.iter().fold(0f32, |m, v| m.max(v.abs()));
                        for (i, &c) in cpu.iter().enumerate() {
                            let g = y[n * base + i];
                            assert!(
                                (g - c).abs() <= 1e-3 * scale,
                                "{dtype:?} {shapes:?} n {n} bf16 {bf16_mode} output {i}: {g} vs {c}"
                            );
                        }
                        base += rws;
                    }
                }
            }
        }
    }
}
