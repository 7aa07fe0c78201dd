//! Synthetic checkpoints for the tests: safetensors and GGUF files built in memory, with
//! weight-like values so that the float paths are exercised the way real files exercise them.
#![allow(dead_code)]

/// Test data from crunch's one seeded stream (SplitMix64).
pub use crunch_rng::SplitMix64 as Rng;

/// Weight-like and raw test values.
pub trait Values {
    /// Roughly normal with standard deviation `sd` (sum of uniforms).
    fn normal(&mut self, sd: f32) -> f32;
    fn bytes(&mut self, n: usize) -> Vec<u8>;
}

impl Values for Rng {
    fn normal(&mut self, sd: f32) -> f32 {
        let s: f32 = (0..4)
            .map(|_| (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
            .sum();
        (s - 2.0) * sd * 1.7
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

pub const DTYPES: [(&str, usize); 10] = [
    ("F32", 4),
    ("F16", 2),
    ("BF16", 2),
    ("F64", 8),
    ("I64", 8),
    ("I32", 4),
    ("I16", 2),
    ("I8", 1),
    ("U8", 1),
    ("BOOL", 1),
];

/// `n` elements of `dtype` with realistic statistics for floats and quantised codes.
/// Tensor `name` of `dtype` and `shape` holding [`tensor_bytes`], as [`safetensors`] takes it.
pub fn tensor<'a>(
    rng: &mut Rng,
    name: &str,
    dtype: &'a str,
    shape: &[usize],
) -> (String, &'a str, Vec<usize>, Vec<u8>) {
    let bytes = tensor_bytes(rng, dtype, shape.iter().product());
    (name.to_string(), dtype, shape.to_vec(), bytes)
}

pub fn tensor_bytes(rng: &mut Rng, dtype: &str, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..n {
        let w = rng.normal(0.02);
        match dtype {
            "F32" => out.extend_from_slice(&w.to_le_bytes()),
            "BF16" => out.extend_from_slice(&((w.to_bits() >> 16) as u16).to_le_bytes()),
            "F16" => out.extend_from_slice(&f32_to_f16(w).to_le_bytes()),
            "F64" => out.extend_from_slice(&(w as f64).to_le_bytes()),
            "I32" => out.extend_from_slice(&(rng.next_u64() as u32 & 0x7777_7777).to_le_bytes()),
            "I64" => out.extend_from_slice(&((rng.next_u64() % 50_000) as i64).to_le_bytes()),
            "I16" => out.extend_from_slice(&((rng.next_u64() % 300) as i16 - 150).to_le_bytes()),
            "BOOL" => out.push((rng.next_u64() & 1) as u8),
            _ => out.push((rng.next_u64() % 16) as u8),
        }
    }
    out
}

/// Truncating f32 -> f16 (good enough for test data).
pub fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    if exp <= 0 {
        return sign;
    }
    if exp >= 31 {
        return sign | 0x7c00;
    }
    sign | (exp as u16) << 10 | ((b >> 13) & 0x3ff) as u16
}

/// A safetensors file: (name, dtype, shape, bytes) in order, then `trailer` bytes.
pub fn safetensors(tensors: &[(String, &str, Vec<usize>, Vec<u8>)], trailer: &[u8]) -> Vec<u8> {
    let mut header = String::from("{\"__metadata__\":{\"format\":\"pt\"}");
    let mut offset = 0;
    for (name, dtype, shape, bytes) in tensors {
        let shape: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        header += &format!(
            ",\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{offset},{}]}}",
            shape.join(","),
            offset + bytes.len()
        );
        offset += bytes.len();
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    for (_, _, _, bytes) in tensors {
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(trailer);
    out
}

/// A GGUF v3 file with a few metadata values (including a string array) and the given
/// tensors: (name, ggml type, dims fastest-first, bytes).
pub fn gguf(tensors: &[(&str, u32, Vec<u64>, Vec<u8>)]) -> Vec<u8> {
    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend_from_slice(&(v.len() as u64).to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    let mut o = b"GGUF".to_vec();
    o.extend_from_slice(&3u32.to_le_bytes());
    o.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    o.extend_from_slice(&3u64.to_le_bytes());
    s(&mut o, "general.alignment");
    o.extend_from_slice(&4u32.to_le_bytes());
    o.extend_from_slice(&32u32.to_le_bytes());
    s(&mut o, "general.name");
    o.extend_from_slice(&8u32.to_le_bytes());
    s(&mut o, "synthetic");
    s(&mut o, "tokenizer.ggml.tokens");
    o.extend_from_slice(&9u32.to_le_bytes());
    o.extend_from_slice(&8u32.to_le_bytes());
    o.extend_from_slice(&100u64.to_le_bytes());
    for i in 0..100 {
        s(&mut o, &format!("tok{i}"));
    }
    let mut offset = 0u64;
    let mut offsets = Vec::new();
    for (name, ty, dims, bytes) in tensors {
        s(&mut o, name);
        o.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            o.extend_from_slice(&d.to_le_bytes());
        }
        o.extend_from_slice(&ty.to_le_bytes());
        o.extend_from_slice(&offset.to_le_bytes());
        offsets.push(offset);
        offset += (bytes.len() as u64).div_ceil(32) * 32;
    }
    while !o.len().is_multiple_of(32) {
        o.push(0);
    }
    let start = o.len();
    for ((_, _, _, bytes), off) in tensors.iter().zip(offsets) {
        o.resize(start + off as usize, 0);
        o.extend_from_slice(bytes);
    }
    while !o.len().is_multiple_of(32) {
        o.push(0);
    }
    o
}

/// `blocks` GGUF Q4_1 blocks (f16 scale, f16 min, 16 bytes of nibbles).
pub fn q4_1_blocks(rng: &mut Rng, blocks: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..blocks {
        out.extend_from_slice(&f32_to_f16(rng.normal(0.002).abs()).to_le_bytes());
        out.extend_from_slice(&f32_to_f16(-rng.normal(0.02).abs()).to_le_bytes());
        for _ in 0..16 {
            let lo = (rng.normal(3.0) + 8.0).clamp(0.0, 15.0) as u8;
            let hi = (rng.normal(3.0) + 8.0).clamp(0.0, 15.0) as u8;
            out.push(lo | hi << 4);
        }
    }
    out
}

/// `blocks` GGUF Q8_0 blocks (f16 scale, 32 signed bytes).
pub fn q8_0_blocks(rng: &mut Rng, blocks: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..blocks {
        out.extend_from_slice(&f32_to_f16(rng.normal(0.001).abs()).to_le_bytes());
        for _ in 0..32 {
            out.push(rng.normal(40.0).clamp(-127.0, 127.0) as i8 as u8);
        }
    }
    out
}
