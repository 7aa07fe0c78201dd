//! Lossless packing of checkpoints (work in progress: see issue 3).
