//! crunch's own format for every kind of compressed layer, written and read back through
//! `Checkpoint::open`: the loaded model must compute what a model whose weights are the layers'
//! `CompressedLayer::dense()` values computes; damaged files must be refused by name. Also the
//! compressed-tensors sparse-24-bitmask layout, decoded here from its description in
//! `sparse24_bitmask_decompress` (compressed-tensors), not from the writer.

mod common;

use common::compress_each;
use crunch_compress::{magnitude, rtn};
use crunch_export::{crunch_dir, sparse24, Target};
use crunch_formats::safetensors::{write_file, OwnedTensor, SafetensorsFile};
use crunch_formats::{DType, TensorSource};
use crunch_model::testing::relative_error;
use crunch_model::Checkpoint;
use crunch_repr::format::{layer_recipes, Recipe};
use crunch_repr::{
    Bitmask, Compressed, CompressedLayer, Factored, PrunedWeight, QuantSpec, Sparsity,
};
use crunch_runtime::{Backend, Cpu};
use half::f16;
use std::collections::BTreeMap;
use std::path::Path;

const IDS: [u32; 12] = [1, 5, 9, 17, 33, 65, 2, 127, 64, 3, 8, 100];

fn open_tiny(dir: &Path) -> Checkpoint {
    common::open_tiny("llama", dir, 7)
}

