//! GGUF v3 writing: [`Layout`] lays out a file (header, metadata, tensor descriptions, and
//! each tensor's offset) before any tensor data exists, so a writer can stream tensors one at
//! a time and know the file's exact size in advance; [`serialize`] builds a whole file in
//! memory (tests, fuzz seeds). Tensors are stored in the order given, each at the next
//! multiple of the alignment, as llama.cpp writes them.

use super::{ggml_type_id, GgufValue, DEFAULT_ALIGNMENT};
use crate::DType;
use std::io::Write;

/// One tensor to write: name, row-major shape, type, and its raw stored bytes.
pub type TensorSpec<'a> = (&'a str, &'a [usize], DType, &'a [u8]);

/// A GGUF file laid out: the bytes before the data section (already padded to the
/// alignment), and where each tensor's bytes go.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Header, metadata and tensor descriptions, zero-padded to the start of the data.
    pub head: Vec<u8>,
    /// Alignment of the data section and of every tensor.
    pub alignment: usize,
    /// Each tensor's byte count, in order.
    pub sizes: Vec<usize>,
    /// Each tensor's offset from the start of the data section.
    pub offsets: Vec<usize>,
}

impl Layout {
    /// Lays out `tensors` (name, row-major shape, type) under `metadata`. The alignment is
    /// `general.alignment` when the metadata has it, else 32. Fails if a type has no ggml id,
    /// a shape is not a whole number of blocks along its rows, or an array mixes element
    /// types.
    pub fn new(
        metadata: &[(&str, GgufValue)],
        tensors: &[(&str, &[usize], DType)],
    ) -> Result<Self, String> {
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
            put_value(&mut out, value).map_err(|e| format!("metadata `{key}`: {e}"))?;
        }
        let (mut offset, mut offsets, mut sizes) = (0usize, Vec::new(), Vec::new());
        for (name, shape, dtype) in tensors {
            let id = ggml_type_id(*dtype);
            if id == u32::MAX {
                return Err(format!("tensor `{name}`: {dtype:?} has no ggml type"));
            }
            let row = shape.last().copied().unwrap_or(1);
            let numel: usize = shape.iter().product();
            let size = dtype
                .bytes_for(numel)
                .filter(|_| row.is_multiple_of(dtype.block().0))
                .ok_or_else(|| {
                    format!(
                        "tensor `{name}`: rows of {row} values are not a whole number of {} \
                         blocks of {}",
                        dtype.ggml_name(),
                        dtype.block().0
                    )
                })?;
            put_str(&mut out, name);
            out.extend((shape.len() as u32).to_le_bytes());
            for &d in shape.iter().rev() {
                out.extend((d as u64).to_le_bytes());
            }
            out.extend(id.to_le_bytes());
            out.extend((offset as u64).to_le_bytes());
            offsets.push(offset);
            sizes.push(size);
            offset = (offset + size).next_multiple_of(alignment);
        }
        out.resize(out.len().next_multiple_of(alignment), 0);
        Ok(Self {
            head: out,
            alignment,
            sizes,
            offsets,
        })
    }

    /// The whole file's size in bytes.
    pub fn file_len(&self) -> u64 {
        let data = match (self.offsets.last(), self.sizes.last()) {
            (Some(o), Some(s)) => o + s,
            _ => 0,
        };
        (self.head.len() + data) as u64
    }

    /// Streams the file to `w`: call with each tensor's bytes in order (`next(i)`), which
    /// must have the laid-out size.
    pub fn write<W: Write>(
        &self,
        w: &mut W,
        mut next: impl FnMut(usize) -> Result<Vec<u8>, String>,
    ) -> Result<(), String> {
        w.write_all(&self.head).map_err(|e| e.to_string())?;
        let mut pos = 0usize;
        for (i, (&off, &size)) in self.offsets.iter().zip(&self.sizes).enumerate() {
            w.write_all(&vec![0u8; off - pos])
                .map_err(|e| e.to_string())?;
            let bytes = next(i)?;
            if bytes.len() != size {
                return Err(format!(
                    "tensor {i}: {} bytes, the layout has {size}",
                    bytes.len()
                ));
            }
            w.write_all(&bytes).map_err(|e| e.to_string())?;
            pos = off + size;
        }
        Ok(())
    }
}

/// Serializes metadata and tensors to GGUF v3 bytes in memory. Fails as [`Layout::new`]
/// does, or if a tensor's byte count does not match its shape and type.
pub fn serialize(
    metadata: &[(&str, GgufValue)],
    tensors: &[TensorSpec<'_>],
) -> Result<Vec<u8>, String> {
    for (name, shape, dtype, data) in tensors {
        let numel: usize = shape.iter().product();
        if dtype.bytes_for(numel) != Some(data.len()) {
            return Err(format!(
                "tensor `{name}`: {} bytes do not fit shape {shape:?} of {dtype:?}",
                data.len()
            ));
        }
    }
    let descs: Vec<(&str, &[usize], DType)> = tensors.iter().map(|t| (t.0, t.1, t.2)).collect();
    let layout = Layout::new(metadata, &descs)?;
    let mut out = Vec::with_capacity(layout.file_len() as usize);
    layout.write(&mut out, |i| Ok(tensors[i].3.to_vec()))?;
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
