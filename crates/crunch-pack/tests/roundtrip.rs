//! Bit-exact round trips: random tensors of every dtype and size (empty and odd included),
//! GGUF block-quantised files, directories, single-tensor extraction, and output bytes that do
//! not depend on the thread count.

mod common;

use common::{
    gguf, q4_1_blocks, q8_0_blocks, safetensors, tensor, tensor_bytes, Rng, Values, DTYPES,
};
use crunch_pack::{pack_bytes, pack_path, unpack_bytes, unpack_path, PackOptions, UnpackOptions};
use proptest::prelude::*;
use std::path::Path;

fn opts(chunk_size: usize, threads: usize) -> PackOptions {
    PackOptions {
        threads,
        chunk_size,
        ..PackOptions::default()
    }
}

fn round_trip(data: &[u8], o: &PackOptions) -> Vec<u8> {
    let (packed, report) = pack_bytes("model.safetensors", data, o).unwrap();
    assert_eq!(report.input_bytes, data.len() as u64);
    assert_eq!(report.output_bytes, packed.len() as u64);
    let files = unpack_bytes(&packed, u64::MAX).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].0, "model.safetensors");
    assert!(files[0].1 == data, "round trip differs");
    packed
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_safetensors_round_trip(
        specs in proptest::collection::vec((0usize..DTYPES.len(), 0usize..2500), 0..7),
        trailer in proptest::collection::vec(any::<u8>(), 0..9),
        chunk in 1usize..5000,
        seed in any::<u64>(),
    ) {
        let mut rng = Rng(seed);
        let tensors: Vec<_> = specs
            .iter()
            .enumerate()
            .map(|(i, &(d, n))| {
                let (dtype, _) = DTYPES[d];
                (format!("layer.{i}.weight"), dtype, vec![n], tensor_bytes(&mut rng, dtype, n))
            })
            .collect();
        let data = safetensors(&tensors, &trailer);
        let packed = round_trip(&data, &opts(chunk, 1));
        // Same bytes whatever the thread count.
        let (again, _) = pack_bytes("model.safetensors", &data, &opts(chunk, 2)).unwrap();
        prop_assert!(again == packed);
    }

    #[test]
    fn arbitrary_bytes_round_trip(data in proptest::collection::vec(any::<u8>(), 0..3000), chunk in 1usize..700) {
        round_trip(&data, &opts(chunk, 1));
    }
}

#[test]
fn empty_and_tiny_inputs_round_trip() {
    for data in [
        &b""[..],
        b"x",
        b"\0\0\0\0\0\0\0\0{",
        b"GGUF",
        b"GGUF\x03\0\0\0",
    ] {
        round_trip(data, &PackOptions::default());
    }
}

#[test]
fn float_tensors_compress_and_stay_near_the_entropy_bound() {
    let mut rng = Rng(7);
    let tensors: Vec<_> = ["BF16", "F16", "F32"]
        .iter()
        .map(|d| {
            (
                format!("w.{d}"),
                *d,
                vec![300_000],
                tensor_bytes(&mut rng, d, 300_000),
            )
        })
        .collect();
    let data = safetensors(&tensors, b"");
    let (packed, report) = pack_bytes("m.safetensors", &data, &PackOptions::default()).unwrap();
    assert!(
        packed.len() < data.len() * 9 / 10,
        "{} of {}",
        packed.len(),
        data.len()
    );
    let over = report.output_bytes as f64 / report.entropy_bound_bytes() - 1.0;
    assert!(over < 0.02, "{:.2}% over the order-0 bound", over * 100.0);
    assert_eq!(report.tensors, 3);
    assert!(report.planes.contains_key("BF16:exponent"));
    assert_eq!(unpack_bytes(&packed, u64::MAX).unwrap()[0].1, data);
}

#[test]
fn gguf_block_tensors_are_split_and_round_trip() {
    let mut rng = Rng(11);
    let f32s: Vec<u8> = (0..1000)
        .flat_map(|_| rng.normal(1.0).to_le_bytes())
        .collect();
    let data = gguf(&[
        (
            "blk.0.attn_q.weight",
            3,
            vec![256, 40],
            q4_1_blocks(&mut rng, 320),
        ),
        (
            "token_embd.weight",
            8,
            vec![64, 50],
            q8_0_blocks(&mut rng, 100),
        ),
        ("blk.0.attn_norm.weight", 0, vec![1000], f32s),
        ("odd.weight", 99, vec![7], vec![1, 2, 3]),
    ]);
    let (packed, report) = pack_bytes("m.gguf", &data, &opts(4096, 1)).unwrap();
    assert_eq!(report.kinds.get("gguf"), Some(&1));
    assert_eq!(report.tensors, 3, "the unknown-type tensor stays opaque");
    assert!(report.planes.contains_key("Q4_1:bytes@4+16"));
    assert!(report.planes.contains_key("Q8_0:f16@0.exponent"));
    assert_eq!(unpack_bytes(&packed, u64::MAX).unwrap()[0].1, data);
}

