//! CUDA backend (feature `cuda`): cudarc's driver API, loaded at run time, with cuBLAS for every
//! matrix product and a handful of NVRTC-compiled kernels (`kernels.cu`) for the rest. Nothing
//! of the CUDA toolkit is needed to build; at run time it opens `libcuda.so.1`,
//! `libnvrtc.so.13` and `libcublas.so.13` (decision 070).
//!
//! Tensors are f32 on the device. cuBLAS runs its default math mode, so f32 products are not
//! silently done in TF32: results match the CPU backend to float rounding.

use crate::{AttentionMask, Backend, Epilogue, Error, Prologue, Result};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, CudaView, DevicePtr,
    DevicePtrMut, LaunchConfig, PushKernelArg,
};
use std::sync::Arc;

mod attention;
mod bf16;
mod calib;
mod codes;
mod kvdev;
mod kvpaged;
mod launch;
mod linear;
mod packed;
use launch::Arg;
mod recycle;
mod tensor;
use bf16::{bf16_bits, Bf16Gemm};
pub use codes::CudaCodes;
pub use kvdev::{device_head_dim, CudaKv, DeviceKv};
pub use packed::Gemv;
pub use tensor::CudaTensor;
use tensor::Store;

/// The row kernels, after the block reductions they share with the packed products' producers.
const KERNELS: &str = concat!(include_str!("reduce.cu"), include_str!("kernels.cu"));
/// `reduce.cu`: block_sum and rms_inv, prepended to every module that normalises rows.
pub(super) const REDUCE: &str = include_str!("reduce.cu");
/// Threads per block for row-wise kernels (a multiple of 32).
const ROW_THREADS: u32 = 256;

fn err<E: std::fmt::Debug>(what: &str) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error(format!("cuda {what}: {e:?}"))
}

/// What the matrix products of the forward pass run in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// Everything in f32 (cuBLAS's default math, no TF32): matches the CPU to float rounding.
    #[default]
    F32,
    /// Linear weights stored in bf16; activations are rounded to bf16 for every matrix product
    /// (linear layers, attention, XᵀX) and accumulated in f32; the rest stays f32. This is how
    /// a bf16 model runs in transformers, with f32 rather than bf16 between the products.
    Bf16,
}

struct Kernels {
    embedding: CudaFunction,
    add: CudaFunction,
    add_bias: CudaFunction,
    silu_mul: CudaFunction,
    gelu_mul: CudaFunction,
    scale_rows: CudaFunction,
    columns: CudaFunction,
    rms_norm: CudaFunction,
    rope: CudaFunction,
    masked_softmax: CudaFunction,
    masked_softmax_bf16: CudaFunction,
    f32_to_bf16: CudaFunction,
    score_rows: CudaFunction,
    codes_to_f32: CudaFunction,
    codes_to_bf16: CudaFunction,
}

/// One GPU, one stream. Cloning shares the stream, cuBLAS handle and kernels.
#[derive(Clone)]
pub struct Cuda {
    stream: Arc<CudaStream>,
    blas: Arc<CudaBlas>,
    k: Arc<Kernels>,
    name: String,
    precision: Precision,
    /// Packed-weight kernels, when linear layers are kept at their compressed size
    /// ([`Cuda::with_packed_weights`]).
    packed: Option<Arc<packed::Kernels>>,
    /// Attention over compressed caches on the device (`kvdev.rs`).
    kvk: Arc<kvdev::Kernels>,
    /// The paged key/value pool's kernels (`kvpaged.rs`).
    kvp: Arc<kvpaged::Kernels>,
    /// Quantized activations of the last packed product's input (`packed.rs`).
    acts: Arc<std::sync::Mutex<Option<packed::ActsScratch>>>,
    /// The one-row int4 g128 tensor-core kernel (decision 139).
    gemv: packed::Gemv,
    /// Whether, when the products are launched with PDL, the short kernels between them are
    /// too (decision 160; on by default, off only to measure it).
    pdl_between: bool,
    /// Whether a decode step's attention over f32 keys runs one GEMM per group member per side,
    /// as before decision 162 (`CRUNCH_ATTENTION=per-member`, for comparison only).
    attention_per_member: bool,
    /// Fewest chunks of 32 positions one block of `kv_attend` covers (8;
    /// `CRUNCH_KV_SPLIT_CHUNKS`, for comparison only).
    kv_split_chunks: usize,
}

