//! The GPTQ Hessian H = 2·XᵀX / N of a linear layer's inputs, accumulated over calibration
//! batches.
//!
//! Each batch's XᵀX is one f32 GEMM (faer), computed for the lower triangle only in column
//! blocks of fixed width spread over rayon threads; the fixed blocking makes the result
//! independent of the thread count. The running average is then updated element by element in
//! f64 — H ← (H·N_old + 2·XᵀX) / N_new, one rounding to f32 per batch — so many batches do not
//! accumulate rescaling error. N counts tokens (rows of X). GPTQ is invariant to a constant
//! factor on H, so counting sequences instead, as the reference code does, changes nothing.

use crate::error::{CompressError, Result};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};
use rayon::prelude::*;

/// Columns of XᵀX computed per task.
const GEMM_COLUMN_BLOCK: usize = 64;

/// H = 2/N Σ x xᵀ over the N input rows seen so far, stored n×n row-major in f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Hessian {
    /// Columns (the layer's in_features).
    pub n: usize,
    /// Input rows (tokens) accumulated.
    pub samples: usize,
    /// n×n, row-major, symmetric.
    pub h: Vec<f32>,
}

impl Hessian {
    /// An empty Hessian for a layer with `n` input features.
    pub fn new(n: usize) -> Self {
        Self {
            n,
            samples: 0,
            h: vec![0.0; n * n],
        }
    }

    /// Adds a batch `x` of row-major [tokens, n] inputs.
    ///
    /// Non-finite inputs are accumulated as they are; [`crate::gptq`] then reports a non-finite
    /// Hessian. Use [`Hessian::try_add_batch`] to reject such a batch up front instead.
    ///
    /// # Panics
    /// If `x.len()` is not a multiple of `n`.
    pub fn add_batch(&mut self, x: &[f32]) {
        if let Err(e) = self.check_shape(x) {
            panic!("Hessian::add_batch: {e}");
        }
        self.accumulate(x);
    }

    /// [`Hessian::add_batch`] that returns an error (and leaves `self` unchanged) for a batch of
    /// the wrong shape or with non-finite values.
    pub fn try_add_batch(&mut self, x: &[f32]) -> Result<()> {
        self.check_shape(x)?;
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(CompressError::NonFiniteInput {
                token: i / self.n,
                col: i % self.n,
                value: x[i],
            });
        }
        self.accumulate(x);
        Ok(())
    }

    /// Adds a batch given as its Gram matrix `xtx` = XᵀX (n×n, row-major) of `tokens` input
    /// rows, as a GPU computes it; the lower triangle is read. Same running average as
    /// [`Hessian::add_batch`].
    pub fn add_gram(&mut self, xtx: &[f32], tokens: usize) -> Result<()> {
        let n = self.n;
        if xtx.len() != n * n {
            return Err(CompressError::HessianBuffer { len: xtx.len(), n });
        }
        if tokens == 0 {
            return Ok(());
        }
        let old = self.samples as f64;
        let new = (self.samples + tokens) as f64;
        for i in 0..n {
            for j in 0..=i {
                let g = xtx[i * n + j] as f64;
                let v = ((self.h[i * n + j] as f64 * old + 2.0 * g) / new) as f32;
                self.h[i * n + j] = v;
                self.h[j * n + i] = v;
            }
        }
        self.samples += tokens;
        Ok(())
    }

    /// H[i, j].
    pub fn get(&self, i: usize, j: usize) -> f32 {
        self.h[i * self.n + j]
    }

    /// Checks the buffer size, that samples were added, and that every entry is finite.
    pub fn validate(&self) -> Result<()> {
        if self.h.len() != self.n * self.n {
            return Err(CompressError::HessianBuffer {
                len: self.h.len(),
                n: self.n,
            });
        }
        if self.samples == 0 {
            return Err(CompressError::EmptyHessian);
        }
        if let Some(i) = self.h.iter().position(|v| !v.is_finite()) {
            return Err(CompressError::NonFiniteHessian {
                row: i / self.n,
                col: i % self.n,
            });
        }
        Ok(())
    }

    /// [`Hessian::validate`], and that it is the Hessian of a weight with `cols` input columns.
    pub fn validate_for(&self, cols: usize) -> Result<()> {
        if self.n != cols {
            return Err(CompressError::HessianSize {
                hessian_n: self.n,
                cols,
            });
        }
        self.validate()
    }

    fn check_shape(&self, x: &[f32]) -> Result<()> {
        let ok = if self.n == 0 {
            x.is_empty()
        } else {
            x.len() % self.n == 0
        };
        if ok {
            Ok(())
        } else {
            Err(CompressError::BatchShape {
                len: x.len(),
                n: self.n,
            })
        }
    }

    fn accumulate(&mut self, x: &[f32]) {
        let n = self.n;
        let tokens = x.len().checked_div(n).unwrap_or(0);
        if tokens == 0 {
            return;
        }
        let blocks = xtx_lower_blocks(MatRef::from_row_major_slice(x, tokens, n));
        let old = self.samples as f64;
        let new = (self.samples + tokens) as f64;
        // Each element (i, j) becomes update(H[i, j], G[max, min]) with G read from its lower
        // triangle, so both halves stay equal (H is symmetric) and every value is what an
        // element-by-element pass over the lower triangle gives. Rows are updated in
        // parallel, a GEMM block's rows at a time: the combine costs as many f64 operations as
        // the GEMM has multiply-adds per token, too many to leave on one core; and with the
        // widest vectors the CPU has (the f64 division dominates: scalar, it was ~10% of a
        // 2-core GPTQ run's samples). Vector division rounds each lane exactly as the scalar
        // one, so the bits do not depend on the instruction set.
        let arch = pulp::Arch::new();
        self.h
            .par_chunks_mut(GEMM_COLUMN_BLOCK * n)
            .enumerate()
            .for_each(|(c, rows)| {
                arch.dispatch(CombineRows {
                    rows,
                    n,
                    c,
                    blocks: &blocks,
                    old,
                    new,
                })
            });
        self.samples += tokens;
    }
}

