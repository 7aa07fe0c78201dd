//! CUDA backend (feature `cuda`): cudarc's driver API, loaded at run time, with cuBLAS for every
//! matrix product and a handful of NVRTC-compiled kernels (`kernels.cu`) for the rest. Nothing
//! of the CUDA toolkit is needed to build; at run time it opens `libcuda.so.1`,
//! `libnvrtc.so.13` and `libcublas.so.13` (decision 070).
//!
//! Tensors are f32 on the device. cuBLAS runs its default math mode, so f32 products are not
//! silently done in TF32: results match the CPU backend to float rounding.

use crate::{AttentionMask, Backend, Error, Result};
use cudarc::cublas::sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, CudaView, LaunchConfig, PushKernelArg,
};
use std::sync::Arc;

const KERNELS: &str = include_str!("kernels.cu");
/// Threads per block for row-wise kernels (a multiple of 32).
const ROW_THREADS: u32 = 256;

fn err<E: std::fmt::Debug>(what: &str) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error(format!("cuda {what}: {e:?}"))
}

/// A device tensor: a window of a shared f32 buffer, so `rows` and `reshape` copy nothing.
#[derive(Clone)]
pub struct CudaTensor {
    buf: Arc<CudaSlice<f32>>,
    offset: usize,
    shape: Vec<usize>,
}

impl CudaTensor {
    fn len(&self) -> usize {
        self.shape.iter().product()
    }
    fn view(&self) -> CudaView<'_, f32> {
        self.buf.slice(self.offset..self.offset + self.len())
    }
    fn owned(buf: CudaSlice<f32>, shape: &[usize]) -> Self {
        Self {
            buf: Arc::new(buf),
            offset: 0,
            shape: shape.to_vec(),
        }
    }
}

struct Kernels {
    embedding: CudaFunction,
    add: CudaFunction,
    add_bias: CudaFunction,
    silu_mul: CudaFunction,
    rms_norm: CudaFunction,
    rope: CudaFunction,
    masked_softmax: CudaFunction,
}

/// One GPU, one stream. Cloning shares the stream, cuBLAS handle and kernels.
#[derive(Clone)]
pub struct Cuda {
    stream: Arc<CudaStream>,
    blas: Arc<CudaBlas>,
    k: Arc<Kernels>,
    name: String,
}

impl Cuda {
    /// Opens GPU `ordinal` and compiles the kernels.
    pub fn new(ordinal: usize) -> Result<Self> {
        let ctx = CudaContext::new(ordinal).map_err(err("opening the GPU"))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(err("cuBLAS"))?;
        let ptx = cudarc::nvrtc::compile_ptx(KERNELS).map_err(err("NVRTC compile"))?;
        let module = ctx.load_module(ptx).map_err(err("loading kernels"))?;
        let f = |n: &str| module.load_function(n).map_err(err("loading a kernel"));
        let k = Kernels {
            embedding: f("embedding")?,
            add: f("add")?,
            add_bias: f("add_bias")?,
            silu_mul: f("silu_mul")?,
            rms_norm: f("rms_norm")?,
            rope: f("rope")?,
            masked_softmax: f("masked_softmax")?,
        };
        Ok(Self {
            stream,
            blas: Arc::new(blas),
            k: Arc::new(k),
            name,
        })
    }

    /// The device's name, for reports.
    pub fn device_name(&self) -> &str {
        &self.name
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
        // Every caller overwrites all n elements before reading them.
        unsafe { self.stream.alloc::<f32>(n) }.map_err(err("allocating"))
    }

    fn rows_cfg(&self, rows: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (ROW_THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }
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

    fn to_f32(&self, t: &CudaTensor) -> Result<Vec<f32>> {
        self.stream.clone_dtoh(&t.view()).map_err(err("download"))
    }

    fn shape(&self, t: &CudaTensor) -> Vec<usize> {
        t.shape.clone()
    }

    fn reshape(&self, t: &CudaTensor, shape: &[usize]) -> Result<CudaTensor> {
        if shape.iter().product::<usize>() != t.len() {
            return Err(Error(format!("cuda reshape: {:?} to {shape:?}", t.shape)));
        }
        Ok(CudaTensor {
            shape: shape.to_vec(),
            ..t.clone()
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
            buf: t.buf.clone(),
            offset: t.offset + start * row,
            shape,
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
                .memcpy_dtod(&p.view(), &mut dst)
                .map_err(err("concat_rows"))?;
            at += n;
        }
        let mut shape = first.shape.clone();
        shape[0] = rows;
        Ok(CudaTensor::owned(out, &shape))
    }

    fn embedding(&self, table: &CudaTensor, ids: &[u32]) -> Result<CudaTensor> {
        let (vocab, dim) = dims2(table, "embedding")?;
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error(format!(
                "cuda embedding: token id {bad} ≥ vocab {vocab}"
            )));
        }
        let ids_dev = self.stream.clone_htod(ids).map_err(err("upload ids"))?;
        let mut out = self.alloc(ids.len() * dim)?;
        let table = table.view();
        let dim_i = dim as i32;
        let mut b = self.stream.launch_builder(&self.k.embedding);
        b.arg(&table).arg(&ids_dev).arg(&mut out).arg(&dim_i);
        unsafe { b.launch(self.rows_cfg(ids.len())) }.map_err(err("embedding"))?;
        Ok(CudaTensor::owned(out, &[ids.len(), dim]))
    }

