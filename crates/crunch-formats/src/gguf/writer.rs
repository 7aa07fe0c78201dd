//! A minimal GGUF v3 writer: enough to build test files and fuzz seeds, and to let crunch
//! emit GGUF later. Tensors are stored in the order given, each at the next aligned offset.

use super::{ggml_type_id, GgufValue, DEFAULT_ALIGNMENT};
use crate::DType;

/// One tensor to write: name, row-major shape, type, and its raw stored bytes.
pub type TensorSpec<'a> = (&'a str, &'a [usize], DType, &'a [u8]);

/// Serializes metadata and tensors to GGUF v3 bytes. The alignment is `general.alignment`
/// when the metadata has it, else 32. Fails if a tensor's byte count does not match its
/// shape and type, if its type has no ggml id, or if an array mixes element types.
pub fn serialize(
    metadata: &[(&str, GgufValue)],
    tensors: &[TensorSpec<'_>],
) -> Result<Vec<u8>, String> {
    let alignment = metadata
        .iter()
        .find(|(k, _)| *k == "general.alignment")
        .map_or(Some(DEFAULT_ALIGNMENT), |(_, v)| v.as_u64())
        .filter(|a| a.is_power_of_two())
        .ok_or("general.alignment must be a power of two")? as usize;
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_str(&mut out, key);
        out.extend(value.type_id().to_le_bytes());
        put_value(&mut out, value)?;
    }
    let mut offset = 0usize;
    let mut offsets = Vec::with_capacity(tensors.len());
    for (name, shape, dtype, data) in tensors {
        let numel: usize = shape.iter().product();
        if dtype.bytes_for(numel) != Some(data.len()) {
            return Err(format!(
                "tensor `{name}`: {} bytes do not fit shape {shape:?} of {dtype:?}",
                data.len()
            ));
        }
        let id = ggml_type_id(*dtype);
        if id == u32::MAX {
            return Err(format!("tensor `{name}`: {dtype:?} has no ggml type"));
        }
        put_str(&mut out, name);
        out.extend((shape.len() as u32).to_le_bytes());
        for &d in shape.iter().rev() {
            out.extend((d as u64).to_le_bytes());
        }
        out.extend(id.to_le_bytes());
        out.extend((offset as u64).to_le_bytes());
        offsets.push(offset);
        offset = (offset + data.len()).next_multiple_of(alignment);
    }
    let data_start = out.len().next_multiple_of(alignment);
    out.resize(data_start, 0);
    for ((_, _, _, data), off) in tensors.iter().zip(offsets) {
        out.resize(data_start + off, 0);
        out.extend_from_slice(data);
    }
    Ok(out)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) -> Result<(), String> {
    use GgufValue::*;
    match v {
        U8(x) => out.push(*x),
        I8(x) => out.push(*x as u8),
        U16(x) => out.extend(x.to_le_bytes()),
        I16(x) => out.extend(x.to_le_bytes()),
        U32(x) => out.extend(x.to_le_bytes()),
        I32(x) => out.extend(x.to_le_bytes()),
        U64(x) => out.extend(x.to_le_bytes()),
        I64(x) => out.extend(x.to_le_bytes()),
        F32(x) => out.extend(x.to_le_bytes()),
        F64(x) => out.extend(x.to_le_bytes()),
        Bool(x) => out.push(*x as u8),
        String(s) => put_str(out, s),
        Array(items) => {
            // An empty array still needs an element type; any will do.
            let ty = items.first().map_or(0, GgufValue::type_id);
            if items.iter().any(|i| i.type_id() != ty) {
                return Err("array elements must all have the same type".into());
            }
            out.extend(ty.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item)?;
            }
        }
    }
    Ok(())
}
