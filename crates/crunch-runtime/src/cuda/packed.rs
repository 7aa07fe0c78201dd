//! Packed-weight products on the GPU (issue 17, decision 117): linear layers kept at their
//! compressed size in device memory and multiplied by NVRTC kernels (`packed.cu`).
//!
//! At upload a [`PackedMatrix`] in GGUF Q4_0, Q4_1 or Q8_0 blocks — what crunch's own 2–4-bit
//! and 8-bit symmetric codes and 4-bit asymmetric codes become at load (decision 090) — is
//! rewritten once into a GPU layout ([`Repacked`]): codes back to back (4 or 8 bits), one f16
//! scale (and offset, for Q4_1) per group, where the group is the longest of 128, 64 or 32
//! weights over which every block of the matrix repeats the same scale. crunch's int4 g128
//! weights therefore take 4.125 bits per weight on the GPU, not Q4_0's 4.5. GGUF Q4_K, Q5_K
//! and Q6_K keep their own super-blocks, split into codes and scales (`packed/kquant.rs`,
//! decision 140). Other encodings (Q2_K, Q3_K, Q5_0/Q5_1, IQ types, floats) are dequantized and
//! uploaded as the backend's ordinary weights.
//!
//! Activations are quantized per product as the CPU kernels quantize them (`crunch-kernels`'
//! `act.rs`: chunks of 32, 15 bits as two int8 planes), so the integer dot products are the
//! CPU's exactly and the two backends differ only in the order of the f32 sums.

use super::{err, Cuda, CudaTensor, Store};
use crate::{Error, PackedMatrix, Result};
use cudarc::driver::{
    CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchArgs, LaunchConfig, PushKernelArg,
};
use std::sync::Arc;

mod cc;
mod feed;
mod gemv;
mod kquant;
mod mma;
mod repack;
pub(crate) use feed::{Feed, Order};
pub use gemv::Gemv;
pub(crate) use repack::{Layout, Repacked};

use kquant::KQuant;

const SOURCE: &str = include_str!("packed.cu");
/// Threads per block of the product kernels (`THREADS` in packed.cu) and weight rows per
/// block (`ROWS_PER_BLOCK`).
const THREADS: u32 = 128;
const ROWS_PER_BLOCK: usize = 4;

/// The packed matrices of `weights`, or `None` when any of them is not packed.
pub(super) fn packed_all<'a>(weights: &[&'a CudaTensor]) -> Option<Vec<&'a GpuPacked>> {
    weights
        .iter()
        .map(|t| match &t.store {
            Store::Packed(p) => Some(p.as_ref()),
            _ => None,
        })
        .collect()
}

/// The compiled kernels of `packed.cu`.
pub(crate) struct Kernels {
    _module: Arc<CudaModule>,
    quantize: CudaFunction,
    /// `[u4, u4 with offsets, s8]` × `[1, 4, 8]` activation rows per pass.
    mm: [[CudaFunction; 3]; 3],
    /// K-quants (`packed/kquant.cu`): `[Q4_K, Q5_K, Q6_K]` × `[1, 4, 8]` rows per pass, and
    /// their rows dequantized.
    kq: [[CudaFunction; 3]; 3],
    kq_rows: CudaFunction,
    /// Tensor-core kernels for 1–32 activation rows of int4 g128 (`packed/mma.cu`), or why
    /// they are not used (turned off, a device before sm_80, or they failed to load: then the
    /// dp4a kernels do everything, as before).
    mma: std::result::Result<mma::MmaKernels, String>,
    /// The CUDA-core one-row kernel of [`Gemv::Cc`] (`packed/cc.cu`), or why it is not loaded.
    cc: std::result::Result<cc::CcKernel, String>,
    rows: CudaFunction,
    stream_read: CudaFunction,
    spin: CudaFunction,
}

