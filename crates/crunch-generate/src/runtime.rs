//! The backends the engine runs on: [`Host`] (the CPU runtime, weights packed) and, with the
//! `cuda` feature, `Cuda` made with `Cuda::with_packed_weights` (decision 117). The engine's
//! forward pass is `crunch_model`'s, written once against `Backend`; what this trait adds is
//! only what reports need: the bytes a backend's tensors and key/value stores hold.

use crunch_runtime::{Backend, Host, HostKv, HostTensor, KvMode};

pub trait Runtime: Backend + Clone {
    /// Bytes `t` holds where it lives (packed bytes for a packed matrix).
    fn tensor_bytes(t: &Self::Tensor) -> usize;
    /// Whether `a` and `b` share storage (tied embeddings are counted once).
    fn same_storage(a: &Self::Tensor, b: &Self::Tensor) -> bool;
    /// Bytes one block's key/value store holds now.
    fn kv_store_bytes(kv: &Self::KvStore) -> usize;
    /// Where the model runs, for reports (`cpu`, `cuda NVIDIA H200 (f32)`).
    fn describe(&self) -> String;
    /// Whether the model runs on a GPU.
    fn on_gpu(&self) -> bool;
    /// Which memory a cache stored as `mode` for heads of `head_dim` lives in: `"host"` or
    /// `"gpu"` (the CUDA backend keeps every mode on the device for heads of 32–128
    /// channels, decision 138; other heads' compressed caches in host memory).
    fn kv_memory(&self, mode: KvMode, head_dim: usize) -> &'static str;
    /// Bytes of device memory in use and in total, where the backend has its own memory.
    fn device_memory(&self) -> Option<(usize, usize)>;
}

impl Runtime for Host {
    fn tensor_bytes(t: &HostTensor) -> usize {
        t.nbytes()
    }
    fn same_storage(a: &HostTensor, b: &HostTensor) -> bool {
        a.same_storage(b)
    }
    fn kv_store_bytes(kv: &HostKv) -> usize {
        kv.bytes()
    }
    fn describe(&self) -> String {
        "cpu".into()
    }
    fn on_gpu(&self) -> bool {
        false
    }
    fn kv_memory(&self, _: KvMode, _: usize) -> &'static str {
        "host"
    }
    fn device_memory(&self) -> Option<(usize, usize)> {
        None
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::Runtime;
    use crunch_runtime::{device_head_dim, Cuda, CudaKv, CudaTensor, KvMode, Precision};

    impl Runtime for Cuda {
        fn tensor_bytes(t: &CudaTensor) -> usize {
            t.nbytes()
        }
        fn same_storage(a: &CudaTensor, b: &CudaTensor) -> bool {
            a.same_storage(b)
        }
        /// The device buffers the store allocated (f32 rows, or codes, scales, tail and
        /// sink of a compressed mode); a host-memory store's bytes for heads the device
        /// kernel does not take.
        fn kv_store_bytes(kv: &CudaKv) -> usize {
            kv.bytes()
        }
        fn describe(&self) -> String {
            let p = match self.precision() {
                Precision::F32 => "f32",
                Precision::Bf16 => "bf16",
            };
            format!("cuda {} ({p})", self.device_name())
        }
        fn on_gpu(&self) -> bool {
            true
        }
        /// f32 keys and values, and every compressed mode for heads of 32–128 channels, live
        /// on the device (decision 138); other heads' compressed caches in host memory.
        fn kv_memory(&self, mode: KvMode, head_dim: usize) -> &'static str {
            if mode.is_full() || device_head_dim(head_dim) {
                "gpu"
            } else {
                "host"
            }
        }
        fn device_memory(&self) -> Option<(usize, usize)> {
            self.synchronize().ok()?;
            self.memory().ok()
        }
    }
}
