//! The GGUF writer end to end on tiny models made in code: safetensors → GGUF gives the same
//! logits for every architecture; every encodable type round-trips through a whole-model file
//! into exactly the codec's values; a GGUF source's unchanged tensors are copied byte for byte;
//! importance files are read; bad outputs are refused.

use crunch_export::gguf::{self, Inputs, Mix, Preset};
use crunch_formats::gguf::quants::Codec;
use crunch_formats::gguf::{serialize, GgufFile, GgufValue};
use crunch_formats::{DType, TensorSource};
use crunch_model::testing::{
    reference_ids, relative_error, tiny_specs, tiny_tokenizer_json, write_tiny_model, TinySpec,
};
use crunch_model::Checkpoint;
use crunch_runtime::{Backend, Cpu};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[path = "common/every_type.rs"]
mod every_type;
use every_type::{every_type_mix, wide_llama};

fn write_hf(spec: &TinySpec, dir: &Path) {
    write_tiny_model(spec, dir, 0).unwrap();
    let vocab = spec.config["vocab_size"].as_u64().unwrap() as usize;
    std::fs::write(
        dir.join("tokenizer.json"),
        tiny_tokenizer_json(vocab).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        json!({"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
               "add_bos_token": false, "chat_template": "{{ messages }}"})
        .to_string(),
    )
    .unwrap();
}

fn logits(path: &Path, ids: &[u32]) -> Vec<f32> {
    let ckpt = Checkpoint::open(path).unwrap();
    let model = ckpt.load(Cpu, |_| {}).unwrap();
    Cpu.to_f32(&model.forward(ids).unwrap()).unwrap()
}

fn export(src: &Path, out: &Path, mix: &Mix, inputs: &Inputs<'_>) -> gguf::GgufPlan {
    let ckpt = Checkpoint::open(src).unwrap();
    let plan = gguf::plan(&ckpt, mix, &[]).unwrap();
    gguf::write(&ckpt, &plan, inputs, out, false, &mut |_, _, _| {}).unwrap();
    assert_eq!(
        std::fs::metadata(out).unwrap().len(),
        plan.file_bytes(),
        "planned size"
    );
    plan
}

/// Tolerance for F32 export: exact tensors, but Llama 3 scaling goes through f32
/// `rope_freqs` factors instead of f64 frequencies, a relative change of ~1e-7 per frequency.
const F32_TOLERANCE: f32 = 1e-5;

#[test]
fn safetensors_to_f32_gguf_keeps_the_logits_for_every_architecture() {
    let dense = ["llama", "mistral", "qwen2", "qwen3"];
    for spec in tiny_specs().into_iter().filter(|s| dense.contains(&s.name)) {
        let dir = tempfile::tempdir().unwrap();
        let hf = dir.path().join("hf");
        write_hf(&spec, &hf);
        let out = dir.path().join("m.gguf");
        export(&hf, &out, &Mix::preset(Preset::F32), &Inputs::default());
        let ids = reference_ids(128, 24);
        let err = relative_error(&logits(&out, &ids), &logits(&hf, &ids));
        assert!(err < F32_TOLERANCE, "{}: relative error {err}", spec.name);
        // The metadata llama.cpp needs: architecture, tokenizer, chat template.
        let f = GgufFile::open(&out).unwrap();
        let arch = f.architecture().unwrap().to_string();
        assert_eq!(
            arch,
            if spec.name == "mistral" {
                "llama"
            } else {
                spec.name
            }
        );
        assert_eq!(
            f.get(&format!("{arch}.block_count")).unwrap().as_u64(),
            Some(2)
        );
        assert_eq!(
            f.get("tokenizer.ggml.model").unwrap().as_str(),
            Some("gpt2")
        );
        assert_eq!(
            f.get("tokenizer.chat_template").unwrap().as_str(),
            Some("{{ messages }}")
        );
        assert_eq!(f.get("general.file_type").unwrap().as_u64(), Some(0));
        // Tied embeddings are written once.
        let tied = spec.config["tie_word_embeddings"].as_bool().unwrap();
        assert_eq!(f.info("output.weight").is_none(), tied, "{}", spec.name);
    }
}

fn hf_dir_with(spec: &TinySpec, dir: &Path) -> PathBuf {
    let hf = dir.join("hf");
    write_hf(spec, &hf);
    hf
}

