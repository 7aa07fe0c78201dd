//! SparseGPT on an NVIDIA GPU (feature `cuda`): [`crate::sparsegpt`] with the GPU machinery of
//! [`super::gptq`] (same prepared Hessian without act-order, same lazy-update GEMM); the
//! `sparsegpt_block` kernel chooses each row's mask, prunes (and quantizes) and spreads the
//! errors inside a block, one thread per row, as the host loop does row by row.
//!
//! Covered: unstructured and N:M sparsity, optionally with joint quantization, whenever the
//! mask and grid groups lie inside the lazy-update blocks (the block size is at most
//! [`MAX_BLOCK`] and a multiple of M and of the group size). Otherwise `None`: the caller runs
//! the host implementation.

use super::gptq::{CudaGptq, DeviceHessian, MAX_BLOCK};
use super::solver::{dev, row_loop_cfg};
use crate::error::{CompressError, Result};
use crate::prune::select::pruned_count;
use crate::SparseGptOptions;
use crunch_repr::{Bitmask, PrunedWeight, QuantSpec, Sparsity};
use crunch_runtime::CudaTensor;
use cudarc::driver::PushKernelArg;

impl CudaGptq {
    /// SparseGPT of `weight` ([rows, cols] on the GPU) with a Hessian prepared without
    /// act-order: the pruned weight and its dense form as an f32 GPU tensor, or `None` when the
    /// settings need the host implementation (see the module docs).
    pub fn sparsegpt(
        &self,
        prep: &DeviceHessian,
        weight: &CudaTensor,
        sparsity: Sparsity,
        quant: Option<QuantSpec>,
        opts: &SparseGptOptions,
    ) -> Result<Option<(PrunedWeight, CudaTensor)>> {
        let (rows, cols) = match weight.shape() {
            [r, c] => (*r, *c),
            s => return Err(CompressError::Device(format!("weight of shape {s:?}"))),
        };
        sparsity.validate(cols)?;
        opts.validate()?;
        if let Some(spec) = quant {
            spec.validate(cols)?;
        }
        if prep.n != cols || prep.permuted {
            return Err(CompressError::Device(
                "SparseGPT needs a Hessian of the layer's width prepared without act-order".into(),
            ));
        }
        let block = opts.block_size;
        let (nm_n, nm_m) = match sparsity {
            Sparsity::NM { n, m } => (n, m),
            Sparsity::Unstructured(_) => (0, 0),
        };
        let group = quant.and_then(|q| q.group_size);
        if block > MAX_BLOCK
            || (nm_m > 0 && block % nm_m != 0)
            || group.is_some_and(|g| block % g != 0)
        {
            return Ok(None);
        }
        let stream = self.cuda.stream();
        let ng = quant.map_or(1, |q| q.n_groups(cols));
        let fixed = quant.filter(|q| q.group_size.is_none()).map(|q| (q, false));
        let (mut scale_dev, mut zero_dev) = self.initial_grids(prep, weight, ng, fixed)?;
        let mut wt = self.gather(prep, weight, rows, cols)?;
        let total = rows * cols;
        let mut out = unsafe { stream.alloc::<f32>(total) }.map_err(dev("alloc"))?;
        let mut kept = stream.alloc_zeros::<u8>(total).map_err(dev("alloc"))?;
        let mut codes = stream.alloc_zeros::<u8>(total).map_err(dev("alloc"))?;
        let mut err = unsafe { stream.alloc::<f32>(rows * block) }.map_err(dev("alloc"))?;
        let (rows_i, cols_i) = (rows as i32, cols as i32);
        let (nm_n_i, nm_m_i) = (nm_n as i32, nm_m as i32);
        let quant_mode: i32 = match quant {
            None => 0,
            Some(q) if q.group_size.is_none() => 1,
            Some(_) => 2,
        };
        let gs = group.unwrap_or(cols) as i32;
        let ng_i = ng as i32;
        let maxq = quant.map_or(1.0, |q| q.maxq() as f32);
        let sym = quant.is_some_and(|q| q.symmetric) as i32;
        let cfg = row_loop_cfg(rows);
        for i1 in (0..cols).step_by(block) {
            let i2 = (i1 + block).min(cols);
            let prune_k = match sparsity {
                Sparsity::Unstructured(p) => pruned_count(p, i2 - i1) as i32,
                Sparsity::NM { .. } => 0,
            };
            let (i1_i, i2_i) = (i1 as i32, i2 as i32);
            let mut l = stream.launch_builder(&self.k.sparsegpt_block);
            l.arg(&mut wt)
                .arg(&prep.u)
                .arg(&mut err)
                .arg(&mut out)
                .arg(&mut kept)
                .arg(&mut codes)
                .arg(&mut scale_dev)
                .arg(&mut zero_dev)
                .arg(&rows_i)
                .arg(&cols_i)
                .arg(&i1_i)
                .arg(&i2_i)
                .arg(&prune_k)
                .arg(&nm_n_i)
                .arg(&nm_m_i)
                .arg(&quant_mode)
                .arg(&gs)
                .arg(&ng_i)
                .arg(&maxq)
                .arg(&sym);
            unsafe { l.launch(cfg) }.map_err(dev("SparseGPT block"))?;
            self.trailing_update(&err, &prep.u, &mut wt, rows, cols, i1, i2)?;
        }
        drop((wt, err));
        let kept_host: Vec<bool> = stream
            .clone_dtoh(&kept)
            .map_err(dev("download"))?
            .into_iter()
            .map(|k| k != 0)
            .collect();
        let quant = match quant {
            None => None,
            Some(spec) => {
                let shape = (rows, cols);
                Some(self.download_weight(spec, shape, &codes, &scale_dev, &zero_dev)?)
            }
        };
        let pruned = PrunedWeight {
            sparsity,
            rows,
            cols,
            weight: stream.clone_dtoh(&out).map_err(dev("download"))?,
            mask: Bitmask::from_bools(rows, cols, &kept_host)?,
            quant,
        };
        Ok(Some((pruned, CudaTensor::from_f32(out, &[rows, cols]))))
    }
}