/// The running average's update of the rows of H from GEMM block `c` (see
/// [`Hessian::accumulate`]), compiled for the instruction set `pulp` dispatches to.
struct CombineRows<'a> {
    rows: &'a mut [f32],
    n: usize,
    c: usize,
    blocks: &'a [Mat<f32>],
    old: f64,
    new: f64,
}

impl pulp::WithSimd for CombineRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let Self {
            rows,
            n,
            c,
            blocks,
            old,
            new,
        } = self;
        let i0 = c * GEMM_COLUMN_BLOCK;
        let own = &blocks[c];
        // G[i, j] for j ≤ i, gathered from the blocks' columns so that the update runs over
        // contiguous slices (and vectorizes).
        let mut lower = vec![0f32; n];
        for (r, row) in rows.chunks_exact_mut(n).enumerate() {
            let i = i0 + r;
            for (b, block) in blocks[..=c].iter().enumerate() {
                let j0 = b * GEMM_COLUMN_BLOCK;
                let width = block.ncols().min(i + 1 - j0);
                for (jj, g) in lower[j0..j0 + width].iter_mut().enumerate() {
                    *g = block[(i - j0, jj)];
                }
            }
            update_run(&mut row[..=i], &lower[..=i], old, new);
            // j > i: G[j, i], column r of this row's own block (contiguous).
            update_run(&mut row[i + 1..], &own.col_as_slice(r)[r + 1..], old, new);
        }
    }
}

/// H ← (H·N_old + 2·G) / N_new element by element, in f64, rounded once to f32.
#[inline(always)]
fn update_run(h: &mut [f32], g: &[f32], old: f64, new: f64) {
    for (h, &g) in h.iter_mut().zip(g) {
        *h = ((*h as f64 * old + 2.0 * g as f64) / new) as f32;
    }
}

