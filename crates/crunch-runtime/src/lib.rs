//! The tensor operations a decoder-only transformer needs, behind one small trait.
//!
//! The model code in `crunch-model` is written once against [`Backend`]; each backend
//! implements these operations rather than a second copy of the model: [`Cpu`] (candle, f32,
//! what evaluation and calibration use), [`Host`] (the generation runtime: weights kept packed
//! and multiplied by `crunch-kernels`, lean per-operation costs, a pre-allocated key/value
//! cache) and `Cuda`. The set is deliberately small: everything the supported decoders (the
//! Llama family, Gemma 3, Phi-3, Mixtral, Qwen3-MoE) need, and nothing a compressor needs to
//! see. Operations added for the later architectures ([`Backend::gelu_mul`],
//! [`Backend::scale_rows`], [`Backend::columns`]) have default implementations through the
//! host or the older operations, so a new backend runs every model before it overrides them.

pub mod codes;
mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod host;
mod kv;
pub mod kvq;
pub mod paged;
pub mod threads;

pub use codes::QuantCodes;
pub use cpu::Cpu;
pub use crunch_kernels::{self as kernels, PackedMatrix};
#[cfg(feature = "cuda")]
pub use cuda::{device_head_dim, Cuda, CudaCodes, CudaKv, CudaTensor, DeviceKv, Gemv, Precision};
pub use host::{Host, HostKv, HostTensor};
pub use kv::BackendKv;
pub use kvq::{KvMode, KvSpec};
pub use paged::{BlockTable, OutOfPages, PagePool, PagedSeq};

/// PyTorch's tanh approximation of GELU, in f32 as it computes it.
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh())
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Errors from a backend; the message says which operation failed and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(pub String);

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error(e.to_string())
    }
}

/// Which keys a query position may attend to.
///
/// Keys are the absolute positions `0..k_len`; query row `i` sits at absolute position
/// `p = query_offset + i`. It sees keys `j <= p` (causal), and with a sliding window only those
/// with `p - window < j`. A full forward pass uses `query_offset = 0` (queries and keys are the
/// same positions); incremental decoding with a key/value cache passes the cache length, so
/// the new queries see the cached keys and themselves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttentionMask {
    /// Sliding window: position `p` sees keys `j` with `p - window < j <= p`. `None` is plain
    /// causal.
    pub window: Option<usize>,
    /// Absolute position of query row 0. Requires `query_offset + q_tokens <= k_len`.
    pub query_offset: usize,
}

impl AttentionMask {
    /// Causal attention (optionally windowed) of queries that start at position 0.
    pub fn causal(window: Option<usize>) -> Self {
        AttentionMask {
            window,
            query_offset: 0,
        }
    }
}

/// [`Backend::Codes`] of a backend that keeps no quantized codes of its own (the host
/// backends): no value of it exists.
pub enum NoCodes {}

/// Shapes are row-major; "tokens" is the sequence axis (one sequence at a time).
/// What [`Backend::linears_fused`] runs on `x` before the products.
pub enum Prologue<'a, T> {
    /// `x` as it is.
    None,
    /// `rms_norm(x, weight, eps)` ([`Backend::rms_norm_for`], told the products read it).
    RmsNorm { weight: &'a T, eps: f32 },
}

/// What [`Backend::linears_fused`] runs on the products' outputs.
pub enum Epilogue<'a, T> {
    /// The outputs, one per weight.
    None,
    /// `residual + y` for one weight: one output.
    Add(&'a T),
    /// `silu(y₀) · y₁` for two weights (gate, up): one output, the input of the products of
    /// `next` ([`Backend::silu_mul_for`]).
    SiluMul { next: &'a [&'a T] },
}