    fn linear(
        &self,
        x: &CudaTensor,
        weight: &CudaTensor,
        bias: Option<&CudaTensor>,
    ) -> Result<CudaTensor> {
        let (n, inp) = dims2(x, "linear")?;
        let (out_f, w_in) = dims2(weight, "linear weight")?;
        if w_in != inp {
            return Err(Error(format!(
                "cuda linear: input {:?} against weight {:?}",
                x.shape, weight.shape
            )));
        }
        let mut y = self.alloc(n * out_f)?;
        // Row-major y[n, out] = x[n, in]·Wᵀ is column-major yᵀ[out, n] = W·xᵀ, where the
        // column-major view of row-major W [out, in] is Wᵀ: so op(A) = transpose.
        let cfg = GemmConfig {
            transa: CUBLAS_OP_T,
            transb: CUBLAS_OP_N,
            m: out_f as i32,
            n: n as i32,
            k: inp as i32,
            alpha: 1.0f32,
            lda: inp as i32,
            ldb: inp as i32,
            beta: 0.0f32,
            ldc: out_f as i32,
        };
        unsafe { self.blas.gemm(cfg, &weight.view(), &x.view(), &mut y) }
            .map_err(err("linear gemm"))?;
        if let Some(bias) = bias {
            let total = (n * out_f) as i64;
            let cols = out_f as i32;
            let bv = bias.view();
            let mut b = self.stream.launch_builder(&self.k.add_bias);
            b.arg(&mut y).arg(&bv).arg(&total).arg(&cols);
            unsafe { b.launch(LaunchConfig::for_num_elems((n * out_f) as u32)) }
                .map_err(err("bias"))?;
        }
        let mut shape = x.shape.clone();
        *shape.last_mut().expect("2-D") = out_f;
        Ok(CudaTensor::owned(y, &shape))
    }

    fn add(&self, a: &CudaTensor, b: &CudaTensor) -> Result<CudaTensor> {
        if a.shape != b.shape {
            return Err(Error(format!("cuda add: {:?} + {:?}", a.shape, b.shape)));
        }
        let n = a.len();
        let mut out = self.alloc(n)?;
        let (av, bv, n64) = (a.view(), b.view(), n as i64);
        let mut l = self.stream.launch_builder(&self.k.add);
        l.arg(&av).arg(&bv).arg(&mut out).arg(&n64);
        unsafe { l.launch(LaunchConfig::for_num_elems((n) as u32)) }.map_err(err("add"))?;
        Ok(CudaTensor::owned(out, &a.shape))
    }

