//! The sequential, block-by-block calibration loop.

use crate::{Error, Result};
use crunch_compress::Hessian;
use crunch_model::hooks::{LinearHook, LinearId};
use crunch_model::model::{block_forward, load_block, RopeTables, BLOCK_LINEARS};
use crunch_model::Checkpoint;
use crunch_runtime::Backend;
use std::collections::BTreeMap;

/// One linear layer handed to a compressor.
pub struct LayerJob<'a> {
    pub id: LinearId,
    /// `[rows = out_features, cols = in_features]`, row-major f32.
    pub weight: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    /// 2·XᵀX/n of the layer's calibration inputs.
    pub hessian: &'a Hessian,
}

/// What calibration feeds: each layer in turn, in block order. Returns the replacement weight
/// (the compressed layer as the model will run it), or `None` to leave the layer as it is.
pub trait LayerCompressor {
    fn compress(&mut self, job: &LayerJob) -> Result<Option<Vec<f32>>>;
}

/// Progress callbacks: `block(layer, layers)` when a block starts, `step(what)` inside it.
pub trait Progress {
    fn block(&mut self, _layer: usize, _layers: usize) {}
    fn step(&mut self, _what: &str) {}
}

impl Progress for () {}

/// Linear layers that read the same input share one Hessian.
fn input_group(name: &str) -> &'static str {
    match name {
        "self_attn.q_proj" | "self_attn.k_proj" | "self_attn.v_proj" => "attn_in",
        "self_attn.o_proj" => "o_in",
        "mlp.gate_proj" | "mlp.up_proj" => "mlp_in",
        _ => "down_in",
    }
}

struct HessianHook<'a, B: Backend> {
    backend: &'a B,
    hessians: BTreeMap<&'static str, Hessian>,
}

impl<B: Backend> LinearHook<B> for HessianHook<'_, B> {
    fn linear_input(&mut self, id: LinearId, x: &B::Tensor) -> crunch_model::Result<()> {
        let group = input_group(id.name);
        // q, k and v see the same tensor: accumulate it once.
        if matches!(
            id.name,
            "self_attn.k_proj" | "self_attn.v_proj" | "mlp.up_proj"
        ) {
            return Ok(());
        }
        let shape = self.backend.shape(x);
        let (rows, cols) = (shape[0], shape[1]);
        let h = self
            .hessians
            .entry(group)
            .or_insert_with(|| Hessian::new(cols));
        match self.backend.gram(x)? {
            Some(xtx) => h.add_gram(&xtx, rows).map_err(|e| {
                crunch_model::Error::Weights(format!("Hessian of {}: {e}", id.name))
            })?,
            None => h.add_batch(&self.backend.to_f32(x)?),
        }
        Ok(())
    }
}

/// Streams `windows` (all of one length) through the checkpoint block by block (see the crate
/// docs), calling `compressor` on every linear layer of every block.
pub fn run_sequential<B: Backend>(
    backend: &B,
    ckpt: &Checkpoint,
    windows: &[Vec<u32>],
    compressor: &mut dyn LayerCompressor,
    progress: &mut dyn Progress,
) -> Result<()> {
    let cfg = &ckpt.config;
    let w = &ckpt.weights;
    if windows.is_empty() {
        return Err(Error::Data("no calibration windows".into()));
    }
    // Inputs of block 0: token embeddings. The embedding table is needed only here.
    let model_embed = {
        let table = w.read("model.embed_tokens.weight", &[cfg.vocab, cfg.hidden], cfg)?;
        backend.upload(table, &[cfg.vocab, cfg.hidden])?
    };
    let mut acts: Vec<B::Tensor> = windows
        .iter()
        .map(|ids| backend.embedding(&model_embed, ids))
        .collect::<std::result::Result<_, _>>()?;
    drop(model_embed);
    let rope = RopeTables::new(backend, w, cfg, windows[0].len())?;

    for layer in 0..cfg.layers {
        progress.block(layer, cfg.layers);
        let mut block = load_block(backend, w, cfg, layer)?;
        progress.step("capturing inputs");
        let mut hook = HessianHook {
            backend,
            hessians: BTreeMap::new(),
        };
        for x in &acts {
            block_forward(backend, cfg, &block, layer, x, &rope, &mut hook)?;
        }
        for name in BLOCK_LINEARS {
            progress.step(name);
            let linear = block.linear_mut(name).expect("known linear");
            let shape = backend.shape(&linear.weight);
            let weight = backend.to_f32(&linear.weight)?;
            let hessian = &hook.hessians[input_group(name)];
            let job = LayerJob {
                id: LinearId { layer, name },
                weight: &weight,
                rows: shape[0],
                cols: shape[1],
                hessian,
            };
            if let Some(new) = compressor.compress(&job)? {
                linear.weight = backend.upload(new, &shape)?;
            }
        }
        progress.step("propagating");
        for x in acts.iter_mut() {
            *x = block_forward(backend, cfg, &block, layer, x, &rope, &mut ())?;
        }
    }
    Ok(())
}
