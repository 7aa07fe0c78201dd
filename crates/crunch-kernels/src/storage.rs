//! The bytes of a packed matrix: owned, or a range of a buffer shared with others (a
//! memory-mapped model file), so that a model can run straight from the mapped file.

use std::ops::Deref;
use std::sync::Arc;

/// Anything that holds bytes and can be shared between threads: a `Vec<u8>`, a memory map.
pub trait ByteOwner: Deref<Target = [u8]> + Send + Sync {}
impl<T: Deref<Target = [u8]> + Send + Sync> ByteOwner for T {}

/// A byte range of a shared owner. Cloning shares the owner.
#[derive(Clone)]
pub struct Bytes {
    owner: Arc<dyn ByteOwner>,
    start: usize,
    len: usize,
}

impl Bytes {
    /// Owns `v`.
    pub fn owned(v: Vec<u8>) -> Self {
        let len = v.len();
        Bytes {
            owner: Arc::new(v),
            start: 0,
            len,
        }
    }

    /// `owner[start..start + len]`; `None` when the range is outside the owner.
    pub fn shared(owner: Arc<dyn ByteOwner>, start: usize, len: usize) -> Option<Self> {
        let end = start.checked_add(len)?;
        (end <= owner.len()).then_some(Bytes { owner, start, len })
    }

    /// Whether these bytes live in a buffer shared with something else (e.g. a mapped file).
    pub fn is_shared(&self) -> bool {
        Arc::strong_count(&self.owner) > 1
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.owner[self.start..self.start + self.len]
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes({} bytes)", self.len)
    }
}
