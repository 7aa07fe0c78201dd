//! Evaluation runs on every architecture: perplexity, KL and top-1 agreement of a tiny random
//! model against itself (KL 0, agreement 1) and against a copy with one block's weights
//! perturbed (KL above 0), from the same token stream.

use crunch_eval::{evaluate, EvalOptions};
use crunch_model::testing::{reference_ids, tiny_specs, write_tiny_model};
use crunch_model::Checkpoint;
use crunch_runtime::{Backend, Cpu};

#[test]
fn every_architecture_evaluates() {
    for spec in tiny_specs() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_model(&spec, dir.path(), 0).unwrap();
        let ckpt = Checkpoint::open(dir.path()).unwrap();
        let model = ckpt.load(Cpu, |_| {}).unwrap();
        let tokens = reference_ids(ckpt.config.vocab, 200);
        let opts = EvalOptions {
            ctx: 48,
            max_tokens: None,
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
    }
}
