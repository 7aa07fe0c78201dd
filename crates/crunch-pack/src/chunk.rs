//! One chunk: a whole number of records of one segment, split into planes, each plane coded
//! on its own. Chunks are independent, which is what lets them be coded in parallel and lets
//! one tensor be decoded without the rest.
//!
//! Record on disk (docs/pack-format.md, "Chunk record"):
//! `u8 planes`, then per plane `u8 method` and `u32 payload length` (LE), then the payloads.

use crate::error::{CodecError, CodecResult};
use crate::plane::{self, Method, PlaneOptions, PlaneStats};
use crate::transform::Layout;
use std::cell::RefCell;

/// Size of a chunk's plane directory.
pub fn header_len(planes: usize) -> usize {
    1 + planes * 5
}

thread_local! {
    /// Plane buffers reused from chunk to chunk on each thread: fresh megabyte buffers per
    /// chunk would cost page faults and zeroing comparable to the coding itself.
    static PLANES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Codes `raw` (a whole number of `layout` records) into a chunk record.
pub fn encode(
    layout: &Layout,
    raw: &[u8],
    opts: &PlaneOptions,
) -> CodecResult<(Vec<u8>, Vec<PlaneStats>)> {
    // Worst case is every plane raw plus the directory.
    let mut out = Vec::with_capacity(header_len(layout.planes()) + raw.len());
    let stats = encode_into(layout, raw, opts, &mut out)?;
    Ok((out, stats))
}

/// Like [`encode`], appending the record to `out` (one copy fewer when packing into memory).
pub fn encode_into(
    layout: &Layout,
    raw: &[u8],
    opts: &PlaneOptions,
    out: &mut Vec<u8>,
) -> CodecResult<Vec<PlaneStats>> {
    let np = layout.planes();
    if np == 1 && layout.record == 1 {
        // The identity layout codes the input slice directly, without a copy.
        return encode_planes(&[raw], opts, out);
    }
    PLANES.with_borrow_mut(|planes| {
        if planes.len() < np {
            planes.resize_with(np, Vec::new);
        }
        let planes = &mut planes[..np];
        layout.split(raw, planes);
        let views: Vec<&[u8]> = planes.iter().map(|p| &p[..]).collect();
        encode_planes(&views, opts, out)
    })
}

fn encode_planes(
    views: &[&[u8]],
    opts: &PlaneOptions,
    out: &mut Vec<u8>,
) -> CodecResult<Vec<PlaneStats>> {
    let np = views.len();
    let head = out.len();
    out.resize(head + header_len(np), 0);
    out[head] = np as u8;
    let mut stats = Vec::with_capacity(np);
    for (i, view) in views.iter().enumerate() {
        let before = out.len();
        let st = plane::encode(view, opts, out)?;
        let len = (out.len() - before) as u32;
        out[head + 1 + i * 5] = st.method as u8;
        out[head + 2 + i * 5..head + 6 + i * 5].copy_from_slice(&len.to_le_bytes());
        stats.push(st);
    }
    Ok(stats)
}

/// Decodes a chunk record into `out`, whose length is the chunk's raw length from the index.
pub fn decode(layout: &Layout, record: &[u8], out: &mut [u8]) -> CodecResult<()> {
    let np = layout.planes();
    let r = layout.record as usize;
    if !out.len().is_multiple_of(r) {
        return Err(CodecError::new(
            "chunk length is not a whole number of records",
        ));
    }
    let n = out.len() / r;
    let hl = header_len(np);
    if record.len() < hl || record[0] as usize != np {
        return Err(CodecError::new(
            "chunk plane directory does not match its layout",
        ));
    }
    let mut payloads = Vec::with_capacity(np);
    let mut offset = hl;
    for i in 0..np {
        let method = Method::from_u8(record[1 + i * 5]).ok_or_else(|| {
            CodecError::new(format!("unknown plane method {}", record[1 + i * 5]))
        })?;
        let len =
            u32::from_le_bytes(record[2 + i * 5..6 + i * 5].try_into().expect("4 bytes")) as usize;
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= record.len())
            .ok_or_else(|| CodecError::new("plane payload runs past its chunk"))?;
        payloads.push((method, &record[offset..end]));
        offset = end;
    }
    if offset != record.len() {
        return Err(CodecError::new("chunk has trailing bytes"));
    }
    if np == 1 && r == 1 {
        let (m, p) = payloads[0];
        return plane::decode(m, p, out);
    }
    let widths = layout.plane_widths();
    PLANES.with_borrow_mut(|bufs| {
        if bufs.len() < np {
            bufs.resize_with(np, Vec::new);
        }
        // Raw planes are merged straight from the record; only coded ones need a buffer.
        for (((m, p), buf), w) in payloads.iter().zip(bufs.iter_mut()).zip(&widths) {
            let len = n * w;
            if *m == Method::Raw {
                if p.len() != len {
                    return Err(CodecError::new("raw plane has the wrong length"));
                }
                continue;
            }
            // Only grows: a plane buffer sized for one layout is reused by chunks of others,
            // and shrinking it would make every growth back zero it again.
            if buf.len() < len {
                buf.resize(len, 0);
            }
            plane::decode(*m, p, &mut buf[..len])?;
        }
        let refs: Vec<&[u8]> = payloads
            .iter()
            .zip(bufs.iter())
            .zip(&widths)
            .map(|(((m, p), buf), w)| if *m == Method::Raw { *p } else { &buf[..n * w] })
            .collect();
        layout.merge(&refs, out);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::Field;
    use proptest::prelude::*;

    #[test]
    fn bf16_chunk_round_trips_and_shrinks() {
        // Gaussian-ish BF16 weights from a deterministic generator.
        let mut rng = crunch_rng::SplitMix64(42);
        let raw: Vec<u8> = (0..100_000)
            .flat_map(|_| {
                let u = rng.unit().max(1e-12);
                let v = (-2.0 * u.ln()).sqrt() as f32 * 0.02;
                ((v.to_bits() >> 16) as u16).to_le_bytes()
            })
            .collect();
        let (rec, stats) = encode(&Layout::float16(), &raw, &PlaneOptions::default()).unwrap();
        assert!(
            rec.len() < raw.len() * 3 / 4,
            "{} of {}",
            rec.len(),
            raw.len()
        );
        assert_eq!(stats[0].method, Method::Rans);
        let mut out = vec![0u8; raw.len()];
        decode(&Layout::float16(), &rec, &mut out).unwrap();
        assert_eq!(out, raw);
    }

    proptest! {
        #[test]
        fn chunks_round_trip(data in proptest::collection::vec(any::<u8>(), 0..4000), which in 0usize..4) {
            let layout = [Layout::identity(), Layout::float16(), Layout::float32(), Layout {
                record: 18,
                fields: vec![Field::Float16 { at: 0 }, Field::Bytes { start: 2, len: 16 }],
            }][which].clone();
            let r = layout.record as usize;
            let raw = &data[..data.len() / r * r];
            let opts = PlaneOptions { min_gain: 0.0, ..PlaneOptions::default() };
            let (rec, _) = encode(&layout, raw, &opts).unwrap();
            let mut out = vec![0u8; raw.len()];
            decode(&layout, &rec, &mut out).unwrap();
            prop_assert_eq!(&out[..], raw);
        }

        #[test]
        fn decode_never_panics(record in proptest::collection::vec(any::<u8>(), 0..600), n in 0usize..300) {
            let mut out = vec![0u8; n * 4];
            let _ = decode(&Layout::float32(), &record, &mut out);
            let mut out = vec![0u8; n];
            let _ = decode(&Layout::identity(), &record, &mut out);
        }
    }
}