fn f16_round(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

/// Deterministic small values for factors.
fn wave(n: usize, phase: f32, scale: f32) -> Vec<f32> {
    f16_round(
        &(0..n)
            .map(|i| scale * (i as f32 * 0.731 + phase).sin())
            .collect::<Vec<_>>(),
    )
}

#[derive(Clone, Copy, Debug)]
enum Variant {
    Quantized,
    Unstructured,
    TwoFour,
    PrunedQuantized,
    Factored,
    QuantizedCorrected,
    TwoFourCorrected,
    /// A lookup-table weight (decision 143): codes indexing per-row codebooks.
    Lut,
    /// GPTQ 3-bit g16 with 6-bit coded group scales (decision 145).
    CodedScales,
}

const VARIANTS: [Variant; 9] = [
    Variant::CodedScales,
    Variant::Lut,
    Variant::Quantized,
    Variant::Unstructured,
    Variant::TwoFour,
    Variant::PrunedQuantized,
    Variant::Factored,
    Variant::QuantizedCorrected,
    Variant::TwoFourCorrected,
];

fn pruned(w: &[f32], rows: usize, cols: usize, s: Sparsity) -> PrunedWeight {
    // Values are stored as f16: prune the f16-rounded weight, so storage is exact.
    magnitude(&f16_round(w), rows, cols, s).unwrap()
}

fn compress(v: Variant, w: &[f32], rows: usize, cols: usize) -> CompressedLayer {
    let spec = QuantSpec::new(4, Some(32), false);
    let correction = Factored {
        rows,
        cols,
        rank: 3,
        a: wave(rows * 3, 0.3, 0.05),
        b: wave(3 * cols, 1.1, 0.05),
    };
    let (method, main) = match v {
        Variant::Quantized | Variant::QuantizedCorrected => (
            "rtn",
            Compressed::Quantized(rtn(w, rows, cols, spec, false).unwrap()),
        ),
        Variant::Unstructured => (
            "magnitude",
            Compressed::Pruned(pruned(w, rows, cols, Sparsity::Unstructured(0.5))),
        ),
        Variant::TwoFour | Variant::TwoFourCorrected => (
            "magnitude",
            Compressed::Pruned(pruned(w, rows, cols, Sparsity::NM { n: 2, m: 4 })),
        ),
        Variant::PrunedQuantized => {
            // Joint: codes of the pruned matrix; RTN maps the zeros to the zero point's code.
            let mut p = pruned(w, rows, cols, Sparsity::Unstructured(0.5));
            let q = rtn(&p.weight, rows, cols, spec, false).unwrap();
            p.weight = q.dequantize();
            p.mask.apply(&mut p.weight).unwrap();
            p.quant = Some(q);
            p.validate().unwrap();
            ("sparsegpt", Compressed::Pruned(p))
        }
        Variant::Lut => {
            let mut h = crunch_compress::Hessian::new(cols);
            h.add_batch(&wave(3 * cols * cols, 0.7, 1.0));
            let spec = crunch_repr::LutSpec::new(3, None);
            let opts = crunch_compress::LutOptions::default();
            let q = crunch_compress::gptq_lut(w, rows, cols, &h, spec, &opts).unwrap();
            ("lut", Compressed::Lut(q))
        }
        Variant::CodedScales => {
            let mut h = crunch_compress::Hessian::new(cols);
            h.add_batch(&wave(3 * cols * cols, 0.7, 1.0));
            let spec = QuantSpec::new(3, Some(16), false).with_scale_bits(Some(6));
            let opts = crunch_compress::GptqOptions::default();
            let q = crunch_compress::gptq(w, rows, cols, &h, spec, &opts).unwrap();
            ("gptq", Compressed::Quantized(q))
        }
        Variant::Factored => {
            let rank = 5;
            let f = Factored {
                rows,
                cols,
                rank,
                a: wave(rows * rank, 0.0, 0.3),
                b: wave(rank * cols, 2.0, 0.3),
            };
            ("whitened-svd", Compressed::Factored(f))
        }
    };
    let mut layer = CompressedLayer::new(method, main);
    if matches!(v, Variant::QuantizedCorrected | Variant::TwoFourCorrected) {
        layer.correction = Some(correction);
    }
    layer
}

/// Every block linear but one (left dense) compressed as `v`.
fn compress_all(ckpt: &Checkpoint, v: Variant) -> BTreeMap<String, CompressedLayer> {
    compress_each(ckpt, |w, rows, cols| compress(v, w, rows, cols))
}

fn recipe(layers: &BTreeMap<String, CompressedLayer>) -> Recipe {
    Recipe::new("tiny", vec!["test".into()], layer_recipes(layers))
}

fn logits(model: &crunch_model::Model<Cpu>) -> Vec<f32> {
    Cpu.to_f32(&model.forward(&IDS).unwrap()).unwrap()
}

/// `ckpt` loaded with `layers` replaced by their dense values.
fn dense_model(
    ckpt: &Checkpoint,
    layers: &BTreeMap<String, CompressedLayer>,
) -> crunch_model::Model<Cpu> {
    let mut want = ckpt.load(Cpu, |_| {}).unwrap();
    for (name, layer) in layers {
        let (l, rest) = name["model.layers.".len()..].split_once('.').unwrap();
        let lin = want.blocks[l.parse::<usize>().unwrap()]
            .linear_mut(rest)
            .unwrap_or_else(|| panic!("{name}"));
        let (rows, cols) = layer.shape();
        lin.weight = Cpu.upload(layer.dense(), &[rows, cols]).unwrap();
    }
    want
}

fn write(ckpt: &Checkpoint, layers: &BTreeMap<String, CompressedLayer>, out: &Path) {
    crunch_dir::write(ckpt, layers, &recipe(layers), &Target::new(out)).unwrap();
}

#[test]
fn every_variant_round_trips_to_the_dense_model() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = open_tiny(&tmp.path().join("src"));
    for v in VARIANTS {
        let layers = compress_all(&ckpt, v);
        let out = tmp.path().join(format!("{v:?}"));
        write(&ckpt, &layers, &out);

        // The expectation: the original model with each layer's dense() weight.
        let want = dense_model(&ckpt, &layers);

        let back = Checkpoint::open(&out).unwrap();
        let mut model = back.load(Cpu, |_| {}).unwrap();
        let down = model.blocks[1].linear_mut("mlp.down_proj").unwrap();
        assert!(down.is_dense());
        let q = &model.blocks[0].q;
        match v {
            Variant::Factored => assert!(q.up.is_some() && q.correction.is_none(), "{v:?}"),
            Variant::QuantizedCorrected | Variant::TwoFourCorrected => {
                assert!(q.up.is_none() && q.correction.is_some(), "{v:?}")
            }
            _ => assert!(q.is_dense(), "{v:?}"),
        }
        let err = relative_error(&logits(&model), &logits(&want));
        assert!(err < 1e-5, "{v:?}: relative error {err}");

        // P.weight reads as the main compression made dense (the correction added apart).
        for (name, layer) in &layers {
            let (rows, cols) = layer.shape();
            let w = back
                .weights
                .read(&format!("{name}.weight"), &[rows, cols], &back.config)
                .unwrap();
            let main = layer.main.dense();
            let e = relative_error(&w, &main);
            assert!(e < 1e-6, "{v:?} {name}: {e}");
        }
        let summary = back.summary();
        assert!(
            summary.dtypes.keys().any(|k| k.contains("sparse")
                || k.contains("rank")
                || k.starts_with("INT")
                || k.starts_with("LUT")),
            "{v:?}: {:?}",
            summary.dtypes
        );
    }
}

