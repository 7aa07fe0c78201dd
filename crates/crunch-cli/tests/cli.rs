//! The `crunch` binary end to end: happy paths print what they promise, and every kind of bad
//! input ends with a clear error naming the file, a non-zero exit, and no panic.

use crunch_model::testing::{smollm2_gguf, tiny_specs, write_tiny_model};
use std::path::Path;

mod common;
use common::{crunch, tiny_llama};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// Runs `crunch info` on `path` and checks that it fails cleanly with every `needle` in the error.
fn fails_cleanly(path: &Path, needles: &[&str]) {
    let (ok, _, err) = crunch(&["info", path.to_str().unwrap()]);
    assert!(!ok, "expected failure for {}", path.display());
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "error lacks `{n}`: {err}");
    }
}

fn edit_header(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}

#[test]
fn info_describes_a_tiny_model() {
    let (_d, p) = tiny_llama();
    let (ok, out, err) = crunch(&["info", p.to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["architecture"], "llama");
    assert_eq!(v["layers"], 2);
    assert!(v["parameters"].as_u64().unwrap() > 0);
    assert!(v["dtypes"]["F32"]["tensors"].as_u64().unwrap() > 0);
}

#[test]
fn truncated_safetensors_is_reported() {
    let (_d, p) = tiny_llama();
    let f = p.join("model.safetensors");
    let len = std::fs::metadata(&f).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    fails_cleanly(&p, &["model.safetensors", "truncated"]);
}

#[test]
fn header_lying_about_offsets_is_reported() {
    let (_d, p) = tiny_llama();
    let f = p.join("model.safetensors");
    edit_header(&f, |h| {
        h["model.norm.weight"]["data_offsets"] = serde_json::json!([0u64, 1u64 << 40]);
    });
    fails_cleanly(&p, &["model.safetensors", "model.norm.weight", "outside"]);
}

#[test]
fn unknown_dtype_is_reported() {
    let (_d, p) = tiny_llama();
    edit_header(&p.join("model.safetensors"), |h| {
        h["model.norm.weight"]["dtype"] = "F7".into();
    });
    fails_cleanly(&p, &["model.safetensors", "unknown dtype `F7`"]);
}

#[test]
fn missing_tensor_is_reported_on_load() {
    let (_d, p) = tiny_llama();
    edit_header(&p.join("model.safetensors"), |h| {
        let v = h["model.norm.weight"].clone();
        h.as_object_mut().unwrap().remove("model.norm.weight");
        h["renamed.weight"] = v;
    });
    std::fs::write(p.join("data.txt"), "hello world ".repeat(20)).unwrap();
    let (ok, _, err) = crunch(&[
        "eval",
        p.to_str().unwrap(),
        "--data",
        p.join("data.txt").to_str().unwrap(),
    ]);
    assert!(!ok && !err.contains("panicked"), "{err}");
    // The structure is checked against the config when the model is opened, before the
    // tokenizer is looked for.
    assert!(err.contains("missing tensor `model.norm.weight`"), "{err}");
}

/// Sets `key` of the model's config.json to `value`.
fn edit_config(model: &Path, key: &str, value: serde_json::Value) {
    let path = model.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg[key] = value;
    std::fs::write(&path, cfg.to_string()).unwrap();
}

#[test]
fn shape_that_does_not_match_config_is_reported() {
    let (_d, p) = tiny_llama();
    edit_config(&p, "intermediate_size", 96.into());
    // Checked against the tensors when the checkpoint is opened, before anything is loaded.
    let err = crunch_model::Checkpoint::open(&p)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("mlp.gate_proj.weight") && err.contains("config.json implies [96, 64]"),
        "{err}"
    );
    fails_cleanly(&p, &["mlp.gate_proj.weight", "[96, 64]"]);
}

#[test]
fn unsupported_architecture_is_reported() {
    let (_d, p) = tiny_llama();
    edit_config(&p, "model_type", "bloom".into());
    fails_cleanly(&p, &["config.json", "unsupported architecture `bloom`"]);
}

