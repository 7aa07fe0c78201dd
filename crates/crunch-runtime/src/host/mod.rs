//! The generation backend: host memory, weights kept in their stored encoding, and as little
//! work per operation as possible.
//!
//! Decoding one token of a 135M-parameter model runs about 450 backend operations in a few
//! milliseconds, so the cost of an operation besides its arithmetic matters: a tensor here is
//! a shared `Vec<f32>` and a shape (reshape is free, no graph, no dtype dispatch), linear
//! layers are `crunch_kernels::PackedMatrix` products (activations quantized once per
//! product, integer inner loops on AVX-512 VNNI / AVX2), and the small operations (norms,
//! rotary embeddings, SwiGLU, attention) are plain loops compiled for AVX2 where the CPU has
//! it. The key/value cache ([`HostKv`]) is allocated once for the context the caller asks for
//! and filled in place.

mod arena;
mod attention;
mod attention_tile;
mod ops;

pub(crate) use attention::dot;

use crate::kvq::{KvSpec, QuantKv};
use crate::{AttentionMask, Backend, Error, Result};
use crunch_kernels::{Bytes, DType, PackedMatrix};
use std::sync::Arc;

thread_local! {
    /// The last block-encoded product's input and its quantized activations.
    static LAST_ACTS: std::cell::RefCell<Option<(Arc<Data>, crunch_kernels::Acts)>> =
        const { std::cell::RefCell::new(None) };
}

/// The host backend (no state: threads come from rayon's global pool).
#[derive(Clone, Copy, Debug, Default)]
pub struct Host;

/// Up to four dimensions, row-major.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Shape {
    dims: [usize; 4],
    rank: usize,
}

impl Shape {
    fn new(dims: &[usize]) -> Result<Shape> {
        if dims.len() > 4 {
            return Err(Error(format!(
                "host tensors have at most 4 axes, got {dims:?}"
            )));
        }
        let mut s = Shape {
            dims: [1; 4],
            rank: dims.len(),
        };
        s.dims[..dims.len()].copy_from_slice(dims);
        Ok(s)
    }

    fn dims(&self) -> &[usize] {
        &self.dims[..self.rank]
    }

    fn numel(&self) -> usize {
        self.dims().iter().product()
    }

    /// Rows (axis 0) and the product of the other axes.
    fn rows_cols(&self) -> (usize, usize) {
        match self.rank {
            0 => (1, 1),
            _ => (self.dims[0], self.dims[1..self.rank].iter().product()),
        }
    }
}

impl std::fmt::Debug for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.dims())
    }
}

enum Data {
    F32(Vec<f32>),
    Packed(PackedMatrix),
}

/// A host tensor: f32 values or a packed weight matrix, shared, with a shape.
#[derive(Clone)]
pub struct HostTensor {
    data: Arc<Data>,
    shape: Shape,
}

impl HostTensor {
    fn from_vec(v: Vec<f32>, shape: Shape) -> Self {
        debug_assert_eq!(v.len(), shape.numel());
        HostTensor {
            data: Arc::new(Data::F32(v)),
            shape,
        }
    }

    /// The f32 values; an error for a packed matrix (only `linear`, `embedding` and `to_f32`
    /// read those).
    fn f32s(&self, op: &str) -> Result<&[f32]> {
        match &*self.data {
            Data::F32(v) => Ok(v),
            Data::Packed(_) => Err(Error(format!(
                "{op}: a packed weight matrix is not an operand here"
            ))),
        }
    }

    /// The packed matrix, if this is one.
    pub fn packed(&self) -> Option<&PackedMatrix> {
        match &*self.data {
            Data::Packed(p) => Some(p),
            Data::F32(_) => None,
        }
    }

    /// Whether both are views of the same storage (tied embeddings).
    pub fn same_storage(&self, other: &HostTensor) -> bool {
        Arc::ptr_eq(&self.data, &other.data)
    }

    /// Bytes this tensor holds (packed bytes for a packed matrix).
    pub fn nbytes(&self) -> usize {
        match &*self.data {
            Data::F32(v) => 4 * v.len(),
            Data::Packed(p) => p.bytes().len(),
        }
    }
}