#[test]
fn summary_names_each_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = open_tiny(&tmp.path().join("src"));
    let expect = [
        (Variant::TwoFour, "2:4 sparse F16"),
        (Variant::Unstructured, "0.5 sparse F16"),
        (Variant::PrunedQuantized, "0.5 sparse INT4 g32"),
        (Variant::Factored, "rank 5 F16"),
        (Variant::QuantizedCorrected, "INT4 g32 + EoRA r3"),
    ];
    for (v, key) in expect {
        let layers = compress_all(&ckpt, v);
        let out = tmp.path().join(format!("{v:?}"));
        write(&ckpt, &layers, &out);
        let s = Checkpoint::open(&out).unwrap().summary();
        assert_eq!(
            s.dtypes.get(key).map(|e| e.0),
            Some(layers.len()),
            "{v:?}: {:?}",
            s.dtypes
        );
    }
}

/// Rewrites `dir`'s model.safetensors with `edit` applied to its tensors.
fn edit_tensors(dir: &Path, edit: impl FnOnce(&mut Vec<OwnedTensor>)) {
    let path = dir.join("model.safetensors");
    let mut tensors: Vec<OwnedTensor> = {
        let st = SafetensorsFile::open(&path).unwrap();
        st.tensors()
            .into_iter()
            .map(|t| OwnedTensor {
                data: st.raw(&t.name).unwrap().to_vec(),
                name: t.name,
                dtype: t.dtype,
                shape: t.shape,
            })
            .collect()
    };
    edit(&mut tensors);
    let meta = BTreeMap::from([("format".to_string(), "crunch".to_string())]);
    write_file(&path, &tensors, &meta).unwrap();
}

fn open_err(dir: &Path) -> String {
    match Checkpoint::open(dir) {
        Ok(_) => panic!("{} opened", dir.display()),
        Err(e) => e.to_string(),
    }
}

const Q: &str = "model.layers.0.self_attn.q_proj";

#[test]
fn damaged_layers_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = open_tiny(&tmp.path().join("src"));
    let cases: [(Variant, &str); 8] = [
        (Variant::CodedScales, "qscodes"),
        (Variant::CodedScales, "qrscales"),
        (Variant::CodedScales, "qzeros"),
        (Variant::Factored, "lr_a"),
        (Variant::TwoFour, "nm_values"),
        (Variant::TwoFour, "nm_indices"),
        (Variant::Unstructured, "mask"),
        (Variant::QuantizedCorrected, "eora_b"),
    ];
    for (i, (v, suffix)) in cases.into_iter().enumerate() {
        let layers = compress_all(&ckpt, v);
        let name = format!("{Q}.{suffix}");
        // Truncated: one element short.
        let out = tmp.path().join(format!("short{i}"));
        write(&ckpt, &layers, &out);
        edit_tensors(&out, |ts| {
            let t = ts.iter_mut().find(|t| t.name == name).unwrap();
            let width = t.data.len() / t.shape.iter().product::<usize>();
            *t.shape.last_mut().unwrap() -= 1;
            t.data.truncate(t.shape.iter().product::<usize>() * width);
        });
        let e = open_err(&out);
        assert!(e.contains(&name) && e.contains("model.safetensors"), "{e}");
        // Missing.
        let out = tmp.path().join(format!("missing{i}"));
        write(&ckpt, &layers, &out);
        edit_tensors(&out, |ts| ts.retain(|t| t.name != name));
        let e = open_err(&out);
        assert!(e.contains(&name) && e.contains("lacks"), "{e}");
    }

    // A recipe whose rank disagrees with the stored factors.
    let layers = compress_all(&ckpt, Variant::Factored);
    let out = tmp.path().join("rank");
    write(&ckpt, &layers, &out);
    let path = out.join("crunch.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"rank\": 5", "\"rank\": 4")).unwrap();
    let e = open_err(&out);
    assert!(e.contains(".lr_a") && e.contains("[64, 5]"), "{e}");

    // Unstructured values that disagree with the mask load with an error, not a panic.
    let layers = compress_all(&ckpt, Variant::Unstructured);
    let out = tmp.path().join("values");
    write(&ckpt, &layers, &out);
    let name = format!("{Q}.values");
    edit_tensors(&out, |ts| {
        let t = ts.iter_mut().find(|t| t.name == name).unwrap();
        t.shape[0] -= 1;
        t.data.truncate(t.data.len() - 2);
    });
    let back = Checkpoint::open(&out).unwrap();
    let e = back.load(Cpu, |_| {}).err().unwrap().to_string();
    assert!(e.contains(&name) && e.contains("keeps"), "{e}");
}