impl Cuda {
    /// Opens GPU `ordinal` in f32 and compiles the kernels.
    pub fn new(ordinal: usize) -> Result<Self> {
        Self::with_precision(ordinal, Precision::F32)
    }

    /// Opens GPU `ordinal`, running matrix products in `precision`.
    pub fn with_precision(ordinal: usize, precision: Precision) -> Result<Self> {
        let ctx = CudaContext::new(ordinal).map_err(err("opening the GPU"))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(err("cuBLAS"))?;
        // For the device's architecture: the griddepcontrol instructions of the kernels PDL
        // launches (decision 160) exist from sm_90, and NVRTC's default target is older.
        let module = launch::compile_for_device(&stream, KERNELS)?;
        let f = |n: &str| module.load_function(n).map_err(err("loading a kernel"));
        let k = Kernels {
            embedding: f("embedding")?,
            add: f("add")?,
            add_bias: f("add_bias")?,
            silu_mul: f("silu_mul")?,
            gelu_mul: f("gelu_mul")?,
            scale_rows: f("scale_rows")?,
            columns: f("columns")?,
            rms_norm: f("rms_norm")?,
            rope: f("rope")?,
            masked_softmax: f("masked_softmax")?,
            masked_softmax_bf16: f("masked_softmax_bf16")?,
            f32_to_bf16: f("f32_to_bf16")?,
            score_rows: f("score_rows")?,
            codes_to_f32: f("codes_to_f32")?,
            codes_to_bf16: f("codes_to_bf16")?,
        };
        let kvk = Arc::new(kvdev::Kernels::new(&stream)?);
        let kvp = Arc::new(kvpaged::Kernels::new(&stream)?);
        Ok(Self {
            kvk,
            kvp,
            stream,
            blas: Arc::new(blas),
            k: Arc::new(k),
            name,
            precision,
            packed: None,
            acts: Default::default(),
            gemv: packed::Gemv::default(),
            pdl_between: true,
            attention_per_member: std::env::var("CRUNCH_ATTENTION")
                .is_ok_and(|v| v == "per-member"),
            kv_split_chunks: std::env::var("CRUNCH_KV_SPLIT_CHUNKS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(kvdev::MIN_SPLIT_CHUNKS),
        })
    }

    /// Keeps linear layers in GGUF Q4_0/Q4_1/Q8_0 blocks (crunch's own int4/int8 codes load as
    /// those) at their compressed size and multiplies them with the packed kernels
    /// (`packed.cu`, decision 117); other encodings are dequantized as before. Off by default:
    /// calibration and evaluation keep the f32 (or bf16) weights that match the CPU to float
    /// rounding.
    ///
    /// The environment variable `CRUNCH_GEMV` picks the one-row int4 g128 kernel
    /// ([`Gemv::parse`]; unset: [`Gemv::default`], `cc+pdl`); an unknown name is an error.
    pub fn with_packed_weights(mut self) -> Result<Self> {
        self.packed = Some(Arc::new(packed::Kernels::new(&self)?));
        if let Ok(v) = std::env::var("CRUNCH_GEMV") {
            self.gemv = Gemv::parse(&v)?;
        }
        Ok(self)
    }

    /// The same backend (stream, kernels, weights stay valid) with `gemv` as its one-row
    /// int4 g128 kernel (decision 139): the bench runs every variant on the same weights.
    pub fn with_gemv(mut self, gemv: Gemv) -> Self {
        self.gemv = gemv;
        self
    }

    /// With `false`, `add`, `rms_norm`, `silu_mul` and the producers of the int8 planes are
    /// launched without PDL even under `cc+pdl` (decision 160's comparison; the default is
    /// `true`). The values are the same either way.
    pub fn with_pdl_between(mut self, on: bool) -> Self {
        self.pdl_between = on;
        self
    }

    /// With `true`, a decode step's attention runs one GEMM per group member per side, as
    /// before decision 162 (its comparison; also `CRUNCH_ATTENTION=per-member`). The values
    /// are the same products either way.
    pub fn with_attention_per_member(mut self, on: bool) -> Self {
        self.attention_per_member = on;
        self
    }

    /// The fewest chunks of 32 positions one block of the compressed caches' attention
    /// (`kv_attend`) covers, for comparison (the default is 1; also `CRUNCH_KV_SPLIT_CHUNKS`).
    /// The values differ only by float rounding.
    pub fn with_kv_split_chunks(mut self, chunks: usize) -> Self {
        self.kv_split_chunks = chunks.max(1);
        self
    }

    /// The one-row int4 g128 kernel in use.
    pub fn gemv(&self) -> Gemv {
        self.gemv
    }

    /// Compiles CUDA C `source` (no includes) with NVRTC and loads it on this GPU.
    pub fn compile(&self, source: &str) -> Result<Arc<CudaModule>> {
        compile(&self.stream, source)
    }

    /// The device's name, for reports.
    pub fn device_name(&self) -> &str {
        &self.name
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The stream every operation of this backend runs on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The cuBLAS handle (bound to [`Cuda::stream`]).
    pub fn blas(&self) -> &CudaBlas {
        &self.blas
    }

    /// Waits for all queued work (for timing).
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(err("synchronize"))
    }

    /// Bytes of device memory in use and in total.
    pub fn memory(&self) -> Result<(usize, usize)> {
        let (free, total) = self
            .stream
            .context()
            .mem_get_info()
            .map_err(err("memory info"))?;
        Ok((total - free, total))
    }

    fn alloc(&self, n: usize) -> Result<CudaSlice<f32>> {
        // Every caller overwrites all n elements before reading them (a recycled buffer holds
        // an earlier tensor's values, recycle.rs).
        if let Some(b) = recycle::take(self.stream.context().ordinal(), n) {
            return Ok(b);
        }
        unsafe { self.stream.alloc::<f32>(n) }.map_err(err("allocating"))
    }

    /// `f(a, b, out, n)` over two same-shaped inputs (`add`, `silu_mul`), one thread per element
    /// in blocks of 1,024, with PDL between the products (decision 160).
    fn elementwise_pair(
        &self,
        f: &CudaFunction,
        a: &CudaTensor,
        b: &CudaTensor,
        what: &'static str,
    ) -> Result<CudaTensor> {
        let n = a.len();
        let mut out = self.alloc(n)?;
        let (av, bv) = (a.view(what)?, b.view(what)?);
        let s = &self.stream;
        let ((pa, ga), (pb, gb), (po, go)) =
            (av.device_ptr(s), bv.device_ptr(s), out.device_ptr_mut(s));
        let args = [Arg::Ptr(pa), Arg::Ptr(pb), Arg::Ptr(po), Arg::I64(n as i64)];
        let dims = ((n as u32).div_ceil(1024), 1024, 0);
        // SAFETY: the kernel's parameters are a, b, out, n; each buffer holds n floats; the
        // kernel waits for the previous one before reading (pdl_entry).
        unsafe { launch::launch(self, f, dims, &args, self.pdl_launches(), what) }?;
        drop((ga, gb, go));
        Ok(CudaTensor::owned(out, &a.shape))
    }

    fn rows_cfg(&self, rows: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (ROW_THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// `x` rounded to bf16 (the input of a bf16 matrix product).
    fn to_bf16(&self, x: &CudaView<f32>) -> Result<CudaSlice<u16>> {
        let n = x.len();
        let mut y = unsafe { self.stream.alloc::<u16>(n) }.map_err(err("allocating"))?;
        let n64 = n as i64;
        let mut l = self.stream.launch_builder(&self.k.f32_to_bf16);
        l.arg(x).arg(&mut y).arg(&n64);
        unsafe { l.launch(LaunchConfig::for_num_elems(n as u32)) }.map_err(err("to bf16"))?;
        Ok(y)
    }

    /// `t` stored as [`Backend::upload_weight`] would store it: converted to bf16 in
    /// [`Precision::Bf16`] mode (on the device), unchanged otherwise.
    pub fn weight_from(&self, t: CudaTensor) -> Result<CudaTensor> {
        if self.precision == Precision::F32 || t.is_bf16() || t.is_packed() || t.shape.len() != 2 {
            return Ok(t);
        }
        let b = self.to_bf16(&t.view("weight")?)?;
        Ok(CudaTensor::from_bf16(b, &t.shape))
    }

    fn gemm_bf16(&self) -> Bf16Gemm<'_> {
        Bf16Gemm {
            blas: &self.blas,
            stream: &self.stream,
        }
    }
}

fn compile(stream: &CudaStream, source: &str) -> Result<Arc<CudaModule>> {
    let ptx = cudarc::nvrtc::compile_ptx(source).map_err(err("NVRTC compile"))?;
    stream
        .context()
        .load_module(ptx)
        .map_err(err("loading kernels"))
}

fn dims2(t: &CudaTensor, what: &str) -> Result<(usize, usize)> {
    let last = *t
        .shape
        .last()
        .ok_or_else(|| Error(format!("cuda {what}: scalar tensor")))?;
    Ok((t.len() / last.max(1), last))
}

fn dims3(t: &CudaTensor, what: &str) -> Result<(usize, usize, usize)> {
    match t.shape[..] {
        [a, b, c] => Ok((a, b, c)),
        _ => Err(Error(format!(
            "cuda {what}: expected 3 dimensions, got {:?}",
            t.shape
        ))),
    }
}

impl Backend for Cuda {
    type Tensor = CudaTensor;
    type Codes = CudaCodes;
    // Decision 138: f32 rows in device buffers grown by doubling; compressed modes on the
    // device, attended by `kvdev.cu` (heads of 32–128 channels; others on the host).
    type KvStore = CudaKv;

    fn kv_alloc(&self, spec: crate::KvSpec) -> Result<CudaKv> {
        CudaKv::new(self, spec)
    }

    fn kv_append(&self, kv: &mut CudaKv, k: &CudaTensor, v: &CudaTensor) -> Result<()> {
        kv.append(self, k, v)
    }

    fn kv_len(&self, kv: &CudaKv) -> usize {
        kv.len()
    }

    fn kv_attention(
        &self,
        q: &CudaTensor,
        kv: &CudaKv,
        mask: AttentionMask,
        scale: f32,
    ) -> Result<CudaTensor> {
        kv.attention(self, q, mask, scale)
    }

    // Decision 141: the paged pool's stores and kernels are `kvpaged.rs`'s.
    fn kv_pool_alloc(&self, slots: usize, kvh: usize, d: usize) -> Result<Option<CudaKv>> {
        kvpaged::alloc(self, slots, kvh, d)
    }

    fn kv_pool_write(
        &self,
        p: &mut CudaKv,
        s: &[u32],
        k: &CudaTensor,
        v: &CudaTensor,
    ) -> Result<()> {
        kvpaged::write(self, p, s, k, v)
    }

    fn kv_pool_attention(
        &self,
        q: &CudaTensor,
        pool: &CudaKv,
        seqs: &[crate::PagedSeq],
        page_size: usize,
        window: Option<usize>,
        scale: f32,
    ) -> Result<CudaTensor> {
        kvpaged::attend(self, q, pool, seqs, (page_size, window, scale))
    }

    fn upload(&self, data: Vec<f32>, shape: &[usize]) -> Result<CudaTensor> {
        if data.len() != shape.iter().product::<usize>() {
            return Err(Error(format!(
                "cuda upload: {} values for shape {shape:?}",
                data.len()
            )));
        }
        let buf = self.stream.clone_htod(&data).map_err(err("upload"))?;
        Ok(CudaTensor::owned(buf, shape))
    }

    fn prefers_packed(&self) -> bool {
        self.packed.is_some()
    }

    fn upload_packed(&self, w: crate::PackedMatrix) -> Result<CudaTensor> {
        if self.packed.is_some() {
            if let Some(t) = self.upload_repacked(&w)? {
                return Ok(t);
            }
        }
        let shape = [w.rows(), w.cols()];
        self.upload_weight(w.dequantize(), &shape)
    }

    fn upload_weight(&self, data: Vec<f32>, shape: &[usize]) -> Result<CudaTensor> {
        if self.precision == Precision::F32 || shape.len() != 2 {
            return self.upload(data, shape);
        }
        if data.len() != shape.iter().product::<usize>() {
            return Err(Error(format!(
                "cuda upload: {} values for shape {shape:?}",
                data.len()
            )));
        }
        use rayon::prelude::*;
        let bits: Vec<u16> = data.par_iter().map(|&v| bf16_bits(v)).collect();
        let buf = self.stream.clone_htod(&bits).map_err(err("upload"))?;
        Ok(CudaTensor::from_bf16(buf, shape))
    }

    fn to_f32(&self, t: &CudaTensor) -> Result<Vec<f32>> {
        if let Store::Packed(p) = &t.store {
            let ids: Vec<u32> = (0..p.layout.rows as u32).collect();
            let rows = self.packed_rows(p, &ids)?;
            return self.stream.clone_dtoh(&rows).map_err(err("download"));
        }
        match t.bf16_view() {
            Some(v) => {
                let bits = self.stream.clone_dtoh(&v).map_err(err("download"))?;
                Ok(bits.into_iter().map(bf16::bf16_to_f32).collect())
            }
            None => self
                .stream
                .clone_dtoh(&t.view("download")?)
                .map_err(err("download")),
        }
    }

    fn shape(&self, t: &CudaTensor) -> Vec<usize> {
        t.shape.clone()
    }

    fn reshape(&self, t: &CudaTensor, shape: &[usize]) -> Result<CudaTensor> {
        if shape.iter().product::<usize>() != t.len() {
            return Err(Error(format!("cuda reshape: {:?} to {shape:?}", t.shape)));
        }
        Ok(CudaTensor {
            store: t.store.clone(),
            offset: t.offset,
            shape: shape.to_vec(),
            feed: None,
        })
    }

    fn rows(&self, t: &CudaTensor, start: usize, len: usize) -> Result<CudaTensor> {
        let n = t.shape.first().copied().unwrap_or(0);
        if start + len > n {
            return Err(Error(format!("cuda rows: {start}..{} of {n}", start + len)));
        }
        let row: usize = t.shape[1..].iter().product();
        let mut shape = t.shape.clone();
        shape[0] = len;
        Ok(CudaTensor {
            store: t.store.clone(),
            offset: t.offset + start * row,
            shape,
            feed: None,
        })
    }

    fn concat_rows(&self, parts: &[&CudaTensor]) -> Result<CudaTensor> {
        let first = parts
            .first()
            .ok_or_else(|| Error("cuda concat_rows: no tensors".into()))?;
        let tail = &first.shape[1..];
        let mut rows = 0;
        for p in parts {
            if p.shape.len() != first.shape.len() || &p.shape[1..] != tail {
                return Err(Error(format!(
                    "cuda concat_rows: {:?} with {:?}",
                    first.shape, p.shape
                )));
            }
            rows += p.shape[0];
        }
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut out = self.alloc(total)?;
        let mut at = 0;
        for p in parts {
            let n = p.len();
            let mut dst = out.slice_mut(at..at + n);
            self.stream
                .memcpy_dtod(&p.view("concat_rows")?, &mut dst)
                .map_err(err("concat_rows"))?;
            at += n;
        }
        let mut shape = first.shape.clone();
        shape[0] = rows;
        Ok(CudaTensor::owned(out, &shape))
    }

    fn embedding(&self, table: &CudaTensor, ids: &[u32]) -> Result<CudaTensor> {
        let (vocab, dim) = dims2(table, "embedding")?;
        if let Store::Packed(p) = &table.store {
            return Ok(CudaTensor::owned(
                self.packed_rows(p, ids)?,
                &[ids.len(), dim],
            ));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error(format!(
                "cuda embedding: token id {bad} ≥ vocab {vocab}"
            )));
        }
        let ids_dev = self.stream.clone_htod(ids).map_err(err("upload ids"))?;
        let mut out = self.alloc(ids.len() * dim)?;
        let table = table.view("embedding")?;
        let dim_i = dim as i32;
        let mut b = self.stream.launch_builder(&self.k.embedding);
        b.arg(&table).arg(&ids_dev).arg(&mut out).arg(&dim_i);
        unsafe { b.launch(self.rows_cfg(ids.len())) }.map_err(err("embedding"))?;
        Ok(CudaTensor::owned(out, &[ids.len(), dim]))
    }

    fn linears(&self, x: &CudaTensor, weights: &[&CudaTensor]) -> Result<Vec<CudaTensor>> {
        match self.packed_linears(x, weights)? {
            Some(ys) => Ok(ys),
            None => weights.iter().map(|w| self.linear(x, w, None)).collect(),
        }
    }

    fn linears_fused(
        &self,
        x: &CudaTensor,
        weights: &[&CudaTensor],
        pre: Prologue<'_, CudaTensor>,
        post: Epilogue<'_, CudaTensor>,
    ) -> Result<Vec<CudaTensor>> {
        // One row under `cc`: one fused launch (decision 161).
        match self.cc_fused(x, weights, &pre, &post)? {
            Some(ys) => Ok(ys),
            None => crate::linears_composed(self, x, weights, pre, post),
        }
    }

    fn linear(
        &self,
        x: &CudaTensor,
        weight: &CudaTensor,
        bias: Option<&CudaTensor>,
    ) -> Result<CudaTensor> {
        self.linear_one(x, weight, bias)
    }

    fn add(&self, a: &CudaTensor, b: &CudaTensor) -> Result<CudaTensor> {
        if a.shape != b.shape {
            return Err(Error(format!("cuda add: {:?} + {:?}", a.shape, b.shape)));
        }
        self.elementwise_pair(&self.k.add, a, b, "add")
    }

    fn rms_norm(&self, x: &CudaTensor, weight: &CudaTensor, eps: f32) -> Result<CudaTensor> {
        self.rms_norm_for(x, weight, eps, &[])
    }

    fn rms_norm_for(
        &self,
        x: &CudaTensor,
        weight: &CudaTensor,
        eps: f32,
        next: &[&CudaTensor],
    ) -> Result<CudaTensor> {
        let (rows, cols) = dims2(x, "rms_norm")?;
        if weight.len() != cols {
            return Err(Error(format!(
                "cuda rms_norm: weight {:?} for rows of {cols}",
                weight.shape
            )));
        }
        // With the int8 planes of x when the products of `next` read them (decision 159).
        if let Some(t) = self.rms_norm_feeding(x, weight, eps, next)? {
            return Ok(t);
        }
        let mut out = self.alloc(x.len())?;
        let (xv, wv) = (x.view("rms_norm")?, weight.view("rms_norm")?);
        let s = &self.stream;
        let ((px, gx), (pw, gw), (po, go)) =
            (xv.device_ptr(s), wv.device_ptr(s), out.device_ptr_mut(s));
        let args = [
            Arg::Ptr(px),
            Arg::Ptr(pw),
            Arg::Ptr(po),
            Arg::I32(cols as i32),
            Arg::F32(eps),
        ];
        let dims = (rows as u32, ROW_THREADS, 0);
        let pdl = self.pdl_launches();
        // SAFETY: rms_norm's parameters are x, w, out, cols, eps; x and out hold rows·cols
        // floats, w cols; rms_norm waits for the previous kernel before reading (pdl_entry).
        unsafe { launch::launch(self, &self.k.rms_norm, dims, &args, pdl, "rms_norm") }?;
        drop((gx, gw, go));
        Ok(CudaTensor::owned(out, &x.shape))
    }

    fn rope(&self, x: &CudaTensor, cos: &CudaTensor, sin: &CudaTensor) -> Result<CudaTensor> {
        let (tokens, heads, d) = dims3(x, "rope")?;
        if cos.len() != tokens * d / 2 || sin.len() != cos.len() {
            return Err(Error(format!(
                "cuda rope: tables {:?} for {:?}",
                cos.shape, x.shape
            )));
        }
        let mut out = self.alloc(x.len())?;
        let (xv, cv, sv) = (x.view("rope")?, cos.view("rope")?, sin.view("rope")?);
        let (heads_i, d_i) = (heads as i32, d as i32);
        let mut l = self.stream.launch_builder(&self.k.rope);
        l.arg(&xv)
            .arg(&cv)
            .arg(&sv)
            .arg(&mut out)
            .arg(&heads_i)
            .arg(&d_i);
        let cfg = LaunchConfig {
            grid_dim: ((tokens * heads) as u32, 1, 1),
            block_dim: (64, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { l.launch(cfg) }.map_err(err("rope"))?;
        Ok(CudaTensor::owned(out, &x.shape))
    }

    fn attention(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        v: &CudaTensor,
        mask: AttentionMask,
        scale: f32,
    ) -> Result<CudaTensor> {
        attention::attention(self, q, k, v, mask, scale)
    }

    fn silu_mul(&self, gate: &CudaTensor, up: &CudaTensor) -> Result<CudaTensor> {
        self.silu_mul_for(gate, up, &[])
    }

    fn silu_mul_for(
        &self,
        gate: &CudaTensor,
        up: &CudaTensor,
        next: &[&CudaTensor],
    ) -> Result<CudaTensor> {
        if gate.shape != up.shape {
            return Err(Error(format!(
                "cuda silu_mul: {:?} and {:?}",
                gate.shape, up.shape
            )));
        }
        // With the int8 planes of the output when the products of `next` read them (decision
        // 159).
        if let Some(t) = self.silu_mul_feeding(gate, up, next)? {
            return Ok(t);
        }
        self.elementwise_pair(&self.k.silu_mul, gate, up, "silu_mul")
    }

    fn gelu_mul(&self, gate: &CudaTensor, up: &CudaTensor) -> Result<CudaTensor> {
        if gate.shape != up.shape {
            return Err(Error(format!(
                "cuda gelu_mul: {:?} and {:?}",
                gate.shape, up.shape
            )));
        }
        let n = gate.len();
        let mut out = self.alloc(n)?;
        let (gv, uv, n64) = (gate.view("gelu_mul")?, up.view("gelu_mul")?, n as i64);
        let mut l = self.stream.launch_builder(&self.k.gelu_mul);
        l.arg(&gv).arg(&uv).arg(&mut out).arg(&n64);
        unsafe { l.launch(LaunchConfig::for_num_elems(n as u32)) }.map_err(err("gelu_mul"))?;
        Ok(CudaTensor::owned(out, &gate.shape))
    }

    fn scale_rows(&self, x: &CudaTensor, factors: &[f32]) -> Result<CudaTensor> {
        let rows = x.shape.first().copied().unwrap_or(0);
        if rows != factors.len() {
            return Err(Error(format!(
                "cuda scale_rows: {} factors for {:?}",
                factors.len(),
                x.shape
            )));
        }
        if rows == 0 {
            return Ok(x.clone());
        }
        let cols = (x.len() / rows) as i32;
        let f = self
            .stream
            .clone_htod(factors)
            .map_err(err("upload factors"))?;
        let mut out = self.alloc(x.len())?;
        let xv = x.view("scale_rows")?;
        let mut l = self.stream.launch_builder(&self.k.scale_rows);
        l.arg(&xv).arg(&f).arg(&mut out).arg(&cols);
        unsafe { l.launch(self.rows_cfg(rows)) }.map_err(err("scale_rows"))?;
        Ok(CudaTensor::owned(out, &x.shape))
    }

    fn columns(&self, x: &CudaTensor, start: usize, len: usize) -> Result<CudaTensor> {
        let (rows, cols) = match x.shape[..] {
            [r, c] => (r, c),
            _ => {
                return Err(Error(format!(
                    "cuda columns: expected 2 dimensions, got {:?}",
                    x.shape
                )))
            }
        };
        if start + len > cols || len == 0 {
            return Err(Error(format!(
                "cuda columns: {start}..{} of {cols} columns",
                start + len
            )));
        }
        if rows == 0 {
            return self.upload(Vec::new(), &[0, len]);
        }
        let mut out = self.alloc(rows * len)?;
        let xv = x.view("columns")?;
        let (cols_i, start_i, len_i) = (cols as i32, start as i32, len as i32);
        let mut l = self.stream.launch_builder(&self.k.columns);
        l.arg(&xv)
            .arg(&mut out)
            .arg(&cols_i)
            .arg(&start_i)
            .arg(&len_i);
        unsafe { l.launch(self.rows_cfg(rows)) }.map_err(err("columns"))?;
        Ok(CudaTensor::owned(out, &[rows, len]))
    }

    fn gram_accumulate(&self, acc: &mut Option<CudaTensor>, x: &CudaTensor) -> Result<bool> {
        self.gram_accumulate_impl(acc, x)
    }

    fn synchronize(&self) -> Result<()> {
        Cuda::synchronize(self)
    }

    fn write_weight(&self, weight: &mut CudaTensor, data: &[f32]) -> Result<bool> {
        self.write_weight_impl(weight, data)
    }

    fn upload_codes(&self, q: &crate::QuantCodes) -> Result<Option<CudaCodes>> {
        self.upload_codes_impl(q)
    }

    fn dequantize_codes(&self, codes: &CudaCodes, weight: &mut CudaTensor) -> Result<bool> {
        self.dequantize_codes_impl(codes, weight)
    }

    fn free_memory(&self) -> Result<Option<u64>> {
        self.free_bytes().map(Some)
    }

    fn score_rows(
        &self,
        logits: &CudaTensor,
        base: Option<&CudaTensor>,
        targets: &[u32],
    ) -> Result<Option<Vec<[f64; 4]>>> {
        self.score_rows_impl(logits, base, targets)
    }
}