#[test]
fn truncated_and_corrupt_gguf_are_reported() {
    let gguf = std::fs::read(smollm2_gguf()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &gguf[..gguf.len() / 3]).unwrap();
    fails_cleanly(&truncated, &["truncated.gguf"]);
    let corrupt = dir.path().join("corrupt.gguf");
    let mut bytes = gguf[..4096].to_vec();
    bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes()); // metadata count
    std::fs::write(&corrupt, &bytes).unwrap();
    fails_cleanly(&corrupt, &["corrupt.gguf"]);
    fails_cleanly(&dir.path().join("absent.gguf"), &["absent.gguf"]);
}

#[test]
fn eval_reports_json_on_smollm2() {
    let gguf = smollm2_gguf();
    let data = format!("{ROOT}/data/demo.txt");
    let (ok, out, err) = crunch(&[
        "eval",
        gguf.to_str().unwrap(),
        "--data",
        &data,
        "--ctx",
        "128",
        "--max-tokens",
        "256",
        "--base",
        gguf.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for key in [
        "nll",
        "ppl",
        "tokens_scored",
        "tokens_per_second",
        "kl",
        "top1_agreement",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {out}");
    }
    assert_eq!(v["tokens_scored"], 2 * 127);
    assert_eq!(v["top1_agreement"], 1.0);
    let (ok, _, err) = crunch(&["eval", gguf.to_str().unwrap(), "--data", "/nonexistent.txt"]);
    assert!(!ok && err.contains("/nonexistent.txt"), "{err}");
}

fn dir_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn quantize_writes_crunch_format_deterministically_and_safely() {
    let (d, p) = tiny_llama();
    let out = d.path().join("q");
    let args = |out: &Path| {
        vec![
            "quantize".to_string(),
            p.to_str().unwrap().into(),
            "--out".into(),
            out.to_str().unwrap().into(),
            "--method".into(),
            "rtn".into(),
            "--bits".into(),
            "3".into(),
            "--group-size".into(),
            "32".into(),
            "--json".into(),
        ]
    };
    let run = |a: Vec<String>| crunch(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let (ok, stdout, err) = run(args(&out));
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["layers_compressed"], 14);
    // 3-bit codes + f16 scale + 3-bit zero per 32 weights.
    let bpw = report["bits_per_weight"].as_f64().unwrap();
    assert!((bpw - (3.0 + 19.0 / 32.0)).abs() < 1e-9, "{bpw}");

    // Same input, same seed: byte-identical output.
    let out2 = d.path().join("q2");
    assert!(run(args(&out2)).0);
    assert_eq!(dir_bytes(&out), dir_bytes(&out2));

    // An existing output is refused, and left untouched.
    let before = dir_bytes(&out);
    let (ok, _, err) = run(args(&out));
    assert!(!ok && err.contains("already exists"), "{err}");
    assert_eq!(dir_bytes(&out), before);

    // crunch's format loads: info shows the quantized layers, and the model runs.
    let (ok, info, _) = crunch(&["info", out.to_str().unwrap()]);
    assert!(
        ok && info.contains("INT3 g32") && info.contains("Crunch"),
        "{info}"
    );
    let ckpt = crunch_model::Checkpoint::open(&out).unwrap();
    assert_eq!(ckpt.recipe.as_ref().unwrap().layers.len(), 14);
    let model = ckpt.load(crunch_runtime::Cpu, |_| {}).unwrap();
    assert!(model.forward(&[1, 2, 3]).is_ok());

    // Every width from 2 to 8 bits is stored and loads; more bits, less error.
    let mut last = f64::INFINITY;
    for bits in 2..=8u8 {
        let out = d.path().join(format!("b{bits}"));
        let mut a = args(&out);
        a[7] = bits.to_string();
        let (ok, stdout, err) = run(a);
        assert!(ok, "{bits}: {err}");
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let bpw = report["bits_per_weight"].as_f64().unwrap();
        let want = bits as f64 + (16.0 + bits as f64) / 32.0;
        assert!((bpw - want).abs() < 1e-9, "{bits}: {bpw}");
        let read = |path: &Path| {
            let ckpt = crunch_model::Checkpoint::open(path).unwrap();
            let name = "model.layers.0.mlp.down_proj.weight";
            let shape = ckpt.weights.info(name).unwrap().shape;
            ckpt.weights.read(name, &shape, &ckpt.config).unwrap()
        };
        let (w, w0) = (read(&out), read(&p));
        let err: f64 = w
            .iter()
            .zip(&w0)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        assert!(err < last, "{bits} bits: error {err} not below {last}");
        last = err;
    }
}

#[test]
fn quantize_calibrates_on_text_sampled_from_the_model() {
    let (d, p) = tiny_llama();
    let run = |out: &Path, calib: &str, extra: &[&str]| {
        let mut a = vec![
            "quantize",
            p.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--method",
            "gptq",
            "--group-size",
            "32",
            "--calib",
            calib,
            "--json",
        ];
        a.extend_from_slice(extra);
        crunch(&a)
    };
    let out = d.path().join("q");
    let (ok, stdout, err) = run(&out, "self:4x16", &[]);
    assert!(ok, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["layers_compressed"], 14);
    let recipe: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("crunch.json")).unwrap()).unwrap();
    let c = &recipe["calibration"];
    assert_eq!(c["data"], "self:4x16");
    assert_eq!(c["samples"], 4);
    assert_eq!(c["tokens_per_sample"], 16);

    // Byte-identical on a second run, and with the `×` spelling of the same spec.
    let out2 = d.path().join("q2");
    assert!(run(&out2, "self:4x16", &[]).0);
    assert_eq!(dir_bytes(&out), dir_bytes(&out2));
    let out3 = d.path().join("q3");
    assert!(run(&out3, "self:4×16", &["--calib-len", "16"]).0);
    assert_eq!(dir_bytes(&out), dir_bytes(&out3));
    // Another seed samples other text, so other weights.
    let out4 = d.path().join("q4");
    assert!(run(&out4, "self:4x16", &["--seed", "1"]).0);
    assert_ne!(dir_bytes(&out), dir_bytes(&out4));

    // Malformed specs and conflicting flags: clean errors naming the problem, nothing written.
    let bad = d.path().join("bad");
    for (calib, extra, needles) in [
        ("self:4y16", &[][..], &["self:4y16", "no `x`"][..]),
        ("self:0x16", &[], &["self:0x16", "N must be at least 1"]),
        ("self:4x", &[], &["self:4x", "L `` is not a whole number"]),
        ("self:ax16", &[], &["self:ax16", "N `a`"]),
        (
            "self:4x16",
            &["--calib-samples", "8"],
            &["--calib-samples 8 conflicts with --calib self:4x16"],
        ),
        (
            "self:4x16",
            &["--calib-len", "32"],
            &["--calib-len 32 conflicts"],
        ),
        ("self:4x999", &[], &["self:4x999", "context"]),
    ] {
        let (ok, _, err) = run(&bad, calib, extra);
        assert!(!ok, "{calib} {extra:?} should fail");
        assert!(!err.contains("panicked"), "panic: {err}");
        assert!(err.starts_with("error: "), "{err}");
        for n in needles {
            assert!(err.contains(n), "error lacks `{n}`: {err}");
        }
        assert!(!bad.exists());
    }
}

