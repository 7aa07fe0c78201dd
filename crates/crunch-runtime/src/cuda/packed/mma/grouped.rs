//! 2–16 activation rows by int4 g128 weights, 1–3 matrices of one width per launch
//! (`mma_gemm_wide` in mma.cu, decision 144): `Backend::linears` and `linear` at 2–16 rows with
//! a wide one-row variant. The hi/lo B registers come from `mma_split_acts` once per input.
//! With a `cc` variant and symmetric codes, the int8 kernels `mma_i8_g*` (decision 155) take
//! their place, on x's int8 planes from `mma_split_i8`.

use super::{MmaKernels, GROUPED_ROWS, MAX_ROWS, THREADS, WIDE_MATS};
use crate::cuda::packed::cc::{launch_ex, mat_ptrs};
use crate::cuda::packed::{Feed, Gemv, GpuPacked, Order};
use crate::cuda::{err, Cuda};
use crate::Result;
use cudarc::driver::{
    CudaFunction, CudaSlice, CudaView, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg,
};

impl Cuda {
    /// `mma_split_acts`: x's hi/lo B registers, `[⌈n/4⌉][8][cols/32][8]` pairs, and Σx per
    /// group. The pairs are u32 words held in an f32 buffer (a kernel argument is only its
    /// address), so that the buffer is recycled between products like every f32 output
    /// (recycle.rs) instead of a stream-ordered allocation per product.
    pub(in crate::cuda::packed) fn split_acts(
        &self,
        mk: &MmaKernels,
        xv: &CudaView<'_, f32>,
        n: usize,
        cols: usize,
    ) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
        // SAFETY (of using them uninitialised): mma_split_acts writes every pair of the n rows
        // and every group sum; the padding rows' pairs are multiplied into mma columns that
        // are never read.
        let mut frag = self.alloc(n.div_ceil(4) * 4 * cols)?;
        let mut gsum = self.alloc(n * (cols / 128))?;
        self.split(
            &mk.split,
            xv,
            &mut frag,
            &mut gsum,
            n,
            cols,
            "split activations",
        )?;
        Ok((frag, gsum))
    }

    /// One launch of an activation split (`mma_split_acts`, `mma_split_i8`): one thread per
    /// float4 of `x [n, cols]`, writing `a` and `b` (the kernel's two outputs).
    #[allow(clippy::too_many_arguments)]
    fn split(
        &self,
        f: &CudaFunction,
        xv: &CudaView<'_, f32>,
        a: &mut CudaSlice<f32>,
        b: &mut CudaSlice<f32>,
        n: usize,
        cols: usize,
        what: &'static str,
    ) -> Result<()> {
        let (n_i, cols_i) = (n as i32, cols as i32);
        let bf16 = (self.precision == crate::Precision::Bf16) as i32;
        let mut l = self.stream.launch_builder(f);
        l.arg(xv).arg(a).arg(b).arg(&n_i).arg(&cols_i).arg(&bf16);
        let cfg = LaunchConfig {
            grid_dim: ((n * cols / 4).div_ceil(256) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { l.launch(cfg) }.map_err(err(what))?;
        Ok(())
    }

    /// The rows kernels' matrices and launch (`mma_gemm_wide`, `i8_gemm_wide`, `i8x_gemm`): the
    /// 1–3 matrices' row counts (0 for a missing one) and one wave of blocks over their tiles of
    /// `tile_rows` rows (16; `I8X_ROWS` = 32 for `mma_i8x_g*`), blocks of `threads`.
    fn rows_launch(
        &self,
        mk: &MmaKernels,
        f: &CudaFunction,
        ws: &[&GpuPacked],
        tile_rows: usize,
        threads: u32,
    ) -> Result<([i32; WIDE_MATS], LaunchConfig)> {
        let mut r = [0i32; WIDE_MATS];
        for (ri, w) in r.iter_mut().zip(ws) {
            *ri = w.layout.rows as i32;
        }
        let tiles: usize = ws.iter().map(|w| w.layout.rows.div_ceil(tile_rows)).sum();
        let per_sm = f
            .occupancy_max_active_blocks_per_multiprocessor(threads, 0, None)
            .map_err(err("occupancy"))?
            .max(1) as usize;
        let cfg = LaunchConfig {
            grid_dim: (tiles.min(per_sm * mk.sms) as u32, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        Ok((r, cfg))
    }

    /// `[x · W₀ᵀ | x · W₁ᵀ | …]` for 2–16 activation rows `x [n, cols]` and 1–3 int4 g128
    /// matrices of that width (the caller checks [`MmaKernels::groupable`]) in one launch of
    /// `mma_gemm_wide` (decision 144): matrix j's `[n, rows_j]` output at `n·(rows_0 + … +
    /// rows_(j−1))`.
    pub(in crate::cuda::packed) fn mma_gemm_grouped(
        &self,
        mk: &MmaKernels,
        xv: &CudaView<'_, f32>,
        ws: &[&GpuPacked],
        n: usize,
        feed: Option<&Feed>,
    ) -> Result<CudaSlice<f32>> {
        debug_assert!((1..=WIDE_MATS).contains(&ws.len()) && (1..=GROUPED_ROWS).contains(&n));
        if self.int8_rows(ws) {
            return self.mma_gemm_int8(mk, xv, ws, n, feed);
        }
        let cols = ws[0].layout.cols;
        let (frag, gsum) = self.split_acts(mk, xv, n, cols)?;
        let has_m = ws[0].m.is_some() as usize;
        let total: usize = ws.iter().map(|w| w.layout.rows).sum();
        let mut y = self.alloc(n * total)?;
        let f = &mk.grouped[match n {
            ..=4 => 0,
            5..=8 => 1,
            _ => 2,
        }][has_m];
        let (r, cfg) = self.rows_launch(mk, f, ws, 16, THREADS)?;
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

/// Weight rows per block tile of the swapped int8 kernels (`I8X_ROWS` in packed/mma.cu).
const I8X_ROWS: usize = 32;
/// Threads per block of every `mk.int8` kernel: `mma_i8_g4`'s 8 warps and the `W` = 8 of
/// `mma_i8x_g8/g16/g32` (packed/mma.cu, decisions 156–157). One W for every row count keeps
/// the f32 order of a row's group sums the same at 5–32 rows (s39).
const I8X_THREADS: u32 = 256;

impl Cuda {
    /// Whether [`Cuda::mma_gemm_int8`] takes `ws` under this backend's kernels: the `cc`
    /// variants and symmetric codes (decision 155).
    pub(in crate::cuda::packed) fn int8_rows(&self, ws: &[&GpuPacked]) -> bool {
        matches!(self.gemv, Gemv::Cc { .. }) && ws.iter().all(|w| w.m.is_none())
    }

    /// `[x · W₀ᵀ | x · W₁ᵀ | …]` for 1–32 activation rows and 1–3 symmetric int4 g128
    /// matrices of one width on the int8 tensor cores (decision 155): matrix j's `[n, rows_j]`
    /// output at `n·(rows_0 + … + rows_(j−1))`, as `mma_gemm_grouped`. x's int8 planes per row
    /// and group of 128 (`[n][k/128][2][128]` bytes) and the groups' (dx, 8·Σq) pairs come from
    /// `feed`, when x's producer wrote them for this product (decision 159), else from a launch
    /// of `mma_split_i8`; then `mma_i8_g*` (up to 32 rows, `MAX_ROWS`, in one launch).
    pub(in crate::cuda::packed) fn mma_gemm_int8(
        &self,
        mk: &MmaKernels,
        xv: &CudaView<'_, f32>,
        ws: &[&GpuPacked],
        n: usize,
        feed: Option<&Feed>,
    ) -> Result<CudaSlice<f32>> {
        debug_assert!((1..=WIDE_MATS).contains(&ws.len()) && (1..=MAX_ROWS).contains(&n));
        debug_assert!(ws.iter().all(|w| w.m.is_none()));
        let cols = ws[0].layout.cols;
        let total: usize = ws.iter().map(|w| w.layout.rows).sum();
        let mut y = self.alloc(n * total)?;
        // 2–4 rows: `mma_i8_g4` (tiles of 16); 5–32: `mma_i8x_g*`, operands swapped (decision
        // 156, tiles of `I8X_ROWS` = 32).
        let which = match n {
            ..=4 => 0,
            5..=8 => 1,
            9..=16 => 2,
            _ => 3,
        };
        let f = &mk.int8[which];
        let threads = I8X_THREADS;
        let tile_rows = if which == 0 { 16 } else { I8X_ROWS };
        let (r, cfg) = self.rows_launch(mk, f, ws, tile_rows, threads)?;
        let (n_i, cols_i) = (n as i32, cols as i32);
        // The swapped kernels read the planes in their fragment order (decision 157).
        let frag = which != 0;
        let bf16 = self.precision == crate::Precision::Bf16;
        // Both launches through cuLaunchKernelEx; under `cc+pdl` on a device that has it, with
        // programmatic dependent launch, as the one-row kernel (decision 151).
        let pdl = self.pdl_products();
        let order = if frag { Order::Fragments } else { Order::Rows };
        // The producer's planes when they are this product's, else a split.
        let fed = feed
            .filter(|f| f.fits(n, cols, order, bf16))
            .map(|f| (&f.planes, &f.dq));
        let split;
        let (planes, dq) = match fed {
            Some(p) => p,
            None => {
                split = self.split_i8(mk, xv, n, cols, order, pdl)?;
                (&split.planes, &split.dq)
            }
        };
        let stream = &self.stream;
        let mut ptrs = [0u64; 2 * WIDE_MATS + 3];
        let guards = mat_ptrs(self, ws, &mut ptrs);
        let (pp, gp) = planes.device_ptr(stream);
        let (pq, gq) = dq.device_ptr(stream);
        let (py, gy) = y.device_ptr_mut(stream);
        ptrs[2 * WIDE_MATS] = pp;
        ptrs[2 * WIDE_MATS + 1] = pq;
        ptrs[2 * WIDE_MATS + 2] = py;
        let ints = [r[0], r[1], r[2], cols_i, n_i];
        // SAFETY: mma_i8_g*'s parameters are three matrices' codes and scales, planes, dq, y,
        // then r0, r1, r2, k, n; planes hold n·cols bytes per plane pair, dq 2·n·(cols/128)
        // words, y n·(r0 + r1 + r2) floats.
        unsafe {
            launch_ex(
                self,
                f,
                (cfg.grid_dim.0, threads, 0),
                &ptrs,
                &ints,
                pdl,
                "packed product (int8 mma, grouped rows)",
            )
        }?;
        drop((guards, gp, gq, gy));
        Ok(y)
    }

    /// `mma_split_i8`: x's planes and (dx, 8·Σq) for `n` rows of `cols` in `order` (`Rows` or
    /// `Fragments`), in recycled buffers (the pairs are words in f32 buffers, as `split_acts`).
    fn split_i8(
        &self,
        mk: &MmaKernels,
        xv: &CudaView<'_, f32>,
        n: usize,
        cols: usize,
        order: Order,
        pdl: bool,
    ) -> Result<Feed> {
        let mut out = self.feed_buffers(n, cols, order)?;
        let bf16 = out.bf16;
        let frag = order == Order::Fragments;
        let dq = &mut out.dq;
        let stream = &self.stream;
        let (px, gx) = xv.device_ptr(stream);
        let (pq, gq) = dq.device_ptr_mut(stream);
        let (pp, gp) = out.planes.device_ptr_mut(stream);
        let blocks = (n * cols / 4).div_ceil(256) as u32;
        let ints = [n as i32, cols as i32, bf16 as i32, frag as i32];
        // SAFETY: mma_split_i8's parameters are x, planes, dq, then n, k, bf16, frag; x holds n
        // rows of cols, planes n·cols/2 floats (n·cols bytes per plane), dq 2·n·groups.
        unsafe {
            launch_ex(
                self,
                &mk.split_i8,
                (blocks, 256, 0),
                &[px, pp, pq],
                &ints,
                pdl,
                "split activations (int8)",
            )
        }?;
        drop((gx, gp, gq));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{emulate_tiles, pick};
    use super::I8X_ROWS;
    use crate::cuda::packed::tests::matrix;
    use crate::cuda::packed::{Layout, Repacked};
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

    /// One row's group of 128 as `mma_split_i8` writes it: the planes a and b.
    type Planes = [[i8; 128]; 2];

    /// `mma_split_i8` on the host: per row and group of 128, the planes `[2][128]` (a, b) and
    /// (dx, 8·Σq), as act.rs quantizes per 32 (q = round-half-even(x·(16256/amax)), clamped).
    fn split_i8(x: &[f32], n: usize, k: usize, bf16_mode: bool) -> (Vec<Planes>, Vec<(f32, i32)>) {
        const Q: f32 = 16256.0;
        let g_n = k / 128;
        let mut planes = vec![[[0i8; 128]; 2]; n * g_n];
        let mut dq = vec![(0f32, 0i32); n * g_n];
        for j in 0..n {
            for gg in 0..g_n {
                let v: Vec<f32> = x[j * k + gg * 128..][..128]
                    .iter()
                    .map(|&f| {
                        if bf16_mode {
                            bf16::from_f32(f).to_f32()
                        } else {
                            f
                        }
                    })
                    .collect();
                let amax = v.iter().fold(0f32, |m, f| m.max(f.abs()));
                let (d, inv) = if amax != 0.0 && amax.is_finite() {
                    (amax / Q, Q / amax)
                } else {
                    (0.0, 0.0)
                };
                let mut sum = 0i32;
                for (i, f) in v.iter().enumerate() {
                    let q = (f * inv).round_ties_even().clamp(-Q, Q) as i32;
                    sum += q;
                    planes[j * g_n + gg][0][i] = (q >> 7) as i8;
                    planes[j * g_n + gg][1][i] = (q & 127) as i8;
                }
                dq[j * g_n + gg] = (d, 8 * sum);
            }
        }
        (planes, dq)
    }

    /// One row's group as `mma_split_i8` writes it with `frag` (decision 157): lane l's plane
    /// words a\[l\], b\[l\] (l = 8t + jj) as the pair at 8·(jj mod 4) + 2t + jj/4 of 64 words.
    fn frag_order(pl: &Planes) -> [u32; 64] {
        let word = |p: &[i8; 128], l: usize| {
            u32::from_le_bytes([
                p[4 * l] as u8,
                p[4 * l + 1] as u8,
                p[4 * l + 2] as u8,
                p[4 * l + 3] as u8,
            ])
        };
        let mut img = [0u32; 64];
        for l in 0..32 {
            let (t, jj) = (l >> 3, l & 7);
            let at = 8 * (jj & 3) + 2 * t + (jj >> 2);
            img[2 * at] = word(&pl[0], l);
            img[2 * at + 1] = word(&pl[1], l);
        }
        img
    }

    /// The repacked codes as the kernels' 32-bit words (little-endian).
    fn code_words(r: &Repacked) -> Vec<u32> {
        r.codes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    /// One m16n8k32 integer mma as PTX defines it: d[i][col] += Σ_k a[i][k]·b[k][col].
    fn mma_k32(a: &[[i32; 32]; 16], b: &[[i32; 8]; 32], d: &mut [[i32; 8]; 16]) {
        for (di, ai) in d.iter_mut().zip(a) {
            for (col, dc) in di.iter_mut().enumerate() {
                *dc += (0..32).map(|kk| ai[kk] * b[kk][col]).sum::<i32>();
            }
        }
    }

    /// A host transcription of `mma_i8_g*` (decision 155) for one tile: each lane's A and B
    /// registers placed into the m16n8k32 fragments as PTX lays them out (A row g / g + 8, k
    /// 4t.. and 16 + 4t..; B k likewise, column g; D rows g / g + 8, columns 2t, 2t + 1), the
    /// integer products summed over a group's 4 mma, then the kernel's scale step.
    fn emulate_int8_tile(
        r: &Repacked,
        x: &[f32],
        n: usize,
        bf16_mode: bool,
        tile: usize,
    ) -> Vec<f32> {
        let Layout { rows, cols: k, .. } = r.layout;
        let (c_n, g_n) = (k / 32, k / 128);
        let h = |b: u16| half::f16::from_bits(b).to_f32();
        let (planes, dq) = split_i8(x, n, k, bf16_mode);
        let words = code_words(r);
        let bytes = |v: u32| v.to_le_bytes().map(|b| b as i32);
        let row = |g: usize, e: usize| (tile * 16 + g + 8 * e).min(rows - 1);
        let mut y = vec![0f32; n * rows];
        for nt in 0..n.div_ceil(4) {
            for gg in 0..g_n {
                let mut d = [[0i32; 8]; 16];
                for j in 0..4 {
                    let mut a = [[0i32; 32]; 16];
                    let mut b = [[0i32; 8]; 32];
                    for lane in 0..32 {
                        let (g, t) = (lane >> 2, lane & 3);
                        let wd = |e: usize| words[(row(g, e) * c_n + 4 * gg + t) * 4 + j];
                        // a0 (g, 4t..), a1 (g + 8, 4t..), a2 (g, 16 + 4t..), a3 (g + 8, 16 + 4t..)
                        let regs = [
                            wd(0) & 0x0f0f_0f0f,
                            wd(1) & 0x0f0f_0f0f,
                            (wd(0) >> 4) & 0x0f0f_0f0f,
                            (wd(1) >> 4) & 0x0f0f_0f0f,
                        ];
                        for (i, reg) in regs.iter().enumerate() {
                            let (rr, kk) = (g + 8 * (i & 1), 4 * t + 16 * (i >> 1));
                            for (u, v) in bytes(*reg).iter().enumerate() {
                                a[rr][kk + u] = *v;
                            }
                        }
                        // b0 (4t.., column g), b1 (16 + 4t.., column g): plane g & 1 of row
                        // 4nt + g/2, bytes 32t + 4j.. and 32t + 16 + 4j..
                        let rb = (4 * nt + (g >> 1)).min(n - 1);
                        let pl = &planes[rb * g_n + gg][g & 1];
                        for half in 0..2 {
                            for u in 0..4 {
                                b[4 * t + 16 * half + u][g] =
                                    pl[32 * t + 16 * half + 4 * j + u] as i32;
                            }
                        }
                    }
                    mma_k32(&a, &b, &mut d);
                }
                for lane in 0..32 {
                    let (g, t) = (lane >> 2, lane & 3);
                    let jr = 4 * nt + t;
                    if jr >= n {
                        continue;
                    }
                    let (dx, q8) = dq[jr * g_n + gg];
                    for e in 0..2 {
                        let rr = tile * 16 + g + 8 * e;
                        if rr >= rows {
                            continue;
                        }
                        let v = 128 * d[g + 8 * e][2 * t] + d[g + 8 * e][2 * t + 1] - q8;
                        y[jr * rows + rr] += (h(r.d[rr * g_n + gg]) * dx) * v as f32;
                    }
                }
            }
        }
        y
    }

    /// One tile's outputs from a host transcription of a kernel (`r`, `x`, n, bf16, tile).
    type Emulate = fn(&Repacked, &[f32], usize, bool, usize) -> Vec<f32>;

    /// A host transcription of `i8x_gemm` (decision 156) on one tile of `I8X_ROWS` weight rows:
    /// operands swapped, A = activation rows 8a + g's planes a (row g) and b (row g + 8), k as
    /// the kernel's lanes supply them: mma j's four A registers are words 16j + 4t.. of the
    /// row's group in `frag_order` (decision 157), placed as a0 (row g, k 4t..), a1 (g + 8, 4t..),
    /// a2 (g, 16 + 4t..), a3 (g + 8, 16 + 4t..); B = slab s's weight row g (column g; word j's
    /// low nibbles at k 4t.., high at 16 + 4t..), D rows g / g + 8 and columns 2t, 2t + 1 read
    /// back as the kernel does.
    fn emulate_int8x_tile(
        r: &Repacked,
        x: &[f32],
        n: usize,
        bf16_mode: bool,
        tile: usize,
    ) -> Vec<f32> {
        let Layout { rows, cols: k, .. } = r.layout;
        let (c_n, g_n) = (k / 32, k / 128);
        let h = |b: u16| half::f16::from_bits(b).to_f32();
        let (planes, dq) = split_i8(x, n, k, bf16_mode);
        let images: Vec<[u32; 64]> = planes.iter().map(frag_order).collect();
        let words = code_words(r);
        let bytes_s = |v: u32| v.to_le_bytes().map(|b| b as i8 as i32);
        let bytes_u = |v: u32| v.to_le_bytes().map(|b| b as i32);
        let mut y = vec![0f32; n * rows];
        for sets in 0..n.div_ceil(8) {
            for s in 0..I8X_ROWS / 8 {
                for gg in 0..g_n {
                    let mut d = [[0i32; 8]; 16];
                    for j in 0..4 {
                        let mut a = [[0i32; 32]; 16];
                        let mut b = [[0i32; 8]; 32];
                        for lane in 0..32 {
                            let (g, t) = (lane >> 2, lane & 3);
                            let ar = (8 * sets + g).min(n - 1);
                            // one 16-byte load: a0 (g, 4t..), a1 (g + 8, 4t..), a2 (g, 16 +
                            // 4t..), a3 (g + 8, 16 + 4t..)
                            let regs = &images[ar * g_n + gg][16 * j + 4 * t..][..4];
                            for (i, reg) in regs.iter().enumerate() {
                                let (rr, kk) = (g + 8 * (i & 1), 4 * t + 16 * (i >> 1));
                                for (u, v) in bytes_s(*reg).iter().enumerate() {
                                    a[rr][kk + u] = *v;
                                }
                            }
                            let wr = (tile * I8X_ROWS + 8 * s + g).min(rows - 1);
                            let wd = words[(wr * c_n + 4 * gg + t) * 4 + j];
                            for (half, v) in [wd & 0x0f0f_0f0f, (wd >> 4) & 0x0f0f_0f0f]
                                .iter()
                                .enumerate()
                            {
                                for (u, c) in bytes_u(*v).iter().enumerate() {
                                    b[4 * t + 16 * half + u][g] = *c;
                                }
                            }
                        }
                        mma_k32(&a, &b, &mut d);
                    }
                    for lane in 0..32 {
                        let (g, t) = (lane >> 2, lane & 3);
                        let jr = 8 * sets + g;
                        if jr >= n {
                            continue;
                        }
                        let (dx, q8) = dq[jr * g_n + gg];
                        for e in 0..2 {
                            let rr = tile * I8X_ROWS + 8 * s + 2 * t + e;
                            if rr >= rows {
                                continue;
                            }
                            let v = 128 * d[g][2 * t + e] + d[g + 8][2 * t + e] - q8;
                            y[jr * rows + rr] += (h(r.d[rr * g_n + gg]) * dx) * v as f32;
                        }
                    }
                }
            }
        }
        y
    }

    /// The int8 kernels' indexing (decisions 155–156): every tile of each matrix emulated lane
    /// by lane (`mma_i8_g4`'s at 2–4 rows, the swapped `mma_i8x_g*`'s at 5–32, as
    /// `mma_gemm_int8` picks them) equals `PackedMatrix::matmul` within 1e-3 of the largest
    /// output (the GPU checks' tolerance), shapes with row tails, f32 and bf16 activations.
    #[test]
    fn int8_indexing_matches_the_cpu_product() {
        for (rows, cols) in [(40, 512), (21, 384), (16, 128)] {
            let w = matrix(DType::Q4_0, rows, cols, 4, (rows * cols) as u64);
            let rep = Repacked::new(&w).unwrap();
            for n in [2, 3, 4, 5, 8, 9, 16, 17, 32] {
                for bf16_mode in [false, true] {
                    let mut x: Vec<f32> = (0..n * cols)
                        .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 337.0 + 0.3)
                        .collect();
                    if bf16_mode {
                        x.iter_mut().for_each(|v| *v = bf16::from_f32(*v).to_f32());
                    }
                    let mut y = vec![0f32; n * rows];
                    let (tr, emulate): (usize, Emulate) = if n <= 4 {
                        (16, emulate_int8_tile)
                    } else {
                        (I8X_ROWS, emulate_int8x_tile)
                    };
                    for tile in 0..rows.div_ceil(tr) {
                        let part = emulate(&rep, &x, n, bf16_mode, tile);
                        for (o, p) in y.iter_mut().zip(&part) {
                            *o += p;
                        }
                    }
                    let mut cpu = vec![0f32; n * rows];
                    w.matmul(&x, n, &mut cpu);
                    let scale = cpu.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let worst = cpu
                        .iter()
                        .zip(&y)
                        .fold(0f32, |m, (c, g)| m.max((c - g).abs()));
                    assert!(
                        worst <= 1e-3 * scale,
                        "{rows}x{cols} n {n} bf16 {bf16_mode}: {worst} of {scale}"
                    );
                }
            }
        }
    }
}
