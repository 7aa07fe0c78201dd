//! The calibration loop on tiny models: GPTQ through the recipe driver beats RTN on the model's
//! own output, and the result is deterministic.

use crunch_calib::{compress_model, RecipeFile};
use crunch_model::testing::{tiny_dir, tiny_specs, SplitMix64};
use crunch_model::Checkpoint;
use crunch_repr::CompressedLayer;
use crunch_runtime::{Backend, Cpu};

fn random_windows(n: usize, len: usize, vocab: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = SplitMix64(seed);
    (0..n)
        .map(|_| {
            (0..len)
                .map(|_| (rng.next_u64() % vocab as u64) as u32)
                .collect()
        })
        .collect()
}

/// A one-stage recipe: `method` at 3 bits, groups of 32.
fn recipe(method: &str) -> RecipeFile {
    let text = format!("[[stage]]\nmethod = \"{method}\"\nbits = 3\ngroup_size = 32\n");
    RecipeFile::parse(&text).unwrap()
}

/// Mean squared difference of logits between the original and a model whose block linears
/// are replaced by the dequantized `layers`.
fn output_error(
    ckpt: &Checkpoint,
    layers: &std::collections::BTreeMap<String, CompressedLayer>,
    ids: &[u32],
) -> f64 {
    let base = ckpt.load(Cpu, |_| {}).unwrap();
    let mut model = ckpt.load(Cpu, |_| {}).unwrap();
    for (name, q) in layers {
        let (layer, rel) = name
            .strip_prefix("model.layers.")
            .and_then(|s| s.split_once('.'))
            .unwrap();
        let block = &mut model.blocks[layer.parse::<usize>().unwrap()];
        let lin = block.linear_mut(rel).unwrap();
        let (rows, cols) = q.shape();
        lin.weight = Cpu.upload(q.dense(), &[rows, cols]).unwrap();
    }
    let a = Cpu.to_f32(&base.forward(ids).unwrap()).unwrap();
    let b = Cpu.to_f32(&model.forward(ids).unwrap()).unwrap();
    a.iter()
        .zip(&b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64
}

#[test]
fn gptq_beats_rtn_and_is_deterministic() {
    for spec in tiny_specs() {
        let dir = tiny_dir(&spec);
        let ckpt = Checkpoint::open(dir.path()).unwrap();
        let vocab = ckpt.config.vocab;
        let calib = random_windows(16, 32, vocab, 1);
        let gptq = recipe("gptq");
        let g = compress_model(&Cpu, &ckpt, &gptq, Some(&calib), &mut ()).unwrap();
        let again = compress_model(&Cpu, &ckpt, &gptq, Some(&calib), &mut ()).unwrap();
        assert_eq!(g, again, "{}: GPTQ is not deterministic", spec.name);
        let r = compress_model(&Cpu, &ckpt, &recipe("rtn"), None, &mut ()).unwrap();
        // Every block linear layer but the routers of sparse MLPs.
        let want = crunch_model::layout::all_linears(&ckpt.config)
            .iter()
            .filter(|s| s.role != crunch_model::layout::LinearRole::Router)
            .count();
        assert_eq!(g.len(), want, "{}", spec.name);
        let test_ids = &random_windows(1, 32, vocab, 99)[0];
        let (eg, er) = (
            output_error(&ckpt, &g, test_ids),
            output_error(&ckpt, &r, test_ids),
        );
        println!("{}: logits MSE gptq {eg:.4e} rtn {er:.4e}", spec.name);
        assert!(eg < er, "{}: GPTQ {eg} not better than RTN {er}", spec.name);
    }
}