impl Kernels {
    pub fn new(cuda: &Cuda) -> Result<Self> {
        let ctx = cuda.stream.context();
        let opts = super::launch::device_options(ctx)?;
        // feed.cu calls mma.cu's split_group4, so it comes after it,
        // inside mma.cu's sm_80 guard (outside it for the lab's nvcc build, which includes the
        // file as it is).
        let source = format!(
            "{}{SOURCE}{}{}{}#if __CUDA_ARCH__ >= 800\n{}#endif\n",
            super::REDUCE,
            kquant::SOURCE,
            mma::SOURCE,
            cc::SOURCE,
            feed::SOURCE,
        );
        let ptx = cudarc::nvrtc::compile_ptx_with_opts(source, opts)
            .map_err(err("NVRTC compile (packed.cu)"))?;
        let module = ctx
            .load_module(ptx)
            .map_err(err("loading packed kernels"))?;
        let f = |n: &str| module.load_function(n).map_err(err("loading a kernel"));
        let set = |p: &str| -> Result<[CudaFunction; 3]> {
            Ok([
                f(&format!("{p}_1"))?,
                f(&format!("{p}_4"))?,
                f(&format!("{p}_8"))?,
            ])
        };
        Ok(Kernels {
            quantize: f("quantize_acts")?,
            mm: [set("packed_u4")?, set("packed_u4m")?, set("packed_s8")?],
            kq: [
                set(KQuant::Q4K.name())?,
                set(KQuant::Q5K.name())?,
                set(KQuant::Q6K.name())?,
            ],
            kq_rows: f("kquant_rows")?,
            mma: match mma::MmaKernels::new(cuda, &module) {
                Ok(Some(k)) => Ok(k),
                Ok(None) => Err("compute capability below 8.0".into()),
                Err(e) => Err(format!("not loaded: {e}")),
            },
            cc: cc::CcKernel::new(cuda, &module).map_err(|e| format!("not loaded: {e}")),
            rows: f("packed_rows")?,
            stream_read: f("stream_read")?,
            spin: f("spin")?,
            _module: module,
        })
    }
}

/// A packed weight matrix in device memory.
pub(crate) struct GpuPacked {
    pub layout: Layout,
    codes: CudaSlice<u8>,
    d: CudaSlice<u16>,
    m: Option<CudaSlice<u16>>,
    pub bytes: usize,
}

impl GpuPacked {
    /// A launch of `f` whose first three arguments are this matrix's codes, scales and offsets
    /// (the scales again when there are no offsets: the kernels do not read them then), as
    /// every packed kernel takes them.
    fn launch<'a>(&'a self, stream: &'a CudaStream, f: &'a CudaFunction) -> LaunchArgs<'a> {
        let mut l = stream.launch_builder(f);
        l.arg(&self.codes)
            .arg(&self.d)
            .arg(self.m.as_ref().unwrap_or(&self.d));
        l
    }
}

/// The backend's buffers for quantized activations (`packed.cu`'s `quantize_acts`), grown as
/// needed, with the input they hold.
pub(crate) struct ActsScratch {
    qa: CudaSlice<i8>,
    qb: CudaSlice<i8>,
    dx: CudaSlice<f32>,
    e32: CudaSlice<f32>,
    /// Capacity in activations.
    len: usize,
    /// (buffer, offset, length) of the tensor quantized into these buffers, if any.
    key: Option<(usize, usize, usize)>,
    /// That tensor's buffer, kept alive so that no other tensor can take its address.
    source: Option<Store>,
}

impl Cuda {
    /// [`Cuda::with_packed_weights`] with decision 117's kernels only (integer `dp4a` products
    /// on quantized activations at every batch size): the baseline the tensor-core kernels are
    /// measured against.
    pub fn with_dp4a_packed_weights(mut self) -> Result<Self> {
        let mut k = Kernels::new(&self)?;
        k.mma = Err("turned off (with_dp4a_packed_weights)".into());
        self.packed = Some(Arc::new(k));
        Ok(self)
    }