#[test]
fn synthetic_quantised_safetensors_use_integer_and_scale_paths() {
    let mut rng = Rng(3);
    let t = vec![
        tensor(&mut rng, "q.qweight", "I32", &[64, 16]),
        tensor(&mut rng, "q.scales", "F16", &[64, 1]),
        tensor(&mut rng, "e.qweight", "U8", &[32, 64]),
        tensor(&mut rng, "e.scales", "BF16", &[32, 1]),
    ];
    let data = safetensors(&t, b"");
    let (packed, report) = pack_bytes("q.safetensors", &data, &PackOptions::default()).unwrap();
    assert!(report.planes.contains_key("I32:byte3"));
    assert!(report.planes.contains_key("U8:bytes"));
    assert_eq!(unpack_bytes(&packed, u64::MAX).unwrap()[0].1, data);
}

fn write(p: &Path, data: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

#[test]
fn files_directories_and_single_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let mut rng = Rng(5);
    let weights = vec![
        tensor(&mut rng, "a", "BF16", &[3000]),
        tensor(&mut rng, "b", "F32", &[777]),
    ];
    let st = safetensors(&weights, b"");
    write(&model.join("model.safetensors"), &st);
    write(
        &model.join("sub/tokenizer.json"),
        br#"{"model":{"vocab":{"a":0,"b":1}}}"#,
    );
    write(&model.join("empty.txt"), b"");
    write(
        &model.join("q.gguf"),
        &gguf(&[("t", 8, vec![32, 4], q8_0_blocks(&mut rng, 4))]),
    );
    let o = opts(1000, 2);
    let progress = |_: u64, _: u64| {};

    // Whole directory.
    let packed = dir.path().join("model.cpk");
    let report = pack_path(&model, &packed, &o, true, false, &progress).unwrap();
    assert_eq!(report.files, 4);
    let restored = dir.path().join("restored");
    unpack_path(&packed, &restored, &UnpackOptions::default(), &progress).unwrap();
    for f in [
        "model.safetensors",
        "sub/tokenizer.json",
        "empty.txt",
        "q.gguf",
    ] {
        assert_eq!(
            std::fs::read(restored.join(f)).unwrap(),
            std::fs::read(model.join(f)).unwrap(),
            "{f}"
        );
    }

    // One tensor, from the directory pack and from a single-file pack.
    let b_bytes = &weights[1].3;
    let one = dir.path().join("b.bin");
    let uo = UnpackOptions {
        tensor: Some("b".into()),
        ..UnpackOptions::default()
    };
    unpack_path(&packed, &one, &uo, &progress).unwrap();
    assert_eq!(&std::fs::read(&one).unwrap(), b_bytes);
    let single = dir.path().join("single.cpk");
    pack_path(
        &model.join("model.safetensors"),
        &single,
        &o,
        false,
        false,
        &progress,
    )
    .unwrap();
    let one2 = dir.path().join("b2.bin");
    unpack_path(&single, &one2, &uo, &progress).unwrap();
    assert_eq!(&std::fs::read(&one2).unwrap(), b_bytes);
    let missing = UnpackOptions {
        tensor: Some("nope".into()),
        ..UnpackOptions::default()
    };
    let err = unpack_path(&single, &dir.path().join("x.bin"), &missing, &progress).unwrap_err();
    assert!(err.to_string().contains("no tensor named `nope`"), "{err}");

    // Existing outputs are refused unless forced; the input is never the output.
    let err = pack_path(&model, &packed, &o, false, false, &progress).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    pack_path(&model, &packed, &o, false, true, &progress).unwrap();
    let err = unpack_path(&packed, &restored, &UnpackOptions::default(), &progress).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    let force = UnpackOptions {
        force: true,
        ..UnpackOptions::default()
    };
    unpack_path(&packed, &restored, &force, &progress).unwrap();
    assert_eq!(
        std::fs::read(restored.join("q.gguf")).unwrap(),
        std::fs::read(model.join("q.gguf")).unwrap()
    );
    let inside = model.join("inside.cpk");
    assert!(pack_path(&model, &inside, &o, false, false, &progress).is_err());
    let st_path = model.join("model.safetensors");
    assert!(pack_path(&st_path, &st_path, &o, false, true, &progress).is_err());
    assert_eq!(std::fs::read(&st_path).unwrap(), st);
}

#[test]
fn packs_written_by_earlier_builds_still_unpack() {
    // Fuzz seeds packed by crunch pack 1.0 before the decoder changes of 2026-11-28 (chunk
    // batching, in-place rANS words): the whole-file checksums prove the same bytes come out.
    let seeds: [&[u8]; 2] = [
        include_bytes!("../../../fuzz/seeds/unpack/seed1.safetensors.cpk"),
        include_bytes!("../../../fuzz/seeds/unpack/seed2.bin.cpk"),
    ];
    for packed in seeds {
        let files = unpack_bytes(packed, 1 << 30).unwrap();
        assert_eq!(files.len(), 1);
        assert!(!files[0].1.is_empty());
    }
}