/// Block b of XᵀX: rows j0.., columns j0..j0+width, with j0 = b·GEMM_COLUMN_BLOCK (the lower
/// triangle and a little of the upper one in each diagonal square).
fn xtx_lower_blocks(x: MatRef<'_, f32>) -> Vec<Mat<f32>> {
    let n = x.ncols();
    (0..n.div_ceil(GEMM_COLUMN_BLOCK))
        .into_par_iter()
        .map(|b| {
            let j0 = b * GEMM_COLUMN_BLOCK;
            let width = GEMM_COLUMN_BLOCK.min(n - j0);
            let mut out = Mat::<f32>::zeros(n - j0, width);
            let lhs = x.subcols(j0, n - j0).transpose();
            matmul(
                out.as_mut(),
                Accum::Replace,
                lhs,
                x.subcols(j0, width),
                1.0f32,
                Par::Seq,
            );
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{correlated_inputs, Rng};

    /// 2·XᵀX/N summed directly in f64.
    fn one_shot(x: &[f32], n: usize) -> Vec<f64> {
        let tokens = x.len() / n;
        let mut h = vec![0.0f64; n * n];
        for t in 0..tokens {
            let row = &x[t * n..(t + 1) * n];
            for i in 0..n {
                for j in 0..n {
                    h[i * n + j] += 2.0 * row[i] as f64 * row[j] as f64;
                }
            }
        }
        h.iter().map(|v| v / tokens as f64).collect()
    }

    /// The running average as first written: one pass over the lower triangle, element by
    /// element on one thread, each value written to both halves.
    fn serial_accumulate(h: &mut Hessian, x: &[f32]) {
        let n = h.n;
        let tokens = x.len() / n;
        let blocks = xtx_lower_blocks(MatRef::from_row_major_slice(x, tokens, n));
        let (old, new) = (h.samples as f64, (h.samples + tokens) as f64);
        for (b, block) in blocks.iter().enumerate() {
            let j0 = b * GEMM_COLUMN_BLOCK;
            for jj in 0..block.ncols() {
                let j = j0 + jj;
                for i in j..n {
                    let g = block[(i - j0, jj)] as f64;
                    let v = ((h.h[i * n + j] as f64 * old + 2.0 * g) / new) as f32;
                    h.h[i * n + j] = v;
                    h.h[j * n + i] = v;
                }
            }
        }
        h.samples += tokens;
    }

    #[test]
    fn parallel_combine_is_bit_identical_to_the_serial_one() {
        let mut rng = Rng::new(11);
        // Widths below, at and past one GEMM block, the last block partial or whole.
        for n in [1, 5, 64, 65, 150, 192] {
            let x = correlated_inputs(&mut rng, 90, n, 1.5);
            let (mut fast, mut slow) = (Hessian::new(n), Hessian::new(n));
            let mut start = 0;
            for tokens in [7, 50, 33] {
                let batch = &x[start * n..(start + tokens) * n];
                fast.add_batch(batch);
                serial_accumulate(&mut slow, batch);
                start += tokens;
            }
            assert_eq!(fast, slow, "n = {n}");
        }
    }

    #[test]
    fn batches_equal_one_shot() {
        let mut rng = Rng::new(7);
        // 150 columns: several GEMM blocks, the last one partial.
        let n = 150;
        let x = correlated_inputs(&mut rng, 300, n, 1.5);
        let expected = one_shot(&x, n);
        let max = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        // Uneven batches, including an empty one.
        let mut hess = Hessian::new(n);
        let mut start = 0;
        for tokens in [1, 0, 37, 100, 62, 100] {
            hess.add_batch(&x[start * n..(start + tokens) * n]);
            start += tokens;
        }
        assert_eq!((start, hess.samples), (300, 300));
        hess.validate().unwrap();
        for i in 0..n {
            for j in 0..n {
                let (got, want) = (hess.get(i, j) as f64, expected[i * n + j]);
                assert!(
                    (got - want).abs() <= 1e-5 * max,
                    "H[{i},{j}] = {got}, want {want}"
                );
                assert_eq!(hess.get(i, j), hess.get(j, i));
            }
        }
        // One batch gives the same result up to rounding.
        let mut single = Hessian::new(n);
        single.add_batch(&x);
        let diff = single
            .h
            .iter()
            .zip(&hess.h)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!((diff as f64) <= 1e-5 * max);
    }

    #[test]
    fn bad_batches() {
        let mut h = Hessian::new(4);
        assert!(matches!(
            h.try_add_batch(&[0.0; 6]),
            Err(CompressError::BatchShape { .. })
        ));
        assert!(matches!(
            h.try_add_batch(&[0.0, 1.0, f32::NAN, 0.0]),
            Err(CompressError::NonFiniteInput { .. })
        ));
        assert_eq!(h, Hessian::new(4));
        assert_eq!(h.validate(), Err(CompressError::EmptyHessian));
        h.add_batch(&[1.0, 0.0, 0.0, f32::INFINITY]);
        assert!(matches!(
            h.validate(),
            Err(CompressError::NonFiniteHessian { .. })
        ));
    }

    #[test]
    #[should_panic(expected = "not a multiple")]
    fn add_batch_panics_on_shape() {
        Hessian::new(4).add_batch(&[0.0; 5]);
    }
}
