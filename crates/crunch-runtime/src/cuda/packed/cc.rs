//! One activation row against symmetric int4 g128 weights on the CUDA cores, launched with
//! programmatic dependent launch (decision 151, `cc.cu`): the batch-1 kernel of
//! [`Gemv::Cc`](super::Gemv). Integer `dp4a` sums over activations quantized as the CPU's
//! act.rs does them; 1–3 matrices of one width per launch.
//!
//! PDL is why this launch does not go through cudarc's launch builder (which has no launch
//! attributes): with the attribute, the kernel may start while the previous kernel in the
//! stream still runs, request its first weights, and wait (`griddepcontrol.wait`) before it
//! reads x or writes y.

use super::mma::MmaKernels;
use super::{packed_all, Gemv, GpuPacked};
use crate::cuda::launch::{launch, Arg};
use crate::cuda::recycle::F32Buf;
use crate::cuda::{err, Cuda, CudaTensor, Store};
use crate::{Epilogue, Prologue, Result};
use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute_enum};
use cudarc::driver::{CudaFunction, CudaModule, CudaSlice, CudaView, DevicePtr, DevicePtrMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub(super) const SOURCE: &str = include_str!("cc.cu");
/// `CC_THREADS` in cc.cu.
const THREADS: u32 = 512;
/// Most matrices one launch takes (the kernel's three pointer pairs).
const MATS: usize = 3;

/// `CC_SMEM(k)` in cc.cu: the quantized activation planes (64 bytes per chunk of 32), one f32
/// scale and one int sum per chunk.
fn smem_bytes(k: usize) -> usize {
    k / 32 * 72
}

pub(super) struct CcKernel {
    f: CudaFunction,
    /// The fused variants (decision 161): `cc_u4_norm` (rms_norm → products),
    /// `cc_u4_res` (product → + residual), `cc_u4_norm_gated` (rms_norm → gate/up → silu_mul).
    norm: CudaFunction,
    res: CudaFunction,
    norm_gated: CudaFunction,
    /// Fused launches queued so far, by every clone of the backend ([`Cuda::fused_launches`]).
    fused: AtomicU64,
    /// Dynamic shared memory a block may use (the device's opt-in maximum).
    smem_max: usize,
    sms: usize,
    /// Whether the device has programmatic dependent launch (sm_90+); below, `cc.cu` compiles
    /// without the griddepcontrol instructions and the launch without the attribute.
    pub(super) pdl: bool,
}

impl CcKernel {
    pub(super) fn new(cuda: &Cuda, module: &Arc<CudaModule>) -> Result<Self> {
        let ctx = cuda.stream.context();
        let (major, _) = ctx
            .compute_capability()
            .map_err(err("compute capability"))?;
        let attr = |a| ctx.attribute(a).map_err(err("device attribute"));
        let optin =
            attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?;
        let sms = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        // Both kernels stage x in dynamic shared memory, up to what the device allows beyond
        // their static shared memory (none).
        let staging = |name: &str| -> Result<(CudaFunction, i32)> {
            let f = module
                .load_function(name)
                .map_err(err("loading a kernel"))?;
            let fixed = f
                .get_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)
                .map_err(err("shared memory size"))?;
            f.set_attribute(
                CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                optin - fixed,
            )
            .map_err(err("shared memory limit"))?;
            Ok((f, optin - fixed))
        };
        let (f, smem) = staging("cc_u4")?;
        let (norm, smem_norm) = staging("cc_u4_norm")?;
        let (res, smem_res) = staging("cc_u4_res")?;
        let (norm_gated, smem_gated) = staging("cc_u4_norm_gated")?;
        let smem_max = [smem_norm, smem_res, smem_gated]
            .into_iter()
            .fold(smem, i32::min);
        Ok(CcKernel {
            f,
            norm,
            res,
            norm_gated,
            fused: AtomicU64::new(0),
            smem_max: smem_max as usize,
            sms: sms as usize,
            pdl: major >= 9,
        })
    }

    /// Whether one launch takes `ws`: 1–3 symmetric int4 g128 matrices of one width whose
    /// staged activations fit in shared memory.
    pub(super) fn reads(&self, ws: &[&GpuPacked]) -> bool {
        (1..=MATS).contains(&ws.len())
            && ws.iter().all(|w| {
                let l = &w.layout;
                l.kquant.is_none()
                    && l.bits == 4
                    && l.group == 128
                    && l.rows > 0
                    && l.cols == ws[0].layout.cols
                    && l.cols.is_multiple_of(128)
                    && w.m.is_none()
                    && smem_bytes(l.cols) <= self.smem_max
            })
    }
}

