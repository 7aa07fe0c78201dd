use half::{bf16, f16};

/// The GGUF block types crunch's own files may hold inside safetensors, rows of whole blocks
/// (decision 093): a tensor left uncompressed keeps its source's blocks (a GGUF's Q8_0 token
/// embedding stays Q8_0), and token embeddings can be written in them. Other programs reading
/// such a file refuse the unknown dtype rather than misread it.
/// They are the types crunch can encode, so anything it writes it can also keep.
pub const BLOCKS_IN_SAFETENSORS: [DType; 12] = crate::gguf::quants::ENCODABLE;

/// Element types crunch reads. Block-quantized GGUF types are listed by their ggml names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    U32,
    Bool,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    IQ1S,
    IQ1M,
    IQ2XXS,
    IQ2XS,
    IQ2S,
    IQ3XXS,
    IQ3S,
    IQ4NL,
    IQ4XS,
}

impl DType {
    /// Elements per block and bytes per block. Plain types are blocks of one element.
    pub const fn block(self) -> (usize, usize) {
        use DType::*;
        match self {
            F64 | I64 => (1, 8),
            F32 | I32 | U32 => (1, 4),
            F16 | BF16 | I16 => (1, 2),
            I8 | U8 | Bool => (1, 1),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q2K => (256, 84),
            Q3K => (256, 110),
            Q4K => (256, 144),
            Q5K => (256, 176),
            Q6K => (256, 210),
            Q8K => (256, 292),
            IQ1S => (256, 50),
            IQ1M => (256, 56),
            IQ2XXS => (256, 66),
            IQ2XS => (256, 74),
            IQ2S => (256, 82),
            IQ3XXS => (256, 98),
            IQ3S => (256, 110),
            IQ4NL => (32, 18),
            IQ4XS => (256, 136),
        }
    }

    /// Bytes needed for `numel` elements, or `None` on overflow or a partial block.
    pub fn bytes_for(self, numel: usize) -> Option<usize> {
        let (per_block, block_bytes) = self.block();
        if !numel.is_multiple_of(per_block) {
            return None;
        }
        (numel / per_block).checked_mul(block_bytes)
    }

    /// The safetensors spelling of this type, if it has one: its ggml name, which is the
    /// safetensors name for every type safetensors has. The GGUF block types of
    /// [`BLOCKS_IN_SAFETENSORS`] are an extension only crunch's own files use (decision 093).
    pub fn safetensors_name(self) -> Option<&'static str> {
        Self::in_safetensors()
            .any(|d| d == self)
            .then(|| self.ggml_name())
    }

    pub fn from_safetensors_name(name: &str) -> Option<Self> {
        Self::in_safetensors().find(|d| d.ggml_name() == name)
    }

    fn in_safetensors() -> impl Iterator<Item = DType> {
        use DType::*;
        [F64, F32, F16, BF16, I64, I32, I16, I8, U8, U32, Bool]
            .into_iter()
            .chain(BLOCKS_IN_SAFETENSORS)
    }

    /// ggml's name of this type ("Q4_K", "IQ4_XS", "F16"), as llama.cpp prints it.
    pub fn ggml_name(self) -> &'static str {
        use DType::*;
        match self {
            F64 => "F64",
            F32 => "F32",
            F16 => "F16",
            BF16 => "BF16",
            I64 => "I64",
            I32 => "I32",
            I16 => "I16",
            I8 => "I8",
            U8 => "U8",
            U32 => "U32",
            Bool => "BOOL",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q2K => "Q2_K",
            Q3K => "Q3_K",
            Q4K => "Q4_K",
            Q5K => "Q5_K",
            Q6K => "Q6_K",
            Q8K => "Q8_K",
            IQ1S => "IQ1_S",
            IQ1M => "IQ1_M",
            IQ2XXS => "IQ2_XXS",
            IQ2XS => "IQ2_XS",
            IQ2S => "IQ2_S",
            IQ3XXS => "IQ3_XXS",
            IQ3S => "IQ3_S",
            IQ4NL => "IQ4_NL",
            IQ4XS => "IQ4_XS",
        }
    }

    /// The type ggml calls `name` (case-insensitive; "Q4_K" or "q4_k"), if crunch knows it.
    pub fn from_ggml_name(name: &str) -> Option<Self> {
        use DType::*;
        const ALL: [DType; 31] = [
            F64, F32, F16, BF16, I64, I32, I16, I8, U8, U32, Bool, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
            Q2K, Q3K, Q4K, Q5K, Q6K, Q8K, IQ1S, IQ1M, IQ2XXS, IQ2XS, IQ2S, IQ3XXS, IQ3S, IQ4NL,
            IQ4XS,
        ];
        ALL.into_iter()
            .find(|d| d.ggml_name().eq_ignore_ascii_case(name))
    }

    /// Block-quantized (Q*/IQ*) rather than plain.
    pub fn is_quantized(self) -> bool {
        self.block().0 > 1
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
    }
}