fn same_shape(op: &str, a: &HostTensor, b: &HostTensor) -> Result<()> {
    if a.shape.numel() != b.shape.numel() {
        return Err(Error(format!(
            "{op}: shapes {:?} and {:?} differ",
            a.shape, b.shape
        )));
    }
    Ok(())
}

impl Backend for Host {
    type Tensor = HostTensor;
    type Codes = crate::NoCodes;
    type KvStore = HostKv;

    fn upload(&self, data: Vec<f32>, shape: &[usize]) -> Result<HostTensor> {
        let shape = Shape::new(shape)?;
        if data.len() != shape.numel() {
            return Err(Error(format!(
                "upload: {} values for shape {shape:?}",
                data.len()
            )));
        }
        Ok(HostTensor::from_vec(data, shape))
    }

    fn to_f32(&self, t: &HostTensor) -> Result<Vec<f32>> {
        Ok(match &*t.data {
            Data::F32(v) => v.clone(),
            Data::Packed(p) => p.dequantize(),
        })
    }

    fn shape(&self, t: &HostTensor) -> Vec<usize> {
        t.shape.dims().to_vec()
    }

    fn reshape(&self, t: &HostTensor, shape: &[usize]) -> Result<HostTensor> {
        let s = Shape::new(shape)?;
        if s.numel() != t.shape.numel() {
            return Err(Error(format!("reshape: {:?} to {shape:?}", t.shape)));
        }
        Ok(HostTensor {
            data: t.data.clone(),
            shape: s,
        })
    }

    fn rows(&self, t: &HostTensor, start: usize, len: usize) -> Result<HostTensor> {
        let (rows, cols) = t.shape.rows_cols();
        if start + len > rows {
            return Err(Error(format!("rows {start}..{} of {rows}", start + len)));
        }
        let v = t.f32s("rows")?[start * cols..(start + len) * cols].to_vec();
        let mut s = t.shape;
        s.dims[0] = len;
        Ok(HostTensor::from_vec(v, s))
    }

    fn concat_rows(&self, parts: &[&HostTensor]) -> Result<HostTensor> {
        let first = parts
            .first()
            .ok_or_else(|| Error("concat_rows: no tensors to concatenate".into()))?;
        let cols = first.shape.rows_cols().1;
        let mut v = Vec::with_capacity(parts.iter().map(|p| p.shape.numel()).sum());
        let mut rows = 0;
        for p in parts {
            let (r, c) = p.shape.rows_cols();
            if c != cols || p.shape.rank != first.shape.rank {
                return Err(Error(format!(
                    "concat_rows: {:?} does not match {:?}",
                    p.shape, first.shape
                )));
            }
            v.extend_from_slice(p.f32s("concat_rows")?);
            rows += r;
        }
        let mut s = first.shape;
        s.dims[0] = rows;
        Ok(HostTensor::from_vec(v, s))
    }

