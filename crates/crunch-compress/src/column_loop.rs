//! The lazy-update column loop GPTQ and SparseGPT share (GPTQ paper §3, "lazy batch updates"):
//! columns are processed in blocks of `block_size`; inside a block each column's error is spread
//! over the rest of the block at once, and over the columns right of the block by one GEMM at
//! the block's end, W[:, i2:] −= Err · U[i1:i2, i2:], with U the upper Cholesky factor of the
//! dampened inverse Hessian ([`crate::inverse`]).

use crate::error::{check_option, CompressError, Result};
use crate::hessian::Hessian;
use crate::inverse::{self, PreparedHessian};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

/// Columns per lazy-update block, for GPTQ and SparseGPT alike (128 in both papers). For GPTQ
/// it changes speed only (beyond float rounding); for SparseGPT it is also the mask-selection
/// block of unstructured sparsity.
pub const BLOCK_SIZE: usize = 128;

/// Rows per parallel task. Fixed, so the output is bit-identical for any thread count.
pub(crate) const ROW_CHUNK: usize = 32;

/// Checks a loop's block size and dampening (`who` names the method in the message).
pub(crate) fn check_options(who: &str, block_size: usize, damp: f32) -> Result<()> {
    if block_size == 0 {
        return Err(CompressError::InvalidOption(format!(
            "{who} block_size must be positive"
        )));
    }
    check_option(&format!("{who} damp"), damp as f64, false)
}

/// Checks the Hessian against the weight's `cols` and prepares it for the loop.
pub(crate) fn prepare(
    hessian: &Hessian,
    cols: usize,
    act_order: bool,
    damp: f32,
) -> Result<PreparedHessian> {
    hessian.validate_for(cols)?;
    inverse::prepare(hessian, act_order, damp)
}

/// Applies the errors `err` ([n, i2 − i1], row-major) of block [i1, i2) to the columns right of
/// it, in `w` ([n, cols], row-major): W[:, i2:] −= Err · U[i1:i2, i2:].
pub(crate) fn apply_block_errors(
    w: &mut [f32],
    err: &[f32],
    u: &[f32],
    n: usize,
    cols: usize,
    (i1, i2): (usize, usize),
) {
    if i2 >= cols {
        return;
    }
    let (width, rest) = (i2 - i1, cols - i2);
    let dst = row_major_view_mut(&mut w[i2..], n, rest, cols);
    let lhs = MatRef::from_row_major_slice(&err[..n * width], n, width);
    let rhs = MatRef::from_row_major_slice_with_stride(&u[i1 * cols + i2..], width, rest, cols);
    matmul(dst, Accum::Add, lhs, rhs, -1.0f32, Par::Seq);
}

/// A row-major [nrows, ncols] view with rows `row_stride` apart. Built as the transpose of a
/// column-major view: faer 0.24.4's `MatMut::from_row_major_slice_with_stride_mut` passes the
/// strides swapped (row stride 1, column stride `row_stride`) and writes out of bounds.
pub(crate) fn row_major_view_mut(
    slice: &mut [f32],
    nrows: usize,
    ncols: usize,
    row_stride: usize,
) -> MatMut<'_, f32> {
    MatMut::from_column_major_slice_with_stride_mut(slice, ncols, nrows, row_stride).transpose_mut()
}

/// Fills `out` with the current values of one row's columns `start..end` while column `start`
/// of block [i1, …) is about to be processed. Columns inside the block are up to date in `row`;
/// columns past it still miss the updates of the block's columns i1..start, pending in `row_err`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn current_values(
    row: &[f32],
    row_err: &[f32],
    u: &[f32],
    cols: usize,
    i1: usize,
    start: usize,
    end: usize,
    out: &mut Vec<f32>,
) {
    let block_end = i1 + row_err.len();
    out.clear();
    out.extend_from_slice(&row[start..end.min(block_end)]);
    for j in block_end..end {
        let pending: f32 = (i1..start).map(|k| row_err[k - i1] * u[k * cols + j]).sum();
        out.push(row[j] - pending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_major_view_addresses_rows_with_the_stride() {
        let mut data: Vec<f32> = (0..12).map(|v| v as f32).collect();
        // 3 rows of 2 columns, starting at column 1 of a 3×4 row-major buffer.
        let view = row_major_view_mut(&mut data[1..], 3, 2, 4);
        assert_eq!((view.nrows(), view.ncols()), (3, 2));
        assert_eq!(
            (view[(0, 0)], view[(0, 1)], view[(1, 0)], view[(2, 1)]),
            (1.0, 2.0, 5.0, 10.0)
        );
    }
}
