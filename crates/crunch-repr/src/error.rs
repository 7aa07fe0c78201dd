//! The one error type of this crate: a compressed layer, or a part of one, that is not what it
//! claims to be.

/// What can be wrong with a quantization spec, a weight buffer or a compressed layer's parts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReprError {
    #[error("unsupported bit width {0}: crunch quantizes to 2 to 8 bits")]
    UnsupportedBits(u8),
    #[error("unsupported scale width {0}: coded group scales take 4 to 8 bits")]
    UnsupportedScaleBits(u8),
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
}

/// `Result` with [`ReprError`] as the default error.
pub type Result<T, E = ReprError> = std::result::Result<T, E>;