/// Coded group scales (decision 145) read back bit for bit, in exactly the bytes the layout
/// says fewer than free f16 scales at the same group size; a scale code out of range is
/// refused by name.
#[test]
fn coded_scales_read_back_exactly_and_smaller() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = open_tiny(&tmp.path().join("src"));
    let coded = compress_all(&ckpt, Variant::CodedScales);
    let out = tmp.path().join("coded");
    write(&ckpt, &coded, &out);
    let back = Checkpoint::open(&out).unwrap();
    for (name, layer) in &coded {
        let (rows, cols) = layer.shape();
        let w = back
            .weights
            .read(&format!("{name}.weight"), &[rows, cols], &back.config)
            .unwrap();
        assert!(w == layer.main.dense(), "{name}");
    }
    // The same codes, zeros and (decoded) scales stored as free f16 scales.
    let free: BTreeMap<String, CompressedLayer> = coded
        .iter()
        .map(|(n, l)| {
            let mut q = l.main.quantized().unwrap().clone();
            q.spec.scale_bits = None;
            (
                n.clone(),
                CompressedLayer::new("gptq", Compressed::Quantized(q)),
            )
        })
        .collect();
    let out_free = tmp.path().join("free");
    write(&ckpt, &free, &out_free);
    // Tensor bytes (the safetensors header, one entry per tensor, aside).
    let data = |d: &Path| -> usize {
        let st = SafetensorsFile::open(d.join("model.safetensors")).unwrap();
        st.tensors()
            .iter()
            .map(|t| st.raw(&t.name).unwrap().len())
            .sum()
    };
    // Free: f16 scales and byte zero points per group. Coded: 6-bit codes and 3-bit zero
    // points packed, one f16 row scale per row.
    let packed = |n: usize, bits: usize| (n * bits).div_ceil(8);
    let want: usize = coded
        .values()
        .map(|l| {
            let (rows, cols) = l.shape();
            let n = rows * cols.div_ceil(16);
            3 * n - (packed(n, 6) + 2 * rows + packed(n, 3))
        })
        .sum();
    assert_eq!(data(&out_free) - data(&out), want);
    // A scale code of 0 (not a code) is refused, naming the tensor.
    let name = format!("{Q}.qscodes");
    edit_tensors(&out, |ts| {
        let t = ts.iter_mut().find(|t| t.name == name).unwrap();
        t.data.iter_mut().for_each(|b| *b = 0);
    });
    let back = Checkpoint::open(&out).unwrap();
    let e = back.load(Cpu, |_| {}).err().unwrap().to_string();
    assert!(e.contains(&name), "{e}");
}

#[test]
fn writer_refuses_a_recipe_that_misdescribes_a_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = open_tiny(&tmp.path().join("src"));
    let layers = compress_all(&ckpt, Variant::TwoFour);
    let mut r = recipe(&layers);
    r.layers.get_mut(Q).unwrap().sparsity = Some("0.5".into());
    let e = crunch_dir::write(&ckpt, &layers, &r, &Target::new(&tmp.path().join("o"))).unwrap_err();
    assert!(e.to_string().contains(Q), "{e}");
    r.layers.remove(Q);
    let e = crunch_dir::write(&ckpt, &layers, &r, &Target::new(&tmp.path().join("o"))).unwrap_err();
    assert!(e.to_string().contains("no entry"), "{e}");
}

