//! The GPU solvers (feature `cuda`): GPTQ and SparseGPT column loops (`gptq.rs` with its
//! kernels in `gptq.cu`, `sparsegpt.rs`) and the low-rank methods' dense decompositions
//! (`dense.rs`), over one shared module of cuSOLVER/cuBLAS helpers (`solver.rs`).

mod dense;
mod gptq;
mod solver;
mod sparsegpt;

pub use dense::CudaDense;
pub use gptq::{CudaGptq, DeviceHessian};
