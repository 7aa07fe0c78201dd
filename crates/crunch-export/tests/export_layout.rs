//! The compressed-tensors and GPTQ layouts, checked against each format's own conventions.
//!
//! Tiny random models are quantized with RTN, exported, and read back here with unpackers
//! written from the formats' loaders (compressed-tensors' `unpack_from_int32` and
//! `PackedQuantizationCompressor.decompress`; AutoGPTQ's `QuantLinear` dequantization, with its
//! explicit 3-bit word layout), not from the writers' code. Every dequantized weight must equal
//! crunch's `QuantizedWeight::dequantize()` bit for bit.

mod common;

use common::{compress_each, SKIPPED};
use crunch_compress::rtn;
use crunch_export::gptq_layout::{self, CheckpointFormat};
use crunch_export::{compressed_tensors, Error, Refusal, Target};
use crunch_formats::safetensors::SafetensorsFile;
use crunch_formats::{DType, TensorSource};
use crunch_model::testing::tiny_specs;
use crunch_model::Checkpoint;
use crunch_repr::format::{layer_recipes, Recipe};
use crunch_repr::{Compressed, CompressedLayer, QuantSpec, QuantizedWeight};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// (bits, group size, symmetric): every bit width, grouped and per channel, sym and asym.
const CASES: [(u8, Option<usize>, bool); 8] = [
    (4, Some(32), true),
    (4, Some(32), false),
    (4, None, true),
    (8, None, false),
    (8, Some(32), true),
    (3, Some(32), false),
    (3, None, true),
    (2, Some(32), false),
];

fn open_tiny(name: &str, dir: &Path) -> Checkpoint {
    common::open_tiny(name, dir, 11)
}

fn quantize(ckpt: &Checkpoint, spec: QuantSpec) -> BTreeMap<String, QuantizedWeight> {
    compress_each(ckpt, |w, rows, cols| {
        rtn(w, rows, cols, spec, false).unwrap()
    })
}

/// The tiny Llama (in a new temporary directory) and its layers quantized on `spec` by RTN.
fn llama_quantized(
    spec: QuantSpec,
) -> (
    tempfile::TempDir,
    Checkpoint,
    BTreeMap<String, QuantizedWeight>,
) {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = open_tiny("llama", &tmp.path().join("src"));
    let layers = quantize(&ckpt, spec);
    (tmp, ckpt, layers)
}

/// `layers` in the GPTQ layout `format`, at `out`.
fn write_gptq(
    ckpt: &Checkpoint,
    layers: &BTreeMap<String, QuantizedWeight>,
    out: &Path,
    format: CheckpointFormat,
) -> crunch_export::Result<()> {
    gptq_layout::write(ckpt, layers, &recipe(layers), &Target::new(out), format)
}

/// The errors of both quantized layouts for `layers` (each would write under `dir`).
fn both_errors(
    ckpt: &Checkpoint,
    layers: &BTreeMap<String, QuantizedWeight>,
    dir: &Path,
) -> [String; 2] {
    let r = recipe(layers);
    let (a, b) = (dir.join("a"), dir.join("b"));
    let v1 = CheckpointFormat::V1;
    [
        compressed_tensors::write(ckpt, layers, &r, &Target::new(&a)).unwrap_err(),
        gptq_layout::write(ckpt, layers, &r, &Target::new(&b), v1).unwrap_err(),
    ]
    .map(|e| e.to_string())
}

fn recipe(layers: &BTreeMap<String, QuantizedWeight>) -> Recipe {
    let layers = layers
        .iter()
        .map(|(n, q)| {
            let l = CompressedLayer::new("rtn", Compressed::Quantized(q.clone()));
            (n.clone(), l)
        })
        .collect();
    Recipe::new("tiny", vec!["rtn".into()], layer_recipes(&layers))
}