#[test]
fn sparse24_bitmask_layout_decodes_to_the_pruned_weight() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = open_tiny(&tmp.path().join("src"));
    let layers = compress_all(&ckpt, Variant::TwoFour);
    let out = tmp.path().join("ct");
    sparse24::write(&ckpt, &layers, &recipe(&layers), &Target::new(&out)).unwrap();

    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    let qc = &config["quantization_config"];
    assert_eq!(qc["quant_method"], "compressed-tensors");
    let sc = &qc["sparsity_config"];
    assert_eq!(sc["format"], "sparse-24-bitmask");
    assert_eq!(sc["sparsity_structure"], "2:4");
    let targets: Vec<String> = serde_json::from_value(sc["targets"].clone()).unwrap();
    assert_eq!(targets, layers.keys().cloned().collect::<Vec<_>>());
    assert!(!out.join("crunch.json").exists());

    let st = SafetensorsFile::open(out.join("model.safetensors")).unwrap();
    for (name, layer) in &layers {
        let (rows, cols) = layer.shape();
        assert!(st.info(&format!("{name}.weight")).is_none());
        let info = |s: &str| st.info(&format!("{name}.{s}")).unwrap();
        let (c, b, s) = (info("compressed"), info("bitmask"), info("shape"));
        assert_eq!((c.dtype, c.shape), (DType::F32, vec![rows, cols / 2]));
        assert_eq!(
            (b.dtype, b.shape),
            (DType::U8, vec![rows, cols.div_ceil(8)])
        );
        assert_eq!((s.dtype, s.shape), (DType::I64, vec![2, 1]));
        let shape: Vec<i64> = st
            .raw(&format!("{name}.shape"))
            .unwrap()
            .chunks(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(shape, [rows as i64, cols as i64]);
        // numpy.unpackbits(axis=-1, count=cols, bitorder="little"), then
        // dense[bytemask] = values.flatten() (row-major order of the set bits).
        let bits = st.raw(&format!("{name}.bitmask")).unwrap();
        let values = st.read_f32(&format!("{name}.compressed")).unwrap();
        let row_bytes = cols.div_ceil(8);
        let mut next = values.iter();
        let mut dense = vec![0.0f32; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                if bits[r * row_bytes + c / 8] >> (c % 8) & 1 == 1 {
                    dense[r * cols + c] = *next.next().expect("more set bits than values");
                }
            }
        }
        assert!(next.next().is_none(), "{name}: more values than set bits");
        assert_eq!(dense, layer.dense(), "{name}");
    }

    // Anything but unquantized 2:4 is refused.
    for v in [
        Variant::Unstructured,
        Variant::Factored,
        Variant::TwoFourCorrected,
    ] {
        let layers = compress_all(&ckpt, v);
        let e = sparse24::write(
            &ckpt,
            &layers,
            &recipe(&layers),
            &Target::new(&tmp.path().join("x")),
        )
        .unwrap_err();
        assert!(e.to_string().contains("sparse-24-bitmask"), "{v:?}: {e}");
    }
}

#[test]
fn bitmask_is_row_padded_for_odd_widths() {
    // A row of 12 columns: its mask takes two bytes of its own.
    let w: Vec<f32> = (0..24).map(|i| (i % 4) as f32 + 1.0).collect();
    let p = magnitude(&w, 2, 12, Sparsity::NM { n: 2, m: 4 }).unwrap();
    let t = sparse24::layer_tensors("x", &p).unwrap();
    assert_eq!(t[1].shape, vec![2, 2]);
    // Kept: columns 2, 3 of every group (the larger values), bits LSB first.
    assert_eq!(t[1].data, [0b1100_1100, 0b1100, 0b1100_1100, 0b1100]);
    let kept = Bitmask::from_bytes(2, 12, vec![0b1100_1100, 0b1100_1100, 0b1100_1100]).unwrap();
    assert_eq!(p.mask, kept);
}

#[test]
fn kept_tensors_of_a_bf16_source_keep_their_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    open_tiny(&src);
    // The same model stored in BF16, as released checkpoints are.
    let path = src.join("model.safetensors");
    let tensors: Vec<OwnedTensor> = {
        let st = SafetensorsFile::open(&path).unwrap();
        st.tensors()
            .into_iter()
            .map(|t| {
                let v = st.read_f32(&t.name).unwrap();
                OwnedTensor {
                    data: v
                        .iter()
                        .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                        .collect(),
                    name: t.name,
                    dtype: DType::BF16,
                    shape: t.shape,
                }
            })
            .collect()
    };
    write_file(&path, &tensors, &BTreeMap::new()).unwrap();
    let ckpt = Checkpoint::open(&src).unwrap();
    let layers = compress_all(&ckpt, VARIANTS[0]);
    let out = tmp.path().join("out");
    write(&ckpt, &layers, &out);

    let written = SafetensorsFile::open(out.join("model.safetensors")).unwrap();
    let embed = "model.embed_tokens.weight";
    assert_eq!(written.info(embed).unwrap().dtype, DType::BF16);
    assert_eq!(
        written.raw(embed).unwrap(),
        SafetensorsFile::open(&path).unwrap().raw(embed).unwrap()
    );
    // And the model reads back to the same logits as one made from the dense layers.
    let back = Checkpoint::open(&out).unwrap().load(Cpu, |_| {}).unwrap();
    let want = dense_model(&ckpt, &layers);
    let err = relative_error(&logits(&back), &logits(&want));
    assert!(err < 1e-5, "relative error {err}");
}

