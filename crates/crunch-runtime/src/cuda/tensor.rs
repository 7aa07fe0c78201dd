//! The CUDA backend's tensor: a window of a shared device buffer (f32, bf16 bits, or a linear
//! layer's packed codes), so `rows` and `reshape` copy nothing.

use super::packed;
use super::recycle::F32Buf;
use crate::{Error, Result};
use cudarc::driver::{CudaSlice, CudaView};
use std::sync::Arc;

#[derive(Clone)]
pub(super) enum Store {
    F32(Arc<F32Buf>),
    /// bf16 bit patterns.
    Bf16(Arc<CudaSlice<u16>>),
    /// A linear layer's weights at their compressed size (`packed.rs`).
    Packed(Arc<packed::GpuPacked>),
}

/// A device tensor: a window of a shared buffer, so `rows` and `reshape` copy nothing. f32,
/// except linear weights uploaded in [`Precision::Bf16`] mode.
#[derive(Clone)]
pub struct CudaTensor {
    pub(super) store: Store,
    pub(super) offset: usize,
    pub(super) shape: Vec<usize>,
    /// The int8 planes of these values that the producer wrote for the product that reads
    /// them (decision 159, `packed/feed.rs`); only on a producer's whole output.
    pub(super) feed: Option<Arc<packed::Feed>>,
}

impl CudaTensor {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn is_bf16(&self) -> bool {
        matches!(self.store, Store::Bf16(_))
    }
    /// The elements, if stored in f32.
    pub fn f32_view(&self) -> Option<CudaView<'_, f32>> {
        match &self.store {
            Store::F32(b) => Some(b.slice(self.offset..self.offset + self.len())),
            Store::Bf16(_) | Store::Packed(_) => None,
        }
    }
    /// The elements as bf16 bit patterns, if stored in bf16.
    pub fn bf16_view(&self) -> Option<CudaView<'_, u16>> {
        match &self.store {
            Store::Bf16(b) => Some(b.slice(self.offset..self.offset + self.len())),
            Store::F32(_) | Store::Packed(_) => None,
        }
    }
    /// Whether the producer also wrote these values' int8 planes for the products that read
    /// them (decision 159).
    pub fn carries_int8_planes(&self) -> bool {
        self.feed.is_some()
    }
    /// Whether this is a weight matrix kept at its compressed size.
    pub fn is_packed(&self) -> bool {
        matches!(self.store, Store::Packed(_))
    }
    /// Device bytes of a packed weight matrix.
    pub fn packed_bytes(&self) -> Option<usize> {
        match &self.store {
            Store::Packed(p) => Some(p.bytes),
            _ => None,
        }
    }
    /// Whether both are views of the same device buffer (tied embeddings).
    pub fn same_storage(&self, other: &CudaTensor) -> bool {
        match (&self.store, &other.store) {
            (Store::F32(a), Store::F32(b)) => Arc::ptr_eq(a, b),
            (Store::Bf16(a), Store::Bf16(b)) => Arc::ptr_eq(a, b),
            (Store::Packed(a), Store::Packed(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
    /// Device bytes of this tensor's elements (packed bytes for a packed matrix).
    pub fn nbytes(&self) -> usize {
        match &self.store {
            Store::F32(_) => 4 * self.len(),
            Store::Bf16(_) => 2 * self.len(),
            Store::Packed(p) => p.bytes,
        }
    }
    pub(super) fn view(&self, what: &str) -> Result<CudaView<'_, f32>> {
        self.f32_view().ok_or_else(|| {
            let kind = if self.is_packed() { "packed" } else { "bf16" };
            Error(format!(
                "cuda {what}: a {kind} tensor {:?} where f32 is needed",
                self.shape
            ))
        })
    }
    /// Wraps a whole f32 buffer.
    pub fn from_f32(buf: CudaSlice<f32>, shape: &[usize]) -> Self {
        Self {
            store: Store::F32(Arc::new(F32Buf::new(buf))),
            offset: 0,
            shape: shape.to_vec(),
            feed: None,
        }
    }
    pub(super) fn from_bf16(buf: CudaSlice<u16>, shape: &[usize]) -> Self {
        Self {
            store: Store::Bf16(Arc::new(buf)),
            offset: 0,
            shape: shape.to_vec(),
            feed: None,
        }
    }
    pub(super) fn owned(buf: CudaSlice<f32>, shape: &[usize]) -> Self {
        Self::from_f32(buf, shape)
    }
}