/// The bytes of an F32 tensor holding `values` (little-endian).
pub fn f32_le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Converts little-endian float bytes of `dtype` to f32. `bytes` must hold whole elements.
/// Large tensors are converted in parallel (an 8B model's weights are 8·10⁹ values); the
/// result does not depend on the thread count.
pub fn float_bytes_to_f32(dtype: DType, bytes: &[u8]) -> Option<Vec<f32>> {
    use rayon::prelude::*;
    /// Bytes per parallel piece: a multiple of every element size.
    const PIECE: usize = 1 << 22;
    if bytes.len() > PIECE {
        let pieces: Vec<Option<Vec<f32>>> = bytes
            .par_chunks(PIECE)
            .map(|p| float_bytes_to_f32(dtype, p))
            .collect();
        let mut out = Vec::with_capacity(bytes.len() / 2);
        for p in pieces {
            out.extend(p?);
        }
        return Some(out);
    }
    let out = match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        _ => return None,
    };
    Some(out)
}

/// Index of the first NaN or infinite element of little-endian float bytes of `dtype` (F16,
/// BF16, F32 or F64; `None` for other types and for all-finite data). A 16-bit value is
/// non-finite exactly when its exponent bits are all ones, so no conversion is needed.
pub fn first_non_finite(dtype: DType, bytes: &[u8]) -> Option<usize> {
    let half = |exp_mask: u16| {
        bytes
            .chunks_exact(2)
            .position(|c| u16::from_le_bytes([c[0], c[1]]) & exp_mask == exp_mask)
    };
    match dtype {
        DType::F16 => half(0x7c00),
        DType::BF16 => half(0x7f80),
        DType::F32 => bytes
            .chunks_exact(4)
            .position(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite()),
        DType::F64 => bytes
            .chunks_exact(8)
            .position(|c| !f64::from_le_bytes(c.try_into().unwrap()).is_finite()),
        _ => None,
    }
}

#[cfg(test)]
mod finite_tests {
    use super::*;

    #[test]
    fn non_finite_values_are_found_in_every_float_type() {
        let f16s = |v: &[f32]| -> Vec<u8> {
            v.iter()
                .flat_map(|&x| f16::from_f32(x).to_le_bytes())
                .collect()
        };
        let bf16s = |v: &[f32]| -> Vec<u8> {
            v.iter()
                .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
                .collect()
        };
        let f32s = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let v = [1.0, -65504.0, 0.0, bad, 2.0];
            assert_eq!(first_non_finite(DType::F16, &f16s(&v)), Some(3));
            assert_eq!(first_non_finite(DType::BF16, &bf16s(&v)), Some(3));
            assert_eq!(first_non_finite(DType::F32, &f32s(&v)), Some(3));
        }
        let ok = [1.0, -65504.0, 6e-8, 0.0];
        assert_eq!(first_non_finite(DType::F16, &f16s(&ok)), None);
        assert_eq!(first_non_finite(DType::BF16, &bf16s(&ok)), None);
        assert_eq!(first_non_finite(DType::U8, &[0xff; 4]), None);
    }
}
