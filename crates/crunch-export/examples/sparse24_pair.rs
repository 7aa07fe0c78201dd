//! Writes one 2:4 magnitude pruning of a tiny random model in both of its layouts, for
//! `scripts/check_sparse24.py`:
//!
//!     cargo run -p crunch-export --example sparse24_pair -- OUT_DIR
//!
//! makes OUT_DIR/source (the tiny model), OUT_DIR/crunch (crunch's own format) and
//! OUT_DIR/compressed-tensors (sparse-24-bitmask).

use crunch_compress::magnitude;
use crunch_export::crunch_dir;
use crunch_export::{sparse24, Target};
use crunch_model::testing::{tiny_specs, write_tiny_model};
use crunch_model::Checkpoint;
use crunch_repr::format::{layer_recipes, Recipe};
use crunch_repr::{Compressed, CompressedLayer, Sparsity};
use half::f16;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: sparse24_pair OUT_DIR")?,
    );
    let spec = tiny_specs()
        .into_iter()
        .find(|s| s.name == "llama")
        .ok_or("no llama")?;
    let src = out.join("source");
    write_tiny_model(&spec, &src, 7)?;
    let ckpt = Checkpoint::open(&src)?;
    let mut layers = BTreeMap::new();
    for (name, shape) in crunch_model::model::tensor_shapes(&ckpt.config) {
        let Some(prefix) = name.strip_suffix(".weight") else {
            continue;
        };
        if !prefix.starts_with("model.layers.") || shape.len() != 2 {
            continue;
        }
        let w: Vec<f32> = ckpt
            .weights
            .read(&name, &shape, &ckpt.config)?
            .iter()
            .map(|&v| f16::from_f32(v).to_f32())
            .collect();
        let p = magnitude(&w, shape[0], shape[1], Sparsity::NM { n: 2, m: 4 })?;
        let layer = CompressedLayer::new("magnitude", Compressed::Pruned(p));
        layers.insert(prefix.to_string(), layer);
    }
    let stages = vec!["magnitude sparsity=2:4".into()];
    let recipe = Recipe::new("tiny llama", stages, layer_recipes(&layers));
    let (ours, theirs) = (out.join("crunch"), out.join("compressed-tensors"));
    crunch_dir::write(&ckpt, &layers, &recipe, &Target::new(&ours).overwrite(true))?;
    sparse24::write(
        &ckpt,
        &layers,
        &recipe,
        &Target::new(&theirs).overwrite(true),
    )?;
    println!("{}", out.display());
    Ok(())
}