#[test]
fn every_type_round_trips_through_a_whole_model_file() {
    let dir = tempfile::tempdir().unwrap();
    let hf = hf_dir_with(&wide_llama(), dir.path());
    let out = dir.path().join("m.gguf");
    let ckpt = Checkpoint::open(&hf).unwrap();
    // Importance for every matrix, uneven across columns.
    let plan0 = gguf::plan(&ckpt, &every_type_mix(), &[]).unwrap();
    let importance: gguf::Importance = plan0
        .tensors
        .iter()
        .filter(|t| t.shape.len() == 2)
        .map(|t| {
            let cols = t.shape[1];
            let w = (0..cols).map(|c| 0.1 + ((c * 37) % 11) as f32).collect();
            (t.name.clone(), w)
        })
        .collect();
    let inputs = Inputs {
        importance: Some(&importance),
        encoded: None,
    };
    let plan = export(&hf, &out, &every_type_mix(), &inputs);
    let f = GgufFile::open(&out).unwrap();
    let f32_dir = tempfile::tempdir().unwrap();
    let reference = f32_dir.path().join("f32.gguf");
    export(
        &hf,
        &reference,
        &Mix::preset(Preset::F32),
        &Inputs::default(),
    );
    let r = GgufFile::open(&reference).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for t in &plan.tensors {
        let info = f.info(&t.name).unwrap();
        assert_eq!(info.dtype, t.dtype, "{}", t.name);
        seen.insert(t.dtype.ggml_name());
        // The stored values are exactly the codec's encoding of the source (in llama.cpp's
        // layout), weighted by the importance given.
        let src = r.read_f32(&t.name).unwrap();
        let got = f.read_f32(&t.name).unwrap();
        let want: Vec<f32> = match Codec::new(t.dtype) {
            Some(c) => {
                let cols = t.shape[1];
                let bytes = c
                    .encode_rows(&src, cols, importance.get(&t.name).map(Vec::as_slice))
                    .unwrap();
                let mut v = vec![0f32; src.len()];
                crunch_formats::gguf::dequantize(t.dtype, &bytes, &mut v).unwrap();
                v
            }
            None => match t.dtype {
                DType::F16 => src
                    .iter()
                    .map(|&v| half::f16::from_f32(v).to_f32())
                    .collect(),
                DType::BF16 => src
                    .iter()
                    .map(|&v| half::bf16::from_f32(v).to_f32())
                    .collect(),
                _ => src.clone(),
            },
        };
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{} ({}) differs from the codec's values",
            t.name,
            t.dtype.ggml_name()
        );
    }
    for want in [
        "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS", "IQ4_NL", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
        "Q8_0", "F16", "BF16", "F32",
    ] {
        assert!(seen.contains(want), "no {want} tensor in {seen:?}");
    }
    // The quantized model runs and stays close to the original: with types down to 2 bits on
    // random weights the logits are not equal, but their cosine similarity stays above 0.9.
    let ids = reference_ids(256, 16);
    let (q, o) = (logits(&out, &ids), logits(&hf, &ids));
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum::<f64>();
    let cos = dot(&q, &o) / (dot(&q, &q) * dot(&o, &o)).sqrt();
    assert!(cos > 0.9, "quantized logits cosine similarity {cos}");
    // Same inputs, same bytes.
    let again = dir.path().join("again.gguf");
    export(&hf, &again, &every_type_mix(), &inputs);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
}

#[test]
fn a_gguf_source_keeps_unchanged_tensors_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let hf = hf_dir_with(&wide_llama(), dir.path());
    let q = dir.path().join("q.gguf");
    export(&hf, &q, &every_type_mix(), &Inputs::default());
    // Re-export with the same types: every tensor is copied, metadata carried over.
    let again = dir.path().join("again.gguf");
    export(&q, &again, &every_type_mix(), &Inputs::default());
    let (a, b) = (GgufFile::open(&q).unwrap(), GgufFile::open(&again).unwrap());
    for t in a.tensors() {
        assert_eq!(
            a.raw(&t.name).unwrap(),
            b.raw(&t.name).unwrap(),
            "{}",
            t.name
        );
    }
    for (k, v) in a.metadata() {
        assert_eq!(b.get(k), Some(v), "{k}");
    }
    // A different preset re-encodes the quantized tensors but copies what stays the same.
    let q8 = dir.path().join("q8.gguf");
    export(&q, &q8, &Mix::preset(Preset::Q8_0), &Inputs::default());
    let c = GgufFile::open(&q8).unwrap();
    assert_eq!(c.info("blk.0.attn_q.weight").unwrap().dtype, DType::Q8_0);
    assert_eq!(
        c.raw("blk.1.ffn_gate.weight").unwrap(),
        a.raw("blk.1.ffn_gate.weight").unwrap(),
        "a Q8_0 tensor stays as it was"
    );
    assert_eq!(c.get("general.file_type").unwrap().as_u64(), Some(7));
    // And it still loads and runs.
    let ids = reference_ids(256, 8);
    assert!(logits(&q8, &ids).iter().all(|v| v.is_finite()));
}