    fn rms_norm(&self, x: &CudaTensor, weight: &CudaTensor, eps: f32) -> Result<CudaTensor> {
        let (rows, cols) = dims2(x, "rms_norm")?;
        if weight.len() != cols {
            return Err(Error(format!(
                "cuda rms_norm: weight {:?} for rows of {cols}",
                weight.shape
            )));
        }
        let mut out = self.alloc(x.len())?;
        let (xv, wv, cols_i) = (x.view(), weight.view(), cols as i32);
        let mut l = self.stream.launch_builder(&self.k.rms_norm);
        l.arg(&xv).arg(&wv).arg(&mut out).arg(&cols_i).arg(&eps);
        unsafe { l.launch(self.rows_cfg(rows)) }.map_err(err("rms_norm"))?;
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
        let (xv, cv, sv) = (x.view(), cos.view(), sin.view());
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
        let (t, heads, d) = dims3(q, "attention q")?;
        let (tk, kv_heads, dk) = dims3(k, "attention k")?;
        if dk != d || v.shape != k.shape || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(Error(format!(
                "cuda attention: q {:?}, k {:?}, v {:?}",
                q.shape, k.shape, v.shape
            )));
        }
        let group = heads / kv_heads;
        let (qv, kv, vv) = (q.view(), k.view(), v.view());
        // Scores [heads, t, tk]. Head h = kv·group + g reads kv head kv; for a fixed g the kv
        // heads are one strided batch.
        let mut s = self.alloc(heads * t * tk)?;
        for g in 0..group {
            let cfg = StridedBatchedConfig {
                // Column-major Sᵀ[tk, t] = K_h[tk, d]·Q_hᵀ: K's column-major view is Kᵀ.
                gemm: GemmConfig {
                    transa: CUBLAS_OP_T,
                    transb: CUBLAS_OP_N,
                    m: tk as i32,
                    n: t as i32,
                    k: d as i32,
                    alpha: 1.0f32,
                    lda: (kv_heads * d) as i32,
                    ldb: (heads * d) as i32,
                    beta: 0.0f32,
                    ldc: tk as i32,
                },
                batch_size: kv_heads as i32,
                stride_a: d as i64,
                stride_b: (group * d) as i64,
                stride_c: (group * t * tk) as i64,
            };
            let qg = qv.slice(g * d..);
            let mut sg = s.slice_mut(g * t * tk..);
            unsafe { self.blas.gemm_strided_batched(cfg, &kv, &qg, &mut sg) }
                .map_err(err("attention scores"))?;
        }
        let (t_i, tk_i) = (t as i32, tk as i32);
        if mask.query_offset + t > tk {
            return Err(Error(format!(
                "cuda attention: queries at {}..{} against {tk} keys",
                mask.query_offset,
                mask.query_offset + t
            )));
        }
        let offset = mask.query_offset as i32;
        let window = mask.window.map_or(0, |w| w.min(i32::MAX as usize) as i32);
        let mut l = self.stream.launch_builder(&self.k.masked_softmax);
        l.arg(&mut s)
            .arg(&t_i)
            .arg(&tk_i)
            .arg(&scale)
            .arg(&offset)
            .arg(&window);
        unsafe { l.launch(self.rows_cfg(heads * t)) }.map_err(err("softmax"))?;
        // out[t, heads·d]: column-major O_hᵀ[d, t] = V_hᵀ[d, tk]·P_hᵀ[tk, t].
        let mut out = self.alloc(t * heads * d)?;
        for g in 0..group {
            let cfg = StridedBatchedConfig {
                gemm: GemmConfig {
                    transa: CUBLAS_OP_N,
                    transb: CUBLAS_OP_N,
                    m: d as i32,
                    n: t as i32,
                    k: tk as i32,
                    alpha: 1.0f32,
                    lda: (kv_heads * d) as i32,
                    ldb: tk as i32,
                    beta: 0.0f32,
                    ldc: (heads * d) as i32,
                },
                batch_size: kv_heads as i32,
                stride_a: d as i64,
                stride_b: (group * t * tk) as i64,
                stride_c: (group * d) as i64,
            };
            let sg = s.slice(g * t * tk..);
            let mut og = out.slice_mut(g * d..);
            unsafe { self.blas.gemm_strided_batched(cfg, &vv, &sg, &mut og) }
                .map_err(err("attention output"))?;
        }
        Ok(CudaTensor::owned(out, &[t, heads * d]))
    }

    fn silu_mul(&self, gate: &CudaTensor, up: &CudaTensor) -> Result<CudaTensor> {
        if gate.shape != up.shape {
            return Err(Error(format!(
                "cuda silu_mul: {:?} and {:?}",
                gate.shape, up.shape
            )));
        }
        let n = gate.len();
        let mut out = self.alloc(n)?;
        let (gv, uv, n64) = (gate.view(), up.view(), n as i64);
        let mut l = self.stream.launch_builder(&self.k.silu_mul);
        l.arg(&gv).arg(&uv).arg(&mut out).arg(&n64);
        unsafe { l.launch(LaunchConfig::for_num_elems((n) as u32)) }.map_err(err("silu_mul"))?;
        Ok(CudaTensor::owned(out, &gate.shape))
    }

    fn gram(&self, x: &CudaTensor) -> Result<Option<Vec<f32>>> {
        let (rows, n) = dims2(x, "gram")?;
        let mut g = self.alloc(n * n)?;
        // Column-major X is Xᵀ [n, rows]: XᵀX = A·Aᵀ with A that view.
        let cfg = GemmConfig {
            transa: CUBLAS_OP_N,
            transb: CUBLAS_OP_T,
            m: n as i32,
            n: n as i32,
            k: rows as i32,
            alpha: 1.0f32,
            lda: n as i32,
            ldb: n as i32,
            beta: 0.0f32,
            ldc: n as i32,
        };
        let xv = x.view();
        unsafe { self.blas.gemm(cfg, &xv, &xv, &mut g) }.map_err(err("gram gemm"))?;
        Ok(Some(self.stream.clone_dtoh(&g).map_err(err("download"))?))
    }
}
