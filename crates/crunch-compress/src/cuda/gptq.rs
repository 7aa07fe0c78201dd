//! GPTQ on an NVIDIA GPU (feature `cuda`): the algorithm of [`crate::gptq`], step for step, with
//! the weight, the Hessian and the inverse-Hessian factor staying in GPU memory.
//!
//! - Preparing the Hessian (dead columns, act-order permutation, dampening) is decided on the
//!   host from its diagonal, exactly as [`crate::inverse`] does; the factor U (UᵀU = H⁻¹) is
//!   computed in f64 on the GPU by the same route (Cholesky of the reversed matrix with
//!   cuSOLVER, triangular inverse with cuBLAS) and handed to the loop in f32.
//! - The column loop runs one lazy-update block at a time: a kernel with one thread per row
//!   quantizes the block's columns and spreads each error over the rest of the block (rows are
//!   independent given U), then one SGEMM applies the block's errors to all later columns.
//! - Grids: per channel and static groups (act-order) are fitted on the host from the original
//!   weights with the host code ([`crate::quant::grid::fit`], so MSE clipping works too); groups fitted
//!   during the loop are fitted in the kernel (min–max only: with `mse_clip` they are refused,
//!   and the caller runs the host implementation).
//!
//! The codes equal the host's up to float rounding: the trailing updates are summed in a
//! different order by cuBLAS, which can move a value across a rounding boundary (a tie).

use super::solver::{dev, grid_cfg, open_solver, potrf_lower, row_loop_cfg, trsm_lower};
use crate::error::{CompressError, Result};
use crate::inverse::dampened;
use crate::quant::coded_grid;
use crate::quant::grid::{self, GridParams};
use crate::GptqOptions;
use crunch_repr::{QuantSpec, QuantizedWeight};
use crunch_runtime::{Cuda, CudaTensor};
use cudarc::cublas::sys as blas_sys;
use cudarc::cublas::{Gemm, GemmConfig};
use cudarc::cusolver::safe::DnHandle;
use cudarc::driver::{CudaFunction, CudaSlice, CudaView, PushKernelArg};
use half::f16;
use rayon::prelude::*;

const SOURCE: &str = include_str!("gptq.cu");
/// Columns per lazy-update block; the kernel holds one block of a row in local memory.
const BLOCK: usize = 128;
pub(crate) const MAX_BLOCK: usize = 256;

pub(crate) struct Kernels {
    diag_of: CudaFunction,
    build_reversed: CudaFunction,
    identity: CudaFunction,
    reverse_to_upper: CudaFunction,
    gather_f32: CudaFunction,
    gather_bf16: CudaFunction,
    gptq_block: CudaFunction,
    pub(crate) sparsegpt_block: CudaFunction,
    dequantize_f32: CudaFunction,
}

/// GPTQ on one GPU: kernels compiled and a cuSOLVER handle, reused across layers.
pub struct CudaGptq {
    pub(crate) cuda: Cuda,
    pub(crate) k: Kernels,
    solver: DnHandle,
}

/// A Hessian prepared for the column loop; layers that read the same input share one.
pub struct DeviceHessian {
    pub(crate) n: usize,
    pub(crate) dead: Vec<bool>,
    /// Whether the columns were permuted (act-order).
    pub(crate) permuted: bool,
    perm_dev: CudaSlice<i32>,
    dead_dev: CudaSlice<u8>,
    /// U, n×n row-major f32, processing order.
    pub(crate) u: CudaSlice<f32>,
}

impl CudaGptq {
    /// Compiles the kernels and opens cuSOLVER (`libcusolver.so`, found like cuBLAS).
    pub fn new(cuda: &Cuda) -> Result<Self> {
        let solver = open_solver(cuda)?;
        let module = cuda
            .compile(SOURCE)
            .map_err(|e| CompressError::Device(e.to_string()))?;
        let f = |n: &str| module.load_function(n).map_err(dev("loading a kernel"));
        let k = Kernels {
            diag_of: f("diag_of")?,
            build_reversed: f("build_reversed")?,
            identity: f("identity")?,
            reverse_to_upper: f("reverse_to_upper")?,
            gather_f32: f("gather_f32")?,
            gather_bf16: f("gather_bf16")?,
            gptq_block: f("gptq_block")?,
            sparsegpt_block: f("sparsegpt_block")?,
            dequantize_f32: f("dequantize_f32")?,
        };
        Ok(Self {
            cuda: cuda.clone(),
            k,
            solver,
        })
    }

