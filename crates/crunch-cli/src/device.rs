//! `--device cpu|cuda[:N]`: which backend runs the model.

use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// GPU ordinal.
    Cuda(usize),
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(Device::Cuda(n)),
                _ => Err(format!("`{s}`: expected cpu, cuda or cuda:N")),
            },
        }
    }
}

/// Runs `$body` with `$b` bound to the backend for `$device` (a `Device`). Generic code cannot
/// take a backend type at run time, so each backend gets its own monomorphised copy of `$body`.
macro_rules! with_backend {
    ($device:expr, $b:ident => $body:expr) => {
        match $device {
            $crate::device::Device::Cpu => {
                let $b = crunch_runtime::Cpu;
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::device::Device::Cuda(n) => {
                let $b = crunch_runtime::Cuda::new(n)?;
                $body
            }
            #[cfg(not(feature = "cuda"))]
            $crate::device::Device::Cuda(_) => anyhow::bail!(
                "--device cuda: this crunch was built without the `cuda` feature \
                 (build it with scripts/build-cuda, see docs/cuda.md)"
            ),
        }
    };
}
pub(crate) use with_backend;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse(), Ok(Device::Cpu));
        assert_eq!("cuda".parse(), Ok(Device::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(Device::Cuda(3)));
        assert!("gpu".parse::<Device>().is_err());
        assert!("cuda:x".parse::<Device>().is_err());
    }
}