/// A stored tensor's dtype, shape and little-endian elements as u64 bit patterns.
fn tensor(st: &SafetensorsFile, name: &str) -> (DType, Vec<usize>, Vec<u64>) {
    let info = st
        .info(name)
        .unwrap_or_else(|| panic!("missing tensor {name}"));
    let raw = st.raw(name).unwrap();
    let width = match info.dtype {
        DType::I64 => 8,
        DType::I32 | DType::F32 => 4,
        DType::F16 => 2,
        other => panic!("{name}: unexpected dtype {other:?}"),
    };
    let vals = raw
        .chunks(width)
        .map(|c| c.iter().rev().fold(0u64, |acc, &b| acc << 8 | b as u64))
        .collect();
    (info.dtype, info.shape, vals)
}

/// `got` equals `want` bit for bit (layer `p`).
fn assert_bit_equal(got: &[f32], want: &[f32], p: &str) {
    let same = got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "{p}: dequantized weights differ");
}

fn f16_val(bits: u64) -> f32 {
    half::f16::from_bits(bits as u16).to_f32()
}

fn config(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

/// Unquantized tensors are stored as f32 with the checkpoint's values; quantized layers have no
/// dense `.weight` left.
fn check_dense_tensors(
    ckpt: &Checkpoint,
    st: &SafetensorsFile,
    layers: &BTreeMap<String, QuantizedWeight>,
) {
    for (name, shape) in crunch_model::model::tensor_shapes(&ckpt.config) {
        if name
            .strip_suffix(".weight")
            .is_some_and(|p| layers.contains_key(p))
        {
            assert!(
                st.info(&name).is_none(),
                "{name} should not be stored densely"
            );
            continue;
        }
        let (dtype, stored_shape, vals) = tensor(st, &name);
        assert_eq!((dtype, &stored_shape), (DType::F32, &shape), "{name}");
        let want = ckpt.weights.read(&name, &shape, &ckpt.config).unwrap();
        let got: Vec<f32> = vals.iter().map(|&v| f32::from_bits(v as u32)).collect();
        assert_eq!(got, want, "{name}");
    }
}

/// compressed-tensors' `unpack_from_int32`: element `i` of a packed row starts at bit `i·bits`
/// of the row's words (least significant first) and may continue into the next word; the
/// unsigned field minus 2^(bits−1) is the signed value.
fn ct_unpack_row(words: &[u64], bits: u8, n: usize) -> Vec<i32> {
    let b = bits as usize;
    (0..n)
        .map(|i| {
            let (word, off) = (i * b / 32, i * b % 32);
            let lo_bits = b.min(32 - off);
            let mut v = (words[word] >> off) & ((1 << lo_bits) - 1);
            if lo_bits < b {
                v |= (words[word + 1] & ((1 << (b - lo_bits)) - 1)) << lo_bits;
            }
            v as i32 - (1 << (b - 1))
        })
        .collect()
}

fn check_compressed_tensors(
    ckpt: &Checkpoint,
    dir: &Path,
    layers: &BTreeMap<String, QuantizedWeight>,
    spec: QuantSpec,
) {
    check_compressed_tensors_ignoring(ckpt, dir, layers, spec, &[SKIPPED, "lm_head"]);
}

fn check_compressed_tensors_ignoring(
    ckpt: &Checkpoint,
    dir: &Path,
    layers: &BTreeMap<String, QuantizedWeight>,
    spec: QuantSpec,
    want_ignore: &[&str],
) {
    for f in ["config.json", "model.safetensors", "crunch_recipe.json"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert!(
        !dir.join("crunch.json").exists(),
        "crunch.json would make crunch misread the directory"
    );
    let qc = &config(dir)["quantization_config"];
    assert_eq!(qc["quant_method"], "compressed-tensors");
    assert_eq!(qc["format"], "pack-quantized");
    assert_eq!(qc["quantization_status"], "compressed");
    let groups = qc["config_groups"].as_object().unwrap();
    assert_eq!(groups.len(), 1);
    let g = &groups["group_0"];
    assert_eq!(g["targets"], json!(["Linear"]));
    assert_eq!(g["format"], "pack-quantized");
    assert!(g["input_activations"].is_null() && g["output_activations"].is_null());
    let w = &g["weights"];
    assert_eq!(w["num_bits"], spec.bits);
    assert_eq!(w["type"], "int");
    assert_eq!(w["symmetric"], spec.symmetric);
    assert_eq!(w["group_size"], json!(spec.group_size));
    assert_eq!(
        w["strategy"],
        if spec.group_size.is_some() {
            "group"
        } else {
            "channel"
        }
    );
    let ignore: Vec<String> = serde_json::from_value(qc["ignore"].clone()).unwrap();
    assert_eq!(ignore, want_ignore);

    let st = SafetensorsFile::open(dir.join("model.safetensors")).unwrap();
    assert_eq!(st.metadata().get("format").map(String::as_str), Some("pt"));
    check_dense_tensors(ckpt, &st, layers);
    let bits = spec.bits as usize;
    for (p, q) in layers {
        let (rows, cols, n_groups) = (q.rows, q.cols, q.n_groups());
        let (dt, shape, packed) = tensor(&st, &format!("{p}.weight_packed"));
        let row_words = (cols * bits).div_ceil(32);
        assert_eq!((dt, shape), (DType::I32, vec![rows, row_words]), "{p}");
        let (dt, shape, scales) = tensor(&st, &format!("{p}.weight_scale"));
        assert_eq!((dt, shape), (DType::F16, vec![rows, n_groups]), "{p}");
        assert_eq!(
            tensor(&st, &format!("{p}.weight_shape")),
            (DType::I64, vec![2], vec![rows as u64, cols as u64])
        );
        assert!(st.info(&format!("{p}.weight_g_idx")).is_none());
        // Asymmetric: zero points packed along dim 0 (output rows), one stream per group.
        let zp: Vec<i32> = if spec.symmetric {
            assert!(
                st.info(&format!("{p}.weight_zero_point")).is_none(),
                "{p}: symmetric stores no zero point"
            );
            vec![0; rows * n_groups]
        } else {
            let (dt, shape, words) = tensor(&st, &format!("{p}.weight_zero_point"));
            let col_words = (rows * bits).div_ceil(32);
            assert_eq!((dt, shape), (DType::I32, vec![col_words, n_groups]), "{p}");
            let mut zp = vec![0; rows * n_groups];
            for g in 0..n_groups {
                let column: Vec<u64> = (0..col_words).map(|w| words[w * n_groups + g]).collect();
                for (r, z) in ct_unpack_row(&column, spec.bits, rows)
                    .into_iter()
                    .enumerate()
                {
                    zp[r * n_groups + g] = z;
                }
            }
            zp
        };
        // decompress: (x_q − zero_point) · scale, with column c in group c / group_size.
        let group_len = spec.group_size.unwrap_or(cols);
        let mut got = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            let x_q = ct_unpack_row(&packed[r * row_words..(r + 1) * row_words], spec.bits, cols);
            for (c, &x) in x_q.iter().enumerate() {
                let g = r * n_groups + c / group_len;
                got.push((x as f32 - zp[g] as f32) * f16_val(scales[g]));
            }
        }
        assert_bit_equal(&got, &q.dequantize(), p);
    }
}

/// AutoGPTQ's unpacking of one packed column (a word per packed row): 2/4/8 bits hold
/// 32/bits fields per word; 3 bits hold 32 fields in 3 words, 10 + 1 split + 10 + 1 split + 10.
fn gptq_unpack(words: &[u64], bits: u8) -> Vec<u32> {
    let w: Vec<u32> = words.iter().map(|&x| x as u32).collect();
    if bits == 3 {
        return w
            .chunks(3)
            .flat_map(|b| {
                let (w0, w1, w2) = (b[0], b[1], b[2]);
                let mut out: Vec<u32> = (0..10).map(|k| (w0 >> (3 * k)) & 7).collect();
                out.push(((w0 >> 30) & 0x3) | ((w1 << 2) & 0x4));
                out.extend((0..10).map(|k| (w1 >> (3 * k + 1)) & 7));
                out.push(((w1 >> 31) & 0x1) | ((w2 << 1) & 0x6));
                out.extend((0..10).map(|k| (w2 >> (3 * k + 2)) & 7));
                out
            })
            .collect();
    }
    let per = 32 / bits as u32;
    w.iter()
        .flat_map(|&x| (0..per).map(move |k| (x >> (bits as u32 * k)) & ((1 << bits) - 1)))
        .collect()
}

fn check_gptq(
    ckpt: &Checkpoint,
    dir: &Path,
    layers: &BTreeMap<String, QuantizedWeight>,
    spec: QuantSpec,
    format: CheckpointFormat,
    desc_act: bool,
) {
    let qc = &config(dir)["quantization_config"];
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("quantize_config.json")).unwrap())
            .unwrap();
    assert_eq!(qc, &file, "quantize_config.json and config.json disagree");
    assert_eq!(qc["quant_method"], "gptq");
    assert_eq!(qc["bits"], spec.bits);
    assert_eq!(qc["group_size"], spec.group_size.map_or(-1, |g| g as i64));
    assert_eq!(qc["sym"], spec.symmetric);
    assert_eq!(qc["desc_act"], desc_act);
    assert_eq!(qc["lm_head"], false);
    assert_eq!(qc["checkpoint_format"], format.name());
    let dynamic = qc["dynamic"]
        .as_object()
        .expect("skipped layer listed under dynamic");
    assert_eq!(
        dynamic.keys().collect::<Vec<_>>(),
        vec![&format!("-:^{}$", SKIPPED.replace('.', "\\."))]
    );

    let st = SafetensorsFile::open(dir.join("model.safetensors")).unwrap();
    check_dense_tensors(ckpt, &st, layers);
    let (bits, maxq) = (spec.bits as usize, (1u32 << spec.bits) - 1);
    for (p, q) in layers {
        let (rows, cols, n_groups) = (q.rows, q.cols, q.n_groups());
        let (dt, shape, qweight) = tensor(&st, &format!("{p}.qweight"));
        assert_eq!(
            (dt, shape),
            (DType::I32, vec![cols / 32 * bits, rows]),
            "{p}"
        );
        let (dt, shape, qzeros) = tensor(&st, &format!("{p}.qzeros"));
        assert_eq!(
            (dt, shape),
            (DType::I32, vec![n_groups, rows / 32 * bits]),
            "{p}"
        );
        let (dt, shape, scales) = tensor(&st, &format!("{p}.scales"));
        assert_eq!((dt, shape), (DType::F16, vec![n_groups, rows]), "{p}");
        let (dt, shape, g_idx) = tensor(&st, &format!("{p}.g_idx"));
        assert_eq!((dt, shape), (DType::I32, vec![cols]), "{p}");
        // qweight column r unpacks to output row r's codes over the input columns.
        let in_words = cols / 32 * bits;
        let codes: Vec<Vec<u32>> = (0..rows)
            .map(|r| {
                gptq_unpack(
                    &(0..in_words)
                        .map(|w| qweight[w * rows + r])
                        .collect::<Vec<_>>(),
                    spec.bits,
                )
            })
            .collect();
        // qzeros row g unpacks to group g's zero points over the output rows; v1 adds 1 back
        // after masking, as AutoGPTQ's dequantization does.
        let out_words = rows / 32 * bits;
        let zeros: Vec<Vec<u32>> = (0..n_groups)
            .map(|g| {
                let z = gptq_unpack(&qzeros[g * out_words..(g + 1) * out_words], spec.bits);
                match format {
                    CheckpointFormat::V1 => z.iter().map(|&z| (z & maxq) + 1).collect(),
                    CheckpointFormat::V2 => z,
                }
            })
            .collect();
        let mut got = Vec::with_capacity(rows * cols);
        for (r, row) in codes.iter().enumerate() {
            for (c, &code) in row.iter().enumerate() {
                let g = g_idx[c] as usize;
                got.push((code as f32 - zeros[g][r] as f32) * f16_val(scales[g * rows + r]));
            }
        }
        assert_bit_equal(&got, &q.dequantize(), p);
    }
}

