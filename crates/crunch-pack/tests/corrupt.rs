//! Damaged, truncated and hostile packed files: always an error that names the file, never a
//! panic, never silently wrong output, never a partial output under the final name.

mod common;

use common::{safetensors, tensor_bytes, Rng};
use crunch_pack::{pack_bytes, pack_path, unpack_bytes, unpack_path, PackOptions, UnpackOptions};
use proptest::prelude::*;

/// A small pack with several chunks per tensor, so damage can land in every structure.
fn sample() -> (Vec<u8>, Vec<u8>) {
    let mut rng = Rng(99);
    let t: Vec<_> = [("BF16", 5000), ("F32", 1500), ("I32", 700), ("U8", 3000)]
        .iter()
        .enumerate()
        .map(|(i, (d, n))| (format!("t{i}"), *d, vec![*n], tensor_bytes(&mut rng, d, *n)))
        .collect();
    let data = safetensors(&t, b"");
    let o = PackOptions {
        chunk_size: 4096,
        threads: 1,
        ..PackOptions::default()
    };
    (pack_bytes("m.safetensors", &data, &o).unwrap().0, data)
}

#[test]
fn every_truncation_is_an_error() {
    let (packed, _) = sample();
    for len in 0..packed.len() {
        assert!(
            unpack_bytes(&packed[..len], u64::MAX).is_err(),
            "truncated to {len} accepted"
        );
    }
}

#[test]
fn every_single_byte_flip_is_caught_or_harmless() {
    let (packed, data) = sample();
    for pos in 0..packed.len() {
        let mut bad = packed.clone();
        bad[pos] ^= 0x5A;
        match unpack_bytes(&bad, u64::MAX) {
            Err(_) => {}
            // A flip in bits a decoder never reads may be harmless; wrong output never is.
            Ok(files) => assert!(
                files[0].1 == data,
                "flip at {pos} gave wrong output silently"
            ),
        }
    }
}

#[test]
fn appended_or_prepended_bytes_are_errors() {
    let (packed, _) = sample();
    let mut longer = packed.clone();
    longer.push(0);
    assert!(unpack_bytes(&longer, u64::MAX).is_err());
    let mut shifted = vec![0u8];
    shifted.extend_from_slice(&packed);
    assert!(unpack_bytes(&shifted, u64::MAX).is_err());
}

#[test]
fn output_size_claims_are_bounded() {
    let (packed, data) = sample();
    let err = unpack_bytes(&packed, data.len() as u64 - 1).unwrap_err();
    assert!(
        err.to_string().contains("more output than allowed"),
        "{err}"
    );
}

#[test]
fn damaged_file_unpack_names_the_file_and_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let (mut packed, _) = sample();
    let n = packed.len();
    packed[n / 2] ^= 0xFF; // inside the chunk records
    let p = dir.path().join("bad.cpk");
    std::fs::write(&p, &packed).unwrap();
    let out = dir.path().join("restored.safetensors");
    let err = unpack_path(&p, &out, &UnpackOptions::default(), &|_, _| {}).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("bad.cpk"), "{msg}");
    assert!(!out.exists(), "partial output left under the final name");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("bad.cpk")],
        "temporary files left behind"
    );

    std::fs::write(&p, "definitely not a pack\n".repeat(10)).unwrap();
    let err = unpack_path(&p, &out, &UnpackOptions::default(), &|_, _| {}).unwrap_err();
    assert!(
        err.to_string().contains("not a crunch packed file"),
        "{err}"
    );
    let err = unpack_path(
        &dir.path().join("missing.cpk"),
        &out,
        &UnpackOptions::default(),
        &|_, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("missing.cpk"), "{err}");
    let err = pack_path(
        &dir.path().join("missing"),
        &out,
        &PackOptions::default(),
        false,
        false,
        &|_, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = unpack_bytes(&data, 1 << 24);
    }

    #[test]
    fn mutated_packs_never_panic_or_lie(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let (packed, data) = sample();
        let mut bad = packed.clone();
        for (pos, val, kind) in edits {
            let p = pos % (bad.len() + 1);
            match kind {
                0 if p < bad.len() => bad[p] = val,
                1 => bad.insert(p, val),
                _ if p < bad.len() => { bad.remove(p); }
                _ => {}
            }
        }
        if let Ok(files) = unpack_bytes(&bad, 1 << 24) {
            prop_assert!(files.len() == 1 && files[0].1 == data);
        }
    }
}
