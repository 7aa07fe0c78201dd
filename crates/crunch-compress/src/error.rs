//! The one error type of this crate.

use crunch_repr::ReprError;

/// What can go wrong while compressing a layer or accumulating a Hessian. A malformed weight,
/// spec or compressed part is a [`ReprError`], carried as it is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompressError {
    #[error(transparent)]
    Repr(#[from] ReprError),
    #[error("Hessian is {hessian_n}×{hessian_n} but the weight has {cols} input columns")]
    HessianSize { hessian_n: usize, cols: usize },
    #[error("Hessian buffer holds {len} values, expected {n}×{n}")]
    HessianBuffer { len: usize, n: usize },
    #[error("Hessian has no calibration samples")]
    EmptyHessian,
    #[error("Hessian has a non-finite value at ({row}, {col})")]
    NonFiniteHessian { row: usize, col: usize },
    #[error("calibration batch has a non-finite value ({value}) at token {token}, column {col}")]
    NonFiniteInput {
        token: usize,
        col: usize,
        value: f32,
    },
    #[error("calibration batch has {len} values, not a multiple of the Hessian width {n}")]
    BatchShape { len: usize, n: usize },
    #[error(
        "Cholesky factorization of the dampened Hessian failed {attempts} times \
         (last dampening {damp} × mean diagonal): the Hessian is not positive definite"
    )]
    CholeskyFailed { attempts: usize, damp: f32 },
    #[error("GPU: {0}")]
    Device(String),
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error("quantization scale {scale} does not fit in f16 (weights too large)")]
    ScaleOverflow { scale: f32 },
    #[error("{0} did not converge")]
    NoConvergence(&'static str),
}

/// Checks that option `what` is finite and ≥ 0 (> 0 with `positive`).
pub(crate) fn check_option(what: &str, value: f64, positive: bool) -> Result<()> {
    let ok = value.is_finite() && if positive { value > 0.0 } else { value >= 0.0 };
    if ok {
        return Ok(());
    }
    let bound = if positive { "> 0" } else { "≥ 0" };
    Err(CompressError::InvalidOption(format!(
        "{what} {value} must be finite and {bound}"
    )))
}

/// `Result` with [`CompressError`] as the default error.
pub type Result<T, E = CompressError> = std::result::Result<T, E>;
