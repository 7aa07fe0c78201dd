//! The one error type of this crate.

/// What can go wrong while quantizing, accumulating a Hessian or unpacking codes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompressError {
    #[error("unsupported bit width {0}: crunch quantizes to 2, 3, 4 or 8 bits")]
    UnsupportedBits(u8),
    #[error("group size {group_size} must be positive and divide the {cols} input columns")]
    BadGroupSize { group_size: usize, cols: usize },
    #[error("group size {group_size} for {cols} input columns: {reason}")]
    GroupSizeRefused {
        group_size: usize,
        cols: usize,
        reason: &'static str,
    },
    #[error("weight has {len} values but rows × cols = {rows} × {cols}")]
    WeightShape {
        len: usize,
        rows: usize,
        cols: usize,
    },
    #[error("weight is empty ({rows} × {cols})")]
    EmptyWeight { rows: usize, cols: usize },
    #[error("weight has a non-finite value ({value}) at row {row}, column {col}")]
    NonFiniteWeight { row: usize, col: usize, value: f32 },
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
    #[error("GPTQ needs a Hessian and none was given")]
    MissingHessian,
    #[error("GPU: {0}")]
    Device(String),
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error("quantization scale {scale} does not fit in f16 (weights too large)")]
    ScaleOverflow { scale: f32 },
    #[error("packed buffer has {got} bytes but {n} codes of {bits} bits need {needed}")]
    PackedTooShort {
        got: usize,
        needed: usize,
        n: usize,
        bits: u8,
    },
    #[error("cannot pack codes of {0} bits: 1 to 8 are supported")]
    UnsupportedPackBits(u8),
    #[error("inconsistent quantized weight: {0}")]
    Inconsistent(String),
    #[error("invalid sparsity: {0}")]
    InvalidSparsity(String),
    #[error("inconsistent sparsity mask: {0}")]
    BadMask(String),
    #[error("rank {rank} is out of range: a {rows}×{cols} weight has rank at most {max}")]
    BadRank {
        rank: usize,
        rows: usize,
        cols: usize,
        max: usize,
    },
    #[error("{0} did not converge")]
    NoConvergence(&'static str),
}

/// `Result` with [`CompressError`] as the default error.
pub type Result<T, E = CompressError> = std::result::Result<T, E>;
