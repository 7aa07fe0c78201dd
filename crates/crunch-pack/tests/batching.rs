//! Unpacking decodes batches of chunks that cross tensor (segment) boundaries, so that files
//! of many small tensors still keep every thread busy. These tests pin down that the output,
//! the checks and the error messages are the same as chunk-by-chunk decoding would give.

mod common;

use common::{safetensors, tensor_bytes, Rng};
use crunch_pack::io::Sink;
use crunch_pack::workers::Workers;
use crunch_pack::{pack_bytes, unpack_path, PackOptions, Packed, UnpackOptions};
use std::path::Path;

/// Many tensors: empty ones, ones smaller than a chunk, ones of several chunks, mixed dtypes.
fn many_small_tensors(seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let dtypes = ["BF16", "F32", "I32", "U8", "F16"];
    let tensors: Vec<_> = (0..120)
        .map(|i| {
            let dtype = dtypes[i % dtypes.len()];
            let n = match i % 7 {
                0 => 0,
                1 => 1,
                2 => 3000,
                _ => (rng.next_u64() % 700) as usize,
            };
            (
                format!("t{i}"),
                dtype,
                vec![n],
                tensor_bytes(&mut rng, dtype, n),
            )
        })
        .collect();
    safetensors(&tensors, b"")
}

fn pack(data: &[u8], chunk_size: usize) -> Vec<u8> {
    let o = PackOptions {
        chunk_size,
        threads: 2,
        ..PackOptions::default()
    };
    pack_bytes("m.safetensors", data, &o).unwrap().0
}

/// Restores through both paths: into one buffer, and batch by batch into a sink.
fn restore_both(
    packed: &[u8],
    threads: usize,
) -> (Result<Vec<u8>, String>, Result<Vec<u8>, String>) {
    let p = Packed::open(packed, Path::new("m.cpk")).unwrap();
    let pool = Workers::new(threads).unwrap();
    let into = p.restore_file_vec(0, &pool).map_err(|e| e.to_string());
    let mut sink = Vec::new();
    let streamed = p
        .restore_file(0, &pool, &mut sink as &mut dyn Sink, &mut |_| {})
        .map(|_| sink)
        .map_err(|e| e.to_string());
    (into, streamed)
}

#[test]
fn many_small_tensors_round_trip_at_every_thread_count() {
    let data = many_small_tensors(7);
    for chunk_size in [64, 1000, 4096, 1 << 20] {
        let packed = pack(&data, chunk_size);
        for threads in [1, 2, 3, 5] {
            let (into, streamed) = restore_both(&packed, threads);
            assert!(
                into.unwrap() == data,
                "chunk {chunk_size}, {threads} threads"
            );
            assert!(
                streamed.unwrap() == data,
                "chunk {chunk_size}, {threads} threads"
            );
        }
    }
}

#[test]
fn empty_file_and_only_empty_tensors_round_trip() {
    let empty: Vec<(String, &str, Vec<usize>, Vec<u8>)> = (0..5)
        .map(|i| (format!("e{i}"), "BF16", vec![0], Vec::new()))
        .collect();
    for data in [Vec::new(), safetensors(&empty, b"")] {
        let packed = pack(&data, 4096);
        for threads in [1, 2] {
            let (into, streamed) = restore_both(&packed, threads);
            assert_eq!(into.unwrap(), data);
            assert_eq!(streamed.unwrap(), data);
        }
    }
}

#[test]
fn damaged_chunk_inside_a_cross_tensor_batch_names_its_tensor() {
    let data = many_small_tensors(11);
    let mut packed = pack(&data, 4096);
    let p = Packed::open(&packed[..], Path::new("m.cpk")).unwrap();
    // A small tensor in the middle of the file: its one chunk shares a batch with the chunks
    // of its neighbours (a batch holds up to a MiB per thread).
    let seg = p.index.files[0]
        .segments
        .iter()
        .find(|s| s.tensor.as_ref().is_some_and(|t| t.name == "t58"))
        .unwrap();
    assert_eq!(seg.chunks.len(), 1, "t58 should be one chunk");
    let c = seg.chunks[0];
    let (at, end) = (c.offset as usize, (c.offset + c.packed_len as u64) as usize);
    drop(p);
    // The last byte of the record: payload, so the damage reaches a decoder or the checksum.
    packed[end - 1] ^= 0x5A;
    assert!(at < end);
    for threads in [1, 2, 3] {
        let (into, streamed) = restore_both(&packed, threads);
        for err in [into.unwrap_err(), streamed.unwrap_err()] {
            assert!(err.contains("m.cpk"), "{err}");
            assert!(err.contains("tensor `t58`"), "{threads} threads: {err}");
            assert!(err.contains("chunk 0"), "{err}");
        }
    }
    // And through the CLI path, which must leave no output behind.
    let dir = tempfile::tempdir().unwrap();
    let pp = dir.path().join("m.cpk");
    std::fs::write(&pp, &packed).unwrap();
    let out = dir.path().join("out.safetensors");
    let o = UnpackOptions {
        threads: 2,
        ..UnpackOptions::default()
    };
    let err = unpack_path(&pp, &out, &o, &|_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("tensor `t58`"), "{err}");
    assert!(!out.exists());
}

#[test]
fn single_tensor_extraction_still_works_between_small_tensors() {
    let data = many_small_tensors(3);
    let packed = pack(&data, 512);
    let dir = tempfile::tempdir().unwrap();
    let pp = dir.path().join("m.cpk");
    std::fs::write(&pp, &packed).unwrap();
    let p = Packed::open(&packed[..], Path::new("m.cpk")).unwrap();
    for name in ["t2", "t9", "t58", "t1"] {
        let (fi, si) = p.find_tensor(name).unwrap();
        let seg = &p.index.files[fi].segments[si];
        let want = &data[seg.offset as usize..(seg.offset + seg.len) as usize];
        let out = dir.path().join(format!("{name}.bin"));
        let o = UnpackOptions {
            threads: 2,
            tensor: Some(name.into()),
            ..UnpackOptions::default()
        };
        unpack_path(&pp, &out, &o, &|_, _| {}).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), want, "{name}");
    }
}