    /// Why the packed products do not use the tensor-core kernels (decision 132), or `None`
    /// when they do (for int4 g128 and 1–32 rows); also `None` without packed weights.
    pub fn packed_mma_unavailable(&self) -> Option<String> {
        self.packed.as_ref()?.mma.as_ref().err().cloned()
    }

    fn packed_kernels(&self, what: &str) -> Result<&Kernels> {
        self.packed
            .as_deref()
            .ok_or_else(|| Error(format!("cuda {what}: packed kernels are not loaded")))
    }

    /// `w` in the GPU layout, or `None` when the kernels do not read its encoding.
    pub(crate) fn upload_repacked(&self, w: &PackedMatrix) -> Result<Option<CudaTensor>> {
        let Some(r) = Repacked::new(w) else {
            return Ok(None);
        };
        let s = &self.stream;
        let up = |what| err(what);
        let p = GpuPacked {
            layout: r.layout,
            bytes: r.device_bytes(),
            codes: s.clone_htod(&r.codes).map_err(up("upload codes"))?,
            d: s.clone_htod(&r.d).map_err(up("upload scales"))?,
            m: match &r.m {
                Some(m) => Some(s.clone_htod(m).map_err(up("upload offsets"))?),
                None => None,
            },
        };
        Ok(Some(CudaTensor {
            store: Store::Packed(Arc::new(p)),
            offset: 0,
            shape: vec![r.layout.rows, r.layout.cols],
            feed: None,
        }))
    }