    /// Dead columns, permutation and U from `hessian` ([n, n] f32 on the GPU; any positive
    /// multiple of XᵀX, GPTQ being invariant to the scale), as [`crate::inverse`] prepares them.
    pub fn prepare(&self, hessian: &CudaTensor, opts: &GptqOptions) -> Result<DeviceHessian> {
        opts.validate()?;
        let n = match hessian.shape() {
            [a, b] if a == b => *a,
            s => return Err(CompressError::Device(format!("Hessian of shape {s:?}"))),
        };
        let h = hessian
            .f32_view()
            .ok_or_else(|| CompressError::Device("bf16 Hessian".into()))?;
        let stream = self.cuda.stream();
        let mut d = stream.alloc_zeros::<f32>(n).map_err(dev("alloc"))?;
        let n_i = n as i32;
        let mut l = stream.launch_builder(&self.k.diag_of);
        l.arg(&h).arg(&mut d).arg(&n_i);
        unsafe { l.launch(grid_cfg(n)) }.map_err(dev("diag"))?;
        let diag_h = stream.clone_dtoh(&d).map_err(dev("download"))?;
        if let Some(i) = diag_h.iter().position(|v| !v.is_finite()) {
            return Err(CompressError::NonFiniteHessian { row: i, col: i });
        }
        let dead: Vec<bool> = diag_h.iter().map(|&v| v == 0.0).collect();
        let diag: Vec<f64> = diag_h
            .iter()
            .zip(&dead)
            .map(|(&v, &dd)| if dd { 1.0 } else { v as f64 })
            .collect();
        let mut perm: Vec<usize> = (0..n).collect();
        if opts.act_order {
            perm.sort_by(|&a, &b| diag[b].total_cmp(&diag[a]));
        }
        let mean_diag = diag.iter().sum::<f64>() / n as f64;
        let perm_i32: Vec<i32> = perm.iter().map(|&p| p as i32).collect();
        let perm_dev = stream.clone_htod(&perm_i32).map_err(dev("upload"))?;
        let dead_u8: Vec<u8> = dead.iter().map(|&d| d as u8).collect();
        let dead_dev = stream.clone_htod(&dead_u8).map_err(dev("upload"))?;

        let u = dampened(opts.damp, mean_diag, |lambda| {
            let dd: Vec<f64> = perm.iter().map(|&p| diag[p] + lambda).collect();
            self.inverse_upper_factor(&h, &perm_dev, &dd, n)
        })?;
        Ok(DeviceHessian {
            n,
            dead,
            permuted: opts.act_order,
            perm_dev,
            dead_dev,
            u,
        })
    }

    /// U (f32) for the dampened, permuted Hessian, or `None` if it is not positive definite.
    fn inverse_upper_factor(
        &self,
        h: &CudaView<f32>,
        perm: &CudaSlice<i32>,
        dd: &[f64],
        n: usize,
    ) -> Result<Option<CudaSlice<f32>>> {
        let stream = self.cuda.stream();
        let nn = n * n;
        let n_i = n as i32;
        let dd_dev = stream.clone_htod(dd).map_err(dev("upload"))?;
        let mut a = unsafe { stream.alloc::<f64>(nn) }.map_err(dev("alloc"))?;
        let mut l = stream.launch_builder(&self.k.build_reversed);
        l.arg(h).arg(perm).arg(&dd_dev).arg(&mut a).arg(&n_i);
        unsafe { l.launch(grid_cfg(nn)) }.map_err(dev("build"))?;

        // Cholesky, lower (the matrix is symmetric, so row- and column-major agree).
        if !potrf_lower(&self.solver, stream, &mut a, n)? {
            return Ok(None);
        }
        // L⁻¹ by a triangular solve against the identity.
        let mut b = unsafe { stream.alloc::<f64>(nn) }.map_err(dev("alloc"))?;
        let mut l = stream.launch_builder(&self.k.identity);
        l.arg(&mut b).arg(&n_i);
        unsafe { l.launch(grid_cfg(nn)) }.map_err(dev("identity"))?;
        trsm_lower(&self.cuda, false, &a, &mut b, n, n)?;
        drop(a);
        let mut u = unsafe { stream.alloc::<f32>(nn) }.map_err(dev("alloc"))?;
        let mut bad = stream.alloc_zeros::<i32>(1).map_err(dev("alloc"))?;
        let mut l = stream.launch_builder(&self.k.reverse_to_upper);
        l.arg(&b).arg(&mut u).arg(&n_i).arg(&mut bad);
        unsafe { l.launch(grid_cfg(nn)) }.map_err(dev("upper"))?;
        let bad = stream.clone_dtoh(&bad).map_err(dev("download"))?[0] != 0;
        Ok((!bad).then_some(u))
    }

