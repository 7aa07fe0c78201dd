//! `--device cpu|cuda[:N]`: which backend runs the model.

use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// GPU ordinal; `bf16`: weights and matrix products in bf16 (f32 accumulation).
    Cuda {
        ordinal: usize,
        bf16: bool,
    },
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "cpu" {
            return Ok(Device::Cpu);
        }
        let bad = || format!("`{s}`: expected cpu, cuda[:N] or cuda-bf16[:N]");
        let (kind, ordinal) = match s.split_once(':') {
            Some((k, n)) => (k, n.parse().map_err(|_| bad())?),
            None => (s, 0),
        };
        let bf16 = match kind {
            "cuda" => false,
            "cuda-bf16" => true,
            _ => return Err(bad()),
        };
        Ok(Device::Cuda { ordinal, bf16 })
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda { ordinal, bf16 } => {
                write!(f, "cuda{}:{ordinal}", if *bf16 { "-bf16" } else { "" })
            }
        }
    }
}

/// Runs `$body` with `$b` bound to `$cpu` for `cpu`, or to `$cuda(ordinal, bf16)?` for
/// `cuda[-bf16][:N]` (a build without the `cuda` feature returns its error instead).
macro_rules! on_device {
    ($device:expr, $cpu:expr, $cuda:path, $b:ident => $body:expr) => {
        match $device {
            $crate::device::Device::Cpu => {
                let $b = $cpu;
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::device::Device::Cuda { ordinal, bf16 } => {
                let $b = $cuda(ordinal, bf16)?;
                $body
            }
            #[cfg(not(feature = "cuda"))]
            $crate::device::Device::Cuda { .. } => {
                return Err($crate::device::no_cuda_feature());
            }
        }
    };
}
pub(crate) use on_device;

/// Runs `$body` with `$b` bound to the backend for `$device` (a `Device`). Generic code cannot
/// take a backend type at run time, so each backend gets its own monomorphised copy of `$body`.
macro_rules! with_backend {
    ($device:expr, $b:ident => $body:expr) => {
        $crate::device::on_device!($device, crunch_runtime::Cpu, $crate::device::open_cuda, $b => $body)
    };
}
pub(crate) use with_backend;

/// Runs `$body` with `$b` bound to the generation runtime for `$device`: the host runtime
/// (`Host`, packed weights and integer kernels) for `cpu`, the CUDA backend with linear layers
/// kept packed on the GPU (`Cuda::with_packed_weights`, decision 117) for `cuda`/`cuda-bf16`.
/// `$b` implements `crunch_generate::Runtime`.
macro_rules! with_runtime {
    ($device:expr, $b:ident => $body:expr) => {
        $crate::device::on_device!($device, crunch_runtime::Host, $crate::device::open_cuda_packed, $b => $body)
    };
}
pub(crate) use with_runtime;

/// The error of `--device cuda` in a build without the `cuda` feature.
#[cfg_attr(feature = "cuda", allow(dead_code))]
pub fn no_cuda_feature() -> anyhow::Error {
    anyhow::anyhow!(
        "--device cuda: this crunch was built without the `cuda` feature \
         (build it with scripts/build-cuda, see docs/cuda.md)"
    )
}

/// Opens GPU `ordinal`, in bf16 or f32. A machine without a CUDA driver gets an error, not a
/// panic: cudarc panics when it cannot find the driver library, so the attempt runs under
/// `catch_unwind` (with the panic message kept off stderr).
#[cfg(feature = "cuda")]
pub fn open_cuda(ordinal: usize, bf16: bool) -> anyhow::Result<crunch_runtime::Cuda> {
    use crunch_runtime::Precision;
    let precision = if bf16 {
        Precision::Bf16
    } else {
        Precision::F32
    };
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let opened =
        std::panic::catch_unwind(|| crunch_runtime::Cuda::with_precision(ordinal, precision));
    std::panic::set_hook(hook);
    match opened {
        Ok(Ok(cuda)) => Ok(cuda),
        Ok(Err(e)) => Err(anyhow::anyhow!("--device cuda:{ordinal}: {e}")),
        Err(panic) => {
            let why = crate::panic_message(&*panic).unwrap_or_else(|| "unknown reason".into());
            Err(anyhow::anyhow!(
                "--device cuda:{ordinal}: no usable CUDA driver on this machine ({why})"
            ))
        }
    }
}

/// [`open_cuda`] with linear layers kept packed on the GPU (decision 117): what `generate`,
/// `chat` and `serve` run on.
#[cfg(feature = "cuda")]
pub fn open_cuda_packed(ordinal: usize, bf16: bool) -> anyhow::Result<crunch_runtime::Cuda> {
    open_cuda(ordinal, bf16)?
        .with_packed_weights()
        .map_err(|e| anyhow::anyhow!("--device cuda:{ordinal}: {e}"))
}