impl Cuda {
    /// `[x · W₀ᵀ | x · W₁ᵀ | …]` for one activation row and the 1–3 matrices `ws` (checked by
    /// [`CcKernel::reads`]), outputs back to back; with `pdl` (and a device that has it) the
    /// launch carries the programmatic-serialization attribute.
    pub(super) fn cc_gemv(
        &self,
        cc: &CcKernel,
        xv: &CudaView<'_, f32>,
        ws: &[&GpuPacked],
        pdl: bool,
    ) -> Result<CudaSlice<f32>> {
        debug_assert!(cc.reads(ws));
        let cols = ws[0].layout.cols;
        let total: usize = ws.iter().map(|w| w.layout.rows).sum();
        let items: usize = ws.iter().map(|w| w.layout.rows.div_ceil(2)).sum();
        let mut y = self.alloc(total)?;
        let smem = smem_bytes(cols);
        let per_sm =
            cc.f.occupancy_max_active_blocks_per_multiprocessor(THREADS, smem, None)
                .map_err(err("occupancy"))?
                .max(1) as usize;
        let stream = &self.stream;
        let mut ptrs = [0u64; 2 * MATS + 2];
        let guards = mat_ptrs(self, ws, &mut ptrs);
        let bf16 = self.precision == crate::Precision::Bf16;
        let (px, gx) = xv.device_ptr(stream);
        let (py, gy) = y.device_ptr_mut(stream);
        ptrs[2 * MATS] = px;
        ptrs[2 * MATS + 1] = py;
        let mut ints = [0i32; MATS + 2];
        for (j, v) in ints.iter_mut().take(MATS).enumerate() {
            *v = ws.get(j).map_or(0, |w| w.layout.rows as i32);
        }
        ints[MATS] = cols as i32;
        ints[MATS + 1] = bf16 as i32;
        let grid = items.min(per_sm * cc.sms) as u32;
        // SAFETY: cc_u4's parameters are six device pointers (codes and scales of three
        // matrices), x, y, then five ints, as here; the guards keep the buffers' stream order
        // until after the launch is queued; y holds `total` floats.
        unsafe {
            launch_ex(
                self,
                &cc.f,
                (grid, THREADS, smem as u32),
                &ptrs,
                &ints,
                pdl && cc.pdl,
                "packed product (cuda cores)",
            )
        }?;
        drop((guards, gx, gy));
        Ok(y)
    }
}

/// Which fused `cc_u4` variant runs a [`Backend::linears_fused`](crate::Backend::linears_fused)
/// call (decision 161).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fused {
    /// rms_norm → 1–3 products (q/k/v).
    Norm,
    /// One product → + residual (o, down).
    Res,
    /// rms_norm → gate/up → silu_mul.
    NormGated,
}

