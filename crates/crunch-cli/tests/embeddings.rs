//! `--embeddings`: crunch's format stores the token embedding as asked, records the choice in
//! `recipe.toml` (which reproduces the output byte for byte), and refuses it for layouts that
//! cannot honour it, before any work.

use crunch_formats::safetensors::SafetensorsFile;
use crunch_formats::{DType, TensorSource};

mod common;
use common::{crunch, rebuild, tiny_llama};

#[test]
fn embeddings_are_stored_as_asked_and_recorded_in_the_recipe() {
    let (_d, model) = tiny_llama();
    let tmp = tempfile::tempdir().unwrap();
    let m = model.to_str().unwrap();
    for (flag, want) in [
        ("keep", DType::F32),
        ("f16", DType::F16),
        ("q8_0", DType::Q8_0),
    ] {
        let out = tmp.path().join(flag);
        let o = out.to_str().unwrap();
        let args = [
            "quantize",
            m,
            "--method",
            "rtn",
            "--group-size",
            "32",
            "--out",
            o,
            "--embeddings",
            flag,
        ];
        let (ok, _, err) = crunch(&args);
        assert!(ok, "{flag}: {err}");
        let st = SafetensorsFile::open(out.join("model.safetensors")).unwrap();
        let embed = st.info("model.embed_tokens.weight").unwrap();
        assert_eq!(embed.dtype, want, "{flag}");
        let recipe = std::fs::read_to_string(out.join("recipe.toml")).unwrap();
        assert_eq!(
            recipe.contains(&format!("embeddings = \"{flag}\"")),
            flag != "keep",
            "{recipe}"
        );
        // The recipe alone makes the same bytes.
        let again = tmp.path().join(format!("{flag}-again"));
        let r = out.join("recipe.toml");
        rebuild(m, &r, &again);
        for f in ["model.safetensors", "recipe.toml", "crunch.json"] {
            assert!(
                std::fs::read(out.join(f)).unwrap() == std::fs::read(again.join(f)).unwrap(),
                "{flag}: {f} differs"
            );
        }
        // And `crunch info` reads it, counting the embedding under its encoding.
        let (ok, out, err) = crunch(&["info", o]);
        assert!(ok && out.contains(want.ggml_name()), "{flag}: {out}{err}");
    }
}

#[test]
fn embeddings_are_refused_where_they_cannot_apply() {
    let (_d, model) = tiny_llama();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    let (m, o) = (model.to_str().unwrap(), out.to_str().unwrap());
    for (extra, needle) in [
        (
            &["--embeddings", "q3"][..],
            "`q3` is not an embedding encoding",
        ),
        (
            &["--embeddings", "q8_0", "--format", "compressed-tensors"][..],
            "applies to crunch's format, not compressed-tensors",
        ),
    ] {
        let args = [&["quantize", m, "--method", "rtn", "--out", o][..], extra].concat();
        let (ok, _, err) = crunch(&args);
        assert!(!ok && err.contains(needle), "{extra:?}: {err}");
        assert!(!out.exists(), "{extra:?}: an output was left");
    }
}