#[test]
fn compressed_tensors_layout_dequantizes_to_crunch_weights() {
    for arch in ["llama", "mistral", "qwen3", "gemma3", "phi3"] {
        let tmp = tempfile::tempdir().unwrap();
        let ckpt = open_tiny(arch, &tmp.path().join("src"));
        for (i, &(bits, group, sym)) in CASES.iter().enumerate() {
            let spec = QuantSpec::new(bits, group, sym);
            let layers = quantize(&ckpt, spec);
            let out = tmp.path().join(format!("ct{i}"));
            compressed_tensors::write(&ckpt, &layers, &recipe(&layers), &Target::new(&out))
                .unwrap();
            check_compressed_tensors(&ckpt, &out, &layers, spec);
        }
    }
}

/// Mixture-of-experts models: every expert's projections stored per expert under the
/// checkpoint's names (what vLLM's fused-MoE loader stacks into `w13_*` / `w2_*`), the routers
/// as float weights listed in `ignore`; layouts vLLM would not load are refused.
#[test]
fn moe_experts_export_in_the_layout_vllm_fuses() {
    use crunch_model::layout::{all_linears, LinearRole};
    for arch in ["qwen3_moe", "mixtral"] {
        let tmp = tempfile::tempdir().unwrap();
        let ckpt = open_tiny(arch, &tmp.path().join("src"));
        let specs = all_linears(&ckpt.config);
        let routers: Vec<String> = specs
            .iter()
            .filter(|s| s.role == LinearRole::Router)
            .map(|s| s.id.full_name())
            .collect();
        let quantize_with = |spec: QuantSpec| -> BTreeMap<String, QuantizedWeight> {
            specs
                .iter()
                .filter(|s| s.role != LinearRole::Router)
                .map(|s| {
                    let n = s.id.full_name();
                    let w = ckpt
                        .weights
                        .read(&format!("{n}.weight"), &[s.rows, s.cols], &ckpt.config)
                        .unwrap();
                    (n, rtn(&w, s.rows, s.cols, spec, false).unwrap())
                })
                .collect()
        };
        let spec = QuantSpec::new(4, Some(16), true);
        let layers = quantize_with(spec);
        let out = tmp.path().join("ct");
        compressed_tensors::write(&ckpt, &layers, &recipe(&layers), &Target::new(&out)).unwrap();
        let mut ignore: Vec<&str> = routers.iter().map(String::as_str).collect();
        ignore.push("lm_head");
        check_compressed_tensors_ignoring(&ckpt, &out, &layers, spec, &ignore);
        let st = SafetensorsFile::open(out.join("model.safetensors")).unwrap();
        let expert = if arch == "mixtral" {
            "model.layers.0.block_sparse_moe.experts.3.w2"
        } else {
            "model.layers.0.mlp.experts.3.down_proj"
        };
        assert!(
            st.info(&format!("{expert}.weight_packed")).is_some(),
            "{arch}"
        );
        assert_eq!(config(&out)["model_type"], ckpt.config.arch.name());

        let refused = |layers: &BTreeMap<String, QuantizedWeight>, needle: &str| {
            let dir = tmp.path().join(format!("refused-{}", needle.len()));
            let e = compressed_tensors::write(&ckpt, layers, &recipe(layers), &Target::new(&dir))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle) && e.contains("vLLM"), "{arch}: {e}");
            assert!(!dir.exists());
        };
        refused(
            &quantize_with(QuantSpec::new(4, Some(16), false)),
            "symmetric",
        );
        refused(
            &quantize_with(QuantSpec::new(3, Some(16), true)),
            "4- or 8-bit",
        );
        let mut one_missing = layers.clone();
        one_missing.remove(expert);
        refused(&one_missing, "(or not at all)");
        let mut with_router = layers.clone();
        let r = &specs.iter().find(|s| s.role == LinearRole::Router).unwrap();
        let w = ckpt
            .weights
            .read(
                &format!("{}.weight", r.id.full_name()),
                &[r.rows, r.cols],
                &ckpt.config,
            )
            .unwrap();
        with_router.insert(
            r.id.full_name(),
            rtn(&w, r.rows, r.cols, spec, false).unwrap(),
        );
        refused(&with_router, "router");
    }
}

