//! Finding the tensors in a file so each can get a dtype-aware layout.
//!
//! Detection only guides coding: whatever it concludes, the segments tile the whole file and
//! every byte is stored, so a misread or hostile header can cost compression but never
//! correctness. Anything that is not a recognised tensor (headers, metadata, padding, files of
//! other formats, crunch's future formats until a reader lands here) becomes an opaque segment
//! coded generically (rANS or zstd, whichever is smaller).

mod gguf;
mod safetensors;

use crate::format::TensorMeta;
use crate::io::Source;
use crate::transform::Layout;

/// A byte range of the original file and how to code it.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    pub offset: u64,
    pub len: u64,
    pub tensor: Option<TensorMeta>,
    pub layout: Layout,
}

/// Which parser recognised the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Safetensors,
    Gguf,
    Other,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Safetensors => "safetensors",
            Kind::Gguf => "gguf",
            Kind::Other => "other",
        }
    }
}

/// Splits `src` into segments that tile it exactly.
pub fn segments(src: &dyn Source) -> (Kind, Vec<Segment>) {
    let size = src.len();
    let mut magic = [0u8; 9];
    let n = magic.len().min(size as usize);
    let found = if src.read_exact_at(0, &mut magic[..n]).is_err() {
        None
    } else if n >= 4 && &magic[..4] == b"GGUF" {
        gguf::tensors(src).map(|t| (Kind::Gguf, t))
    } else if n == 9 && magic[8] == b'{' {
        safetensors::tensors(src).map(|t| (Kind::Safetensors, t))
    } else {
        None
    };
    let (kind, tensors) = found.unwrap_or((Kind::Other, Vec::new()));
    (kind, tile(tensors, size))
}

/// Sorts tensor segments, drops any that overlap or leave the file, and fills the gaps with
/// opaque segments.
pub fn tile(mut tensors: Vec<Segment>, size: u64) -> Vec<Segment> {
    tensors.retain(|t| t.len > 0 && t.offset.checked_add(t.len).is_some_and(|e| e <= size));
    tensors.sort_by_key(|t| t.offset);
    let mut out = Vec::with_capacity(tensors.len() * 2 + 1);
    let mut at = 0u64;
    for t in tensors {
        if t.offset < at || t.len % t.layout.record as u64 != 0 {
            continue;
        }
        if t.offset > at {
            out.push(opaque(at, t.offset - at));
        }
        at = t.offset + t.len;
        out.push(t);
    }
    if at < size {
        out.push(opaque(at, size - at));
    }
    out
}

fn opaque(offset: u64, len: u64) -> Segment {
    Segment {
        offset,
        len,
        tensor: None,
        layout: Layout::identity(),
    }
}

/// The layout for a plain (non-block) dtype, by its safetensors spelling.
pub fn plain_layout(dtype: &str) -> Option<(Layout, u64)> {
    Some(match dtype {
        "F32" => (Layout::float32(), 4),
        "F16" | "BF16" => (Layout::float16(), 2),
        "F64" | "I64" | "U64" => (Layout::byte_planes(8), 8),
        "I32" | "U32" => (Layout::byte_planes(4), 4),
        "I16" | "U16" => (Layout::byte_planes(2), 2),
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" => (Layout::identity(), 1),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(offset: u64, len: u64) -> Segment {
        Segment {
            offset,
            len,
            tensor: Some(TensorMeta {
                name: format!("t{offset}"),
                dtype: "F16".into(),
                shape: vec![len / 2],
            }),
            layout: Layout::float16(),
        }
    }

    #[test]
    fn tiling_fills_gaps_and_drops_bad_ranges() {
        let segs = tile(vec![t(10, 4), t(4, 4), t(12, 2), t(20, 100), t(14, 3)], 30);
        let ranges: Vec<(u64, u64, bool)> = segs
            .iter()
            .map(|s| (s.offset, s.len, s.tensor.is_some()))
            .collect();
        assert_eq!(
            ranges,
            vec![
                (0, 4, false),
                (4, 4, true),
                (8, 2, false),
                (10, 4, true),
                (14, 16, false)
            ]
        );
    }
}