/// [`Backend::linears_fused`] step by step: `rms_norm_for`, `linears` (`linear` for one weight),
/// then `add` or `silu_mul_for`. The default, and what a backend runs where it does not fuse.
pub fn linears_composed<B: Backend + ?Sized>(
    b: &B,
    x: &B::Tensor,
    weights: &[&B::Tensor],
    pre: Prologue<'_, B::Tensor>,
    post: Epilogue<'_, B::Tensor>,
) -> Result<Vec<B::Tensor>> {
    let want = match post {
        Epilogue::None => weights.len(),
        Epilogue::Add(_) => 1,
        Epilogue::SiluMul { .. } => 2,
    };
    if weights.len() != want || want == 0 {
        return Err(Error(format!(
            "linears_fused: {} weights where the epilogue takes {want}",
            weights.len()
        )));
    }
    let normed;
    let h = match pre {
        Prologue::None => x,
        Prologue::RmsNorm { weight, eps } => {
            normed = b.rms_norm_for(x, weight, eps, weights)?;
            &normed
        }
    };
    // One weight through `linear`, as a model multiplies a lone bare layer (o, down).
    let y = match weights {
        [w] => vec![b.linear(h, w, None)?],
        _ => b.linears(h, weights)?,
    };
    Ok(match post {
        Epilogue::None => y,
        Epilogue::Add(residual) => vec![b.add(residual, &y[0])?],
        Epilogue::SiluMul { next } => vec![b.silu_mul_for(&y[0], &y[1], next)?],
    })
}