#[test]
fn gptq_layout_dequantizes_to_crunch_weights() {
    for arch in ["llama", "qwen3", "phi3"] {
        let tmp = tempfile::tempdir().unwrap();
        let ckpt = open_tiny(arch, &tmp.path().join("src"));
        for (i, &(bits, group, sym)) in CASES.iter().enumerate() {
            let spec = QuantSpec::new(bits, group, sym);
            let mut layers = quantize(&ckpt, spec);
            // GPTQ v1 cannot store a zero point of 0 (checked below); keep these exportable.
            for q in layers.values_mut() {
                q.zeros.iter_mut().for_each(|z| *z = (*z).max(1));
            }
            for format in [CheckpointFormat::V1, CheckpointFormat::V2] {
                let out = tmp.path().join(format!("gptq{i}-{}", format.name()));
                write_gptq(&ckpt, &layers, &out, format).unwrap();
                check_gptq(&ckpt, &out, &layers, spec, format, false);
            }
        }
    }
}

/// Act-order groups: column c in group g_idx[c], not c / group_size. GPTQ stores them
/// (desc_act); compressed-tensors 0.20 cannot and must refuse rather than drop them.
#[test]
fn act_order_groups_go_to_gptq_and_are_refused_by_compressed_tensors() {
    let spec = QuantSpec::new(4, Some(32), false);
    let (tmp, ckpt, mut layers) = llama_quantized(spec);
    for q in layers.values_mut() {
        // 7 is coprime to 64 and 160, so c ↦ 7c mod cols permutes the columns: 32 per group.
        q.g_idx = Some(
            (0..q.cols)
                .map(|c| ((c * 7 % q.cols) / 32) as u32)
                .collect(),
        );
        q.zeros.iter_mut().for_each(|z| *z = (*z).max(1));
        q.validate().unwrap();
    }
    let out = tmp.path().join("gptq");
    write_gptq(&ckpt, &layers, &out, CheckpointFormat::V1).unwrap();
    check_gptq(&ckpt, &out, &layers, spec, CheckpointFormat::V1, true);

    let out = tmp.path().join("ct");
    let err = compressed_tensors::write(&ckpt, &layers, &recipe(&layers), &Target::new(&out))
        .unwrap_err();
    assert!(err.to_string().contains("g_idx"), "{err}");
    assert!(!out.exists());
}