    fn embedding(&self, table: &HostTensor, ids: &[u32]) -> Result<HostTensor> {
        let (vocab, dim) = table.shape.rows_cols();
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error(format!(
                "embedding: token id {bad} >= vocabulary {vocab}"
            )));
        }
        let mut out = vec![0f32; ids.len() * dim];
        match &*table.data {
            Data::F32(v) => {
                for (o, &i) in out.chunks_mut(dim).zip(ids) {
                    o.copy_from_slice(&v[i as usize * dim..(i as usize + 1) * dim]);
                }
            }
            Data::Packed(p) => {
                for (o, &i) in out.chunks_mut(dim).zip(ids) {
                    p.dequantize_rows(i as usize, 1, o);
                }
            }
        }
        Ok(HostTensor::from_vec(out, Shape::new(&[ids.len(), dim])?))
    }

    fn linear(
        &self,
        x: &HostTensor,
        weight: &HostTensor,
        bias: Option<&HostTensor>,
    ) -> Result<HostTensor> {
        let (n, k) = x.shape.rows_cols();
        let w = match &*weight.data {
            Data::Packed(p) => p,
            Data::F32(_) => {
                return Err(Error(
                    "linear: weights must be uploaded with upload_weight or upload_packed".into(),
                ))
            }
        };
        if w.cols() != k {
            return Err(Error(format!(
                "linear: input has {k} features, weight is {} x {}",
                w.rows(),
                w.cols()
            )));
        }
        let mut y = vec![0f32; n * w.rows()];
        let xs = x.f32s("linear")?;
        if crunch_kernels::block_supported(w.dtype()) {
            // The activations quantized once for every product that reads the same input
            // (q, k and v; gate and up): the last input's quantization is kept with a
            // reference to the input itself, so its storage cannot be freed and reused
            // while it is cached (a pointer match is the same tensor).
            LAST_ACTS.with(|last| {
                let mut last = last.borrow_mut();
                let opts = crunch_kernels::Options::default();
                let hit = last.as_ref().is_some_and(|(d, a)| {
                    Arc::ptr_eq(d, &x.data) && a.n == n && a.k == k && a.bits == opts.bits
                });
                if !hit {
                    let mut acts = last
                        .take()
                        .map(|(_, a)| a)
                        .filter(|a| a.bits == opts.bits)
                        .unwrap_or_else(|| crunch_kernels::Acts::new(opts.bits));
                    acts.quantize(xs, n, k);
                    *last = Some((x.data.clone(), acts));
                }
                let (_, acts) = last.as_ref().expect("just set");
                w.matmul_acts(acts, &mut y, opts.isa);
            });
        } else {
            w.matmul(xs, n, &mut y);
        }
        if let Some(b) = bias {
            let b = b.f32s("linear bias")?;
            if b.len() != w.rows() {
                return Err(Error(format!(
                    "linear: bias of {} for {} outputs",
                    b.len(),
                    w.rows()
                )));
            }
            for row in y.chunks_mut(b.len()) {
                for (v, &b) in row.iter_mut().zip(b) {
                    *v += b;
                }
            }
        }
        let mut s = x.shape;
        s.dims[s.rank - 1] = w.rows();
        if s.rank > 2 {
            s = Shape::new(&[n, w.rows()])?;
        }
        Ok(HostTensor::from_vec(y, s))
    }

    fn add(&self, a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
        same_shape("add", a, b)?;
        let out = ops::add(a.f32s("add")?, b.f32s("add")?);
        Ok(HostTensor::from_vec(out, a.shape))
    }

    fn rms_norm(&self, x: &HostTensor, weight: &HostTensor, eps: f32) -> Result<HostTensor> {
        let w = weight.f32s("rms_norm")?;
        let d = *x.shape.dims().last().unwrap_or(&1);
        if w.len() != d {
            return Err(Error(format!(
                "rms_norm: weight of {} for rows of {d}",
                w.len()
            )));
        }
        let out = ops::rms_norm(x.f32s("rms_norm")?, w, eps);
        Ok(HostTensor::from_vec(out, x.shape))
    }

    fn rope(&self, x: &HostTensor, cos: &HostTensor, sin: &HostTensor) -> Result<HostTensor> {
        let [t, h, d] = match x.shape.dims() {
            &[t, h, d] => [t, h, d],
            other => return Err(Error(format!("rope: x has shape {other:?}, want 3 axes"))),
        };
        let (c, s) = (cos.f32s("rope")?, sin.f32s("rope")?);
        if c.len() != t * d / 2 || s.len() != t * d / 2 {
            return Err(Error(format!("rope: tables of {} for {t} x {d}", c.len())));
        }
        Ok(HostTensor::from_vec(
            ops::rope(x.f32s("rope")?, c, s, t, h, d),
            x.shape,
        ))
    }

    fn attention(
        &self,
        q: &HostTensor,
        k: &HostTensor,
        v: &HostTensor,
        mask: AttentionMask,
        scale: f32,
    ) -> Result<HostTensor> {
        let (t, heads, d) = dims3("attention q", q)?;
        let (len, kv_heads, dk) = dims3("attention k", k)?;
        if dk != d || heads % kv_heads != 0 || k.shape != v.shape {
            return Err(Error(format!(
                "attention: q {:?}, k {:?}, v {:?}",
                q.shape, k.shape, v.shape
            )));
        }
        let kv = attention::KvView {
            k: k.f32s("attention")?,
            v: v.f32s("attention")?,
            len,
            kv_heads,
            head_dim: d,
            // [len, kv_heads, d]: key j of head g at (j * kv_heads + g) * d.
            head_stride: d,
            pos_stride: kv_heads * d,
            pages: None,
        };
        let out = attention::attend(q.f32s("attention")?, t, heads, &kv, mask, scale)?;
        Ok(HostTensor::from_vec(out, Shape::new(&[t, heads * d])?))
    }

    fn silu_mul(&self, gate: &HostTensor, up: &HostTensor) -> Result<HostTensor> {
        same_shape("silu_mul", gate, up)?;
        let out = ops::silu_mul(gate.f32s("silu_mul")?, up.f32s("silu_mul")?);
        Ok(HostTensor::from_vec(out, gate.shape))
    }

    /// Weights become F32 packed matrices: every product goes through the kernels.
    fn upload_weight(&self, data: Vec<f32>, shape: &[usize]) -> Result<HostTensor> {
        let &[rows, cols] = shape else {
            return Err(Error(format!("upload_weight: shape {shape:?} is not 2-D")));
        };
        if data.len() != rows * cols {
            return Err(Error(format!(
                "upload_weight: {} values for {shape:?}",
                data.len()
            )));
        }
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let m = PackedMatrix::new(DType::F32, rows, cols, Bytes::owned(bytes)).map_err(Error)?;
        self.upload_packed(m)
    }

    fn prefers_packed(&self) -> bool {
        true
    }

    fn upload_packed(&self, w: PackedMatrix) -> Result<HostTensor> {
        let w = if arena::enabled() { arena::place(w) } else { w };
        let shape = Shape::new(&[w.rows(), w.cols()])?;
        Ok(HostTensor {
            data: Arc::new(Data::Packed(w)),
            shape,
        })
    }

    fn kv_alloc(&self, spec: KvSpec) -> Result<HostKv> {
        Ok(HostKv(if spec.mode.is_full() {
            Store::F32(F32Kv::new(spec.capacity, spec.kv_heads, spec.head_dim)?)
        } else {
            Store::Quant(Box::new(QuantKv::from_spec(spec)?))
        }))
    }

    fn kv_append(&self, kv: &mut HostKv, k: &HostTensor, v: &HostTensor) -> Result<()> {
        match &mut kv.0 {
            Store::F32(s) => s.append(k, v),
            Store::Quant(s) => {
                let (t, _, _) = dims3("kv_append", k)?;
                s.append(k.f32s("kv_append")?, v.f32s("kv_append")?, t)
            }
            Store::Pool(_) => Err(pool_misuse("kv_append")),
        }
    }

    fn kv_len(&self, kv: &HostKv) -> usize {
        match &kv.0 {
            Store::F32(s) => s.len,
            Store::Quant(s) => s.len(),
            Store::Pool(_) => 0,
        }
    }

    fn kv_attention(
        &self,
        q: &HostTensor,
        kv: &HostKv,
        mask: AttentionMask,
        scale: f32,
    ) -> Result<HostTensor> {
        let (t, heads, d) = dims3("attention q", q)?;
        let out = match &kv.0 {
            Store::F32(kv) => {
                if d != kv.head_dim || heads % kv.kv_heads != 0 {
                    return Err(Error(format!(
                        "attention: q {:?} against a cache of {} heads of {}",
                        q.shape, kv.kv_heads, kv.head_dim
                    )));
                }
                attention::attend(q.f32s("attention")?, t, heads, &kv.view(), mask, scale)?
            }
            Store::Quant(kv) => {
                crate::kvq::attend(q.f32s("attention")?, t, heads, kv, mask, scale)?
            }
            Store::Pool(_) => return Err(pool_misuse("kv_attention")),
        };
        Ok(HostTensor::from_vec(out, Shape::new(&[t, heads * d])?))
    }

    fn kv_pool_alloc(
        &self,
        slots: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Result<Option<HostKv>> {
        Ok(Some(HostKv(Store::Pool(F32Kv::new(
            slots, kv_heads, head_dim,
        )?))))
    }

    fn kv_pool_write(
        &self,
        pool: &mut HostKv,
        slots: &[u32],
        k: &HostTensor,
        v: &HostTensor,
    ) -> Result<()> {
        match &mut pool.0 {
            Store::Pool(s) => paged::write(s, slots, k, v),
            _ => Err(Error("kv_pool_write: not a paged pool's store".into())),
        }
    }

    fn kv_pool_attention(
        &self,
        q: &HostTensor,
        pool: &HostKv,
        seqs: &[crate::PagedSeq],
        page_size: usize,
        window: Option<usize>,
        scale: f32,
    ) -> Result<HostTensor> {
        match &pool.0 {
            Store::Pool(s) => paged::attend(s, q, seqs, page_size, window, scale),
            _ => Err(Error("kv_pool_attention: not a paged pool's store".into())),
        }
    }
}

