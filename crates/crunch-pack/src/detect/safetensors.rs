//! Safetensors: `u64` header length, JSON header, tensor bytes. Only what packing needs is
//! read: each tensor's dtype, shape and byte range. Tensors whose entry is inconsistent are
//! left out (their bytes become opaque); a header that does not parse leaves the file opaque.

use super::{plain_layout, Segment};
use crate::format::TensorMeta;
use crate::io::Source;

/// Real headers are kilobytes; a lying length must not make us allocate gigabytes.
const MAX_HEADER: u64 = 100 << 20;

pub fn tensors(src: &dyn Source) -> Option<Vec<Segment>> {
    let size = src.len();
    let mut len = [0u8; 8];
    src.read_exact_at(0, &mut len).ok()?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER || n > size.saturating_sub(8) {
        return None;
    }
    let mut header = vec![0u8; n as usize];
    src.read_exact_at(8, &mut header).ok()?;
    parse(&header, 8 + n, size)
}

/// Parses a header; `data_start` is where tensor offsets count from.
pub fn parse(header: &[u8], data_start: u64, size: u64) -> Option<Vec<Segment>> {
    let json: serde_json::Value = serde_json::from_slice(header).ok()?;
    let map = json.as_object()?;
    let mut out = Vec::with_capacity(map.len());
    for (name, entry) in map {
        if name == "__metadata__" {
            continue;
        }
        if let Some(seg) = entry_segment(name, entry, data_start, size) {
            out.push(seg);
        }
    }
    Some(out)
}

fn entry_segment(name: &str, e: &serde_json::Value, data_start: u64, size: u64) -> Option<Segment> {
    let dtype = e.get("dtype")?.as_str()?;
    let shape: Vec<u64> = e
        .get("shape")?
        .as_array()?
        .iter()
        .map(|d| d.as_u64())
        .collect::<Option<_>>()?;
    let offs = e.get("data_offsets")?.as_array()?;
    let (begin, end) = (offs.first()?.as_u64()?, offs.get(1)?.as_u64()?);
    let (layout, width) = plain_layout(dtype)?;
    let numel = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?;
    let len = end.checked_sub(begin)?;
    if numel.checked_mul(width)? != len || data_start.checked_add(end)? > size || shape.len() > 255
    {
        return None;
    }
    Some(Segment {
        offset: data_start + begin,
        len,
        tensor: Some(TensorMeta {
            name: name.to_string(),
            dtype: dtype.to_string(),
            shape,
        }),
        layout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_entries_and_skips_inconsistent_ones() {
        let h = br#"{"__metadata__":{"format":"pt"},
            "a":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]},
            "b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]},
            "bad_len":{"dtype":"F32","shape":[3],"data_offsets":[20,24]},
            "odd":{"dtype":"X9","shape":[1],"data_offsets":[24,25]}}"#;
        let segs = parse(h, 100, 1000).unwrap();
        let mut names: Vec<_> = segs
            .iter()
            .map(|s| s.tensor.as_ref().unwrap().name.clone())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b"]);
        assert!(parse(b"not json", 8, 100).is_none());
    }
}