#[test]
fn gptq_v1_refuses_a_zero_point_of_zero_and_v2_stores_it() {
    let spec = QuantSpec::new(4, Some(32), false);
    let (tmp, ckpt, mut layers) = llama_quantized(spec);
    let q = layers.get_mut("model.layers.0.self_attn.k_proj").unwrap();
    q.zeros[5] = 0;
    let out = tmp.path().join("v1");
    let err = write_gptq(&ckpt, &layers, &out, CheckpointFormat::V1).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused {
                why: Refusal::ZeroPointZero,
                ..
            }
        ) && err.to_string().contains("gptq-v2"),
        "{err}"
    );
    assert!(!out.exists());
    for q in layers.values_mut() {
        q.zeros.iter_mut().filter(|z| **z == 1).for_each(|z| *z = 0);
    }
    let out = tmp.path().join("v2");
    write_gptq(&ckpt, &layers, &out, CheckpointFormat::V2).unwrap();
    check_gptq(&ckpt, &out, &layers, spec, CheckpointFormat::V2, false);
}

#[test]
fn mixed_specs_get_one_config_group_each_and_gptq_refuses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = open_tiny("qwen2", &tmp.path().join("src"));
    let mut layers = quantize(&ckpt, QuantSpec::new(4, Some(32), true));
    let eight = quantize(&ckpt, QuantSpec::new(8, None, false));
    let mlp: Vec<String> = layers
        .keys()
        .filter(|n| n.contains(".mlp."))
        .cloned()
        .collect();
    for n in &mlp {
        layers.insert(n.clone(), eight[n].clone());
    }
    let out = tmp.path().join("ct");
    compressed_tensors::write(&ckpt, &layers, &recipe(&layers), &Target::new(&out)).unwrap();
    let qc = &config(&out)["quantization_config"];
    let groups = qc["config_groups"].as_object().unwrap();
    assert_eq!(groups.len(), 2);
    let mut targeted: Vec<String> = Vec::new();
    for g in groups.values() {
        let targets: Vec<String> = serde_json::from_value(g["targets"].clone()).unwrap();
        let bits = g["weights"]["num_bits"].as_u64().unwrap() as u8;
        assert!(targets.iter().all(|t| layers[t].spec.bits == bits));
        targeted.extend(targets);
    }
    targeted.sort();
    assert_eq!(targeted, layers.keys().cloned().collect::<Vec<_>>());

    let err = gptq_layout::write(
        &ckpt,
        &layers,
        &recipe(&layers),
        &Target::new(&tmp.path().join("g")),
        CheckpointFormat::V1,
    )
    .unwrap_err();
    assert!(err.to_string().contains("one bit width"), "{err}");
}

