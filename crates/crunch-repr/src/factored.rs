//! A low-rank factored linear weight W ≈ A·B, and when factoring pays.
//!
//! A layer computes y = x·Wᵀ; factored, it computes y = (x·Bᵀ)·Aᵀ, two thin products. Storing
//! A [rows, rank] and B [rank, cols] costs rank·(rows + cols) values against rows·cols dense, so
//! a rank only saves memory (and multiply-adds) while rank·(rows + cols) < rows·cols
//! ([`max_useful_rank`]).

use crate::error::{ReprError, Result};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

/// W ≈ A·B with W of shape [rows = out_features, cols = in_features].
#[derive(Clone, Debug, PartialEq)]
pub struct Factored {
    pub rows: usize,
    pub cols: usize,
    pub rank: usize,
    /// [rows, rank], row-major.
    pub a: Vec<f32>,
    /// [rank, cols], row-major.
    pub b: Vec<f32>,
}

impl Factored {
    /// The rank-0 factorization (W ≈ 0): what a layer with no signal, or an EoRA correction of
    /// rank 0, is.
    pub fn zero(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            rank: 0,
            a: Vec::new(),
            b: Vec::new(),
        }
    }

    /// A·B, row-major [rows, cols], one f32 GEMM (sequential, so bit-identical on any thread
    /// count).
    pub fn dense(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        // The row-major [rows, cols] output is the column-major [cols, rows] (A·B)ᵀ = Bᵀ·Aᵀ.
        let dst = MatMut::from_column_major_slice_mut(&mut out, self.cols, self.rows);
        let bt = MatRef::from_row_major_slice(&self.b, self.rank, self.cols).transpose();
        let at = MatRef::from_row_major_slice(&self.a, self.rows, self.rank).transpose();
        matmul(dst, Accum::Add, bt, at, 1.0f32, Par::Seq);
        out
    }

    /// Stored values: rank·(rows + cols).
    pub fn params(&self) -> usize {
        self.rank * (self.rows + self.cols)
    }

    /// Whether this factorization is smaller than the dense weight.
    pub fn pays(&self) -> bool {
        self.rank <= max_useful_rank(self.rows, self.cols)
    }

    /// Checks that the buffers agree with the shape.
    pub fn validate(&self) -> Result<()> {
        if self.a.len() != self.rows * self.rank || self.b.len() != self.rank * self.cols {
            return Err(ReprError::Inconsistent(format!(
                "factors of {} and {} values for rank {} of a {}×{} weight",
                self.a.len(),
                self.b.len(),
                self.rank,
                self.rows,
                self.cols
            )));
        }
        Ok(())
    }
}

/// The largest rank r with r·(rows + cols) < rows·cols: factoring at a higher rank stores at least
/// as many values as the dense weight, so such a layer is better left dense. 0 when even rank 1
/// does not pay (a single row or column).
pub fn max_useful_rank(rows: usize, cols: usize) -> usize {
    if rows == 0 || cols == 0 {
        return 0;
    }
    (rows * cols - 1) / (rows + cols)
}

/// Checks 0 ≤ rank ≤ min(rows, cols).
pub fn check_rank(rank: usize, rows: usize, cols: usize) -> Result<()> {
    let max = rows.min(cols);
    if rank > max {
        return Err(ReprError::BadRank {
            rank,
            rows,
            cols,
            max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_multiplies_the_factors() {
        // A = [[1, 2], [3, 4], [5, 6]], B = [[1, 0, −1, 2], [0, 1, 1, −1]].
        let f = Factored {
            rows: 3,
            cols: 4,
            rank: 2,
            a: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            b: vec![1.0, 0.0, -1.0, 2.0, 0.0, 1.0, 1.0, -1.0],
        };
        f.validate().unwrap();
        assert_eq!(
            f.dense(),
            vec![1.0, 2.0, 1.0, 0.0, 3.0, 4.0, 1.0, 2.0, 5.0, 6.0, 1.0, 4.0]
        );
        assert_eq!(f.params(), 14);
        assert!(!f.pays()); // 14 ≥ 12
        assert_eq!(Factored::zero(3, 4).dense(), vec![0.0; 12]);
        let mut bad = f.clone();
        bad.b.pop();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn max_useful_rank_is_the_break_even_point() {
        for (rows, cols) in [
            (1, 1),
            (1, 9),
            (2, 2),
            (3, 4),
            (4, 4),
            (576, 192),
            (64, 1536),
        ] {
            let r = max_useful_rank(rows, cols);
            assert!(
                r == 0 || r * (rows + cols) < rows * cols,
                "{rows}×{cols}: {r}"
            );
            assert!((r + 1) * (rows + cols) >= rows * cols, "{rows}×{cols}: {r}");
        }
        assert_eq!(max_useful_rank(4, 4), 1);
        assert_eq!(max_useful_rank(5, 5), 2);
        assert_eq!(max_useful_rank(4096, 4096), 2047);
        assert_eq!(max_useful_rank(0, 5), 0);
    }

    #[test]
    fn rank_bounds() {
        assert!(check_rank(3, 3, 5).is_ok());
        assert_eq!(
            check_rank(4, 3, 5),
            Err(ReprError::BadRank {
                rank: 4,
                rows: 3,
                cols: 5,
                max: 3
            })
        );
    }
}
