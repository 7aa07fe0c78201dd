//! GPTQ (Frantar et al., 2022, Algorithm 1): columns are quantized one at a time, and each
//! column's rounding error is spread over the not-yet-quantized columns through the inverse
//! Hessian, so the layer output X·Wᵀ changes as little as possible.
//!
//! This is the Cholesky form with lazy batch updates: U (UᵀU = H⁻¹, see [`crate::inverse`])
//! replaces the explicit inverse-Hessian downdates, and the updates of columns right of the
//! current block of `block_size` columns are collected in Err and applied at the end of the
//! block as one GEMM, W[:, i2:] −= Err · U[i1:i2, i2:].
//!
//! Rows are independent given U (each row is its own least-squares problem), so rows are
//! processed in fixed chunks of [`ROW_CHUNK`] spread over rayon threads: the result does not
//! depend on the thread count.
//!
//! Grid parameters (decision 050):
//! - per channel: fitted on the whole row before the column loop;
//! - groups without act-order: fitted when the loop reaches a group's first column, on the
//!   weights as updated so far (including the pending in-block updates, so this equals the
//!   column-by-column algorithm);
//! - groups with act-order: "static groups", fitted on the original weights of each original
//!   group before the loop, so each column keeps group col / group_size and `g_idx` is `None`;
//! - two-level scales (`spec.scale_bits`, decision 145): a row scale fixed before the loop
//!   from the original weights, each group's scale searched among its allowed values
//!   (`coded_grid.rs`), whenever the group is fitted (static or dynamic).

use super::coded_grid;
use super::grid::{self, GridParams};
use crate::column_loop::{self, apply_block_errors, current_values, BLOCK_SIZE, ROW_CHUNK};
use crate::error::Result;
use crate::hessian::Hessian;
use crate::inverse::PreparedHessian;
use crunch_repr::{validate_weight, QuantSpec, QuantizedWeight};
use rayon::prelude::*;

/// GPTQ settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GptqOptions {
    /// Columns per lazy-update block ([`BLOCK_SIZE`]). Affects speed only, not the result
    /// beyond float rounding.
    pub block_size: usize,
    /// Dampening λ = damp · mean(diag H) added to the diagonal (0.01 in the paper).
    pub damp: f32,
    /// Quantize columns in order of descending diag(H) (with static groups).
    pub act_order: bool,
    /// Search each row's/group's clipping range for the smallest Σ|err|^2.4.
    pub mse_clip: bool,
}

impl Default for GptqOptions {
    /// Block [`BLOCK_SIZE`], damp 0.01, act-order, MSE-searched grids: the defaults of `crunch
    /// quantize` and of recipes alike, chosen by the off-domain evaluation (decision 092).
    fn default() -> Self {
        Self {
            block_size: BLOCK_SIZE,
            damp: 0.01,
            act_order: true,
            mse_clip: true,
        }
    }
}

impl GptqOptions {
    /// Columns in order, no MSE clipping, dampening `damp`, default block: what GPTQ onto the
    /// GGUF grids ([`super::gptq_gguf`]) runs with (the type's encoder fits the grids).
    pub fn in_order(damp: f32) -> Self {
        Self {
            block_size: BLOCK_SIZE,
            damp,
            act_order: false,
            mse_clip: false,
        }
    }

    pub fn validate(&self) -> Result<()> {
        column_loop::check_options("GPTQ", self.block_size, self.damp)
    }
}

/// How the grid of the column processed i-th is found.
#[derive(Clone, Copy, PartialEq)]
enum GroupMode {
    PerChannel,
    /// Fitted on the updated weights when the loop reaches the group.
    Dynamic {
        group_size: usize,
    },
    /// Fitted on the original weights before the loop (act-order).
    Static {
        group_size: usize,
    },
}

/// What every row chunk shares.
struct Plan<'a> {
    cols: usize,
    spec: QuantSpec,
    mode: GroupMode,
    n_groups: usize,
    block_size: usize,
    mse_clip: bool,
    prep: &'a PreparedHessian,
}

