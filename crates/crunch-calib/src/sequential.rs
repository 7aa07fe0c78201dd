//! The sequential, block-by-block calibration loop.

use crate::{Error, Result};
use crunch_compress::Hessian;
use crunch_model::hooks::{LinearHook, LinearId};
use crunch_model::model::{block_forward, load_block, RopeTables, BLOCK_LINEARS};
use crunch_model::Checkpoint;
use crunch_runtime::Backend;
use std::cell::OnceCell;
use std::collections::BTreeMap;

/// One linear layer handed to a compressor: its weight and the Hessian of its inputs, each
/// copied to the host only when asked for (a GPU compressor uses the device copies instead).
pub struct LayerJob<'a, B: Backend> {
    pub id: LinearId,
    /// out_features.
    pub rows: usize,
    /// in_features.
    pub cols: usize,
    source: Source<'a, B>,
    host_weight: OnceCell<Vec<f32>>,
}

enum Source<'a, B: Backend> {
    Host {
        weight: &'a [f32],
        hessian: &'a Hessian,
    },
    Device {
        backend: &'a B,
        weight: &'a B::Tensor,
        inputs: &'a InputStats<B>,
    },
}

impl<'a, B: Backend> LayerJob<'a, B> {
    /// A job whose weight and Hessian are already on the host (no calibration pass).
    pub fn host(id: LinearId, weight: &'a [f32], rows: usize, cols: usize, h: &'a Hessian) -> Self {
        Self {
            id,
            rows,
            cols,
            source: Source::Host { weight, hessian: h },
            host_weight: OnceCell::new(),
        }
    }

    /// `[rows, cols]`, row-major f32.
    pub fn weight(&self) -> Result<&[f32]> {
        match &self.source {
            Source::Host { weight, .. } => Ok(weight),
            Source::Device {
                backend, weight, ..
            } => {
                if self.host_weight.get().is_none() {
                    let _ = self.host_weight.set(backend.to_f32(weight)?);
                }
                Ok(self.host_weight.get().expect("just set"))
            }
        }
    }

    /// 2·XᵀX/n of the layer's calibration inputs.
    pub fn hessian(&self) -> Result<&Hessian> {
        match &self.source {
            Source::Host { hessian, .. } => Ok(hessian),
            Source::Device {
                backend, inputs, ..
            } => inputs.host(*backend, self.id),
        }
    }

    /// The layer as the backend holds it; `None` for host-only jobs.
    pub fn on_device(&self) -> Option<OnDevice<'a, B>> {
        match &self.source {
            Source::Host { .. } => None,
            Source::Device {
                backend,
                weight,
                inputs,
            } => Some(OnDevice {
                backend,
                weight,
                gram: inputs.device.as_ref(),
            }),
        }
    }
}

/// A layer's weight on the backend, and ΣXᵀX of its inputs if the backend accumulated it (a
/// GPU does).
pub struct OnDevice<'a, B: Backend> {
    pub backend: &'a B,
    pub weight: &'a B::Tensor,
    pub gram: Option<&'a B::Tensor>,
}

/// What a compressor gives back for a layer: the weight the model will run with, on the host
/// or already on the backend.
pub enum Replacement<T> {
    Host(Vec<f32>),
    Device(T),
}

/// What calibration feeds: each layer in turn, in block order. Returns the replacement weight
/// (the compressed layer as the model will run it), or `None` to leave the layer as it is.
pub trait LayerCompressor<B: Backend> {
    fn compress(&mut self, job: &LayerJob<B>) -> Result<Option<Replacement<B::Tensor>>>;
}

/// The inputs of one group of layers that read the same tensor: ΣXᵀX on the backend (GPU), or
/// the Hessian accumulated on the host (CPU, bit-identical to the host Hessian code).
pub struct InputStats<B: Backend> {
    device: Option<B::Tensor>,
    tokens: usize,
    host: OnceCell<Hessian>,
}

impl<B: Backend> InputStats<B> {
    fn new() -> Self {
        Self {
            device: None,
            tokens: 0,
            host: OnceCell::new(),
        }
    }

