//! Recycled f32 buffers: the outputs of one decode step (norms, products, attention) come back,
//! with the same sizes, at the next. Each `cuMemAllocAsync`/`cuMemFreeAsync` pair is an
//! operation on the stream between two kernels; measured on the H200 (bench/gpu/gemv_lab,
//! `+alloc` rows), one pair per product costs 5 µs per Llama-3-8B block of batch-1 int4 products
//! (58.0 → 63.0 µs, 4 products). A dropped tensor's buffer is instead kept here, keyed by device
//! and length, and handed to the next `Cuda::alloc` of that length.
//!
//! Why it is safe: every `Cuda` uses its context's default stream and crunch makes no other
//! stream (`CudaContext::default_stream`; the contexts of one device are its primary context), so
//! the kernels that read a buffer before it was dropped are ordered before any kernel that writes
//! it after reuse. The buffers' contents are stale: `Cuda::alloc`'s callers write every element
//! before reading (as with a fresh allocation).
//!
//! Limits: only buffers of at most [`MAX_BYTES`] are kept (activations, not weights or caches),
//! and at most [`HELD_BYTES`] in all; past that a buffer is freed as before. Held buffers count as
//! used device memory in `free_memory`.

use cudarc::driver::CudaSlice;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

/// Largest buffer kept (16 MiB: a 4096-wide activation of 1,024 rows).
pub(super) const MAX_BYTES: usize = 16 << 20;
/// Most bytes kept in all, per process.
pub(super) const HELD_BYTES: usize = 256 << 20;

#[derive(Default)]
struct Pool {
    free: HashMap<(usize, usize), Vec<CudaSlice<f32>>>,
    held: usize,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

fn key(b: &CudaSlice<f32>) -> (usize, usize) {
    (b.stream().context().ordinal(), b.len())
}

/// A kept buffer of `len` f32 on device `ordinal`, if one is free.
pub(super) fn take(ordinal: usize, len: usize) -> Option<CudaSlice<f32>> {
    let mut g = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let pool = g.as_mut()?;
    let b = pool.free.get_mut(&(ordinal, len))?.pop()?;
    pool.held -= 4 * len;
    Some(b)
}

/// Keeps `b` for reuse, or frees it (too large, or the pool is full).
fn give(b: CudaSlice<f32>) {
    let bytes = 4 * b.len();
    if bytes == 0 || bytes > MAX_BYTES {
        return;
    }
    let mut g = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let pool = g.get_or_insert_with(Pool::default);
    if pool.held + bytes > HELD_BYTES {
        return;
    }
    pool.held += bytes;
    pool.free.entry(key(&b)).or_default().push(b);
}

/// An f32 device buffer that returns to the pool when dropped.
pub struct F32Buf(Option<CudaSlice<f32>>);

impl F32Buf {
    pub(super) fn new(b: CudaSlice<f32>) -> Self {
        Self(Some(b))
    }
}

impl Deref for F32Buf {
    type Target = CudaSlice<f32>;
    fn deref(&self) -> &CudaSlice<f32> {
        self.0.as_ref().expect("present until dropped")
    }
}

impl DerefMut for F32Buf {
    fn deref_mut(&mut self) -> &mut CudaSlice<f32> {
        self.0.as_mut().expect("present until dropped")
    }
}

impl Drop for F32Buf {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            give(b);
        }
    }
}