impl Cuda {
    /// How many fused one-row products (decision 161) this backend and its clones have queued:
    /// what shows that [`Backend::linears_fused`](crate::Backend::linears_fused) did fuse.
    pub fn fused_launches(&self) -> u64 {
        match self.packed.as_deref().map(|k| k.cc.as_ref()) {
            Some(Ok(cc)) => cc.fused.load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// [`Backend::linears_fused`](crate::Backend::linears_fused) as one fused `cc_u4` launch
    /// (decision 161) where one takes it: one f32 row under [`Gemv::Cc`], weights `cc_u4`
    /// reads ([`CcKernel::reads`]), and `RmsNorm` then no epilogue (`cc_u4_norm`), `RmsNorm`
    /// then `SiluMul` of two matrices of one shape (`cc_u4_norm_gated`), or no prologue then
    /// `Add` (`cc_u4_res`). `None` otherwise: the caller composes the steps. The values are
    /// those of the steps (`gpu_packed check`, "fused": bit for bit).
    pub(crate) fn cc_fused(
        &self,
        x: &CudaTensor,
        weights: &[&CudaTensor],
        pre: &Prologue<'_, CudaTensor>,
        post: &Epilogue<'_, CudaTensor>,
    ) -> Result<Option<Vec<CudaTensor>>> {
        let Gemv::Cc { pdl } = self.gemv else {
            return Ok(None);
        };
        let Some(Ok(cc)) = self.packed.as_deref().map(|k| k.cc.as_ref()) else {
            return Ok(None);
        };
        let Some(ws) = packed_all(weights) else {
            return Ok(None);
        };
        let Some(xv) = x.f32_view() else {
            return Ok(None);
        };
        // float4 reads of x (and of the norm's weight): offsets in whole float4s.
        let aligned = |t: &CudaTensor| t.offset.is_multiple_of(4);
        if x.shape.len() != 2 || x.shape[0] != 1 || !aligned(x) || !cc.reads(&ws) {
            return Ok(None);
        }
        let cols = x.shape[1];
        if ws[0].layout.cols != cols {
            return Ok(None);
        }
        let rows0 = ws[0].layout.rows;
        let (kind, normw, res) = match (pre, post) {
            (Prologue::RmsNorm { weight, eps }, Epilogue::None) => {
                (Fused::Norm, Some((weight, *eps)), None)
            }
            (Prologue::RmsNorm { weight, eps }, Epilogue::SiluMul { .. })
                if ws.len() == 2 && ws[1].layout.rows == rows0 =>
            {
                (Fused::NormGated, Some((weight, *eps)), None)
            }
            (Prologue::None, Epilogue::Add(r)) if ws.len() == 1 && r.shape == [1, rows0] => {
                (Fused::Res, None, Some(*r))
            }
            _ => return Ok(None),
        };
        let normv = match normw {
            Some((w, _)) if w.len() != cols || !aligned(w) => return Ok(None),
            Some((w, _)) => match w.f32_view() {
                Some(v) => Some(v),
                None => return Ok(None),
            },
            None => None,
        };
        let resv = match res {
            Some(r) => match r.f32_view() {
                Some(v) => Some(v),
                None => return Ok(None),
            },
            None => None,
        };
        let (f, items, total) = match kind {
            Fused::Norm => (
                &cc.norm,
                ws.iter().map(|w| w.layout.rows.div_ceil(2)).sum::<usize>(),
                ws.iter().map(|w| w.layout.rows).sum::<usize>(),
            ),
            Fused::Res => (&cc.res, rows0.div_ceil(2), rows0),
            Fused::NormGated => (&cc.norm_gated, rows0, rows0),
        };
        let mut y = self.alloc(total)?;
        let smem = smem_bytes(cols);
        let per_sm = f
            .occupancy_max_active_blocks_per_multiprocessor(THREADS, smem, None)
            .map_err(err("occupancy"))?
            .max(1) as usize;
        let stream = &self.stream;
        let mut ptrs = [0u64; 2 * MATS];
        let guards = mat_ptrs(self, &ws, &mut ptrs);
        let (px, gx) = xv.device_ptr(stream);
        let (py, gy) = y.device_ptr_mut(stream);
        // Parameters the variant does not read get x's address.
        let (pn, gn) = match &normv {
            Some(v) => {
                let (p, g) = v.device_ptr(stream);
                (p, Some(g))
            }
            None => (px, None),
        };
        let (pr, gr) = match &resv {
            Some(v) => {
                let (p, g) = v.device_ptr(stream);
                (p, Some(g))
            }
            None => (px, None),
        };
        let rows = |j: usize| ws.get(j).map_or(0, |w| w.layout.rows as i32);
        let bf16 = self.precision == crate::Precision::Bf16;
        let mut args: Vec<Arg> = ptrs.iter().map(|&p| Arg::Ptr(p)).collect();
        args.extend([
            Arg::Ptr(px),
            Arg::Ptr(py),
            Arg::Ptr(pn),
            Arg::Ptr(pr),
            Arg::I32(rows(0)),
            Arg::I32(rows(1)),
            Arg::I32(rows(2)),
            Arg::I32(cols as i32),
            Arg::I32(bf16 as i32),
            Arg::F32(normw.map_or(0.0, |(_, e)| e)),
        ]);
        let grid = items.min(per_sm * cc.sms) as u32;
        // SAFETY: the fused kernels' parameters (CC_FUSED in cc.cu) are six device pointers
        // (codes and scales of three matrices), x, y, the norm's weight, the residual, five
        // ints and eps, as here; x holds `cols` floats, the norm's weight `cols`, the residual
        // and y `total` (Res: one matrix) or `rows0` (NormGated); the guards keep the buffers'
        // stream order until after the launch is queued; every kernel waits
        // (griddepcontrol.wait) before it reads x, the weight's norm or the residual.
        unsafe {
            launch(
                self,
                f,
                (grid, THREADS, smem as u32),
                &args,
                pdl && cc.pdl,
                "fused packed product (cuda cores)",
            )
        }?;
        drop((guards, gx, gy, gn, gr));
        cc.fused.fetch_add(1, Ordering::Relaxed);
        let y = Arc::new(F32Buf::new(y));
        let outs: Vec<(usize, usize)> = match kind {
            Fused::Norm => {
                let mut at = 0;
                ws.iter()
                    .map(|w| {
                        at += w.layout.rows;
                        (at - w.layout.rows, w.layout.rows)
                    })
                    .collect()
            }
            Fused::Res | Fused::NormGated => vec![(0, rows0)],
        };
        Ok(Some(
            outs.into_iter()
                .map(|(offset, n)| CudaTensor {
                    store: Store::F32(y.clone()),
                    offset,
                    shape: vec![1, n],
                    feed: None,
                })
                .collect(),
        ))
    }
}

/// The codes' and scales' device addresses of the 1–3 matrices `ws` (three pairs: missing
/// matrices repeat the first one's buffers, with 0 rows, never read), into `ptrs[..6]`, as the
/// one-launch kernels take them (`cc_u4`, `mma_i8_g*`); the returned guards keep the buffers'
/// stream order until they are dropped, after the launch.
pub(in crate::cuda::packed) fn mat_ptrs<'a>(
    cuda: &'a Cuda,
    ws: &[&'a GpuPacked],
    ptrs: &mut [u64],
) -> Vec<impl Drop + 'a> {
    let mut guards = Vec::with_capacity(2 * MATS);
    for j in 0..MATS {
        let w = ws.get(j).unwrap_or(&ws[0]);
        let (c, gc) = w.codes.device_ptr(&cuda.stream);
        let (d, gd) = w.d.device_ptr(&cuda.stream);
        ptrs[2 * j] = c;
        ptrs[2 * j + 1] = d;
        guards.push(gc);
        guards.push(gd);
    }
    guards
}

/// [`launch`](crate::cuda::launch::launch) with the parameters `ptrs` (device addresses) then
/// `ints`, in that order: the products' launches, with PDL when `pdl` (decision 151). `dims` is
/// (blocks, threads per block, dynamic shared memory bytes).
///
/// # Safety
/// `f`'s parameters must be exactly those, in that order; every address must be a live buffer
/// of this stream whose guard the caller holds until this returns, and large enough for what
/// the grid reads and writes.
pub(in crate::cuda::packed) unsafe fn launch_ex(
    cuda: &Cuda,
    f: &CudaFunction,
    dims: (u32, u32, u32),
    ptrs: &[u64],
    ints: &[i32],
    pdl: bool,
    what: &'static str,
) -> Result<()> {
    let args: Vec<Arg> = ptrs
        .iter()
        .map(|&p| Arg::Ptr(p))
        .chain(ints.iter().map(|&v| Arg::I32(v)))
        .collect();
    // SAFETY: the caller's contract (above), which is `launch`'s.
    unsafe { launch(cuda, f, dims, &args, pdl, what) }
}

impl Cuda {
    /// Whether the products' launches carry PDL (decision 151): the `cc+pdl` variant on a
    /// device that has it (sm_90+).
    pub(in crate::cuda) fn pdl_products(&self) -> bool {
        matches!(self.gemv, Gemv::Cc { pdl: true })
            && matches!(self.packed.as_deref().map(|k| k.cc.as_ref()), Some(Ok(cc)) if cc.pdl)
    }