pub trait Backend: Send + Sync + 'static {
    type Tensor: Clone + Send + Sync + 'static;
    /// A quantized weight's codes as the backend keeps them ([`Backend::upload_codes`]), to
    /// expand into a weight later ([`Backend::dequantize_codes`]); [`NoCodes`] where it keeps
    /// none.
    type Codes: Send + Sync + 'static;
    /// One sequence's keys and values for one decoder block, with room for a fixed number of
    /// positions ([`Backend::kv_alloc`]). What it stores (f32 rows, a quantized cache) is the
    /// backend's business; the model only appends to it and attends over it.
    type KvStore: Send + Sync + 'static;

    /// Copies host f32 data to a tensor of `shape`.
    fn upload(&self, data: Vec<f32>, shape: &[usize]) -> Result<Self::Tensor>;
    /// Copies a tensor back to host f32, row-major.
    fn to_f32(&self, t: &Self::Tensor) -> Result<Vec<f32>>;
    fn shape(&self, t: &Self::Tensor) -> Vec<usize>;
    /// Same data, new shape (element count unchanged).
    fn reshape(&self, t: &Self::Tensor, shape: &[usize]) -> Result<Self::Tensor>;
    /// Rows `start..start+len` of a 2-D tensor.
    fn rows(&self, t: &Self::Tensor, start: usize, len: usize) -> Result<Self::Tensor>;
    /// Concatenation along axis 0 (the token axis): every part has the same rank and the same
    /// sizes on the other axes; the result has the summed length on axis 0. Used to append new
    /// keys/values to a cache and to join per-sequence attention outputs.
    fn concat_rows(&self, parts: &[&Self::Tensor]) -> Result<Self::Tensor>;

    /// Gathers rows of `table` `[vocab, dim]`: `[ids.len(), dim]`.
    fn embedding(&self, table: &Self::Tensor, ids: &[u32]) -> Result<Self::Tensor>;
    /// `x [n, in] · wᵀ [in, out] (+ bias [out])` -> `[n, out]`.
    fn linear(
        &self,
        x: &Self::Tensor,
        weight: &Self::Tensor,
        bias: Option<&Self::Tensor>,
    ) -> Result<Self::Tensor>;
    fn add(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    /// RMS normalisation over the last axis, scaled by `weight` (length of the last axis).
    fn rms_norm(&self, x: &Self::Tensor, weight: &Self::Tensor, eps: f32) -> Result<Self::Tensor>;
    /// Rotary embedding, "half" layout (x[..d/2] pairs with x[d/2..]), on `x [tokens, heads,
    /// head_dim]` with `cos`/`sin` of shape `[tokens, head_dim / 2]`.
    fn rope(
        &self,
        x: &Self::Tensor,
        cos: &Self::Tensor,
        sin: &Self::Tensor,
    ) -> Result<Self::Tensor>;
    /// Scaled dot-product attention with grouped key/value heads.
    /// `q [tokens, heads, d]`, `k`/`v` `[k_len, kv_heads, d]` -> `[tokens, heads * d]`, masked
    /// as [`AttentionMask`] says (`k_len == tokens` and `query_offset == 0` for a full pass;
    /// `k_len == query_offset + tokens` when decoding against a cache).
    fn attention(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        mask: AttentionMask,
        scale: f32,
    ) -> Result<Self::Tensor>;
    /// `silu(gate) * up`, the SwiGLU activation.
    fn silu_mul(&self, gate: &Self::Tensor, up: &Self::Tensor) -> Result<Self::Tensor>;

    /// `gelu_tanh(gate) * up`, the GeGLU activation of Gemma (PyTorch's `gelu(approximate=
    /// "tanh")`: `0.5·g·(1 + tanh(√(2/π)·(g + 0.044715·g³)))`). Default: on the host.
    fn gelu_mul(&self, gate: &Self::Tensor, up: &Self::Tensor) -> Result<Self::Tensor> {
        let shape = self.shape(gate);
        if shape != self.shape(up) {
            return Err(Error(format!(
                "gelu_mul: {shape:?} and {:?}",
                self.shape(up)
            )));
        }
        let (g, u) = (self.to_f32(gate)?, self.to_f32(up)?);
        let out = g.iter().zip(&u).map(|(&g, &u)| gelu_tanh(g) * u).collect();
        self.upload(out, &shape)
    }

    /// Row `r` of `x [rows, ...]` multiplied by `factors[r]` (Gemma's embedding scale, MoE
    /// routing weights). Default: on the host.
    fn scale_rows(&self, x: &Self::Tensor, factors: &[f32]) -> Result<Self::Tensor> {
        let shape = self.shape(x);
        if shape.first() != Some(&factors.len()) {
            return Err(Error(format!(
                "scale_rows: {} factors for a tensor of shape {shape:?}",
                factors.len()
            )));
        }
        let mut v = self.to_f32(x)?;
        let row = v.len() / factors.len().max(1);
        for (chunk, &f) in v.chunks_mut(row.max(1)).zip(factors) {
            chunk.iter_mut().for_each(|x| *x *= f);
        }
        self.upload(v, &shape)
    }

    /// `[x · W₀ᵀ, x · W₁ᵀ, …]` for weights that read the same input `x [n, in]` (q/k/v,
    /// gate/up), no biases: the same as one [`Backend::linear`] per weight, which is the
    /// default. A backend may run them as one product (CUDA with a grouped one-row kernel,
    /// decision 139); the results are the same values either way.
    fn linears(&self, x: &Self::Tensor, weights: &[&Self::Tensor]) -> Result<Vec<Self::Tensor>> {
        weights.iter().map(|w| self.linear(x, w, None)).collect()
    }

    /// [`Backend::rms_norm`] whose output is the input of `linears(_, next)` or `linear(_,
    /// next[0])` (empty when it is not, or not only, read that way): the same values, which is
    /// the default. A backend may prepare the products' form of the input alongside (CUDA's
    /// int8 planes, decision 159), saving a launch per product.
    fn rms_norm_for(
        &self,
        x: &Self::Tensor,
        weight: &Self::Tensor,
        eps: f32,
        next: &[&Self::Tensor],
    ) -> Result<Self::Tensor> {
        let _ = next;
        self.rms_norm(x, weight, eps)
    }

    /// [`Backend::silu_mul`] whose output is the input of `next`, as
    /// [`Backend::rms_norm_for`].
    fn silu_mul_for(
        &self,
        gate: &Self::Tensor,
        up: &Self::Tensor,
        next: &[&Self::Tensor],
    ) -> Result<Self::Tensor> {
        let _ = next;
        self.silu_mul(gate, up)
    }

    /// [`Backend::linears`] of bare weights with what a decoder block runs right before and
    /// after them (decision 161): `pre` on `x`, the products, then `post` on their outputs.
    /// Only the outputs come back, not the normalised `x`: a caller that needs it (a hook that
    /// reads the layers' inputs) runs the steps itself. The default composes them
    /// ([`linears_composed`]); a backend may fuse them into the products (CUDA at one row: the
    /// norm in the product's staging, the add or `silu_mul` in its store) with the same values.
    fn linears_fused(
        &self,
        x: &Self::Tensor,
        weights: &[&Self::Tensor],
        pre: Prologue<'_, Self::Tensor>,
        post: Epilogue<'_, Self::Tensor>,
    ) -> Result<Vec<Self::Tensor>> {
        linears_composed(self, x, weights, pre, post)
    }

    /// Columns `start..start+len` of a 2-D `x [rows, cols]`: `[rows, len]` (the parts of a
    /// fused projection's output, Phi-3's qkv and gate_up). Default: a row gather
    /// ([`Backend::embedding`]) over `x` viewed as rows of `gcd(cols, start, len)` values.
    fn columns(&self, x: &Self::Tensor, start: usize, len: usize) -> Result<Self::Tensor> {
        let shape = self.shape(x);
        let &[rows, cols] = &shape[..] else {
            return Err(Error(format!(
                "columns: expected 2 dimensions, got {shape:?}"
            )));
        };
        if start + len > cols || len == 0 {
            return Err(Error(format!(
                "columns: {start}..{} of {cols} columns",
                start + len
            )));
        }
        let g = gcd(gcd(cols, start), len);
        let per_row = cols / g;
        let flat = self.reshape(x, &[rows * per_row, g])?;
        let ids: Vec<u32> = (0..rows)
            .flat_map(|r| (0..len / g).map(move |j| (r * per_row + start / g + j) as u32))
            .collect();
        let picked = self.embedding(&flat, &ids)?;
        self.reshape(&picked, &[rows, len])
    }

    /// Uploads the weight matrix of a linear layer. A backend that multiplies in a narrower
    /// type (CUDA in bf16 mode) stores it in that type; the default is [`Backend::upload`].
    fn upload_weight(&self, data: Vec<f32>, shape: &[usize]) -> Result<Self::Tensor> {
        self.upload(data, shape)
    }

    /// Overwrites the values of a weight matrix made by [`Backend::upload_weight`] with `data`
    /// (same element count), in its own storage, as `upload_weight` would have stored them:
    /// a budget search swaps many weights of the same shapes in and out, and reusing a buffer
    /// spares an allocation. `Ok(false)` (the default, and wherever the storage is shared,
    /// of another kind or size): nothing written, the caller uploads a new weight.
    fn write_weight(&self, _weight: &mut Self::Tensor, _data: &[f32]) -> Result<bool> {
        Ok(false)
    }

    /// Keeps `q`'s codes, scales and zero points in the backend's own memory (a GPU: codes
    /// bit-packed at their width, `codes::QuantCodes::pack_words`), so that
    /// [`Backend::dequantize_codes`] can later make the weight from them without the host: a
    /// budget search keeps every variant so (decision 137). `Ok(None)` (the default, and for
    /// weights the backend cannot expand bit for bit, such as non-finite scales): not kept, the
    /// caller dequantizes on the host as before. An error for buffers that disagree with the
    /// shape.
    fn upload_codes(&self, _q: &QuantCodes) -> Result<Option<Self::Codes>> {
        Ok(None)
    }

    /// Overwrites the values of `weight`, a weight matrix made by [`Backend::upload_weight`]
    /// of the codes' shape, with the codes' weights `(code − zero) · f32(scale)`, stored as
    /// `upload_weight` of those values would store them (bit for bit). `Ok(false)` (the
    /// default, and where the weight is shared, of another shape or kind): nothing written.
    fn dequantize_codes(&self, _codes: &Self::Codes, _weight: &mut Self::Tensor) -> Result<bool> {
        Ok(false)
    }

    /// Bytes of the backend's memory free for new allocations, for a caller deciding whether
    /// something fits there (a GPU's free memory). `None` (the default): the backend's memory
    /// is the host's, nothing to decide.
    fn free_memory(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Whether the loader should hand linear weights (and the embedding table) over in their
    /// stored encoding through [`Backend::upload_packed`] rather than as f32. `false` (the
    /// default): the model sees exactly the f32 values it always did.
    fn prefers_packed(&self) -> bool {
        false
    }

    /// Takes a weight matrix `[rows, cols]` in its stored encoding (GGUF blocks, F16...). A
    /// backend with kernels for it keeps it packed (`linear` and `embedding` then read it);
    /// the default dequantizes it and calls [`Backend::upload_weight`].
    fn upload_packed(&self, w: PackedMatrix) -> Result<Self::Tensor> {
        let shape = [w.rows(), w.cols()];
        self.upload_weight(w.dequantize(), &shape)
    }

    /// An empty key/value store as `spec` says ([`KvMode::F32`]: keys and values as
    /// computed).
    fn kv_alloc(&self, spec: KvSpec) -> Result<Self::KvStore>;
    /// Appends keys and values `[tokens, kv_heads, head_dim]` (keys already rotated); fails
    /// when they would not fit.
    fn kv_append(&self, kv: &mut Self::KvStore, k: &Self::Tensor, v: &Self::Tensor) -> Result<()>;
    /// Positions stored so far.
    fn kv_len(&self, kv: &Self::KvStore) -> usize;
    /// [`Backend::attention`] of `q [tokens, heads, head_dim]` against everything stored in
    /// `kv` (`mask.query_offset + tokens == kv_len`).
    fn kv_attention(
        &self,
        q: &Self::Tensor,
        kv: &Self::KvStore,
        mask: AttentionMask,
        scale: f32,
    ) -> Result<Self::Tensor>;

    /// A store for one decoder block of a paged cache's pool (decision 141, [`paged`]):
    /// room for `slots` positions of `kv_heads` heads of `head_dim` f32 channels, allocated
    /// now, written by [`Backend::kv_pool_write`] and attended through block tables by
    /// [`Backend::kv_pool_attention`] (not by the per-sequence methods above). `Ok(None)` (the
    /// default): the backend has no paged cache, and the caller keeps a store per sequence.
    fn kv_pool_alloc(
        &self,
        _slots: usize,
        _kv_heads: usize,
        _head_dim: usize,
    ) -> Result<Option<Self::KvStore>> {
        Ok(None)
    }

    /// Writes keys and values `[rows, kv_heads, head_dim]` (keys already rotated) into a pool
    /// made by [`Backend::kv_pool_alloc`]: row `i` to slot `slots[i]`.
    fn kv_pool_write(
        &self,
        _pool: &mut Self::KvStore,
        _slots: &[u32],
        _k: &Self::Tensor,
        _v: &Self::Tensor,
    ) -> Result<()> {
        Err(Error("this backend has no paged key/value cache".into()))
    }

    /// [`Backend::attention`] of many sequences at once over a pool: `q [rows, heads,
    /// head_dim]` holds `seqs[0].rows` query rows of the first sequence, then the second's,
    /// and so on; a sequence's rows sit at its positions `len - rows..len` and see its keys
    /// `0..len` (causal, within `window`), read from the slots its pages say
    /// ([`paged::BlockTable::slot`]). Returns `[rows, heads · head_dim]` in the same order.
    fn kv_pool_attention(
        &self,
        _q: &Self::Tensor,
        _pool: &Self::KvStore,
        _seqs: &[PagedSeq],
        _page_size: usize,
        _window: Option<usize>,
        _scale: f32,
    ) -> Result<Self::Tensor> {
        Err(Error("this backend has no paged key/value cache".into()))
    }

    /// Adds XᵀX of a 2-D `x [rows, n]` into `acc`, an `[n, n]` f32 tensor that stays on the
    /// backend (created zeroed by the first call), for backends that do this faster than the
    /// host would from a copy of `x` (a GPU). `Ok(false)` (the default): not done; the caller
    /// copies `x` back with [`Backend::to_f32`] and accumulates on the host, which keeps CPU
    /// results bit-identical to the host Hessian code.
    fn gram_accumulate(&self, _acc: &mut Option<Self::Tensor>, _x: &Self::Tensor) -> Result<bool> {
        Ok(false)
    }

    /// Waits until the work queued so far has finished: a GPU launches asynchronously, so a
    /// timer that attributes time to stages synchronizes at their boundaries. Default: nothing
    /// to wait for (the host backends finish each operation before returning).
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    /// Scores rows of `logits [rows, vocab]` against `targets` (and `base` logits of the same
    /// shape): per row `[−log p(target), target is the arg-max (0/1), KL(base ‖ model), same
    /// arg-max (0/1)]`, so that a GPU need not copy the logits back. `None` (the default): the
    /// caller scores on the host.
    fn score_rows(
        &self,
        _logits: &Self::Tensor,
        _base: Option<&Self::Tensor>,
        _targets: &[u32],
    ) -> Result<Option<Vec<[f64; 4]>>> {
        Ok(None)
    }
}