/// GPTQ quantization of a row-major [rows, cols] weight with the Hessian of its inputs.
pub fn gptq(
    weight: &[f32],
    rows: usize,
    cols: usize,
    hessian: &Hessian,
    spec: QuantSpec,
    opts: &GptqOptions,
) -> Result<QuantizedWeight> {
    spec.validate(cols)?;
    validate_weight(weight, rows, cols)?;
    opts.validate()?;
    let prep = column_loop::prepare(hessian, cols, opts.act_order, opts.damp)?;
    let mode = match (spec.group_size, opts.act_order) {
        (None, _) => GroupMode::PerChannel,
        (Some(group_size), false) => GroupMode::Dynamic { group_size },
        (Some(group_size), true) => GroupMode::Static { group_size },
    };
    let n_groups = spec.n_groups(cols);
    let plan = Plan {
        cols,
        spec,
        mode,
        n_groups,
        block_size: opts.block_size,
        mse_clip: opts.mse_clip,
        prep: &prep,
    };

    let mut codes = vec![0u8; rows * cols];
    let mut params = vec![GridParams::new(half::f16::ONE, 0, spec.maxq()); rows * n_groups];
    codes
        .par_chunks_mut(ROW_CHUNK * cols)
        .zip(params.par_chunks_mut(ROW_CHUNK * n_groups))
        .zip(weight.par_chunks(ROW_CHUNK * cols))
        .try_for_each(|((codes, params), weight)| quantize_rows(&plan, weight, codes, params))?;

    Ok(grid::quantized_weight(spec, (rows, cols), codes, &params))
}

/// The hook of GPTQ's column loop ([`error_feedback_rows`]): how one row's columns are put on
/// its grid. GPTQ's uniform grids ([`UniformGrid`]) and the lookup-table codebooks of
/// `lut.rs` plug into the same loop.
pub(crate) trait ColumnGrid {
    /// Called for each row `r` of the chunk before the loop, with the row in original column
    /// order, dead columns zeroed: where grids fixed before the loop are fitted.
    fn start_row(&mut self, r: usize, row: &[f32]) -> Result<()>;
    /// The code of processing-order column `i` of row `r`, whose current value is
    /// `at.row[i]`, and the value that code stands for (exactly as the stored weight
    /// dequantizes it).
    fn quantize(&mut self, r: usize, i: usize, at: &Current) -> Result<(u8, f32)>;
}

/// One row's state when a column is quantized: what a grid fitted during the loop reads.
pub(crate) struct Current<'a> {
    /// The row in processing order, up to date inside the current block.
    pub row: &'a [f32],
    /// The errors of the block's columns so far, not yet applied right of the block.
    pub row_err: &'a [f32],
    /// The block's first column.
    pub i1: usize,
    pub cols: usize,
    pub u: &'a [f32],
}

impl Current<'_> {
    /// The current values of columns `start..end` (see [`current_values`]).
    pub fn values(&self, start: usize, end: usize, out: &mut Vec<f32>) {
        current_values(
            self.row,
            self.row_err,
            self.u,
            self.cols,
            self.i1,
            start,
            end,
            out,
        );
    }
}

/// GPTQ's uniform grids, per channel or per group (dynamic or static).
struct UniformGrid<'a, 'p> {
    plan: &'a Plan<'p>,
    /// [n, n_groups] of the chunk.
    params: &'a mut [GridParams],
    /// With two-level scales (`spec.scale_bits`, decision 145): each row's scale, fixed in
    /// `start_row` from the original weights.
    row_scales: Vec<half::f16>,
    group_values: Vec<f32>,
}

impl UniformGrid<'_, '_> {
    /// The grid of one group (or row) of row `r`: free f16 scale, or one of the row scale's
    /// allowed scales.
    fn fit(&self, r: usize, values: &[f32]) -> Result<GridParams> {
        let plan = self.plan;
        match plan.spec.scale_bits {
            None => grid::fit(values, plan.spec, plan.mse_clip),
            Some(_) => coded_grid::fit_coded(values, plan.spec, plan.mse_clip, self.row_scales[r]),
        }
    }
}