#[test]
fn gptq_refuses_dimensions_that_are_not_multiples_of_32() {
    let q = rtn(
        &vec![0.5; 16 * 64],
        16,
        64,
        QuantSpec::new(4, Some(32), true),
        false,
    )
    .unwrap();
    let Err(err) = gptq_layout::layer_tensors("x", &q, CheckpointFormat::V1) else {
        panic!("a 16-row weight was accepted");
    };
    assert!(err.to_string().contains("multiples of 32"), "{err}");
    // compressed-tensors pads instead: 16 rows of 64 four-bit codes are 8 words each.
    let t = compressed_tensors::layer_tensors("x", &q).unwrap();
    assert_eq!(t[0].shape, vec![16, 8]);
}

#[test]
fn unknown_or_misshapen_layers_are_refused() {
    let (tmp, ckpt, mut layers) = llama_quantized(QuantSpec::new(4, Some(32), true));
    let q = layers["model.layers.0.mlp.up_proj"].clone();
    layers.insert(
        "model.layers.0.mlp.gate_proj".into(),
        QuantizedWeight {
            rows: q.rows / 2,
            ..q.clone()
        },
    );
    for err in both_errors(&ckpt, &layers, tmp.path()) {
        assert!(err.contains("gate_proj"), "{err}");
    }
    layers.remove("model.layers.0.mlp.gate_proj");
    layers.insert("model.embed_tokens".into(), q);
    for err in both_errors(&ckpt, &layers, tmp.path()) {
        assert!(err.contains("embed_tokens"), "{err}");
    }
}