    /// Whether the short kernels between the products (`add`, `rms_norm`, `silu_mul`, the
    /// plane producers) carry PDL too (decision 160).
    pub(in crate::cuda) fn pdl_launches(&self) -> bool {
        self.pdl_between && self.pdl_products()
    }

    /// One activation row against 1–3 matrices of one launch: [`Gemv::Cc`]'s CUDA-core kernel
    /// where it reads them, else the wide kernel with `groups` per buffer.
    pub(in crate::cuda::packed) fn gemv_one_row(
        &self,
        mk: &MmaKernels,
        xv: &cudarc::driver::CudaView<'_, f32>,
        ws: &[&GpuPacked],
        groups: u8,
    ) -> Result<CudaSlice<f32>> {
        if let Gemv::Cc { pdl } = self.gemv {
            if let Some(Ok(cc)) = self.packed.as_deref().map(|k| k.cc.as_ref()) {
                if cc.reads(ws) {
                    return self.cc_gemv(cc, xv, ws, pdl);
                }
            }
        }
        self.mma_gemv_wide(mk, xv, ws, groups)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::matrix;
    use super::super::Repacked;
    use crunch_kernels::DType;
    use half::{bf16, f16};

    /// `cc_stage`'s planes for one chunk of 32 activations: q per element (a = q >> 7,
    /// b = q & 127 are its planes), dx = amax / 16256 / 16 and 128·Σq.
    fn stage(chunk: &[f32]) -> ([i32; 32], f32, i32) {
        let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let (d, inv) = if amax != 0.0 && amax.is_finite() {
            (amax / 16256.0, 16256.0 / amax)
        } else {
            (0.0, 0.0)
        };
        let mut q = [0i32; 32];
        for (qi, &v) in q.iter_mut().zip(chunk) {
            let t = (v * inv).round_ties_even().clamp(-16256.0, 16256.0);
            *qi = if t.is_nan() { 0 } else { t as i32 };
        }
        (q, d * (1.0 / 16.0), 128 * q.iter().sum::<i32>())
    }

    /// `cc_u4` for one activation row, transcribed: its warps, items of 2 rows, pipelined
    /// batches of 4 steps, clamped loads, the dp4a sums taken apart (u·a and u·b per plane,
    /// the high nibbles as 16·u), f32 terms per lane and the shuffle tree. Counts the writes
    /// of each output.
    fn emulate(ws: &[&Repacked], x: &[f32], bf16_mode: bool, grid: usize) -> (Vec<f32>, Vec<u32>) {
        let cols = ws[0].layout.cols;
        let (c_n, g_n) = (cols / 32, cols / 128);
        let s_n = c_n.div_ceil(32);
        let nb = s_n.div_ceil(4);
        let x: Vec<f32> = if bf16_mode {
            x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect()
        } else {
            x.to_vec()
        };
        let planes: Vec<_> = x.chunks(32).map(stage).collect();
        let rows: Vec<usize> = (0..3)
            .map(|j| ws.get(j).map_or(0, |w| w.layout.rows))
            .collect();
        let items: usize = rows.iter().map(|r| r.div_ceil(2)).sum();
        let total: usize = rows.iter().sum();
        let (mut y, mut writes) = (vec![f32::NAN; total], vec![0u32; total]);
        // (matrix, first row of the item, index of the matrix's row 0 in y)
        let pick = |it: usize| {
            let i0 = rows[0].div_ceil(2);
            let i1 = i0 + rows[1].div_ceil(2);
            if it < i0 {
                (0, it * 2, 0)
            } else if it < i1 {
                (1, (it - i0) * 2, rows[0])
            } else {
                (2, (it - i1) * 2, rows[0] + rows[1])
            }
        };
        let nw = grid * 16;
        for block in 0..grid {
            for warp in 0..16 {
                let mut acc = [[0f32; 2]; 32];
                let compute = |acc: &mut [[f32; 2]; 32], it: usize, b: usize| {
                    let (j, row0, _) = pick(it);
                    let w = ws[j];
                    for (lane, a) in acc.iter_mut().enumerate() {
                        for step in 0..4 {
                            let s = 4 * b + step;
                            let c = 32 * s + lane;
                            if s >= s_n || c >= c_n {
                                continue;
                            }
                            let (q, dx, q128) = &planes[c];
                            for (i, ai) in a.iter_mut().enumerate() {
                                let r = (row0 + i).min(rows[j] - 1);
                                let code = &w.codes[r * cols / 2 + 16 * c..][..16];
                                // Σ u·q over the low nibbles (weights 0–15) and 16u·q over the
                                // high ones (16–31), each split into its a and b planes.
                                let (mut al, mut ah, mut bl, mut bh) = (0i32, 0i32, 0i32, 0i32);
                                for (e, &byte) in code.iter().enumerate() {
                                    let (lo, hi) = ((byte & 15) as i32, (byte & 0xf0) as i32);
                                    al += lo * (q[e] >> 7);
                                    bl += lo * (q[e] & 127);
                                    ah += hi * (q[16 + e] >> 7);
                                    bh += hi * (q[16 + e] & 127);
                                }
                                let t16 = (16 * al + ah) * 128 + (16 * bl + bh) - q128;
                                let d = f16::from_bits(w.d[r * g_n + c / 4]).to_f32();
                                *ai = (d * dx).mul_add(t16 as f32, *ai);
                            }
                        }
                    }
                };
                let mut store = |acc: &mut [[f32; 2]; 32], it: usize| {
                    let (j, row0, base) = pick(it);
                    for i in 0..2 {
                        let mut v: Vec<f32> = acc.iter().map(|a| a[i]).collect();
                        for o in [16, 8, 4, 2, 1] {
                            v = (0..32).map(|l| v[l] + v[l ^ o]).collect();
                        }
                        if row0 + i < rows[j] {
                            y[base + row0 + i] = v[i];
                            writes[base + row0 + i] += 1;
                        }
                    }
                    *acc = [[0f32; 2]; 32];
                };
                let (mut it, mut ba) = (warp * grid + block, 0);
                while it < items {
                    let (mut itb, mut bb) = (it, ba + 1);
                    if bb == nb {
                        (bb, itb) = (0, it + nw);
                    }
                    compute(&mut acc, it, ba);
                    if ba == nb - 1 {
                        store(&mut acc, it);
                    }
                    if itb >= items {
                        break;
                    }
                    (it, ba) = (itb, bb + 1);
                    if ba == nb {
                        (ba, it) = (0, itb + nw);
                    }
                    compute(&mut acc, itb, bb);
                    if bb == nb - 1 {
                        store(&mut acc, itb);
                    }
                }
            }
        }
        (y, writes)
    }

    /// The host transcription of `cc_u4` against `PackedMatrix::matmul` (the CPU's packed
    /// product: the same activation quantization and integer sums, so within 1e-5 of the
    /// largest output) and against an f64 product of the dequantized weights (within the
    /// 15-bit activation rounding, |Δx| ≤ amax/32512 per element, plus 1e-5 of Σ|w·x|).
    /// Widths with a partial last step (128, 1152, 4224), 1–3 matrices with odd rows, grids
    /// with more and fewer warps than items; every output written exactly once.
    #[test]
    fn cc_transcription_matches_the_cpu_product() {
        for (rows, cols, grid) in [
            (vec![5usize], 128usize, 1usize),
            (vec![7, 3, 9], 1152, 2),
            (vec![37, 1], 4224, 1),
            (vec![40, 40, 16], 2048, 3),
            (vec![3], 14336, 1),
        ] {
            let ws: Vec<_> = rows
                .iter()
                .enumerate()
                .map(|(j, &r)| matrix(DType::Q4_0, r, cols, 4, (r * cols + j) as u64))
                .collect();
            let rs: Vec<Repacked> = ws.iter().map(|w| Repacked::new(w).unwrap()).collect();
            assert!(rs.iter().all(|r| r.layout.group == 128 && r.m.is_none()));
            let refs: Vec<&Repacked> = rs.iter().collect();
            for bf16_mode in [false, true] {
                let mut x: Vec<f32> = (0..cols)
                    .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 337.0 + 0.3)
                    .collect();
                x[cols / 3] = 0.0;
                if bf16_mode {
                    x.iter_mut().for_each(|v| *v = bf16::from_f32(*v).to_f32());
                }
                let (got, writes) = emulate(&refs, &x, bf16_mode, grid);
                assert!(
                    writes.iter().all(|&n| n == 1),
                    "{rows:?}x{cols}: {writes:?}"
                );
                let mut at = 0;
                for w in &ws {
                    let mut cpu = vec![0f32; w.rows()];
                    w.matmul(&x, 1, &mut cpu);
                    let scale = cpu.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let dense = w.dequantize();
                    for (i, &c) in cpu.iter().enumerate() {
                        let g = got[at + i];
                        let what = format!("{rows:?}x{cols} bf16 {bf16_mode} row {i}");
                        assert!((g - c).abs() <= 1e-5 * scale, "{what}: {g} vs CPU {c}");
                        let wr = &dense[i * cols..(i + 1) * cols];
                        let exact: f64 =
                            wr.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let mag: f64 = wr
                            .iter()
                            .zip(&x)
                            .map(|(&a, &b)| (a as f64 * b as f64).abs())
                            .sum();
                        let rounding: f64 = wr
                            .chunks(32)
                            .zip(x.chunks(32))
                            .map(|(wc, xc)| {
                                let amax = xc.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
                                wc.iter().map(|&a| (a as f64).abs()).sum::<f64>() * amax / 32512.0
                            })
                            .sum();
                        assert!(
                            (g as f64 - exact).abs() <= rounding + 1e-5 * mag,
                            "{what}: {g} vs {exact}"
                        );
                    }
                    at += w.rows();
                }
            }
        }
    }
}
