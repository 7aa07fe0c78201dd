//! Expert-aware calibration on a tiny Qwen3-MoE whose router never picks expert 7: GPTQ
//! completes, the starved expert is calibrated on every token (and says so), and its output
//! error is within 2× the median expert's. Plus: every method of crunch runs through the plan
//! driver on every new architecture.

use crunch_calib::{compress_model, windows, RecipeFile};
use crunch_model::hooks::{LinearHook, LinearId};
use crunch_model::layout::{all_linears, expert_linear, LinearRole};
use crunch_model::testing::{reference_ids, tiny_dir, tiny_specs, write_model};
use crunch_model::{Checkpoint, ModelConfig};
use crunch_repr::CompressedLayer;
use crunch_runtime::{Backend, Cpu};
use std::collections::BTreeMap;
use std::path::Path;

const STARVED: usize = 7;

/// The tiny Qwen3-MoE with hidden dimension 0 of every embedding a large constant and every
/// router reading it: +1 for experts 0..7, −3 for expert 7, so expert 7's logit is far below
/// every other's for any token and the router never picks it.
fn starved_model(dir: &Path) -> Checkpoint {
    let spec = tiny_specs()
        .into_iter()
        .find(|s| s.name == "qwen3_moe")
        .unwrap();
    let cfg = ModelConfig::from_hf_json(Path::new("c"), &spec.config).unwrap();
    // Both tensors edited are [_, hidden].
    let cols = cfg.hidden;
    write_model(dir, &spec.config, &cfg, 0, |name, v| {
        if name == "model.embed_tokens.weight" {
            v.chunks_mut(cols).for_each(|row| row[0] = 10.0);
        }
        if name.ends_with("mlp.gate.weight") {
            for (e, row) in v.chunks_mut(cols).enumerate() {
                row[0] = if e == STARVED { -3.0 } else { 1.0 };
            }
        }
    })
    .unwrap();
    Checkpoint::open(dir).unwrap()
}

/// GPTQ 3-bit g16 with act-order, experts below `expert_min_tokens` routed tokens calibrated
/// on every token.
fn gptq_plan(expert_min_tokens: usize) -> RecipeFile {
    RecipeFile::parse(&format!(
        "[[stage]]\nmethod = \"gptq\"\nbits = 3\ngroup_size = 16\nact_order = true\n\
         [moe]\nexpert_min_tokens = {expert_min_tokens}\n"
    ))
    .unwrap()
}

/// Captures the input of block `layer`'s sparse MLP (what its router reads).
struct MlpInputs {
    layer: usize,
    rows: Vec<Vec<f32>>,
}

impl LinearHook<Cpu> for MlpInputs {
    fn linear_input(
        &mut self,
        id: LinearId,
        x: &<Cpu as Backend>::Tensor,
    ) -> crunch_model::Result<()> {
        if id.layer == self.layer && id.name == "mlp.gate" {
            let w = Cpu.shape(x)[1];
            self.rows
                .extend(Cpu.to_f32(x)?.chunks(w).map(<[f32]>::to_vec));
        }
        Ok(())
    }
}