/// A GGUF source's block-quantized tensors that are not compressed keep their blocks in
/// crunch's format (decision 093): the Q8_0 token embedding stays Q8_0 bytes, never f32, and
/// the output computes the same logits as the GGUF it came from, its blocks also handed to
/// packed-weight backends without a copy to f32.
#[test]
fn kept_tensors_of_a_gguf_source_keep_their_blocks() {
    use crunch_formats::gguf::quants::Codec;
    use crunch_model::testing::{tiny_gguf, tiny_specs};
    let tmp = tempfile::tempdir().unwrap();
    let spec = tiny_specs().into_iter().next().unwrap();
    let mut parts = tiny_gguf(&spec, "llama");
    let t = parts
        .tensors
        .iter_mut()
        .find(|t| t.0 == "token_embd.weight")
        .unwrap();
    let cols = t.1[1];
    let values: Vec<f32> =
        t.3.chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
    let blocks = Codec::new(DType::Q8_0)
        .unwrap()
        .encode_rows(&values, cols, None)
        .unwrap();
    (t.2, t.3) = (DType::Q8_0, blocks.clone());
    let src = tmp.path().join("tiny.gguf");
    std::fs::write(&src, parts.to_bytes()).unwrap();
    let ckpt = Checkpoint::open(&src).unwrap();
    let layers = compress_all(&ckpt, VARIANTS[0]);
    let out = tmp.path().join("out");
    write(&ckpt, &layers, &out);

    let embed = "model.embed_tokens.weight";
    let written = SafetensorsFile::open(out.join("model.safetensors")).unwrap();
    assert_eq!(written.info(embed).unwrap().dtype, DType::Q8_0);
    assert_eq!(written.raw(embed).unwrap(), &blocks[..]);
    let back = Checkpoint::open(&out).unwrap();
    let raw = back
        .weights
        .raw_blocks(embed, &[back.config.vocab, cols])
        .unwrap();
    assert_eq!(
        (raw.dtype, &raw.buffer[raw.range]),
        (DType::Q8_0, &blocks[..])
    );
    let back = back.load(Cpu, |_| {}).unwrap();
    let want = dense_model(&ckpt, &layers);
    let err = relative_error(&logits(&back), &logits(&want));
    assert!(err < 1e-5, "relative error {err}");
}

/// Gemma 3, Phi-3 (fused layers) and the MoE models through crunch's format: quantized,
/// factored and corrected layers load back into the model their dense weights make, and the
/// recipe carries each expert's calibration record.
#[test]
fn new_architectures_round_trip_through_crunch_format() {
    use crunch_repr::ExpertCalibration;
    for arch in ["gemma3", "phi3", "mixtral", "qwen3_moe"] {
        let tmp = tempfile::tempdir().unwrap();
        let ckpt = common::open_tiny(arch, &tmp.path().join("src"), 7);
        for v in [
            Variant::Quantized,
            Variant::Factored,
            Variant::QuantizedCorrected,
        ] {
            let mut layers = compress_all(&ckpt, v);
            for (name, layer) in layers.iter_mut() {
                if name.contains(".experts.") {
                    layer.expert = Some(ExpertCalibration {
                        routed_tokens: 3,
                        all_tokens: true,
                        tokens: 40,
                    });
                }
            }
            let out = tmp.path().join(format!("{v:?}"));
            write(&ckpt, &layers, &out);
            let want = dense_model(&ckpt, &layers);
            let back = Checkpoint::open(&out).unwrap();
            let model = back.load(Cpu, |_| {}).unwrap();
            let err = relative_error(&logits(&model), &logits(&want));
            assert!(err < 1e-5, "{arch} {v:?}: relative error {err}");
            let recipe = back.recipe.as_ref().unwrap();
            let experts: Vec<_> = recipe
                .layers
                .iter()
                .filter_map(|(n, r)| Some((n, r.expert_calibration.as_ref()?)))
                .collect();
            let moe = ckpt.config.moe.is_some();
            assert_eq!(!experts.is_empty(), moe, "{arch}");
            for (n, e) in experts {
                assert!(n.contains(".experts."), "{n}");
                assert_eq!((e.statistics.as_str(), e.routed_tokens), ("all-tokens", 3));
            }
        }
    }
}
