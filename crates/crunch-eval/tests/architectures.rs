//! Evaluation runs on every architecture: perplexity, KL and top-1 agreement of a tiny random
//! model against itself (KL 0, agreement 1) and against a copy with one block's weights
//! perturbed (KL above 0), from the same token stream.

//!
//! And `crunch eval --kv-cache`: the model attends through a compressed cache while the base
//! keeps the f32 one, so KL measures what the cache costs.

use crunch_eval::{evaluate, EvalOptions};
use crunch_model::testing::{reference_ids, tiny_dir, tiny_specs, TinySpec};
use crunch_model::{Checkpoint, Model};
use crunch_runtime::{Backend, Cpu, KvMode};

/// Each tiny architecture written, opened and loaded, with 200 tokens of its vocabulary.
fn each_architecture(mut f: impl FnMut(&TinySpec, &Checkpoint, Model<Cpu>, Vec<u32>)) {
    for spec in tiny_specs() {
        let dir = tiny_dir(&spec);
        let ckpt = Checkpoint::open(dir.path()).unwrap();
        let model = ckpt.load(Cpu, |_| {}).unwrap();
        let tokens = reference_ids(ckpt.config.vocab, 200);
        f(&spec, &ckpt, model, tokens);
    }
}

#[test]
fn every_architecture_evaluates() {
    each_architecture(|spec, ckpt, model, tokens| {
        let opts = EvalOptions {
            ctx: 48,
            max_tokens: None,
            kv_cache: KvMode::F32,
        };
        let same = evaluate(&model, Some(&model), &tokens, &opts, |_, _| {}).unwrap();
        assert!(
            same.ppl.is_finite() && same.ppl > 1.0,
            "{}: {}",
            spec.name,
            same.ppl
        );
        assert!(same.kl.unwrap().abs() < 1e-9, "{}", spec.name);
        assert_eq!(same.top1_agreement, Some(1.0), "{}", spec.name);
        let mut other = ckpt.load(Cpu, |_| {}).unwrap();
        let o = &mut other.blocks[0].o;
        // Not a scaling: Gemma's norm on the attention output would undo that.
        let w: Vec<f32> = Cpu
            .to_f32(&o.weight)
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, v)| v + 0.2 * (i as f32 * 0.37).sin())
            .collect();
        o.weight = Cpu.upload(w, &Cpu.shape(&o.weight)).unwrap();
        let diff = evaluate(&other, Some(&model), &tokens, &opts, |_, _| {}).unwrap();
        assert!(diff.kl.unwrap() > 1e-6, "{}", spec.name);
        assert_eq!(diff.tokens_scored, same.tokens_scored);
    });
}

/// Windows of 48 tokens, KIVI groups of 8 so that groups fill inside a window: f16 costs
/// almost nothing (KL < 1e-6), q8 little (< 1e-2: 3e-5–3e-4 on the dense models, 4.9e-3 on
/// the tiny Mixtral, whose routing turns small changes into different experts), and fewer
/// bits cost more (kivi2 > q4 > q8).
#[test]
fn compressed_caches_cost_kl_in_order_of_their_bits() {
    each_architecture(|spec, _, model, tokens| {
        let kl = |m: &str| {
            let opts = EvalOptions {
                ctx: 48,
                max_tokens: None,
                kv_cache: KvMode::parse(m).unwrap(),
            };
            let r = evaluate(&model, Some(&model), &tokens, &opts, |_, _| {}).unwrap();
            assert!(r.ppl.is_finite(), "{} {m}", spec.name);
            r.kl.unwrap()
        };
        let [f16, q8, q4, kivi2] = ["f16", "q8", "q4", "kivi2:8"].map(kl);
        println!(
            "{}: KL f16 {f16:.2e}, q8 {q8:.2e}, q4 {q4:.2e}, kivi2:8 {kivi2:.2e}",
            spec.name
        );
        assert!(f16 < 1e-6 && q8 < 1e-2, "{}", spec.name);
        assert!(q8 < q4 && q4 < kivi2, "{}", spec.name);
    });
}