#[test]
fn a_starved_expert_is_calibrated_on_every_token_and_compressed_as_well_as_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = starved_model(dir.path());
    let cfg = ckpt.config.clone();
    let text = reference_ids(cfg.vocab, 4096);
    let calib = windows(&text, 8, 32, 0).unwrap();
    let layers = compress_model(&Cpu, &ckpt, &gptq_plan(64), Some(&calib), &mut ()).unwrap();
    let naming = cfg.moe.as_ref().unwrap().naming;
    let name = |layer: usize, e: usize, part: usize| {
        LinearId::new(layer, expert_linear(naming, e, part)).full_name()
    };
    // Routers stay as they are; every expert of both sparse layers is quantized.
    assert!(!layers.keys().any(|n| n.ends_with("mlp.gate")));
    for layer in [0, 2] {
        let starved = layers[&name(layer, STARVED, 2)].expert.unwrap();
        assert_eq!(
            starved.routed_tokens, 0,
            "layer {layer}: expert 7 was routed to"
        );
        assert!(starved.all_tokens);
        assert_eq!(starved.tokens, 8 * 32);
        let busy: Vec<_> = (0..STARVED)
            .map(|e| layers[&name(layer, e, 0)].expert.unwrap())
            .collect();
        assert_eq!(
            busy.iter().map(|c| c.routed_tokens).sum::<usize>(),
            2 * 8 * 32,
            "top-2 of 256 tokens among experts 0..7"
        );
    }

    // Each expert's output error on held-out tokens, original against quantized weights.
    let model = ckpt.load(Cpu, |_| {}).unwrap();
    let mut inputs = MlpInputs {
        layer: 0,
        rows: Vec::new(),
    };
    for ids in windows(&reference_ids(cfg.vocab, 4096), 4, 32, 99).unwrap() {
        model.hidden_states(&ids, &mut inputs).unwrap();
    }
    let h: Vec<f32> = inputs.rows.concat();
    let x = Cpu.upload(h, &[inputs.rows.len(), cfg.hidden]).unwrap();
    let m = cfg.moe.as_ref().unwrap();
    let weight = |layer: &CompressedLayer| {
        let (r, c) = layer.shape();
        Cpu.upload(layer.dense(), &[r, c]).unwrap()
    };
    let expert_out = |w: [&<Cpu as Backend>::Tensor; 3]| {
        let g = Cpu.linear(&x, w[0], None).unwrap();
        let u = Cpu.linear(&x, w[1], None).unwrap();
        let a = Cpu.silu_mul(&g, &u).unwrap();
        Cpu.to_f32(&Cpu.linear(&a, w[2], None).unwrap()).unwrap()
    };
    let errors: Vec<f64> = (0..m.experts)
        .map(|e| {
            let orig: Vec<_> = (0..3)
                .map(|p| {
                    let n = format!("{}.weight", name(0, e, p));
                    let (r, c) = if p == 2 {
                        (cfg.hidden, m.intermediate)
                    } else {
                        (m.intermediate, cfg.hidden)
                    };
                    Cpu.upload(ckpt.weights.read(&n, &[r, c], &cfg).unwrap(), &[r, c])
                        .unwrap()
                })
                .collect();
            let quant: Vec<_> = (0..3).map(|p| weight(&layers[&name(0, e, p)])).collect();
            let want = expert_out([&orig[0], &orig[1], &orig[2]]);
            let got = expert_out([&quant[0], &quant[1], &quant[2]]);
            let num: f64 = want
                .iter()
                .zip(&got)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum();
            let den: f64 = want.iter().map(|a| (*a as f64).powi(2)).sum();
            (num / den).sqrt()
        })
        .collect();
    let mut sorted = errors.clone();
    sorted.sort_by(f64::total_cmp);
    let median = (sorted[3] + sorted[4]) / 2.0;
    println!("per-expert relative output error: {errors:.4?}, median {median:.4}");
    assert!(
        errors[STARVED] <= 2.0 * median,
        "starved expert error {} > 2 × median {median}",
        errors[STARVED]
    );

    // Without the fallback an expert the router never picked has nothing to calibrate on
    // (here expert 7 and any other the few calibration tokens missed): a clear error.
    let e = compress_model(&Cpu, &ckpt, &gptq_plan(0), Some(&calib), &mut ())
        .expect_err("no statistics for expert 7")
        .to_string();
    assert!(
        e.contains("no calibration inputs reached") && e.contains("experts."),
        "{e}"
    );
}

/// Every method crunch has, through the plan driver, on each new architecture: every layer
/// the plan covers comes back compressed, finite, and the same inputs give the same result.
#[test]
fn every_method_runs_on_the_new_architectures() {
    let recipes = [
        "[[stage]]\nmethod = \"rtn\"\nbits = 4\ngroup_size = 16\n",
        "[[stage]]\nmethod = \"gptq\"\nbits = 4\ngroup_size = 16\nact_order = true\n",
        "[[stage]]\nmethod = \"magnitude\"\nsparsity = \"0.5\"\n",
        "[[stage]]\nmethod = \"wanda\"\nsparsity = \"2:4\"\n",
        "[[stage]]\nmethod = \"sparsegpt\"\nsparsity = \"2:4\"\nbits = 4\ngroup_size = 16\n",
        "[[stage]]\nmethod = \"svd\"\nkeep = 0.7\n",
        "[[stage]]\nmethod = \"whitened-svd\"\nkeep = 0.7\n",
        "[[stage]]\nmethod = \"gptq\"\nbits = 3\ngroup_size = 16\n[[stage]]\nmethod = \"eora\"\nrank = 4\n",
    ];
    for arch in ["gemma3", "phi3", "mixtral", "qwen3_moe"] {
        let spec = tiny_specs().into_iter().find(|s| s.name == arch).unwrap();
        let dir = tiny_dir(&spec);
        let ckpt = Checkpoint::open(dir.path()).unwrap();
        let text = reference_ids(ckpt.config.vocab, 2048);
        let wins = windows(&text, 4, 32, 0).unwrap();
        let expected: BTreeMap<String, (usize, usize)> = all_linears(&ckpt.config)
            .into_iter()
            .filter(|s| s.role != LinearRole::Router)
            .map(|s| (s.id.full_name(), (s.rows, s.cols)))
            .collect();
        for recipe in recipes {
            let plan = RecipeFile::parse(recipe).unwrap();
            let run = || compress_model(&Cpu, &ckpt, &plan, Some(&wins), &mut ()).unwrap();
            let out = run();
            let what = format!("{arch}: {}", recipe.lines().nth(1).unwrap());
            if recipe.contains("svd") {
                // Low rank keeps some layers dense within its budget.
                assert!(!out.is_empty() && out.len() <= expected.len(), "{what}");
            } else {
                assert_eq!(out.len(), expected.len(), "{what}");
            }
            for (name, layer) in &out {
                assert_eq!(Some(&layer.shape()), expected.get(name), "{what}: {name}");
                assert!(
                    layer.dense().iter().all(|v| v.is_finite()),
                    "{what}: {name}"
                );
                // Calibration records how each expert's statistics were gathered.
                let calibrated = name.contains(".experts.") && plan.needs_calibration();
                assert_eq!(layer.expert.is_some(), calibrated, "{what}: {name}");
            }
            if recipe.contains("gptq") && !recipe.contains("eora") {
                assert_eq!(out, run(), "{what}: not deterministic");
            }
        }
    }
}
