//! Recipes: every output reproduced from its `recipe.toml`, `--seed` over a recipe's seed,
//! flags and layouts refused before calibration, and a mixture of experts' `[moe]` table.

use crate::common::{crunch, rebuild, tiny_llama};
use crate::{dir_bytes, TINY_CALIB};
use crunch_model::testing::{tiny_specs, write_tiny_model};
use std::path::Path;

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
        rebuild(model, &recipe, &again);
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
    rebuild(model, &recipe, &out);
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
    rebuild(model, out.join("recipe.toml"), &again);
    assert_eq!(dir_bytes(&again), dir_bytes(&out));
}