impl ColumnGrid for UniformGrid<'_, '_> {
    fn start_row(&mut self, r: usize, row: &[f32]) -> Result<()> {
        let (plan, ng) = (self.plan, self.plan.n_groups);
        if let (Some(_), Some(g)) = (plan.spec.scale_bits, plan.spec.group_size) {
            self.row_scales[r] = coded_grid::row_scale(row, g, plan.spec, plan.mse_clip)?;
        }
        match plan.mode {
            GroupMode::PerChannel => self.params[r] = self.fit(r, row)?,
            GroupMode::Static { group_size } => {
                for (g, values) in row.chunks(group_size).enumerate() {
                    self.params[r * ng + g] = self.fit(r, values)?;
                }
            }
            GroupMode::Dynamic { .. } => {}
        }
        Ok(())
    }

    fn quantize(&mut self, r: usize, i: usize, at: &Current) -> Result<(u8, f32)> {
        let (plan, ng) = (self.plan, self.plan.n_groups);
        let p = match plan.mode {
            GroupMode::PerChannel => self.params[r],
            GroupMode::Static { group_size } => {
                self.params[r * ng + plan.prep.perm[i] / group_size]
            }
            GroupMode::Dynamic { group_size } => {
                let g = i / group_size;
                if i % group_size == 0 {
                    let end = (i + group_size).min(plan.cols);
                    let mut values = std::mem::take(&mut self.group_values);
                    at.values(i, end, &mut values);
                    self.params[r * ng + g] = self.fit(r, &values)?;
                    self.group_values = values;
                }
                self.params[r * ng + g]
            }
        };
        let code = p.code(at.row[i]);
        Ok((code, p.value(code)))
    }
}

/// Runs GPTQ on a chunk of rows: `weight` and `codes` are [n, cols] in original column order,
/// `params` [n, n_groups].
fn quantize_rows(
    plan: &Plan,
    weight: &[f32],
    codes: &mut [u8],
    params: &mut [GridParams],
) -> Result<()> {
    let mut grid = UniformGrid {
        plan,
        row_scales: vec![half::f16::ONE; params.len() / plan.n_groups],
        params,
        group_values: Vec::new(),
    };
    error_feedback_rows(plan.prep, plan.block_size, weight, codes, &mut grid)
}

