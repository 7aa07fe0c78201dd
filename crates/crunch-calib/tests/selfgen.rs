//! Self-calibration: sequences sampled from a tiny model are reproducible from the seed,
//! change with it, start at the BOS token (or a uniform one) and stay in the vocabulary.

use crunch_calib::{default_batch, sample_windows, SelfSpec};
use crunch_model::testing::{tiny_dir, tiny_specs};
use crunch_model::{Checkpoint, Model};
use crunch_runtime::Cpu;

fn tiny(name: &str) -> (tempfile::TempDir, Checkpoint, Model<Cpu>) {
    let spec = tiny_specs().into_iter().find(|s| s.name == name).unwrap();
    let dir = tiny_dir(&spec);
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    let model = ckpt.load(Cpu, |_| {}).unwrap();
    (dir, ckpt, model)
}

const SPEC: SelfSpec = SelfSpec {
    samples: 5,
    len: 20,
};

fn draw(model: &Model<Cpu>, start: Option<u32>, seed: u64, batch: usize) -> Vec<Vec<u32>> {
    sample_windows(model, SPEC, start, seed, batch, &mut |_, _| {}).unwrap()
}

#[test]
fn sampling_is_reproducible_and_seeded() {
    for name in ["llama", "mistral", "qwen3"] {
        let (_d, ckpt, model) = tiny(name);
        let bos = ckpt.bos_token();
        assert_eq!(bos, Some(1), "tiny configs name bos_token_id 1");
        let mut calls = Vec::new();
        let a = sample_windows(&model, SPEC, bos, 0, 2, &mut |done, total| {
            calls.push((done, total))
        })
        .unwrap();
        assert_eq!(a.len(), SPEC.samples);
        for w in &a {
            assert_eq!(w.len(), SPEC.len);
            assert_eq!(w[0], 1, "{name}: starts at BOS");
            assert!(w.iter().all(|&t| (t as usize) < model.config.vocab));
        }
        // Progress only grows and ends at N × L.
        assert!(calls.windows(2).all(|p| p[0].0 < p[1].0));
        assert_eq!(calls.last(), Some(&(100, 100)));
        // Same seed, same windows; another seed, other windows.
        assert_eq!(a, draw(&model, bos, 0, 2), "{name}");
        assert_ne!(a, draw(&model, bos, 1, 2), "{name}");
        // The sequences differ from one another (sampling, not greedy decoding).
        assert!(a.iter().any(|w| w != &a[0]), "{name}: {a:?}");
    }
}

#[test]
fn without_bos_the_start_is_drawn_uniformly() {
    let (_d, _ckpt, model) = tiny("qwen2");
    let a = draw(&model, None, 7, 5);
    assert_eq!(a, draw(&model, None, 7, 5));
    let starts: std::collections::BTreeSet<u32> = a.iter().map(|w| w[0]).collect();
    assert!(starts.len() > 1, "{a:?}");
}

#[test]
fn bad_requests_are_refused() {
    let (_d, _ckpt, model) = tiny("llama");
    let long = SelfSpec {
        samples: 1,
        len: model.config.max_position + 1,
    };
    let err = sample_windows(&model, long, None, 0, 1, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
    let err = sample_windows(&model, SPEC, Some(100_000), 0, 1, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("vocabulary"), "{err}");
    assert!(default_batch(&model.config, 512) >= 1);
}
