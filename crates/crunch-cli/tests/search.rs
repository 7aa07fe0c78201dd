//! `crunch compress --target-*`: the budget search end to end on a tiny model made in code.

use crunch_model::testing::{tiny_specs, write_tiny_model};
use std::path::Path;

mod common;
use common::crunch;

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

#[test]
fn a_searched_model_is_rebuilt_from_its_recipe() {
    let d = tempfile::tempdir().unwrap();
    let spec = tiny_specs().into_iter().next().unwrap();
    let model_dir = d.path().join("model");
    write_tiny_model(&spec, &model_dir, 0).unwrap();
    let model = model_dir.to_str().unwrap();
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
            "--generations",
            "4",
            "--offspring",
            "4",
            "--selection",
            "2x2,4x1",
            "--search-cache",
            &cache,
            "--json",
        ]);
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
    // Every layer is named in the recipe, once.
    let recipe = std::fs::read_to_string(d.path().join("a/recipe.toml")).unwrap();
    for layer in 0..2 {
        for name in [
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ] {
            let full = format!("\"model.layers.{layer}.{name}\"");
            assert_eq!(recipe.matches(&full).count(), 1, "{full} in {recipe}");
        }
    }
    // The recipe rebuilds it byte for byte, without searching.
    let b = path("b");
    let recipe_path = path("a/recipe.toml");
    let (ok, _, err) = crunch(&["compress", model, "--recipe", &recipe_path, "--out", &b]);
    assert!(ok, "{err}");
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
    // A budget below every layer's lowest level is refused, naming why.
    let (ok, _, err) = search(&path("e"), &["--target-bpw", "1.0"], &[]);
    assert!(
        !ok && err.contains("below the smallest configuration"),
        "{err}"
    );
    assert!(!Path::new(&path("e")).exists());
}