    /// `x [n, cols]` quantized as the CPU kernels quantize activations, into the backend's
    /// scratch buffers (locked for the caller's product). The scratch remembers which tensor
    /// it holds, so products that share an input (q/k/v, gate/up) quantize it once: tensors
    /// are never written after they are made, and the scratch keeps its source alive, so the
    /// same buffer, offset and length mean the same values. Reuse is safe because every
    /// kernel runs on the one stream: a later quantization starts after earlier products end.
    fn quantize_acts(
        &self,
        x: &CudaTensor,
        cols: usize,
    ) -> Result<std::sync::MutexGuard<'_, Option<ActsScratch>>> {
        let k = self.packed_kernels("quantize")?;
        let xv = x.view("packed linear input")?;
        let len = xv.len();
        if cols == 0 || !cols.is_multiple_of(32) || !len.is_multiple_of(cols) {
            return Err(Error(format!(
                "cuda packed linear: input {:?} for rows of {cols}",
                x.shape
            )));
        }
        let Store::F32(buf) = &x.store else {
            unreachable!("view() succeeded")
        };
        let key = (Arc::as_ptr(buf) as usize, x.offset, len);
        let mut guard = self
            .acts
            .lock()
            .map_err(|_| Error("cuda packed linear: scratch lock poisoned".into()))?;
        if guard.as_ref().is_some_and(|s| s.key == Some(key)) {
            return Ok(guard);
        }
        let chunks = len / 32;
        if guard.as_ref().is_none_or(|s| s.len < len) {
            let len = len.max(1).next_power_of_two();
            // SAFETY: the kernel writes every element a product reads.
            *guard = Some(unsafe {
                ActsScratch {
                    qa: self.stream.alloc::<i8>(len).map_err(err("allocating"))?,
                    qb: self.stream.alloc::<i8>(len).map_err(err("allocating"))?,
                    dx: self
                        .stream
                        .alloc::<f32>(len / 32 + 1)
                        .map_err(err("allocating"))?,
                    e32: self
                        .stream
                        .alloc::<f32>(len / 32 + 1)
                        .map_err(err("allocating"))?,
                    len,
                    key: None,
                    source: None,
                }
            });
        }
        let acts = guard.as_mut().expect("allocated above");
        acts.key = None;
        if chunks > 0 {
            let (chunks64, bf16) = (
                chunks as i64,
                (self.precision == super::Precision::Bf16) as i32,
            );
            let mut l = self.stream.launch_builder(&k.quantize);
            l.arg(&xv)
                .arg(&mut acts.qa)
                .arg(&mut acts.qb)
                .arg(&mut acts.dx)
                .arg(&mut acts.e32)
                .arg(&chunks64)
                .arg(&bf16);
            let cfg = LaunchConfig {
                grid_dim: (chunks.div_ceil(8) as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            unsafe { l.launch(cfg) }.map_err(err("quantize activations"))?;
        }
        acts.key = Some(key);
        acts.source = Some(x.store.clone());
        Ok(guard)
    }

    /// `y [n, rows] = x [n, cols] · Wᵀ` with `W` packed.
    pub(crate) fn packed_matmul(&self, x: &CudaTensor, w: &GpuPacked) -> Result<CudaSlice<f32>> {
        if let Some(kq) = w.layout.kquant {
            return self.kquant_matmul(self.packed_kernels("linear")?, kq, x, w);
        }
        if let Ok(mk) = &self.packed_kernels("linear")?.mma {
            if let Some(y) = self.mma_matmul(mk, x, w)? {
                return Ok(y);
            }
        }
        let guard = self.quantize_acts(x, w.layout.cols)?;
        let acts = guard.as_ref().expect("quantize_acts fills the scratch");
        let n = x.len() / w.layout.cols;
        let mut y = self.alloc(n * w.layout.rows)?;
        if n == 0 || w.layout.rows == 0 {
            return Ok(y);
        }
        let k = self.packed_kernels("linear")?;
        let kind = match (w.layout.bits, w.m.is_some()) {
            (4, false) => 0,
            (4, true) => 1,
            _ => 2,
        };
        let per_pass = match n {
            1 => 0,
            2..=4 => 1,
            _ => 2,
        };
        let f = &k.mm[kind][per_pass];
        let (rows, cols, group, n_i) = (
            w.layout.rows as i32,
            w.layout.cols as i32,
            w.layout.group as i32,
            n as i32,
        );
        let mut l = w.launch(&self.stream, f);
        l.arg(&acts.qa)
            .arg(&acts.qb)
            .arg(&acts.dx)
            .arg(&acts.e32)
            .arg(&mut y)
            .arg(&rows)
            .arg(&cols)
            .arg(&group)
            .arg(&n_i);
        let cfg = LaunchConfig {
            grid_dim: (w.layout.rows.div_ceil(ROWS_PER_BLOCK) as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { l.launch(cfg) }.map_err(err("packed product"))?;
        Ok(y)
    }

    /// [`crate::Backend::linears`] as one launch, when the one-row kernel is grouped
    /// ([`Gemv::Wide`] with `grouped`, or [`Gemv::Cc`]), `x` is 1–16 f32 rows (1–32 on the int8
    /// kernels, decision 155) and the weights
    /// are 1–3 int4 g128 matrices of its width the tensor-core kernels read: one output
    /// buffer, each product's `[n, rows_j]` output a view of it. `None` otherwise (the caller
    /// runs one product per weight).
    pub(crate) fn packed_linears(
        &self,
        x: &CudaTensor,
        weights: &[&CudaTensor],
    ) -> Result<Option<Vec<CudaTensor>>> {
        // The wide kernel's groups per buffer (the CUDA-core variant falls back to 2).
        let groups = match self.gemv {
            Gemv::Wide {
                groups,
                grouped: true,
            } => groups,
            Gemv::Cc { .. } => 2,
            _ => return Ok(None),
        };
        let Some(Ok(mk)) = self.packed.as_deref().map(|k| k.mma.as_ref()) else {
            return Ok(None);
        };
        let Some(ws) = packed_all(weights) else {
            return Ok(None);
        };
        let Some(xv) = x.f32_view() else {
            return Ok(None);
        };
        let n = x.shape.first().copied().unwrap_or(0);
        // The int8 kernels take 17–32 rows too (decision 155).
        let most = if self.int8_rows(&ws) {
            mma::MAX_ROWS
        } else {
            mma::GROUPED_ROWS
        };
        if !mk.groupable(&ws)
            || x.shape.len() != 2
            || x.shape[1] != ws[0].layout.cols
            || !(1..=most).contains(&n)
            || xv.len() != n * ws[0].layout.cols
            || !x.offset.is_multiple_of(4)
        {
            return Ok(None);
        }
        // One row: decision 139's wide kernel; 2–16 rows: decision 144's grouped kernel (matrix
        // j's [n, rows_j] output at n·(rows_0 + … + rows_(j−1))).
        let y = if n == 1 {
            self.gemv_one_row(mk, &xv, &ws, groups)?
        } else if n > mma::GROUPED_ROWS {
            self.mma_gemm_int8(mk, &xv, &ws, n, x.feed.as_deref())?
        } else {
            self.mma_gemm_grouped(mk, &xv, &ws, n, x.feed.as_deref())?
        };
        let y = Arc::new(super::recycle::F32Buf::new(y));
        let mut at = 0;
        Ok(Some(
            ws.iter()
                .map(|w| {
                    let t = CudaTensor {
                        store: Store::F32(y.clone()),
                        offset: at,
                        shape: vec![n, w.layout.rows],
                        feed: None,
                    };
                    at += n * w.layout.rows;
                    t
                })
                .collect(),
        ))
    }

    /// Rows `ids` of a packed matrix, dequantized: `[ids.len(), cols]`.
    pub(crate) fn packed_rows(&self, w: &GpuPacked, ids: &[u32]) -> Result<CudaSlice<f32>> {
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= w.layout.rows) {
            return Err(Error(format!(
                "cuda embedding: token id {bad} ≥ vocab {}",
                w.layout.rows
            )));
        }
        let mut out = self.alloc(ids.len() * w.layout.cols)?;
        if ids.is_empty() {
            return Ok(out);
        }
        let k = self.packed_kernels("embedding")?;
        let ids_dev = self.stream.clone_htod(ids).map_err(err("upload ids"))?;
        if let Some(kq) = w.layout.kquant {
            self.kquant_rows(k, kq, w, &ids_dev, &mut out, ids.len())?;
            return Ok(out);
        }
        let (cols, group, bits, has_m) = (
            w.layout.cols as i32,
            w.layout.group as i32,
            w.layout.bits as i32,
            w.m.is_some() as i32,
        );
        let mut l = w.launch(&self.stream, &k.rows);
        l.arg(&ids_dev)
            .arg(&mut out)
            .arg(&cols)
            .arg(&group)
            .arg(&bits)
            .arg(&has_m);
        unsafe { l.launch(self.rows_cfg(ids.len())) }.map_err(err("packed rows"))?;
        Ok(out)
    }

    /// Device time of the work `enqueue` puts on the stream, in seconds, measured between two
    /// events behind a 50 ms busy kernel, so that the queued kernels run back to back
    /// (launch costs on the host hidden, as a CUDA graph would). Also returns the host's
    /// enqueueing time: when it nears 50 ms the figure includes host gaps.
    pub fn device_seconds(&self, enqueue: impl FnOnce() -> Result<()>) -> Result<(f64, f64)> {
        let k = self.packed_kernels("timing")?;
        self.synchronize()?;
        let ns: i64 = 50_000_000;
        let mut l = self.stream.launch_builder(&k.spin);
        l.arg(&ns);
        let one = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { l.launch(one) }.map_err(err("spin"))?;
        let timing = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.stream.record_event(timing).map_err(err("event"))?;
        let host = std::time::Instant::now();
        enqueue()?;
        let host = host.elapsed().as_secs_f64();
        let end = self.stream.record_event(timing).map_err(err("event"))?;
        let ms = start.elapsed_ms(&end).map_err(err("event time"))?;
        Ok((ms as f64 / 1e3, host))
    }

    /// Reads `bytes` of device memory `repeats` times with a streaming kernel and returns the
    /// best bandwidth in bytes per second (the ceiling the packed products are held to).
    pub fn read_bandwidth(&self, bytes: usize, repeats: usize) -> Result<f64> {
        let k = self.packed_kernels("bandwidth")?;
        let words = bytes / 16;
        let buf = self
            .stream
            .alloc_zeros::<u32>(words * 4)
            .map_err(err("allocating"))?;
        let mut out = self
            .stream
            .alloc_zeros::<u32>(1)
            .map_err(err("allocating"))?;
        let n = words as i64;
        let sms = self
            .stream
            .context()
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .map_err(err("SM count"))? as u32;
        let cfg = LaunchConfig {
            grid_dim: (sms * 8, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut best = f64::INFINITY;
        for _ in 0..repeats.max(1) + 1 {
            self.synchronize()?;
            let t = std::time::Instant::now();
            let mut l = self.stream.launch_builder(&k.stream_read);
            l.arg(&buf).arg(&n).arg(&mut out);
            unsafe { l.launch(cfg) }.map_err(err("stream read"))?;
            self.synchronize()?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        Ok((words * 16) as f64 / best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crunch_kernels::{Bytes, DType};

    /// Random blocks of `dtype`; `share` consecutive blocks of a row get the same scale.
    pub(super) fn matrix(
        dtype: DType,
        rows: usize,
        cols: usize,
        share: usize,
        seed: u64,
    ) -> PackedMatrix {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let (_, bb) = dtype.block();
        let mut bytes = Vec::new();
        let mut scale = [0u8; 4];
        for b in 0..rows * cols / 32 {
            if b % share == 0 {
                let d = half::f16::from_f32(0.001 + (next() % 1000) as f32 * 1e-5);
                let m = half::f16::from_f32(-((next() % 1000) as f32) * 1e-4);
                scale[..2].copy_from_slice(&d.to_le_bytes());
                scale[2..].copy_from_slice(&m.to_le_bytes());
            }
            let head = if dtype == DType::Q4_1 { 4 } else { 2 };
            bytes.extend_from_slice(&scale[..head]);
            for _ in head..bb {
                bytes.push(next() as u8);
            }
        }
        PackedMatrix::new(dtype, rows, cols, Bytes::owned(bytes)).unwrap()
    }

    /// Random K-quant blocks: random bytes with finite f16 super-scales (d in about
    /// [1e-3, 1e-2], dmin of either sign as GGUF allows).
    pub(super) fn kmatrix(dtype: DType, rows: usize, cols: usize, seed: u64) -> PackedMatrix {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let (_, bb) = dtype.block();
        let f16_at: &[usize] = if dtype == DType::Q6K { &[208] } else { &[0, 2] };
        let mut bytes = Vec::with_capacity(rows * cols / 256 * bb);
        for _ in 0..rows * cols / 256 {
            let start = bytes.len();
            bytes.extend((0..bb).map(|_| next() as u8));
            for (i, &at) in f16_at.iter().enumerate() {
                let v = (0.001 + (next() % 1000) as f32 * 1e-5)
                    * if i == 1 && next() % 4 == 0 { -1.0 } else { 1.0 };
                bytes[start + at..start + at + 2]
                    .copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
            }
        }
        PackedMatrix::new(dtype, rows, cols, Bytes::owned(bytes)).unwrap()
    }

    /// The repacked layout dequantizes to exactly the CPU's weights, and the group is the
    /// longest one the scales allow.
    #[test]
    fn repacked_weights_equal_the_cpu_dequantization() {
        for (dtype, share, cols, want_group) in [
            (DType::Q4_0, 4, 256, 128),
            (DType::Q4_0, 4, 96, 32),
            (DType::Q4_0, 2, 192, 64),
            (DType::Q4_0, 1, 64, 32),
            (DType::Q4_1, 4, 128, 128),
            (DType::Q4_1, 1, 160, 32),
            (DType::Q8_0, 4, 384, 128),
            (DType::Q8_0, 1, 32, 32),
        ] {
            let rows = 7;
            let w = matrix(dtype, rows, cols, share, cols as u64);
            let r = Repacked::new(&w).unwrap();
            assert_eq!(
                r.layout.group, want_group,
                "{dtype:?} share {share} cols {cols}"
            );
            let cpu = w.dequantize();
            for i in 0..rows {
                for j in 0..cols {
                    let (a, b) = (r.weight(i, j), cpu[i * cols + j]);
                    assert_eq!(a.to_bits(), b.to_bits(), "{dtype:?} ({i}, {j}): {a} vs {b}");
                }
            }
            assert_eq!(r.codes.len() * 8, rows * cols * r.layout.bits as usize);
        }
        assert!(Repacked::new(&matrix(DType::Q4_0, 1, 32, 1, 1)).is_some());
        let f32m = PackedMatrix::new(DType::F32, 1, 1, Bytes::owned(vec![0; 4])).unwrap();
        assert!(Repacked::new(&f32m).is_none());
    }

    /// A host transcription of `packed_mm`'s indexing (words of codes, dp4a over the two
    /// activation planes) gives the CPU kernel's products: checks the layout the GPU reads.
    #[test]
    fn kernel_indexing_matches_the_cpu_product() {
        use crunch_kernels::{ActBits, Acts};
        for (dtype, share) in [(DType::Q4_0, 4), (DType::Q4_1, 1), (DType::Q8_0, 2)] {
            let (rows, cols, n) = (5, 192, 3);
            let w = matrix(dtype, rows, cols, share, 7);
            let r = Repacked::new(&w).unwrap();
            let x: Vec<f32> = (0..n * cols)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 9.0)
                .collect();
            let mut want = vec![0f32; n * rows];
            w.matmul(&x, n, &mut want);
            let mut acts = Acts::new(ActBits::I16);
            acts.quantize(&x, n, cols);
            let h = |b: u16| half::f16::from_bits(b).to_f32();
            let words: Vec<u32> = r
                .codes
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let dp4a = |w: u32, a: &[i8]| -> i32 {
                (0..4)
                    .map(|t| {
                        let c = if r.layout.bits == 4 {
                            ((w >> (8 * t)) & 0xff) as i32
                        } else {
                            (w >> (8 * t)) as u8 as i8 as i32
                        };
                        c * a[t] as i32
                    })
                    .sum()
            };
            let (chunks, gpr, wpc) = (cols / 32, cols / r.layout.group, r.layout.bits as usize);
            for row in 0..n {
                let (pa, pb) = (acts.a(row), acts.b(row));
                for i in 0..rows {
                    let mut acc = 0f32;
                    for c in 0..chunks {
                        let wd = &words[(i * chunks + c) * wpc..][..wpc];
                        let g = i * gpr + c * 32 / r.layout.group;
                        let d = h(r.d[g]);
                        let m = match &r.m {
                            Some(m) => h(m[g]),
                            None if r.layout.bits == 4 => -8.0 * d,
                            None => 0.0,
                        };
                        let dot = |p: &[i8]| -> i32 {
                            let a = &p[32 * c..32 * c + 32];
                            if r.layout.bits == 4 {
                                (0..4)
                                    .map(|t| {
                                        dp4a(wd[t] & 0x0f0f_0f0f, &a[4 * t..])
                                            + dp4a((wd[t] >> 4) & 0x0f0f_0f0f, &a[16 + 4 * t..])
                                    })
                                    .sum()
                            } else {
                                (0..8).map(|t| dp4a(wd[t], &a[4 * t..])).sum()
                            }
                        };
                        let isum = dot(pa) * 128 + dot(pb);
                        let xs = acts.xc(row)[c];
                        let xe = acts.e32(row)[c];
                        acc += d * (xs * isum as f32) + m * xe;
                    }
                    let cpu = want[row * rows + i];
                    assert!(
                        (acc - cpu).abs() <= 1e-5 * (1.0 + cpu.abs()),
                        "{dtype:?} [{row}, {i}]: {acc} vs {cpu}"
                    );
                }
            }
        }
    }

    /// On a GPU (skipped without one): the kernels against the CPU packed kernel, within 1e-3
    /// of the output's largest value, f32 and bf16 activations, 1–17 rows, odd shapes, Q4_0,
    /// Q4_1, Q8_0 and the K-quants; and embedding rows bit for bit. `examples/gpu_packed.rs` in crunch-generate runs more.
    #[test]
    fn gpu_products_match_the_cpu_kernel() {
        use crate::{Backend, Precision};
        // cudarc panics (rather than failing) when it finds no driver library.
        let gpus = [Precision::F32, Precision::Bf16].map(|p| {
            std::panic::catch_unwind(|| {
                Cuda::with_precision(0, p).and_then(|c| c.with_packed_weights())
            })
            .map_err(|_| Error("no CUDA driver".into()))
            .and_then(|r| r)
        });
        let [Ok(f32_gpu), Ok(bf16_gpu)] = gpus else {
            eprintln!("no usable GPU: skipped");
            return;
        };
        for (dtype, share) in [
            (DType::Q4_0, 4),
            (DType::Q4_0, 1),
            (DType::Q4_1, 2),
            (DType::Q8_0, 1),
            // share 0: a K-quant (decision 140)
            (DType::Q4K, 0),
            (DType::Q5K, 0),
            (DType::Q6K, 0),
        ] {
            let shapes = if share == 0 {
                [(1, 256), (37, 4352), (130, 768)]
            } else {
                [(1, 32), (37, 4224), (130, 160)]
            };
            for (rows, cols) in shapes {
                let seed = (rows * cols) as u64;
                let w = if share == 0 {
                    kmatrix(dtype, rows, cols, seed)
                } else {
                    matrix(dtype, rows, cols, share, seed)
                };
                for (gpu, bf16) in [(&f32_gpu, false), (&bf16_gpu, true)] {
                    let wt = gpu.upload_packed(w.clone()).unwrap();
                    assert!(wt.is_packed());
                    for n in [1, 3, 9, 17] {
                        let x: Vec<f32> = (0..n * cols)
                            .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 1001.0)
                            .map(|v| {
                                if bf16 {
                                    half::bf16::from_f32(v).to_f32()
                                } else {
                                    v
                                }
                            })
                            .collect();
                        let mut want = vec![0f32; n * rows];
                        w.matmul(&x, n, &mut want);
                        let xt = gpu.upload(x, &[n, cols]).unwrap();
                        let got = gpu.to_f32(&gpu.linear(&xt, &wt, None).unwrap()).unwrap();
                        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                        for (g, c) in got.iter().zip(&want) {
                            assert!(
                                (g - c).abs() <= 1e-3 * scale,
                                "{dtype:?} {rows}x{cols} n={n} bf16={bf16}: {g} vs {c}"
                            );
                        }
                    }
                }
                let wt = f32_gpu.upload_packed(w.clone()).unwrap();
                let ids: Vec<u32> = (0..rows as u32).rev().collect();
                let got = f32_gpu
                    .to_f32(&f32_gpu.embedding(&wt, &ids).unwrap())
                    .unwrap();
                let all = w.dequantize();
                for (b, &i) in ids.iter().enumerate() {
                    let i = i as usize;
                    assert_eq!(got[b * cols..(b + 1) * cols], all[i * cols..(i + 1) * cols]);
                }
            }
        }
    }
}
