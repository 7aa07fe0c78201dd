//! SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately
//! Pruned in One-Shot", Algorithm 1): GPTQ's column loop with pruning as the "rounding". Each
//! column's pruned (and, jointly, quantized) weights leave an error that is spread over the
//! columns not yet processed through the inverse Hessian, so X·Wᵀ changes as little as possible.
//!
//! Same machinery as [`crate::gptq`]: U (UᵀU = (H + λI)⁻¹, [`crate::inverse`]), lazy blocks of
//! `block_size` columns with one GEMM per block, rows in fixed chunks over rayon (bit-identical
//! output for any thread count). No act-order: the paper has none, and the mask blocks are
//! defined in column order.
//!
//! Adaptive mask selection, scored by the OBS saliency w²/U_cc² (U_cc² is [H⁻¹]_cc of the columns
//! not yet processed when column c is reached):
//! - unstructured p: at the start of each block of `block_size` columns, each row prunes the
//!   round(p·width) lowest scores among the block's columns, with the weights as updated by the
//!   blocks before (Bs = B = 128 in the paper);
//! - N:M: when the loop reaches a group's first column, each row prunes the m − n lowest scores
//!   of the group, with the weights as updated so far (including the pending in-block updates of
//!   columns past the current block).
//!
//! Joint quantization (the paper's "Joint Sparsification & Quantization"): kept weights are
//! rounded on the grid, pruned ones become 0 (stored as the zero-point code, which dequantizes to
//! exactly 0), and the error propagated is w − q(w) for kept weights and w for pruned ones.
//! Grids as GPTQ without act-order (decision 050): per channel fitted on the whole original row
//! before the loop, groups fitted when the loop reaches them on the weights as updated so far.
//! Fits include the values about to be pruned (for N:M groups they are not yet chosen).

use super::select::{prune_lowest, pruned_count};
use crate::column_loop::{self, apply_block_errors, current_values, BLOCK_SIZE, ROW_CHUNK};
use crate::error::Result;
use crate::hessian::Hessian;
use crate::inverse::PreparedHessian;
use crate::quant::grid::{self, GridParams};
use crunch_repr::{validate_weight, Bitmask, PrunedWeight, QuantSpec, Sparsity};
use rayon::prelude::*;

/// SparseGPT settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SparseGptOptions {
    /// Columns per lazy-update block ([`BLOCK_SIZE`]), which is also the mask-selection block of
    /// unstructured sparsity. Unlike GPTQ's, it changes unstructured results.
    pub block_size: usize,
    /// Dampening λ = damp · mean(diag H) added to the diagonal (0.01 in the paper).
    pub damp: f32,
}

impl Default for SparseGptOptions {
    fn default() -> Self {
        Self {
            block_size: BLOCK_SIZE,
            damp: 0.01,
        }
    }
}

impl SparseGptOptions {
    pub fn validate(&self) -> Result<()> {
        column_loop::check_options("SparseGPT", self.block_size, self.damp)
    }
}

/// What every row chunk shares.
struct Plan<'a> {
    cols: usize,
    sparsity: Sparsity,
    spec: Option<QuantSpec>,
    n_groups: usize,
    block_size: usize,
    prep: &'a PreparedHessian,
}

/// What a row chunk writes: [n, cols] weights, keep flags and codes, [n, n_groups] grids.
struct RowsOut<'a> {
    weight: &'a mut [f32],
    kept: &'a mut [bool],
    codes: &'a mut [u8],
    params: &'a mut [GridParams],
}

/// SparseGPT pruning of a row-major [rows, cols] weight with the Hessian of its inputs,
/// quantizing the kept weights jointly when `quant` is given.
pub fn sparsegpt(
    weight: &[f32],
    rows: usize,
    cols: usize,
    hessian: &Hessian,
    sparsity: Sparsity,
    quant: Option<QuantSpec>,
    opts: &SparseGptOptions,
) -> Result<PrunedWeight> {
    validate_weight(weight, rows, cols)?;
    sparsity.validate(cols)?;
    if let Some(spec) = quant {
        spec.validate(cols)?;
        if spec.scale_bits.is_some() {
            return Err(crate::CompressError::InvalidOption(
                "SparseGPT's joint quantization has no two-level scales (decision 145)".into(),
            ));
        }
    }
    opts.validate()?;
    let prep = column_loop::prepare(hessian, cols, false, opts.damp)?;
    let n_groups = quant.map_or(1, |s| s.n_groups(cols));
    let plan = Plan {
        cols,
        sparsity,
        spec: quant,
        n_groups,
        block_size: opts.block_size,
        prep: &prep,
    };

    let mut out = vec![0.0f32; rows * cols];
    let mut kept = vec![true; rows * cols];
    let mut codes = vec![0u8; rows * cols];
    let mut params = vec![GridParams::new(half::f16::ONE, 0, 1); rows * n_groups];
    let chunk = ROW_CHUNK * cols;
    out.par_chunks_mut(chunk)
        .zip(kept.par_chunks_mut(chunk))
        .zip(codes.par_chunks_mut(chunk))
        .zip(params.par_chunks_mut(ROW_CHUNK * n_groups))
        .zip(weight.par_chunks(chunk))
        .try_for_each(|((((weight, kept), codes), params), input)| {
            let out = RowsOut {
                weight,
                kept,
                codes,
                params,
            };
            prune_rows(&plan, input, out)
        })?;

    let quant = quant.map(|spec| grid::quantized_weight(spec, (rows, cols), codes, &params));
    Ok(PrunedWeight {
        sparsity,
        rows,
        cols,
        weight: out,
        mask: Bitmask::from_bools(rows, cols, &kept)?,
        quant,
    })
}