#[test]
fn pre_encoded_tensors_are_written_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let hf = hf_dir_with(&wide_llama(), dir.path());
    let ckpt = Checkpoint::open(&hf).unwrap();
    let mix = Mix::preset(Preset::Q4_K_M);
    let plan = gguf::plan(&ckpt, &mix, &[]).unwrap();
    let t = plan
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.attn_q.weight")
        .unwrap();
    let bytes: Vec<u8> = (0..t.bytes).map(|i| (i % 7) as u8).collect();
    let encoded = BTreeMap::from([(t.name.clone(), bytes.clone())]);
    let out = dir.path().join("m.gguf");
    let inputs = Inputs {
        importance: None,
        encoded: Some(&encoded),
    };
    gguf::write(&ckpt, &plan, &inputs, &out, false, &mut |_, _, _| {}).unwrap();
    assert_eq!(
        GgufFile::open(&out).unwrap().raw(&t.name).unwrap(),
        &bytes[..]
    );
    // The wrong size is refused and leaves nothing behind.
    let short = BTreeMap::from([(t.name.clone(), vec![0u8; 3])]);
    let inputs = Inputs {
        importance: None,
        encoded: Some(&short),
    };
    let out2 = dir.path().join("bad.gguf");
    let e = gguf::write(&ckpt, &plan, &inputs, &out2, false, &mut |_, _, _| {}).unwrap_err();
    assert!(e.to_string().contains("pre-encoded"), "{e}");
    assert!(!out2.exists());
}

/// The error writing `plan` (no importance) to `out` gives.
fn write_err(ckpt: &Checkpoint, plan: &gguf::GgufPlan, out: &Path, overwrite: bool) -> String {
    gguf::write(
        ckpt,
        plan,
        &Inputs::default(),
        out,
        overwrite,
        &mut |_, _, _| {},
    )
    .unwrap_err()
    .to_string()
}

#[test]
fn bad_outputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let hf = hf_dir_with(&wide_llama(), dir.path());
    let out = dir.path().join("m.gguf");
    export(&hf, &out, &Mix::preset(Preset::Q8_0), &Inputs::default());
    let before = std::fs::read(&out).unwrap();
    let ckpt = Checkpoint::open(&out).unwrap();
    let plan = gguf::plan(&ckpt, &Mix::preset(Preset::Q8_0), &[]).unwrap();
    // Onto its own input, even with overwrite.
    let e = write_err(&ckpt, &plan, &out, true);
    assert!(e.contains("is the input"), "{e}");
    // Onto an existing file without overwrite.
    let other = dir.path().join("other.gguf");
    std::fs::write(&other, b"keep").unwrap();
    let e = write_err(&ckpt, &plan, &other, false);
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(std::fs::read(&other).unwrap(), b"keep");
    // A type crunch reads but does not write.
    let mix = Mix {
        overrides: vec![("attn_q".into(), DType::IQ2XXS)],
        ..Mix::preset(Preset::Q8_0)
    };
    let plan = gguf::plan(&ckpt, &mix, &[]).unwrap();
    let bad = dir.path().join("iq2.gguf");
    let e = write_err(&ckpt, &plan, &bad, false);
    assert!(e.contains("does not encode IQ2_XXS"), "{e}");
    assert!(!bad.exists());
    assert_eq!(std::fs::read(&out).unwrap(), before);
}

