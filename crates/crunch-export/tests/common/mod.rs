//! What the export tests share: tiny models, and every block linear layer compressed one way.

use crunch_model::testing::{tiny_specs, write_tiny_model};
use crunch_model::Checkpoint;
use std::collections::BTreeMap;
use std::path::Path;

/// Left uncompressed in every case, so dense fallbacks (and `ignore` / `dynamic`) are exercised.
pub const SKIPPED: &str = "model.layers.1.mlp.down_proj";

/// The tiny model of architecture `name` with weights from `seed`, written to `dir` and opened.
pub fn open_tiny(name: &str, dir: &Path, seed: u64) -> Checkpoint {
    let spec = tiny_specs().into_iter().find(|s| s.name == name).unwrap();
    write_tiny_model(&spec, dir, seed).unwrap();
    Checkpoint::open(dir).unwrap()
}

/// Every block linear layer but [`SKIPPED`], as `compress(weight, rows, cols)` makes it.
pub fn compress_each<T>(
    ckpt: &Checkpoint,
    compress: impl Fn(&[f32], usize, usize) -> T,
) -> BTreeMap<String, T> {
    crunch_model::model::tensor_shapes(&ckpt.config)
        .into_iter()
        .filter(|(n, s)| n.starts_with("model.layers.") && s.len() == 2)
        .map(|(n, s)| (n.strip_suffix(".weight").unwrap().to_string(), s[0], s[1]))
        .filter(|(n, _, _)| n != SKIPPED)
        .map(|(n, rows, cols)| {
            let w = ckpt
                .weights
                .read(&format!("{n}.weight"), &[rows, cols], &ckpt.config)
                .unwrap();
            let layer = compress(&w, rows, cols);
            (n, layer)
        })
        .collect()
}