/// Runs SparseGPT on a chunk of rows of the original weight.
fn prune_rows(plan: &Plan, weight: &[f32], out: RowsOut) -> Result<()> {
    let (cols, ng) = (plan.cols, plan.n_groups);
    let n = weight.len() / cols;
    let PreparedHessian {
        dead, hinv_u: u, ..
    } = plan.prep;
    let udiag: Vec<f32> = (0..cols).map(|j| u[j * cols + j]).collect();
    let saliency = |w: f32, j: usize| (w / udiag[j]) * (w / udiag[j]);

    // Dead columns never see an input: their weights are zeroed (as GPTQ does).
    let w = out.weight;
    for (k, (w, &x)) in w.iter_mut().zip(weight).enumerate() {
        *w = if dead[k % cols] { 0.0 } else { x };
    }
    if let Some(spec) = plan.spec.filter(|s| s.group_size.is_none()) {
        for r in 0..n {
            out.params[r] = grid::fit(&w[r * cols..(r + 1) * cols], spec, false)?;
        }
    }

    let mut err = vec![0.0f32; n * plan.block_size];
    let (mut values, mut scores) = (Vec::new(), Vec::new());
    for i1 in (0..cols).step_by(plan.block_size) {
        let i2 = (i1 + plan.block_size).min(cols);
        let width = i2 - i1;
        for r in 0..n {
            let row = &mut w[r * cols..(r + 1) * cols];
            let kept = &mut out.kept[r * cols..(r + 1) * cols];
            let row_err = &mut err[r * width..(r + 1) * width];
            if let Sparsity::Unstructured(p) = plan.sparsity {
                scores.clear();
                scores.extend((i1..i2).map(|j| saliency(row[j], j)));
                prune_lowest(&scores, pruned_count(p, width), &mut kept[i1..i2]);
            }
            for i in i1..i2 {
                if let Sparsity::NM { n: keep, m } = plan.sparsity {
                    if i % m == 0 {
                        current_values(row, row_err, u, cols, i1, i, i + m, &mut values);
                        scores.clear();
                        scores.extend(values.iter().enumerate().map(|(k, &v)| saliency(v, i + k)));
                        prune_lowest(&scores, m - keep, &mut kept[i..i + m]);
                    }
                }
                let x = row[i];
                let q = match plan.spec {
                    None => {
                        if kept[i] {
                            x
                        } else {
                            0.0
                        }
                    }
                    Some(spec) => {
                        let g = spec.group_size.map_or(0, |gs| i / gs);
                        if let Some(gs) = spec.group_size.filter(|gs| i % gs == 0) {
                            let end = (i + gs).min(cols);
                            current_values(row, row_err, u, cols, i1, i, end, &mut values);
                            out.params[r * ng + g] = grid::fit(&values, spec, false)?;
                        }
                        let p = out.params[r * ng + g];
                        let code = if kept[i] { p.code(x) } else { p.zero };
                        out.codes[r * cols + i] = code;
                        p.value(code)
                    }
                };
                let u_row = &u[i * cols..(i + 1) * cols];
                let e = (x - q) / u_row[i];
                row_err[i - i1] = e;
                row[i] = q;
                // OBS update of the rest of the block; columns ≥ i2 wait for the GEMM below.
                for (wj, &uj) in row[i + 1..i2].iter_mut().zip(&u_row[i + 1..i2]) {
                    *wj -= e * uj;
                }
            }
        }
        apply_block_errors(w, &err, u, n, cols, (i1, i2));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{output_error, problem};
    use crate::{magnitude, wanda, CompressError};
    use crunch_repr::{check_nm, ReprError};

    #[test]
    fn error_ranks_sparsegpt_below_wanda_below_magnitude() {
        // Correlated inputs with per-column scales from 0.3 to 2.3: Wanda's input norms matter,
        // and SparseGPT's updates can compensate pruned weights through correlated columns.
        let (rows, cols) = (32, 128);
        let opts = SparseGptOptions::default();
        for sparsity in [
            Sparsity::Unstructured(0.5),
            Sparsity::NM { n: 2, m: 4 },
            Sparsity::NM { n: 4, m: 8 },
        ] {
            let (mut wins_sg, mut wins_wanda) = (0, 0);
            let (mut sum_sg, mut sum_wanda, mut sum_mag) = (0.0, 0.0, 0.0);
            let seeds = 6;
            for seed in 0..seeds {
                let (w, h) = problem(100 + seed, rows, cols, 1.0);
                let err = |p: PrunedWeight| output_error(&w, &p.weight, &h);
                let e_sg = err(sparsegpt(&w, rows, cols, &h, sparsity, None, &opts).unwrap());
                let e_wanda = err(wanda(&w, rows, cols, &h, sparsity).unwrap());
                let e_mag = err(magnitude(&w, rows, cols, sparsity).unwrap());
                wins_sg += (e_sg < e_wanda) as u32;
                wins_wanda += (e_wanda < e_mag) as u32;
                sum_sg += e_sg;
                sum_wanda += e_wanda;
                sum_mag += e_mag;
            }
            eprintln!(
                "{sparsity}: SparseGPT {sum_sg:.1}, Wanda {sum_wanda:.1}, magnitude {sum_mag:.1}"
            );
            assert_eq!(
                wins_sg, seeds as u32,
                "{sparsity}: SparseGPT beat Wanda {wins_sg} times"
            );
            assert!(
                wins_wanda + 1 >= seeds as u32,
                "{sparsity}: Wanda beat magnitude {wins_wanda} times"
            );
            assert!(
                sum_sg < 0.8 * sum_wanda && sum_wanda < sum_mag,
                "{sparsity}"
            );
        }
    }

    #[test]
    fn output_is_identical_for_any_thread_count() {
        let (rows, cols) = (70, 96);
        let (w, h) = problem(6, rows, cols, 1.0);
        let opts = SparseGptOptions {
            block_size: 40,
            damp: 0.01,
        };
        for (sparsity, quant) in [
            (Sparsity::Unstructured(0.6), None),
            (
                Sparsity::NM { n: 2, m: 4 },
                Some(QuantSpec::new(4, Some(32), false)),
            ),
        ] {
            let first = crate::testutil::same_on_any_thread_count(|| {
                sparsegpt(&w, rows, cols, &h, sparsity, quant, &opts).unwrap()
            });
            first.validate().unwrap();
        }
    }

    #[test]
    fn joint_quantization_keeps_pruned_entries_exactly_zero() {
        let (rows, cols) = (8, 64);
        let (w, h) = problem(9, rows, cols, 1.0);
        for spec in [
            QuantSpec::new(4, None, false),
            QuantSpec::new(3, Some(16), true),
            QuantSpec::new(2, Some(32), false),
        ] {
            let sparsity = Sparsity::NM { n: 2, m: 4 };
            let p = sparsegpt(
                &w,
                rows,
                cols,
                &h,
                sparsity,
                Some(spec),
                &Default::default(),
            );
            let p = p.unwrap();
            p.validate().unwrap();
            let q = p.quant.as_ref().unwrap();
            // The dense weight is exactly the dequantized codes, which are exactly 0 where pruned.
            assert_eq!(q.dequantize(), p.weight);
            assert_eq!(p.dequantize(), p.weight);
            assert!(check_nm(&p.weight, rows, cols, 2, 4));
            assert_eq!(p.mask.count_kept(), rows * cols / 2);
        }
    }

    #[test]
    fn rejects_bad_inputs() {
        let (w, h) = problem(8, 4, 32, 1.0);
        let sp = Sparsity::Unstructured(0.5);
        let opts = SparseGptOptions::default();
        let run = |w: &[f32], cols, h: &Hessian, sp, opts: &SparseGptOptions| {
            sparsegpt(w, w.len() / cols, cols, h, sp, None, opts).unwrap_err()
        };
        assert!(matches!(
            run(&w[..64], 16, &h, sp, &opts),
            CompressError::HessianSize { .. }
        ));
        assert_eq!(
            run(&w, 32, &Hessian::new(32), sp, &opts),
            CompressError::EmptyHessian
        );
        assert!(matches!(
            run(&w, 32, &h, Sparsity::NM { n: 2, m: 5 }, &opts),
            CompressError::Repr(ReprError::InvalidSparsity(_))
        ));
        assert!(matches!(
            run(
                &w,
                32,
                &h,
                sp,
                &SparseGptOptions {
                    block_size: 0,
                    damp: 0.01
                }
            ),
            CompressError::InvalidOption(_)
        ));
        let bad_spec = Some(QuantSpec::new(9, None, false));
        assert_eq!(
            sparsegpt(&w, 4, 32, &h, sp, bad_spec, &opts).unwrap_err(),
            CompressError::Repr(ReprError::UnsupportedBits(9))
        );
    }
}