fn pool_misuse(what: &str) -> Error {
    Error(format!(
        "{what}: a paged pool's store is read and written through block tables only"
    ))
}

fn dims3(what: &str, t: &HostTensor) -> Result<(usize, usize, usize)> {
    match t.shape.dims() {
        &[a, b, c] => Ok((a, b, c)),
        other => Err(Error(format!("{what}: shape {other:?}, want 3 axes"))),
    }
}

/// One sequence's keys and values for one block, allocated once: f32 (the default) or
/// compressed ([`QuantKv`], `--kv-cache`).
pub struct HostKv(Store);

enum Store {
    F32(F32Kv),
    Quant(Box<QuantKv>),
    /// One block's store of a paged pool (`Backend::kv_pool_alloc`): slots `0..capacity`,
    /// written and attended only through block tables (`paged.rs` here).
    Pool(F32Kv),
}

impl HostKv {
    /// Bytes this store holds.
    pub fn bytes(&self) -> usize {
        match &self.0 {
            Store::F32(s) | Store::Pool(s) => 8 * s.k.len(),
            Store::Quant(s) => s.bytes(),
        }
    }
}

/// f32 keys and values, `[kv_heads, capacity, head_dim]` (each head's positions contiguous,
/// as attention reads them).
struct F32Kv {
    k: Vec<f32>,
    v: Vec<f32>,
    len: usize,
    capacity: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl F32Kv {
    fn new(capacity: usize, kv_heads: usize, head_dim: usize) -> Result<F32Kv> {
        let n = capacity
            .checked_mul(kv_heads)
            .and_then(|x| x.checked_mul(head_dim))
            .ok_or_else(|| Error(format!("key/value cache of {capacity} positions overflows")))?;
        Ok(F32Kv {
            k: vec![0f32; n],
            v: vec![0f32; n],
            len: 0,
            capacity,
            kv_heads,
            head_dim,
        })
    }

    fn append(&mut self, k: &HostTensor, v: &HostTensor) -> Result<()> {
        let (t, kvh, d) = dims3("kv_append", k)?;
        if kvh != self.kv_heads || d != self.head_dim || k.shape != v.shape {
            return Err(Error(format!(
                "kv_append: keys {:?} / values {:?} for a cache of {} heads of {}",
                k.shape, v.shape, self.kv_heads, self.head_dim
            )));
        }
        if self.len + t > self.capacity {
            return Err(Error(format!(
                "key/value cache full: {} positions stored, {t} more do not fit in {}",
                self.len, self.capacity
            )));
        }
        let (ks, vs) = (k.f32s("kv_append")?, v.f32s("kv_append")?);
        for g in 0..kvh {
            for i in 0..t {
                let src = (i * kvh + g) * d;
                let dst = (g * self.capacity + self.len + i) * d;
                self.k[dst..dst + d].copy_from_slice(&ks[src..src + d]);
                self.v[dst..dst + d].copy_from_slice(&vs[src..src + d]);
            }
        }
        self.len += t;
        Ok(())
    }

    fn view(&self) -> attention::KvView<'_> {
        attention::KvView {
            k: &self.k,
            v: &self.v,
            len: self.len,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            head_stride: self.capacity * self.head_dim,
            pos_stride: self.head_dim,
            pages: None,
        }
    }
}

mod paged;
#[cfg(test)]
mod tests;