    /// GPTQ of `weight` ([rows, cols] on the GPU, f32 or bf16) with a prepared Hessian: the
    /// quantized weight and its dequantized form as an f32 GPU tensor. `None` when the options
    /// need the host implementation (groups fitted during the loop with MSE clipping or
    /// two-level scales, or groups wider than [`MAX_BLOCK`] without act-order).
    pub fn quantize(
        &self,
        prep: &DeviceHessian,
        weight: &CudaTensor,
        spec: QuantSpec,
        opts: &GptqOptions,
    ) -> Result<Option<(QuantizedWeight, CudaTensor)>> {
        let (rows, cols) = match weight.shape() {
            [r, c] => (*r, *c),
            s => return Err(CompressError::Device(format!("weight of shape {s:?}"))),
        };
        spec.validate(cols)?;
        if prep.n != cols {
            return Err(CompressError::HessianSize {
                hessian_n: prep.n,
                cols,
            });
        }
        // (mode, group size used for indexing, block width)
        let (mode, gs, width) = match (spec.group_size, opts.act_order) {
            (None, _) => (0, cols, BLOCK),
            (Some(g), true) => (1, g, BLOCK),
            (Some(g), false) => {
                let width = if BLOCK % g == 0 { BLOCK } else { g };
                // Two-level scales fitted during the loop exist on the host only.
                if opts.mse_clip || width > MAX_BLOCK || spec.scale_bits.is_some() {
                    return Ok(None);
                }
                (2, g, width)
            }
        };
        let ng = spec.n_groups(cols);
        let stream = self.cuda.stream();

        // Grids fitted before the loop, on the host, from the original weights.
        let fixed = (mode != 2).then_some((spec, opts.mse_clip));
        let (mut scale_dev, mut zero_dev) = self.initial_grids(prep, weight, ng, fixed)?;

        // Working copy: column-major W in processing order, dead columns zeroed.
        let total = rows * cols;
        let (rows_i, cols_i) = (rows as i32, cols as i32);
        let mut wt = self.gather(prep, weight, rows, cols)?;
        let mut codes = stream.alloc_zeros::<u8>(total).map_err(dev("alloc"))?;
        let mut err = unsafe { stream.alloc::<f32>(rows * width) }.map_err(dev("alloc"))?;
        let (mode_i, gs_i, ng_i) = (mode, gs as i32, ng as i32);
        let maxq = spec.maxq() as f32;
        let sym = spec.symmetric as i32;
        let loop_cfg = row_loop_cfg(rows);
        for i1 in (0..cols).step_by(width) {
            let i2 = (i1 + width).min(cols);
            let (i1_i, i2_i) = (i1 as i32, i2 as i32);
            let mut l = stream.launch_builder(&self.k.gptq_block);
            l.arg(&mut wt)
                .arg(&prep.u)
                .arg(&mut err)
                .arg(&mut codes)
                .arg(&mut scale_dev)
                .arg(&mut zero_dev)
                .arg(&prep.perm_dev)
                .arg(&rows_i)
                .arg(&cols_i)
                .arg(&i1_i)
                .arg(&i2_i)
                .arg(&mode_i)
                .arg(&gs_i)
                .arg(&ng_i)
                .arg(&maxq)
                .arg(&sym);
            unsafe { l.launch(loop_cfg) }.map_err(dev("column loop"))?;
            self.trailing_update(&err, &prep.u, &mut wt, rows, cols, i1, i2)?;
        }
        drop((wt, err));

        let mut deq = unsafe { stream.alloc::<f32>(total) }.map_err(dev("alloc"))?;
        let gs_deq = gs as i32;
        let mut l = stream.launch_builder(&self.k.dequantize_f32);
        l.arg(&codes)
            .arg(&scale_dev)
            .arg(&zero_dev)
            .arg(&mut deq)
            .arg(&rows_i)
            .arg(&cols_i)
            .arg(&gs_deq)
            .arg(&ng_i);
        unsafe { l.launch(grid_cfg(total)) }.map_err(dev("dequantize"))?;
        let q = self.download_weight(spec, (rows, cols), &codes, &scale_dev, &zero_dev)?;
        Ok(Some((q, CudaTensor::from_f32(deq, &[rows, cols]))))
    }