/// llama.cpp keeps Llama 3 rope scaling only as `rope_freqs.weight`; an export would drop it
/// (transformers reads rope scaling from config.json), so both writers refuse such a source.
#[test]
fn rope_scaling_held_only_in_rope_freqs_is_refused() {
    use crunch_model::testing::{tensor_shapes, tensor_values};
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let spec = tiny_specs()
        .into_iter()
        .find(|s| s.name == "qwen2")
        .unwrap();
    std::fs::write(src.join("config.json"), spec.config.to_string()).unwrap();
    let cfg = crunch_model::ModelConfig::from_hf_json(&src, &spec.config).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = tensor_shapes(&cfg)
        .into_iter()
        .map(|(n, s)| {
            let v = tensor_values(&n, &s, 3);
            (n, s, v)
        })
        .collect();
    tensors.push((
        "rope_freqs.weight".into(),
        vec![cfg.head_dim / 2],
        vec![1.0; cfg.head_dim / 2],
    ));
    let refs: Vec<(&str, &[usize], &[f32])> = tensors
        .iter()
        .map(|(n, s, v)| (n.as_str(), s.as_slice(), v.as_slice()))
        .collect();
    std::fs::write(
        src.join("model.safetensors"),
        crunch_formats::safetensors::serialize_f32(&refs),
    )
    .unwrap();
    let ckpt = Checkpoint::open(&src).unwrap();
    assert!(ckpt.config.rope_scaling.is_none());
    let layers = quantize(&ckpt, QuantSpec::new(4, Some(32), true));
    for err in both_errors(&ckpt, &layers, tmp.path()) {
        assert!(err.contains("rope_freqs"), "{err}");
    }
}
