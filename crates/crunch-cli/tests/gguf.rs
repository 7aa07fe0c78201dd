//! `crunch quantize --format gguf` end to end: importance from calibration text, the file's
//! size and types, and its recipe.

mod common;
use common::{crunch, eval_ppl, rebuild, tiny_llama};
use std::path::Path;

#[test]
fn quantize_to_gguf_with_importance_end_to_end() {
    let (d, p) = tiny_llama();
    std::fs::write(
        p.join("tokenizer.json"),
        crunch_model::testing::tiny_tokenizer_json(128).to_string(),
    )
    .unwrap();
    let text = d.path().join("calib.txt");
    std::fs::write(
        &text,
        "The quick brown fox jumps over the lazy dog. ".repeat(40),
    )
    .unwrap();
    let out = d.path().join("m.gguf");
    let args = |out: &Path, extra: &[&str]| {
        let mut a = vec![
            "quantize",
            p.to_str().unwrap(),
            "--format",
            "gguf",
            "--calib",
            text.to_str().unwrap(),
            "--calib-samples",
            "4",
            "--calib-len",
            "32",
            "--json",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        a.extend(["--out".into(), out.to_str().unwrap().into()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let mix = ["--mix", "Q8_0", "--tensor-type", "ffn_down=Q4_0"];
    let run = |a: Vec<String>| crunch(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let (ok, stdout, err) = run(args(&out, &mix));
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        report["size_on_disk"].as_u64(),
        Some(std::fs::metadata(&out).unwrap().len())
    );
    assert!(report["importance"]
        .as_str()
        .unwrap()
        .contains("E[x^2] over 4 x 32"));
    assert_eq!(report["types"]["Q4_0"]["tensors"], 2);

    // The file loads in crunch and runs.
    let ppl = eval_ppl(&out, &text);
    assert!(ppl.is_finite() && ppl > 1.0, "{ppl}");

    // Same inputs, same bytes; an existing output is refused.
    let out2 = d.path().join("m2.gguf");
    assert!(run(args(&out2, &mix)).0);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());

    // The recipe beside the file reproduces it byte for byte through `crunch compress`.
    let recipe = d.path().join("m.recipe.toml");
    let text = std::fs::read_to_string(&recipe).unwrap();
    assert!(
        text.contains("format = \"gguf\"") && text.contains("mix = \"Q8_0\""),
        "{text}"
    );
    let out3 = d.path().join("m3.gguf");
    rebuild(&p, &recipe, &out3);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out3).unwrap());
    assert_eq!(
        text,
        std::fs::read_to_string(d.path().join("m3.recipe.toml")).unwrap()
    );
    let (ok, _, err) = run(args(&out, &mix));
    assert!(!ok && err.contains("already exists"), "{err}");

    // --plan writes nothing and lists every tensor; --save-imatrix writes llama.cpp's format.
    let planned = d.path().join("planned.gguf");
    let imatrix = d.path().join("imatrix.gguf");
    let mut extra = mix.to_vec();
    extra.extend(["--plan", "--save-imatrix", imatrix.to_str().unwrap()]);
    let (ok, stdout, err) = run(args(&planned, &extra));
    assert!(ok, "{err}");
    assert!(!planned.exists());
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let written = crunch_formats::gguf::GgufFile::open(&out).unwrap();
    use crunch_formats::TensorSource;
    assert_eq!(
        plan["tensors"].as_array().unwrap().len(),
        written.tensors().len()
    );
    assert!(crunch_export::gguf::read_imatrix(&imatrix).is_ok());

    // Bad flags are refused with the reason.
    for (extra, needle) in [
        (vec!["--mix", "Q9_K"], "not a preset"),
        (vec!["--tensor-type", "ffn_down"], "expected PATTERN=TYPE"),
        (
            vec!["--tensor-type", "ffn_down=IQ2_XXS"],
            "not a type crunch writes",
        ),
        (
            vec!["--damp", "0.1"],
            "--damp applies to --method gptq only",
        ),
        (
            vec!["--method", "gptq", "--act-order"],
            "does not apply to --format gguf",
        ),
    ] {
        let (ok, _, err) = run(args(&d.path().join("x.gguf"), &extra));
        assert!(!ok && err.contains(needle), "{extra:?}: {err}");
    }

    // GPTQ onto the same types: same layout and size, the rows in llama.cpp's order (q/k
    // permuted after GPTQ: each decoded attn_q stays close to RTN's), a recipe that reproduces
    // it, and a clear error without calibration data.
    let gptq_out = d.path().join("g.gguf");
    let mut gptq_args = mix.to_vec();
    gptq_args.extend([
        "--tensor-type",
        "attn_q=Q8_0",
        "--method",
        "gptq",
        "--damp",
        "0.02",
    ]);
    let (ok, stdout, err) = run(args(&gptq_out, &gptq_args));
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["method"], "gptq");
    assert_eq!(
        report["size_on_disk"].as_u64(),
        Some(std::fs::metadata(&gptq_out).unwrap().len())
    );
    let rtn_out = d.path().join("r.gguf");
    let mut rtn_args = mix.to_vec();
    rtn_args.extend(["--tensor-type", "attn_q=Q8_0"]);
    assert!(run(args(&rtn_out, &rtn_args)).0);
    let (g, r) = (
        crunch_formats::gguf::GgufFile::open(&gptq_out).unwrap(),
        crunch_formats::gguf::GgufFile::open(&rtn_out).unwrap(),
    );
    let down = "blk.1.ffn_down.weight";
    assert_ne!(g.read_f32(down).unwrap(), r.read_f32(down).unwrap());
    // Q8_0 rows: GPTQ moves values by a few steps; rows in the wrong order by ~|w| itself.
    let (gv, rv) = (
        g.read_f32("blk.0.attn_q.weight").unwrap(),
        r.read_f32("blk.0.attn_q.weight").unwrap(),
    );
    assert_ne!(gv, rv, "GPTQ changed nothing");
    let diff: f32 = gv.iter().zip(&rv).map(|(a, b)| (a - b).abs()).sum();
    let size: f32 = rv.iter().map(|v| v.abs()).sum();
    assert!(
        diff < 0.3 * size,
        "attn_q: GPTQ {diff} away from RTN ({size})"
    );
    let recipe = std::fs::read_to_string(d.path().join("g.recipe.toml")).unwrap();
    assert!(recipe.contains("method = \"gptq\""), "{recipe}");
    let again = d.path().join("g2.gguf");
    rebuild(&p, d.path().join("g.recipe.toml"), &again);
    assert_eq!(
        std::fs::read(&gptq_out).unwrap(),
        std::fs::read(&again).unwrap()
    );
    let (ok, _, err) = crunch(&[
        "quantize",
        p.to_str().unwrap(),
        "--format",
        "gguf",
        "--method",
        "gptq",
        "--out",
        d.path().join("z.gguf").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("--method gptq needs --calib"), "{err}");
    let (ok, _, err) = crunch(&[
        "quantize",
        p.to_str().unwrap(),
        "--out",
        d.path().join("y").to_str().unwrap(),
        "--method",
        "rtn",
        "--mix",
        "Q4_K_M",
    ]);
    assert!(
        !ok && err.contains("--mix applies to --format gguf only"),
        "{err}"
    );
}