#[test]
fn llama_cpp_importance_files_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("imatrix.gguf");
    let sums: Vec<u8> = [2f32, 4.0, 6.0, 8.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let counts: Vec<u8> = 2f32.to_le_bytes().to_vec();
    let bytes = serialize(
        &[("general.type", GgufValue::String("imatrix".into()))],
        &[
            ("blk.0.attn_q.weight.in_sum2", &[1, 4], DType::F32, &sums),
            ("blk.0.attn_q.weight.counts", &[1, 1], DType::F32, &counts),
        ],
    )
    .unwrap();
    std::fs::write(&path, bytes).unwrap();
    let imp = gguf::read_imatrix(&path).unwrap();
    assert_eq!(imp["blk.0.attn_q.weight"], vec![1.0, 2.0, 3.0, 4.0]);
    // crunch writes the same format and reads it back.
    let ours = dir.path().join("ours.gguf");
    gguf::write_imatrix(&ours, &imp, 8, 4, "calib.txt", false).unwrap();
    assert_eq!(gguf::read_imatrix(&ours).unwrap(), imp);
    let not = dir.path().join("not.gguf");
    std::fs::write(&not, serialize(&[], &[]).unwrap()).unwrap();
    let e = gguf::read_imatrix(&not).unwrap_err().to_string();
    assert!(e.contains("not an imatrix file"), "{e}");
}

/// Gemma 3, Phi-3 and the MoE models: from a Hugging Face directory the writer refuses them by
/// name (their GGUF conventions are not written yet); from a GGUF source (llama.cpp's names,
/// stacked `ffn_*_exps` experts, Gemma's 1 + w norms, LongRoPE tensors) they are re-encoded
/// with names and metadata carried over, and load back to the source's logits.
#[test]
fn new_architectures_are_re_encoded_from_gguf_and_refused_from_hf() {
    use crunch_model::testing::{gguf_arch, tiny_gguf};
    for name in ["gemma3", "phi3", "mixtral", "qwen3_moe"] {
        let spec = tiny_specs().into_iter().find(|s| s.name == name).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let hf = dir.path().join("hf");
        write_hf(&spec, &hf);
        let ckpt = Checkpoint::open(&hf).unwrap();
        let Err(e) = gguf::plan(&ckpt, &Mix::preset(Preset::F32), &[]) else {
            panic!("{name}: a GGUF planned from a Hugging Face directory");
        };
        let e = e.to_string();
        assert!(e.contains("only from a GGUF source"), "{name}: {e}");

        let src = dir.path().join("src.gguf");
        let mut parts = tiny_gguf(&spec, gguf_arch(name));
        let vocab = spec.config["vocab_size"].as_u64().unwrap() as u32;
        let tokens = (0..vocab)
            .map(|i| GgufValue::String(format!("t{i}")))
            .collect();
        parts.set("tokenizer.ggml.model", GgufValue::String("gpt2".into()));
        parts.set("tokenizer.ggml.tokens", GgufValue::Array(tokens));
        parts.set("tokenizer.ggml.merges", GgufValue::Array(vec![]));
        std::fs::write(&src, parts.to_bytes()).unwrap();
        let ids = reference_ids(128, 24);
        let want = logits(&src, &ids);
        for (preset, tol) in [(Preset::F32, 1e-6), (Preset::Q8_0, 2e-2)] {
            let out = dir.path().join(format!("{preset:?}.gguf"));
            export(&src, &out, &Mix::preset(preset), &Inputs::default());
            let err = relative_error(&logits(&out, &ids), &want);
            assert!(err < tol, "{name} {preset:?}: relative error {err}");
            let (a, b) = (GgufFile::open(&src).unwrap(), GgufFile::open(&out).unwrap());
            let names = |f: &GgufFile| {
                let mut v: Vec<_> = f.tensors().into_iter().map(|t| (t.name, t.shape)).collect();
                v.sort();
                v
            };
            assert_eq!(names(&a), names(&b), "{name} {preset:?}");
            for t in b.tensors().iter().filter(|t| t.name.contains("_exps")) {
                assert_eq!(t.shape.len(), 3, "{name}: {}", t.name);
                // Rows that are not whole Q8_0 blocks fall back to F16, as in llama-quantize.
                let want = match (preset, t.shape[2] % 32) {
                    (Preset::F32, _) => DType::F32,
                    (_, 0) => DType::Q8_0,
                    _ => DType::F16,
                };
                assert_eq!(t.dtype, want, "{name} {preset:?}: {}", t.name);
            }
        }
    }
}
