//! Quantized codes kept on the GPU and expanded into a weight there (`Backend::upload_codes`,
//! `Backend::dequantize_codes`; decision 137): the budget search's swap as one kernel
//! (`codes_to_f32` / `codes_to_bf16` in `kernels.cu`) instead of a host dequantization and an
//! upload. The layout and its host transcription are `crate::codes`.

use super::{err, Cuda, CudaTensor, Precision, Store};
use crate::{QuantCodes, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use std::sync::Arc;

/// Threads per block of the expanding kernels, and the most blocks launched (the kernels loop
/// over the weights with a grid stride beyond that).
const THREADS: u32 = 256;
const MAX_BLOCKS: u64 = 1 << 20;

/// One quantized weight's codes on the device: `QuantCodes::pack_words`'s words, f16 scales
/// (bit patterns) and u8 zero points.
pub struct CudaCodes {
    words: CudaSlice<u32>,
    scales: CudaSlice<u16>,
    zeros: CudaSlice<u8>,
    rows: usize,
    cols: usize,
    bits: u8,
    group: usize,
    n_groups: usize,
}

impl CudaCodes {
    /// Device bytes held.
    pub fn bytes(&self) -> usize {
        4 * self.words.len() + 2 * self.scales.len() + self.zeros.len()
    }
}

impl Cuda {
    pub(super) fn upload_codes_impl(&self, q: &QuantCodes) -> Result<Option<CudaCodes>> {
        q.check()?;
        // Empty weights have nothing to expand; a non-finite scale's NaNs would not carry the
        // host's bits (the caller dequantizes those on the host); sizes past the kernel's
        // 32-bit column and group arguments are left to the host too.
        let fits_i32 = |v: usize| i32::try_from(v).is_ok();
        if q.codes.is_empty()
            || !q.scales_finite()
            || !fits_i32(q.cols)
            || !fits_i32(q.group)
            || !fits_i32(q.n_groups())
        {
            return Ok(None);
        }
        let words = self
            .stream
            .clone_htod(&q.pack_words())
            .map_err(err("upload codes"))?;
        let bits: Vec<u16> = q.scales.iter().map(|s| s.to_bits()).collect();
        let scales = self
            .stream
            .clone_htod(&bits)
            .map_err(err("upload scales"))?;
        let zeros = self
            .stream
            .clone_htod(q.zeros)
            .map_err(err("upload zero points"))?;
        Ok(Some(CudaCodes {
            words,
            scales,
            zeros,
            rows: q.rows,
            cols: q.cols,
            bits: q.bits,
            group: q.group,
            n_groups: q.n_groups(),
        }))
    }

    pub(super) fn dequantize_codes_impl(&self, c: &CudaCodes, w: &mut CudaTensor) -> Result<bool> {
        // As `write_weight`: only a whole buffer of the codes' shape that nothing else shares,
        // stored as `upload_weight` stores weights in this precision.
        if w.offset != 0 || w.shape != [c.rows, c.cols] {
            return Ok(false);
        }
        let n = (c.rows * c.cols) as i64;
        let (cols, bits, group, n_groups) = (
            c.cols as i32,
            c.bits as i32,
            c.group as i32,
            c.n_groups as i32,
        );
        let cfg = LaunchConfig {
            grid_dim: (
                (n as u64).div_ceil(THREADS as u64).min(MAX_BLOCKS) as u32,
                1,
                1,
            ),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // One launch, the kernel chosen by the weight's storage (f32, or bf16 bits as u16).
        macro_rules! expand {
            ($buf:expr, $kernel:expr, $what:literal) => {{
                let Some(out) = $buf.filter(|b| b.len() as i64 == n) else {
                    return Ok(false);
                };
                let mut l = self.stream.launch_builder($kernel);
                l.arg(&c.words)
                    .arg(&c.scales)
                    .arg(&c.zeros)
                    .arg(out)
                    .arg(&n)
                    .arg(&cols)
                    .arg(&bits)
                    .arg(&group)
                    .arg(&n_groups);
                unsafe { l.launch(cfg) }.map_err(err($what))?;
            }};
        }
        match (&mut w.store, self.precision) {
            (Store::F32(buf), Precision::F32) => expand!(
                Arc::get_mut(buf).map(|b| &mut **b),
                &self.k.codes_to_f32,
                "codes to f32"
            ),
            (Store::Bf16(buf), Precision::Bf16) => {
                expand!(Arc::get_mut(buf), &self.k.codes_to_bf16, "codes to bf16")
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Free device memory in bytes.
    pub(super) fn free_bytes(&self) -> Result<u64> {
        let (free, _) = self
            .stream
            .context()
            .mem_get_info()
            .map_err(err("memory info"))?;
        Ok(free as u64)
    }
}