    fn add(&mut self, backend: &B, x: &B::Tensor) -> crunch_model::Result<()> {
        let shape = backend.shape(x);
        let (rows, cols) = (shape[0], shape[1]);
        self.tokens += rows;
        if self.host.get().is_none() && backend.gram_accumulate(&mut self.device, x)? {
            return Ok(());
        }
        if self.host.get().is_none() {
            let _ = self.host.set(Hessian::new(cols));
        }
        let h = self.host.get_mut().expect("set above");
        h.add_batch(&backend.to_f32(x)?);
        Ok(())
    }

    /// The host Hessian of layer `id`'s inputs, converted from the backend's sum on first use.
    fn host(&self, b: &B, id: LinearId) -> Result<&Hessian> {
        if let (None, Some(sum)) = (self.host.get(), &self.device) {
            let n = b.shape(sum)[0];
            let mut h = Hessian::new(n);
            h.add_gram(&b.to_f32(sum)?, self.tokens)
                .map_err(|source| Error::Hessian {
                    layer: id.full_name(),
                    source,
                })?;
            let _ = self.host.set(h);
        }
        self.host.get().ok_or_else(|| Error::NoInputs {
            layer: id.full_name(),
        })
    }
}

/// Progress callbacks: `block(layer, layers)` when a block starts, `step(what)` inside it.
pub trait Progress {
    fn block(&mut self, _layer: usize, _layers: usize) {}
    fn step(&mut self, _what: &str) {}
}

impl Progress for () {}

/// Linear layers that read the same input share one Hessian.
pub(crate) fn input_group(name: &str) -> &'static str {
    match name {
        "self_attn.q_proj" | "self_attn.k_proj" | "self_attn.v_proj" => "attn_in",
        "self_attn.o_proj" => "o_in",
        "mlp.gate_proj" | "mlp.up_proj" => "mlp_in",
        _ => "down_in",
    }
}

struct HessianHook<'a, B: Backend> {
    backend: &'a B,
    inputs: BTreeMap<&'static str, InputStats<B>>,
}

impl<B: Backend> LinearHook<B> for HessianHook<'_, B> {
    fn linear_input(&mut self, id: LinearId, x: &B::Tensor) -> crunch_model::Result<()> {
        // q, k and v (and gate and up) see the same tensor: accumulate it once.
        if matches!(
            id.name,
            "self_attn.k_proj" | "self_attn.v_proj" | "mlp.up_proj"
        ) {
            return Ok(());
        }
        self.inputs
            .entry(input_group(id.name))
            .or_insert_with(InputStats::new)
            .add(self.backend, x)
    }
}

/// Streams `windows` (all of one length) through the checkpoint block by block (see the crate
/// docs), calling `compressor` on every linear layer of every block.
pub fn run_sequential<B: Backend>(
    backend: &B,
    ckpt: &Checkpoint,
    windows: &[Vec<u32>],
    compressor: &mut dyn LayerCompressor<B>,
    progress: &mut dyn Progress,
) -> Result<()> {
    let cfg = &ckpt.config;
    let w = &ckpt.weights;
    if windows.is_empty() {
        return Err(Error::NoWindows);
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
            inputs: BTreeMap::new(),
        };
        for x in &acts {
            block_forward(backend, cfg, &block, layer, x, &rope, &mut hook)?;
        }
        for name in BLOCK_LINEARS {
            progress.step(name);
            let linear = block.linear_mut(name).expect("known linear");
            let shape = backend.shape(&linear.weight);
            let inputs = hook
                .inputs
                .get(input_group(name))
                .ok_or_else(|| Error::NoInputs {
                    layer: LinearId { layer, name }.full_name(),
                })?;
            let job = LayerJob {
                id: LinearId { layer, name },
                rows: shape[0],
                cols: shape[1],
                source: Source::Device {
                    backend,
                    weight: &linear.weight,
                    inputs,
                },
                host_weight: OnceCell::new(),
            };
            let new = compressor.compress(&job)?;
            drop(job);
            match new {
                None => {}
                Some(Replacement::Host(w)) => linear.weight = backend.upload_weight(w, &shape)?,
                Some(Replacement::Device(t)) => linear.weight = t,
            }
        }
        drop(hook);
        progress.step("propagating");
        for x in acts.iter_mut() {
            *x = block_forward(backend, cfg, &block, layer, x, &rope, &mut ())?;
        }
    }
    Ok(())
}