/// GPTQ's column loop on a chunk of rows, each column put on the grid by `grid`: `weight` and
/// `codes` are [n, cols] in original column order (`cols` = the Hessian's size).
pub(crate) fn error_feedback_rows(
    prep: &PreparedHessian,
    block_size: usize,
    weight: &[f32],
    codes: &mut [u8],
    grid: &mut impl ColumnGrid,
) -> Result<()> {
    let cols = prep.perm.len();
    let n = weight.len() / cols;
    let PreparedHessian {
        dead,
        perm,
        hinv_u: u,
    } = prep;

    // Original-order rows with dead columns zeroed: what fixed grids are fitted on.
    let zeroed: Vec<f32> = (0..n * cols)
        .map(|k| if dead[k % cols] { 0.0 } else { weight[k] })
        .collect();
    for r in 0..n {
        grid.start_row(r, &zeroed[r * cols..(r + 1) * cols])?;
    }

    // Working copy in processing order; updated in place as columns are quantized.
    let mut w: Vec<f32> = (0..n * cols)
        .map(|k| zeroed[k - k % cols + perm[k % cols]])
        .collect();
    let mut perm_codes = vec![0u8; n * cols];
    let mut err = vec![0.0f32; n * block_size];

    for i1 in (0..cols).step_by(block_size) {
        let i2 = (i1 + block_size).min(cols);
        let width = i2 - i1;
        for r in 0..n {
            let row = &mut w[r * cols..(r + 1) * cols];
            let row_err = &mut err[r * width..(r + 1) * width];
            for i in i1..i2 {
                let at = Current {
                    row,
                    row_err,
                    i1,
                    cols,
                    u,
                };
                let (code, value) = grid.quantize(r, i, &at)?;
                let x = row[i];
                perm_codes[r * cols + i] = code;
                let u_row = &u[i * cols..(i + 1) * cols];
                let e = (x - value) / u_row[i];
                row_err[i - i1] = e;
                // OBS update of the rest of the block; columns ≥ i2 wait for the GEMM below.
                for (wj, &uj) in row[i + 1..i2].iter_mut().zip(&u_row[i + 1..i2]) {
                    *wj -= e * uj;
                }
            }
        }
        apply_block_errors(&mut w, &err, u, n, cols, (i1, i2));
    }

    for r in 0..n {
        for (i, &code) in perm_codes[r * cols..(r + 1) * cols].iter().enumerate() {
            codes[r * cols + perm[i]] = code;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::rtn;
    use crate::testutil::{output_error, problem};
    use crate::CompressError;
    use crunch_repr::ReprError;

    #[test]
    fn gptq_beats_rtn_on_correlated_inputs() {
        // Strongly correlated input columns: errors in one column can be compensated by others.
        let (rows, cols) = (48, 128);
        let (w, h) = problem(5, rows, cols, 4.0);
        for (bits, group, sym, act_order) in [
            (4, None, false, false),
            (3, Some(32), false, false),
            (4, Some(64), true, true),
            (2, None, true, true),
            (3, Some(32), false, true),
        ] {
            let spec = QuantSpec::new(bits, group, sym);
            let opts = GptqOptions {
                act_order,
                ..GptqOptions::default()
            };
            let e_gptq = output_error(
                &w,
                &gptq(&w, rows, cols, &h, spec, &opts).unwrap().dequantize(),
                &h,
            );
            let e_rtn = output_error(
                &w,
                &rtn(&w, rows, cols, spec, false).unwrap().dequantize(),
                &h,
            );
            assert!(
                e_gptq < 0.25 * e_rtn,
                "{spec:?} act-order {act_order}: GPTQ {e_gptq} vs RTN {e_rtn}"
            );
        }
    }

    #[test]
    fn output_is_identical_for_any_thread_count() {
        // 100 rows: several row chunks, the last one partial.
        let (rows, cols) = (100, 96);
        let (w, h) = problem(6, rows, cols, 1.0);
        for (spec, act_order, mse_clip) in [
            (QuantSpec::new(4, Some(32), false), false, true),
            (QuantSpec::new(3, None, true), true, false),
        ] {
            let opts = GptqOptions {
                block_size: 40,
                damp: 0.01,
                act_order,
                mse_clip,
            };
            let first = crate::testutil::same_on_any_thread_count(|| {
                gptq(&w, rows, cols, &h, spec, &opts).unwrap()
            });
            assert_eq!(first.g_idx, None);
        }
    }

    #[test]
    fn rejects_bad_inputs() {
        let (w, h) = problem(8, 4, 32, 1.0);
        let spec = QuantSpec::new(4, None, false);
        let opts = GptqOptions::default();
        let err = |w: &[f32], cols: usize, h: &Hessian, spec: QuantSpec, opts: &GptqOptions| {
            gptq(w, w.len() / cols, cols, h, spec, opts).unwrap_err()
        };
        assert_eq!(
            err(&w[..64], 16, &h, spec, &opts),
            CompressError::HessianSize {
                hessian_n: 32,
                cols: 16
            }
        );
        assert_eq!(
            err(&w, 32, &Hessian::new(32), spec, &opts),
            CompressError::EmptyHessian
        );
        assert_eq!(
            err(&w, 32, &h, QuantSpec::new(9, None, false), &opts),
            CompressError::Repr(ReprError::UnsupportedBits(9))
        );
        assert!(matches!(
            err(&w, 32, &h, QuantSpec::new(4, Some(0), false), &opts),
            CompressError::Repr(ReprError::BadGroupSize { .. })
        ));
        let mut bad = w.clone();
        bad[33] = f32::NAN;
        assert!(matches!(
            err(&bad, 32, &h, spec, &opts),
            CompressError::Repr(ReprError::NonFiniteWeight { row: 1, col: 1, .. })
        ));
        for bad_opts in [
            GptqOptions {
                block_size: 0,
                ..opts
            },
            GptqOptions { damp: -0.1, ..opts },
        ] {
            assert!(matches!(
                err(&w, 32, &h, spec, &bad_opts),
                CompressError::InvalidOption(_)
            ));
        }
        // A negative definite "Hessian" cannot be fixed by dampening.
        let mut neg = h.clone();
        neg.h.iter_mut().for_each(|v| *v = -*v);
        for i in 0..32 {
            neg.h[i * 32 + i] = 1.0;
            neg.h[i * 32 + (i + 1) % 32] = -1e7;
            neg.h[((i + 1) % 32) * 32 + i] = -1e7;
        }
        assert!(matches!(
            err(&w, 32, &neg, spec, &opts),
            CompressError::CholeskyFailed { .. }
        ));
    }
}