/// A calibration text for tiny models: random ids decoded by the model's own tokenizer would
/// need one; the tiny models have none, so calibrate on text sampled from the model.
const TINY_CALIB: &str = "self:4x16";

#[test]
fn prune_lowrank_and_recipes_write_loadable_deterministic_outputs() {
    let (d, p) = tiny_llama();
    let model = p.to_str().unwrap();
    let run = |args: &[&str]| {
        let (ok, stdout, err) = crunch(args);
        assert!(ok, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()
    };
    let path = |n: &str| d.path().join(n).to_str().unwrap().to_string();

    // 2:4 SparseGPT: half the weights are zero, and the output loads and runs.
    let out = path("p24");
    let r = run(&[
        "prune",
        model,
        "--out",
        &out,
        "--method",
        "sparsegpt",
        "--pattern",
        "2:4",
        "--calib",
        TINY_CALIB,
        "--json",
    ]);
    assert_eq!(r["layers_compressed"], 14);
    assert!((r["sparsity"].as_f64().unwrap() - 0.5).abs() < 1e-9, "{r}");
    let ckpt = crunch_model::Checkpoint::open(Path::new(&out)).unwrap();
    let m = ckpt.load(crunch_runtime::Cpu, |_| {}).unwrap();
    assert!(m.forward(&[1, 2, 3]).is_ok());
    let (ok, info, _) = crunch(&["info", &out]);
    assert!(ok && info.contains("2:4"), "{info}");

    // Magnitude pruning needs no data; unstructured 50%.
    let r = run(&[
        "prune",
        model,
        "--out",
        &path("mag"),
        "--method",
        "magnitude",
        "--sparsity",
        "0.5",
        "--json",
    ]);
    assert!((r["sparsity"].as_f64().unwrap() - 0.5).abs() < 0.01, "{r}");

    // Whitened SVD under a 60% budget, with EoRA on top.
    let r = run(&[
        "lowrank",
        model,
        "--out",
        &path("lr"),
        "--method",
        "whitened-svd",
        "--keep",
        "0.6",
        "--eora-rank",
        "2",
        "--calib",
        TINY_CALIB,
        "--json",
    ]);
    assert!(r["params_kept"].as_f64().unwrap() <= 0.6 + 1e-9, "{r}");

    // (Every command's output reproduced from its recipe: every_command_is_reproduced_from_its_recipe.)
    // Bad recipes and flags fail cleanly.
    let bad = d.path().join("bad.toml");
    std::fs::write(&bad, "[[stage]]\nmethod = \"gptq\"\nbits = 9\n").unwrap();
    let (ok, _, err) = crunch(&[
        "compress",
        model,
        "--out",
        &path("x"),
        "--recipe",
        bad.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("bits 9") && !err.contains("panicked"),
        "{err}"
    );
    let (ok, _, err) = crunch(&[
        "prune",
        model,
        "--out",
        &path("y"),
        "--method",
        "wanda",
        "--sparsity",
        "0.5",
    ]);
    assert!(!ok && err.contains("needs --calib"), "{err}");
    assert!(!Path::new(&path("x")).exists() && !Path::new(&path("y")).exists());
}

/// `crunch compress --recipe OUT/recipe.toml` reproduces OUT byte for byte, for every command
/// that writes a model (and every output carries its recipe).
#[test]
fn every_command_is_reproduced_from_its_recipe() {
    let (d, p) = tiny_llama();
    let model = p.to_str().unwrap();
    let path = |n: &str| d.path().join(n).to_str().unwrap().to_string();
    let cases: [(&str, &[&str]); 6] = [
        (
            "quantize-rtn",
            &[
                "quantize",
                "--method",
                "rtn",
                "--bits",
                "3",
                "--group-size",
                "32",
            ],
        ),
        (
            "quantize-gptq",
            &[
                "quantize",
                "--method",
                "gptq",
                "--group-size",
                "32",
                "--act-order",
                "--calib",
                TINY_CALIB,
            ],
        ),
        (
            "quantize-gptq-export",
            &[
                "quantize",
                "--group-size",
                "32",
                "--calib",
                TINY_CALIB,
                "--format",
                "gptq-v2",
            ],
        ),
        (
            "prune",
            &[
                "prune",
                "--method",
                "sparsegpt",
                "--sparsity",
                "0.5",
                "--bits",
                "4",
                "--group-size",
                "32",
                "--calib",
                TINY_CALIB,
            ],
        ),
        (
            "lowrank",
            &[
                "lowrank",
                "--method",
                "svd",
                "--keep",
                "0.7",
                "--eora-rank",
                "2",
                "--calib",
                TINY_CALIB,
            ],
        ),
        (
            "prune-24",
            &[
                "prune",
                "--method",
                "magnitude",
                "--pattern",
                "2:4",
                "--format",
                "sparse-24-bitmask",
            ],
        ),
    ];
    for (name, args) in cases {
        let out = path(name);
        let mut a = vec![args[0], model, "--out", &out];
        a.extend_from_slice(&args[1..]);
        let (ok, _, err) = crunch(&a);
        assert!(ok, "{name}: {err}");
        let recipe = Path::new(&out).join("recipe.toml");
        assert!(recipe.is_file(), "{name}: no recipe.toml");
        let again = path(&format!("{name}-again"));
        let (ok, _, err) = crunch(&[
            "compress",
            model,
            "--out",
            &again,
            "--recipe",
            recipe.to_str().unwrap(),
        ]);
        assert!(ok, "{name} again: {err}");
        assert_eq!(
            dir_bytes(Path::new(&out)),
            dir_bytes(Path::new(&again)),
            "{name}"
        );
    }
    // The recipe of `crunch compress` is itself reproduced.
    let text = std::fs::read_to_string(Path::new(&path("lowrank")).join("recipe.toml")).unwrap();
    assert!(
        text.contains("method = \"svd\"") && text.contains("method = \"eora\""),
        "{text}"
    );
    // The GPTQ export is a GPTQ directory, its recipe names its layout.
    let text =
        std::fs::read_to_string(Path::new(&path("quantize-gptq-export")).join("recipe.toml"));
    assert!(text.unwrap().contains("format = \"gptq-v2\""));
    assert!(Path::new(&path("quantize-gptq-export"))
        .join("quantize_config.json")
        .is_file());
}

/// `--seed` overrides a recipe's seed, `--seed 0` included.
#[test]
fn seed_flag_overrides_the_recipe_seed() {
    let (d, p) = tiny_llama();
    let model = p.to_str().unwrap();
    let path = |n: &str| d.path().join(n).to_str().unwrap().to_string();
    let recipe = |seed: u64| {
        let r = d.path().join(format!("seed{seed}.toml"));
        let text = format!(
            "[calibration]\ndata = \"{TINY_CALIB}\"\nseed = {seed}\n\
             [[stage]]\nmethod = \"gptq\"\nbits = 4\ngroup_size = 32\n"
        );
        std::fs::write(&r, text).unwrap();
        r.to_str().unwrap().to_string()
    };
    let run = |out: &str, recipe: &str, extra: &[&str]| {
        let mut a = vec!["compress", model, "--out", out, "--recipe", recipe];
        a.extend_from_slice(extra);
        let (ok, _, err) = crunch(&a);
        assert!(ok, "{err}");
        dir_bytes(Path::new(out))
    };
    let (r0, r3) = (recipe(0), recipe(3));
    let zero = run(&path("zero"), &r0, &[]);
    let three = run(&path("three"), &r3, &[]);
    assert_ne!(zero, three, "another seed samples other text");
    assert_eq!(run(&path("three-as-zero"), &r3, &["--seed", "0"]), zero);
    assert_eq!(run(&path("zero-as-three"), &r0, &["--seed", "3"]), three);
}

/// Flags a method does not read, and formats that cannot hold what a method makes, are refused
/// before anything is read or calibrated.
#[test]
fn wrong_flags_and_formats_are_refused_before_calibration() {
    let (d, p) = tiny_llama();
    let model = p.to_str().unwrap();
    let out = d.path().join("x");
    let out = out.to_str().unwrap();
    // A calibration file that does not exist: a refusal that mentions it came too late.
    let missing = "/nonexistent/calib.txt";
    for (args, needle) in [
        (
            &["quantize", "--method", "rtn", "--act-order"][..],
            "--act-order/--no-act-order does not apply to --method rtn",
        ),
        (
            &["quantize", "--method", "rtn", "--damp", "0.1"],
            "--damp does not apply",
        ),
        (&["quantize", "--bits", "9"], "bits 9"),
        (
            &[
                "quantize",
                "--bits",
                "6",
                "--group-size",
                "32",
                "--format",
                "gptq",
                "--calib",
                missing,
            ],
            "6-bit; this layout's loaders know 2, 3, 4 and 8 bits",
        ),
        (
            &[
                "prune",
                "--method",
                "wanda",
                "--sparsity",
                "0.5",
                "--bits",
                "4",
            ],
            "--bits does not apply",
        ),
        (
            &[
                "prune",
                "--sparsity",
                "0.5",
                "--format",
                "sparse-24-bitmask",
                "--calib",
                missing,
            ],
            "sparse-24-bitmask cannot store it: 0.5 sparsity",
        ),
        (
            &[
                "prune",
                "--pattern",
                "2:4",
                "--format",
                "gptq",
                "--calib",
                missing,
            ],
            "gptq cannot store it: it is pruned",
        ),
        (
            &[
                "lowrank",
                "--keep",
                "0.5",
                "--format",
                "compressed-tensors",
                "--calib",
                missing,
            ],
            "compressed-tensors cannot store it: it is factored",
        ),
        (
            &[
                "quantize",
                "--group-size",
                "32",
                "--format",
                "sparse-24-bitmask",
                "--calib",
                missing,
            ],
            "not pruned",
        ),
        (
            &[
                "prune",
                "--pattern",
                "2:4",
                "--format",
                "gguf",
                "--calib",
                missing,
            ],
            "stages before it are not supported",
        ),
        (
            &[
                "quantize", "--format", "gguf", "--bits", "4", "--calib", missing,
            ],
            "does not apply to --format gguf",
        ),
    ] {
        let mut a = vec![args[0], model, "--out", out];
        a.extend_from_slice(&args[1..]);
        let (ok, _, err) = crunch(&a);
        assert!(!ok && !err.contains("panicked"), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(
            !err.contains("nonexistent"),
            "{args:?}: checked too late: {err}"
        );
        assert!(!Path::new(out).exists());
    }
}

/// A mixture-of-experts model through the binary: `crunch info` describes its experts; a
/// recipe's `[moe]` table reaches calibration (every expert below the threshold calibrated on
/// every token, recorded in crunch.json), is written back into the output's recipe.toml, and
/// reproduces the output; routers stay float.
#[test]
fn moe_recipes_reach_calibration_and_are_recorded() {
    let d = tempfile::tempdir().unwrap();
    let spec = tiny_specs()
        .into_iter()
        .find(|s| s.name == "qwen3_moe")
        .unwrap();
    let p = d.path().join("m");
    write_tiny_model(&spec, &p, 0).unwrap();
    let model = p.to_str().unwrap();
    let (ok, out, err) = crunch(&["info", model, "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["experts"]["count"], 8);
    assert_eq!(v["experts"]["per_token"], 2);
    assert_eq!(v["experts"]["sparse_layers"], 2);

    let recipe = d.path().join("moe.toml");
    std::fs::write(
        &recipe,
        format!(
            "[calibration]\ndata = \"{TINY_CALIB}\"\n[[stage]]\nmethod = \"gptq\"\nbits = 4\n\
             group_size = 16\nsymmetric = true\n[moe]\nexpert_min_tokens = 1000\n"
        ),
    )
    .unwrap();
    let out = d.path().join("out");
    let args = |out: &Path, recipe: &Path| {
        let (ok, _, err) = crunch(&[
            "compress",
            model,
            "--out",
            out.to_str().unwrap(),
            "--recipe",
            recipe.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
    };
    args(&out, &recipe);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("crunch.json")).unwrap()).unwrap();
    let layers = json["layers"].as_object().unwrap();
    assert!(!layers.keys().any(|n| n.ends_with("mlp.gate")), "a router");
    let experts: Vec<_> = layers
        .iter()
        .filter(|(n, _)| n.contains(".experts."))
        .collect();
    assert_eq!(experts.len(), 2 * 8 * 3);
    for (n, l) in experts {
        let e = &l["expert_calibration"];
        assert_eq!(e["statistics"], "all-tokens", "{n}");
        assert_eq!(e["tokens"], 4 * 16, "{n}");
    }
    let written = std::fs::read_to_string(out.join("recipe.toml")).unwrap();
    assert!(
        written.contains("[moe]") && written.contains("expert_min_tokens = 1000"),
        "{written}"
    );
    let again = d.path().join("again");
    args(&again, &out.join("recipe.toml"));
    assert_eq!(dir_bytes(&again), dir_bytes(&out));
}