    /// The grid buffers [rows, ng] a block kernel starts from: fitted on the host from the
    /// original weights (dead columns zeroed) for `fixed` = (spec, MSE clipping), else
    /// placeholders the kernel overwrites. Also rejects non-finite weights, naming the first.
    pub(crate) fn initial_grids(
        &self,
        prep: &DeviceHessian,
        weight: &CudaTensor,
        ng: usize,
        fixed: Option<(QuantSpec, bool)>,
    ) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
        let (rows, cols) = (weight.shape()[0], weight.shape()[1]);
        let host = host_weight(&self.cuda, weight)?;
        if let Some((row, col)) = non_finite(&host, cols) {
            let value = host[row * cols + col];
            return Err(crunch_repr::ReprError::NonFiniteWeight { row, col, value }.into());
        }
        let (mut scale, mut zero) = (vec![1.0f32; rows * ng], vec![0.0f32; rows * ng]);
        if let Some((spec, mse_clip)) = fixed {
            let params = fit_fixed(&host, rows, cols, &prep.dead, spec, mse_clip)?;
            for (k, p) in params.iter().enumerate() {
                scale[k] = p.scale.to_f32();
                zero[k] = p.zero as f32;
            }
        }
        let stream = self.cuda.stream();
        Ok((
            stream.clone_htod(&scale).map_err(dev("upload"))?,
            stream.clone_htod(&zero).map_err(dev("upload"))?,
        ))
    }

    /// The grids as the kernels left them (f32 values exactly representable as f16 scales and
    /// integer zero points); a scale the kernel could not fit in f16 is an error.
    pub(crate) fn download_weight(
        &self,
        spec: QuantSpec,
        (rows, cols): (usize, usize),
        codes: &CudaSlice<u8>,
        scale: &CudaSlice<f32>,
        zero: &CudaSlice<f32>,
    ) -> Result<QuantizedWeight> {
        let stream = self.cuda.stream();
        let scale = stream.clone_dtoh(scale).map_err(dev("download"))?;
        if let Some(&s) = scale.iter().find(|s| !s.is_finite()) {
            return Err(CompressError::ScaleOverflow { scale: s });
        }
        let zero = stream.clone_dtoh(zero).map_err(dev("download"))?;
        Ok(QuantizedWeight {
            spec,
            rows,
            cols,
            codes: stream.clone_dtoh(codes).map_err(dev("download"))?,
            scales: scale.iter().map(|&s| f16::from_f32(s)).collect(),
            zeros: zero.iter().map(|&z| z as u8).collect(),
            g_idx: None,
        })
    }

    /// Column-major W in processing order (dead columns zeroed), f32, from `weight` [rows, cols].
    pub(crate) fn gather(
        &self,
        prep: &DeviceHessian,
        weight: &CudaTensor,
        rows: usize,
        cols: usize,
    ) -> Result<CudaSlice<f32>> {
        let stream = self.cuda.stream();
        let total = rows * cols;
        let (rows_i, cols_i) = (rows as i32, cols as i32);
        let mut wt = unsafe { stream.alloc::<f32>(total) }.map_err(dev("alloc"))?;
        let mut l;
        let (wf, wb) = (weight.f32_view(), weight.bf16_view());
        match (&wf, &wb) {
            (Some(w), _) => {
                l = stream.launch_builder(&self.k.gather_f32);
                l.arg(w);
            }
            (None, Some(w)) => {
                l = stream.launch_builder(&self.k.gather_bf16);
                l.arg(w);
            }
            (None, None) => unreachable!("a tensor is f32 or bf16"),
        }
        l.arg(&mut wt)
            .arg(&prep.perm_dev)
            .arg(&prep.dead_dev)
            .arg(&rows_i)
            .arg(&cols_i);
        unsafe { l.launch(grid_cfg(total)) }.map_err(dev("gather"))?;
        Ok(wt)
    }

    /// The lazy update after block i1..i2: W[:, i2:] −= Err · U[i1:i2, i2:], with W column-major
    /// [rows, cols], Err column-major [rows, i2 − i1] and U row-major (= column-major Uᵀ, so
    /// U[i1:i2, i2:] is (Uᵀ[i2:, i1:i2])ᵀ).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn trailing_update(
        &self,
        err: &CudaSlice<f32>,
        u: &CudaSlice<f32>,
        wt: &mut CudaSlice<f32>,
        rows: usize,
        cols: usize,
        i1: usize,
        i2: usize,
    ) -> Result<()> {
        if i2 >= cols {
            return Ok(());
        }
        let cfg = GemmConfig {
            transa: blas_sys::cublasOperation_t::CUBLAS_OP_N,
            transb: blas_sys::cublasOperation_t::CUBLAS_OP_T,
            m: rows as i32,
            n: (cols - i2) as i32,
            k: (i2 - i1) as i32,
            alpha: -1.0f32,
            lda: rows as i32,
            ldb: cols as i32,
            beta: 1.0f32,
            ldc: rows as i32,
        };
        let a = err.slice(..rows * (i2 - i1));
        let b = u.slice(i1 * cols + i2..);
        let mut c = wt.slice_mut(i2 * rows..);
        unsafe { self.cuda.blas().gemm(cfg, &a, &b, &mut c) }.map_err(dev("trailing update"))
    }
}

