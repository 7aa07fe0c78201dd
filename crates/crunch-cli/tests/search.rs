//! `crunch compress --target-*`: the budget search end to end on a tiny model made in code.

use crunch_model::testing::{tiny_specs, write_tiny_model};
use std::path::Path;

mod common;
use common::{crunch, eval_ppl, rebuild};

/// A short search (4 generations of 4 offspring), its variants and states in `cache`, JSON out.
fn quick(cache: &str) -> [&str; 9] {
    [
        "--generations",
        "4",
        "--offspring",
        "4",
        "--selection",
        "2x2,4x1",
        "--search-cache",
        cache,
        "--json",
    ]
}

fn dir_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// The first tiny model, written under `dir/model`; its path.
fn tiny_model(dir: &Path) -> String {
    let spec = tiny_specs().into_iter().next().unwrap();
    let model_dir = dir.join("model");
    write_tiny_model(&spec, &model_dir, 0).unwrap();
    model_dir.to_str().unwrap().to_string()
}

#[test]
fn a_searched_model_is_rebuilt_from_its_recipe() {
    let d = tempfile::tempdir().unwrap();
    let model = tiny_model(d.path());
    let model = model.as_str();
    let path = |n: &str| d.path().join(n).to_str().unwrap().to_string();
    let cache = path("cache");
    let search = |out: &str, target: &[&str], extra: &[&str]| {
        let mut a = vec!["compress", model, "--out", out];
        a.extend_from_slice(target);
        a.extend_from_slice(&[
            "--calib",
            "self:8x16",
            "--levels",
            "2,3,4",
            "--level-group-size",
            "32",
        ]);
        a.extend_from_slice(&quick(&cache));
        a.extend_from_slice(extra);
        crunch(&a)
    };
    let (a, rd) = (path("a"), path("rd.svg"));
    let (ok, out, err) = search(&a, &["--target-bpw", "3.2"], &["--plot", &rd]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let s = &v["search"];
    assert!(s["linear_bpw"].as_f64().unwrap() <= 3.2, "{s}");
    assert!(v["bits_per_weight"].as_f64().unwrap() <= 3.2, "{v}");
    assert!(s["calibration_kl"].as_f64().unwrap() > 0.0, "{s}");
    assert_eq!(s["variants_made"], 14 * 3);
    assert_eq!(s["generations"], 4);
    assert!(v["size_on_disk"].as_u64().unwrap() > 0);
    assert!(std::fs::read_to_string(&rd).unwrap().starts_with("<svg"));
    // Never worse than a seed: every uniform configuration that fits was scored on the same
    // held windows as the reported KL.
    let kl = s["calibration_kl"].as_f64().unwrap();
    let seeds = s["seeds"].as_array().unwrap();
    assert!(seeds.len() >= 2, "{s}");
    for seed in seeds {
        assert!(kl <= seed["calibration_kl"].as_f64().unwrap(), "{s}");
    }
    let uniform: Vec<(f64, f64)> = s["uniform"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            let x = |k: &str| u[k].as_f64().unwrap();
            (x("linear_bpw"), x("calibration_kl"))
        })
        .collect();
    // Every layer is named in the recipe, once.
    let recipe = std::fs::read_to_string(d.path().join("a/recipe.toml")).unwrap();
    for layer in 0..2 {
        for name in crunch_model::model::BLOCK_LINEARS {
            let full = format!("\"model.layers.{layer}.{name}\"");
            assert_eq!(recipe.matches(&full).count(), 1, "{full} in {recipe}");
        }
    }
    // The recipe rebuilds it byte for byte, without searching.
    let b = path("b");
    let recipe_path = path("a/recipe.toml");
    rebuild(model, &recipe_path, &b);
    assert_eq!(dir_bytes(Path::new(&a)), dir_bytes(Path::new(&b)));
    // Again with the same flags: every variant from the cache, the finished search's state
    // resumed, the same output.
    let c = path("c");
    let (ok, out, err) = search(&c, &["--target-bpw", "3.2"], &[]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["search"]["variants_made"], 0);
    assert_eq!(v["search"]["variants_cached"], 14 * 3);
    assert_eq!(dir_bytes(Path::new(&a)), dir_bytes(Path::new(&c)));
    // A KL target every level meets gives the smallest uniform configuration.
    let (ok, out, err) = search(&path("k"), &["--target-kl", "100"], &[]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["search"]["levels"]["gptq2g32"], 14, "{v}");
    // A KL target between the 3- and 4-bit uniform models' KL: the smallest searched file that
    // meets it, within one level step, so at most the 4-bit model's size.
    let (bpw3, kl3) = uniform[1];
    let (bpw4, kl4) = uniform[2];
    assert!(kl4 < kl3, "{uniform:?}");
    let target = (kl3 * kl4).sqrt().to_string();
    let (ok, out, err) = search(&path("t"), &["--target-kl", &target], &[]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let s = &v["search"];
    assert!(
        s["calibration_kl"].as_f64().unwrap() <= (kl3 * kl4).sqrt(),
        "{s}"
    );
    let bpw = s["linear_bpw"].as_f64().unwrap();
    assert!(
        bpw <= bpw4 && bpw > bpw3 - (bpw4 - bpw3),
        "{bpw} vs {uniform:?}"
    );
    // A budget below every layer's lowest level is refused, naming why.
    let (ok, _, err) = search(&path("e"), &["--target-bpw", "1.0"], &[]);
    assert!(
        !ok && err.contains("below the smallest configuration"),
        "{err}"
    );
    assert!(!Path::new(&path("e")).exists());
}

/// `--format gguf` with a target: GGUF types per layer (k-quants where rows are whole 256-value
/// super-blocks, the 32-value types elsewhere), a file of the requested size that crunch reads
/// back, and a recipe that rebuilds it byte for byte without searching.
#[test]
fn a_searched_gguf_has_the_requested_size() {
    let d = tempfile::tempdir().unwrap();
    let mut spec = tiny_specs().into_iter().next().unwrap();
    // ffn_down's rows (the intermediate size) take k-quants; every other row is 64 wide.
    spec.config["intermediate_size"] = 256.into();
    let model_dir = d.path().join("model");
    write_tiny_model(&spec, &model_dir, 0).unwrap();
    std::fs::write(
        model_dir.join("tokenizer.json"),
        crunch_model::testing::tiny_tokenizer_json(128).to_string(),
    )
    .unwrap();
    let model = model_dir.to_str().unwrap();
    let path = |n: &str| d.path().join(n).to_str().unwrap().to_string();
    let text = path("text.txt");
    std::fs::write(
        &text,
        "The quick brown fox jumps over the lazy dog. ".repeat(40),
    )
    .unwrap();
    let cache = path("cache");
    let search = |out: &str, target: &[&str]| {
        let mut a = vec!["compress", model, "--out", out, "--format", "gguf"];
        a.extend_from_slice(target);
        a.extend_from_slice(&["--calib", "self:8x16"]);
        a.extend_from_slice(&quick(&cache));
        crunch(&a)
    };
    // A search for `size` bytes with `mix` that must succeed: its JSON, and the file's size.
    let sized = |out: &str, size: u64, mix: &str| {
        let (ok, json, err) = search(out, &["--target-size", &size.to_string(), "--mix", mix]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        (v, std::fs::metadata(out).unwrap().len())
    };
    // The sizes of the Q4_0 and Q8_0 presets bracket the target.
    let plan = |mix: &str| {
        let (ok, out, err) = crunch(&[
            "quantize", model, "--format", "gguf", "--mix", mix, "--plan", "--out", "x.gguf",
        ]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["size_on_disk"].as_u64().unwrap()
    };
    let (lo, hi) = (plan("Q4_0"), plan("Q8_0"));
    let target = (lo + hi) / 2;
    // A size the unsearched tensors already fill is refused before any calibration.
    let (ok, _, err) = search(
        &path("none.gguf"),
        &["--target-size", "1000", "--mix", "Q8_0"],
    );
    assert!(
        !ok && err.contains("does not choose") && !d.path().join("none.gguf").exists(),
        "{err}"
    );
    let a = path("a.gguf");
    let (v, size) = sized(&a, target, "Q8_0");
    assert_eq!(v["size_on_disk"].as_u64(), Some(size));
    assert!(size <= target, "{size} > {target}");
    assert!(size as f64 >= 0.97 * target as f64, "{size} ≪ {target}");
    let s = &v["search"];
    assert!(s["calibration_kl"].as_f64().unwrap() > 0.0, "{s}");
    assert_eq!(s["variants_made"], 2 * (6 * 5 + 7), "{s}");
    // Seeded with the preset's own types (and every uniform configuration that fits), and no
    // worse than any of them on the held windows.
    let kl = s["calibration_kl"].as_f64().unwrap();
    let seeds = s["seeds"].as_array().unwrap();
    assert!(seeds.iter().any(|x| x["seed"] == "Q8_0 types"), "{s}");
    for seed in seeds {
        if let Some(k) = seed["calibration_kl"].as_f64() {
            assert!(kl <= k, "{s}");
        }
    }
    // ffn_down may take k-quants; the 64-wide rows only the 32-value types.
    let types = v["types"].as_object().unwrap();
    for k in types.keys() {
        assert!(
            [
                "F32", "Q8_0", "Q5_1", "Q5_0", "Q4_1", "IQ4_NL", "Q2_K", "Q3_K", "IQ4_XS", "Q4_K",
                "Q5_K", "Q6_K"
            ]
            .contains(&k.as_str()),
            "{k}"
        );
    }
    // crunch reads the file back and runs it.
    assert!(eval_ppl(&a, &text).is_finite());
    // The recipe beside it rebuilds the same bytes without searching.
    let b = path("b.gguf");
    rebuild(model, path("a.recipe.toml"), &b);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // Again: every variant from the cache, the same file.
    let c = path("c.gguf");
    let (v, _) = sized(&c, target, "Q8_0");
    assert_eq!(v["search"]["variants_made"], 0);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
    // The fill pass's rounds are in the record; `--fitness-self` adds the model's own samples
    // to the fitness windows (another search, still within the size).
    assert!(v["search"]["fill"].is_array(), "{v}");
    let mixed = path("mixed.gguf");
    let t = target.to_string();
    let (ok, json, err) = search(
        &mixed,
        &["--target-size", &t, "--mix", "Q8_0", "--fitness-self", "4"],
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["search"]["fitness_self"], 4, "{v}");
    assert!(std::fs::metadata(&mixed).unwrap().len() <= target);
    // At exactly a preset's file size, the preset's own types fit: the searched file is no
    // larger, and no worse than that seed on the held windows.
    let q4 = plan("Q4_K_M");
    let f = path("f.gguf");
    let (v, size) = sized(&f, q4, "Q4_K_M");
    assert!(size <= q4, "{size} > {q4}");
    let s = &v["search"];
    let preset_seed = s["seeds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["seed"] == "Q4_K_M types")
        .unwrap();
    let seed_kl = preset_seed["calibration_kl"].as_f64().unwrap();
    assert!(s["calibration_kl"].as_f64().unwrap() <= seed_kl, "{s}");
    // Below the untouched tensors' size: refused, nothing written.
    let e = path("e.gguf");
    let (ok, _, err) = search(&e, &["--target-size", "1000"]);
    assert!(!ok && err.contains("below"), "{err}");
    assert!(!Path::new(&e).exists());
    // GGUF types are not pruned: asking for it is an error, not a silent no-op.
    let (ok, _, err) = search(&e, &["--target-size", "2000000", "--prune-levels"]);
    assert!(!ok && err.contains("--prune-levels"), "{err}");
    assert!(!Path::new(&e).exists());
}

/// Decision 124's options: the large-model variants (`--level-inputs independent
/// --level-no-mse`) and the CPU setting's cheaper fitness (`--fitness-len`, `--patience`); the
/// record's stage timing; the recipe rebuilds the result byte for byte.
#[test]
fn the_search_time_options_run_and_rebuild() {
    let d = tempfile::tempdir().unwrap();
    let [a, b, cache] = ["a", "b", "cache"].map(|n| d.path().join(n).display().to_string());
    let model = tiny_model(d.path());
    let mut args = vec![
        "compress",
        model.as_str(),
        "--out",
        a.as_str(),
        "--target-bpw",
        "3.2",
    ];
    args.extend_from_slice(&["--calib", "self:8x16", "--levels", "2,3,4"]);
    args.extend_from_slice(&["--level-group-size", "32", "--level-inputs", "independent"]);
    args.extend_from_slice(&["--level-no-mse", "--fitness-len", "8", "--patience", "1"]);
    args.extend_from_slice(&quick(&cache));
    let (ok, out, err) = crunch(&args);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let s = &v["search"];
    assert!(s["linear_bpw"].as_f64().unwrap() <= 3.2, "{s}");
    assert!(s["generations"].as_u64().unwrap() <= 4, "{s}");
    let t = &s["timing"];
    for k in ["calibration_s", "variants_s", "uniform_s", "end_s"] {
        assert!(t[k].as_f64().unwrap() >= 0.0, "{k}: {t}");
    }
    assert_eq!(
        t["generation_end_s"].as_array().unwrap().len() as u64,
        s["generations"].as_u64().unwrap(),
        "{t}"
    );
    let recipe_path = format!("{a}/recipe.toml");
    let recipe = std::fs::read_to_string(&recipe_path).unwrap();
    assert!(recipe.contains("mse_clip = false"), "{recipe}");
    rebuild(&model, &recipe_path, &b);
    assert_eq!(dir_bytes(Path::new(&a)), dir_bytes(Path::new(&b)));
}

/// Levels with coded group scales (decision 145): a search over `2g16s6,3g32s6,3g16s6` writes a
/// recipe with `scale_bits = 6` that rebuilds the model byte for byte, and the result reads
/// back and evaluates; `crunch quantize --scale-bits` makes the same kind of layer, and bad
/// uses are refused with the flag named.
#[test]
fn coded_scale_levels_search_and_rebuild() {
    let d = tempfile::tempdir().unwrap();
    let [a, b, q, cache] = ["a", "b", "q", "cache"].map(|n| d.path().join(n).display().to_string());
    let model = tiny_model(d.path());
    let mut args = vec!["compress", model.as_str(), "--out", a.as_str()];
    args.extend_from_slice(&["--target-bpw", "3.6", "--calib", "self:8x16"]);
    args.extend_from_slice(&["--levels", "2g16s6,3g32s6,3g16s6"]);
    args.extend_from_slice(&quick(&cache));
    let (ok, out, err) = crunch(&args);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["search"]["linear_bpw"].as_f64().unwrap() <= 3.6, "{v}");
    let recipe_path = format!("{a}/recipe.toml");
    let recipe = std::fs::read_to_string(&recipe_path).unwrap();
    assert!(recipe.contains("scale_bits = 6"), "{recipe}");
    rebuild(&model, &recipe_path, &b);
    assert_eq!(dir_bytes(Path::new(&a)), dir_bytes(Path::new(&b)));
    // A tokenizer beside the result, so that it can be evaluated on text.
    let tokenizer = crunch_model::testing::tiny_tokenizer_json(128).to_string();
    std::fs::write(Path::new(&a).join("tokenizer.json"), tokenizer).unwrap();
    let text = d.path().join("t.txt");
    std::fs::write(
        &text,
        "the quick brown fox jumps over the lazy dog. ".repeat(40),
    )
    .unwrap();
    assert!(eval_ppl(&a, &text).is_finite());

    let quantize_to = |out: &str, extra: &[&str]| {
        let mut args = vec!["quantize", model.as_str(), "--out", out, "--force"];
        args.extend_from_slice(&["--calib", "self:4x16", "--json"]);
        args.extend_from_slice(extra);
        crunch(&args)
    };
    let quantize = |extra: &[&str]| quantize_to(&q, extra);
    let (ok, out, err) = quantize(&["--bits", "3", "--group-size", "16", "--scale-bits", "6"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let bpw = v["bits_per_weight"].as_f64().unwrap();
    // 3 + (6 + 3)/16 per weight, plus a 16-bit row scale per row of 64 or 128 columns.
    assert!(
        bpw > 3.5625 + 16.0 / 128.0 && bpw < 3.5625 + 16.0 / 64.0,
        "{v}"
    );
    // compressed-tensors takes them too, storing the coded scales' f16 values (decision 145;
    // crunch does not read that layout back, vLLM does).
    let ct = d.path().join("ct").display().to_string();
    let coded = ["--bits", "3", "--group-size", "16", "--scale-bits", "6"];
    let (ok, _, err) = quantize_to(
        &ct,
        &[&coded[..], &["--format", "compressed-tensors"]].concat(),
    );
    assert!(ok, "{err}");
    let (ok, _, err) = quantize(&["--method", "rtn", "--scale-bits", "6"]);
    assert!(!ok && err.contains("--scale-bits"), "{err}");
    let (ok, _, err) = quantize(&["--scale-bits", "3"]);
    assert!(!ok && err.contains("scale_bits 3"), "{err}");
    let (ok, _, err) = quantize(&["--group-size", "channel", "--scale-bits", "6"]);
    assert!(!ok && err.contains("group size"), "{err}");
}
