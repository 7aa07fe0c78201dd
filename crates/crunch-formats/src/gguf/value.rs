//! Typed metadata values.

/// One metadata value, exactly as typed in the file.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// Any integer that is non-negative, whatever its stored width: writers disagree on
    /// whether counts are u32, i32 or u64.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_integer().and_then(|v| v.try_into().ok())
    }

    /// Any integer that fits an i64.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_integer().and_then(|v| v.try_into().ok())
    }

    /// Any integer, whatever its stored width and sign.
    fn as_integer(&self) -> Option<i128> {
        use GgufValue::*;
        match *self {
            U8(v) => Some(v.into()),
            U16(v) => Some(v.into()),
            U32(v) => Some(v.into()),
            U64(v) => Some(v.into()),
            I8(v) => Some(v.into()),
            I16(v) => Some(v.into()),
            I32(v) => Some(v.into()),
            I64(v) => Some(v.into()),
            _ => None,
        }
    }

    /// Any number (integers converted, possibly rounding beyond 2^53).
    pub fn as_f64(&self) -> Option<f64> {
        use GgufValue::*;
        match *self {
            F32(v) => Some(v.into()),
            F64(v) => Some(v),
            I64(v) => Some(v as f64),
            U64(v) => Some(v as f64),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The GGUF value-type id this value is written with.
    pub fn type_id(&self) -> u32 {
        use GgufValue::*;
        match self {
            U8(_) => 0,
            I8(_) => 1,
            U16(_) => 2,
            I16(_) => 3,
            U32(_) => 4,
            I32(_) => 5,
            F32(_) => 6,
            Bool(_) => 7,
            String(_) => 8,
            Array(_) => 9,
            U64(_) => 10,
            I64(_) => 11,
            F64(_) => 12,
        }
    }
}

/// The fewest bytes a value of type `ty` occupies in a file, or `None` for an unknown type.
/// Used to refuse counts that the remaining bytes could not possibly hold.
pub(super) fn min_encoded_size(ty: u32) -> Option<usize> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        8 => 8,     // u64 length, possibly empty
        9 => 4 + 8, // element type + count, possibly empty
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_convert_only_what_fits() {
        assert_eq!(GgufValue::I32(5).as_u64(), Some(5));
        assert_eq!(GgufValue::I32(-5).as_u64(), None);
        assert_eq!(GgufValue::U64(u64::MAX).as_i64(), None);
        assert_eq!(GgufValue::U16(7).as_f64(), Some(7.0));
        assert_eq!(GgufValue::F32(0.5).as_u64(), None);
        assert_eq!(GgufValue::Bool(true).as_bool(), Some(true));
        assert_eq!(GgufValue::String("x".into()).as_str(), Some("x"));
        let a = GgufValue::Array(vec![GgufValue::U8(1)]);
        assert_eq!(a.as_array().map(<[_]>::len), Some(1));
        assert_eq!(a.as_str(), None);
    }
}