fn host_weight(cuda: &Cuda, w: &CudaTensor) -> Result<Vec<f32>> {
    use crunch_runtime::Backend;
    cuda.to_f32(w)
        .map_err(|e| CompressError::Device(e.to_string()))
}

fn non_finite(w: &[f32], cols: usize) -> Option<(usize, usize)> {
    w.iter()
        .position(|v| !v.is_finite())
        .map(|i| (i / cols, i % cols))
}

/// Per-channel or static-group grids of the original rows with dead columns zeroed, as the
/// host GPTQ fits them before its loop.
fn fit_fixed(
    w: &[f32],
    rows: usize,
    cols: usize,
    dead: &[bool],
    spec: QuantSpec,
    mse_clip: bool,
) -> Result<Vec<GridParams>> {
    let per_row: Vec<Vec<GridParams>> = (0..rows)
        .into_par_iter()
        .map(|r| {
            let row: Vec<f32> = w[r * cols..(r + 1) * cols]
                .iter()
                .zip(dead)
                .map(|(&v, &d)| if d { 0.0 } else { v })
                .collect();
            match (spec.group_size, spec.scale_bits) {
                (None, _) => Ok(vec![grid::fit(&row, spec, mse_clip)?]),
                (Some(g), None) => row
                    .chunks(g)
                    .map(|values| grid::fit(values, spec, mse_clip))
                    .collect(),
                // Two-level scales (decision 145), as the host GPTQ's static groups.
                (Some(g), Some(_)) => {
                    let rs = coded_grid::row_scale(&row, g, spec, mse_clip)?;
                    row.chunks(g)
                        .map(|values| coded_grid::fit_coded(values, spec, mse_clip, rs))
                        .collect()
                }
            }
        })
        .collect::<Result<_>>()?;
    Ok(per_row.into_iter().flatten().collect())
}
