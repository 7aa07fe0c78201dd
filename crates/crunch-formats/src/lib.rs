//! Readers for the checkpoint formats crunch understands.
//!
//! Every reader memory-maps its file and validates the header against the file's real size
//! before handing out a byte, so a truncated or hostile file gives a [`FormatError`] that names
//! the file and the problem, never a panic or a huge allocation.
//!
//! Tensors are described by [`TensorInfo`] with shapes in row-major order (slowest axis first,
//! as PyTorch and safetensors write them); GGUF's reversed `ne` order is flipped on read.

pub mod dtype;
pub mod error;
pub mod gguf;
pub mod mapped;
pub mod safetensors;
mod table;

pub use dtype::DType;
pub use error::{FormatError, Result};

use std::ops::{Deref, Range};
use std::path::Path;
use std::sync::Arc;

/// Name, element type and shape of one stored tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    /// Row-major shape: for a linear weight, `[out_features, in_features]`.
    pub shape: Vec<usize>,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A checkpoint's tensors, readable one at a time so that a caller never needs the whole
/// model in memory at once.
pub trait TensorSource: Send + Sync {
    /// The file (or directory) the tensors come from, for error messages.
    fn path(&self) -> &Path;
    /// Every tensor, in file order.
    fn tensors(&self) -> Vec<TensorInfo>;
    /// One tensor's description, if present.
    fn info(&self, name: &str) -> Option<TensorInfo>;
    /// The tensor's values converted (or dequantized) to f32, row-major.
    fn read_f32(&self, name: &str) -> Result<Vec<f32>>;
    /// Elements `start..start + len` of the tensor in row-major order, as f32: one expert of a
    /// stacked `[experts, rows, cols]` tensor (GGUF's `ffn_*_exps`) without converting the
    /// others. The default reads the whole tensor; sources that can do better override it.
    fn read_f32_range(&self, name: &str, start: usize, len: usize) -> Result<Vec<f32>> {
        let all = self.read_f32(name)?;
        all.get(start..start.saturating_add(len))
            .map(<[f32]>::to_vec)
            .ok_or_else(|| {
                FormatError::invalid(
                    self.path(),
                    format!(
                        "tensor `{name}`: elements {start}..+{len} are past its {} elements",
                        all.len()
                    ),
                )
            })
    }
    /// Total size of the underlying file(s) in bytes.
    fn bytes_on_disk(&self) -> u64;
    /// The stored bytes of a 16-bit float tensor (F16 or BF16, little-endian) exactly as
    /// they are, so writers can keep its precision without a detour through f32. `None` where
    /// the source stores it otherwise (or converts it on reading).
    fn raw_half(&self, _name: &str) -> Option<(DType, &[u8])> {
        None
    }
    /// The stored bytes of a tensor as a range of a buffer the caller may keep (the mapped
    /// file), so a runtime can compute from the file's own blocks without copying them. `None`
    /// where the source has no such buffer (or converts the tensor on reading).
    fn raw_shared(&self, _name: &str) -> Option<SharedBytes> {
        None
    }
}

/// Bytes anyone can hold on to: a mapped file or an owned buffer.
pub type SharedBuffer = Arc<dyn Deref<Target = [u8]> + Send + Sync>;

/// One tensor's stored bytes, `buffer[range]`, in its stored `dtype`.
#[derive(Clone)]
pub struct SharedBytes {
    pub dtype: DType,
    pub buffer: SharedBuffer,
    pub range: Range<usize>,
}
