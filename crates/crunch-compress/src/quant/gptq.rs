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
//!   group before the loop, so each column keeps group col / group_size and `g_idx` is `None`.

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

/// Runs GPTQ on a chunk of rows: `weight` and `codes` are [n, cols] in original column order,
/// `params` [n, n_groups].
fn quantize_rows(
    plan: &Plan,
    weight: &[f32],
    codes: &mut [u8],
    params: &mut [GridParams],
) -> Result<()> {
    let (cols, ng) = (plan.cols, plan.n_groups);
    let n = weight.len() / cols;
    let PreparedHessian {
        dead,
        perm,
        hinv_u: u,
    } = plan.prep;

    // Original-order rows with dead columns zeroed: what fixed grids are fitted on.
    let zeroed: Vec<f32> = (0..n * cols)
        .map(|k| if dead[k % cols] { 0.0 } else { weight[k] })
        .collect();
    for r in 0..n {
        let row = &zeroed[r * cols..(r + 1) * cols];
        match plan.mode {
            GroupMode::PerChannel => params[r] = grid::fit(row, plan.spec, plan.mse_clip)?,
            GroupMode::Static { group_size } => {
                for (g, values) in row.chunks(group_size).enumerate() {
                    params[r * ng + g] = grid::fit(values, plan.spec, plan.mse_clip)?;
                }
            }
            GroupMode::Dynamic { .. } => {}
        }
    }

    // Working copy in processing order; updated in place as columns are quantized.
    let mut w: Vec<f32> = (0..n * cols)
        .map(|k| zeroed[k - k % cols + perm[k % cols]])
        .collect();
    let mut perm_codes = vec![0u8; n * cols];
    let mut err = vec![0.0f32; n * plan.block_size];
    let mut group_values = Vec::new();

    for i1 in (0..cols).step_by(plan.block_size) {
        let i2 = (i1 + plan.block_size).min(cols);
        let width = i2 - i1;
        for r in 0..n {
            let row = &mut w[r * cols..(r + 1) * cols];
            let row_err = &mut err[r * width..(r + 1) * width];
            for i in i1..i2 {
                let p = match plan.mode {
                    GroupMode::PerChannel => params[r],
                    GroupMode::Static { group_size } => params[r * ng + perm[i] / group_size],
                    GroupMode::Dynamic { group_size } => {
                        let g = i / group_size;
                        if i % group_size == 0 {
                            let end = (i + group_size).min(cols);
                            current_values(row, row_err, u, cols, i1, i, end, &mut group_values);
                            params[r * ng + g] =
                                grid::fit(&group_values, plan.spec, plan.mse_clip)?;
                        }
                        params[r * ng + g]
                    }
                };
                let x = row[i];
                let code = p.code(x);
                perm_codes[r * cols + i] = code;
                let u_row = &u[i * cols..(i + 1) * cols];
                let e = (x - p.value(code)) / u_row[i];
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
