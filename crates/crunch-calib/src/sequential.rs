//! The sequential, block-by-block calibration loop.

use crate::{Error, Result};
use crunch_compress::Hessian;
use crunch_model::hooks::{LinearHook, LinearId};
use crunch_model::layout::{block_linears, LinearRole, LinearSpec};
use crunch_model::model::{block_forward, embed_tokens, load_block, Block, Linear, RopeTables};
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
    /// An expert of a sparse MLP: how its calibration statistics were gathered.
    pub expert: Option<ExpertCalibration>,
    source: Source<'a, B>,
    host_weight: OnceCell<Vec<f32>>,
}

/// How an expert's statistics were gathered: from the tokens the router sent it, or, when
/// that was fewer than the plan's threshold, from every calibration token run through it.
pub use crunch_repr::ExpertCalibration;

/// The default of [`LayerCompressor::expert_min_tokens`]: below this many routed tokens an
/// expert's statistics come from every calibration token instead (a Hessian of a few dozen
/// rows in 2048 columns says little about the inputs the expert will see).
pub const DEFAULT_EXPERT_MIN_TOKENS: usize = 64;

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
            expert: None,
            source: Source::Host { weight, hessian: h },
            host_weight: OnceCell::new(),
        }
    }

    /// A job of the calibration loop: the weight as the backend holds it, and the statistics
    /// of its inputs.
    fn calibrated(
        backend: &'a B,
        id: LinearId,
        weight: &'a B::Tensor,
        inputs: &'a InputStats<B>,
        expert: Option<ExpertCalibration>,
    ) -> Self {
        let shape = backend.shape(weight);
        Self {
            id,
            rows: shape[0],
            cols: shape[1],
            expert,
            source: Source::Device {
                backend,
                weight,
                inputs,
            },
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

    /// Whether the loop hands each block's layers to [`LayerCompressor::compress_block`] all at
    /// once (after the one pass that gathers every layer's statistics, the layers of a block
    /// are independent, so a compressor may solve them in parallel) instead of to
    /// [`LayerCompressor::compress`] one by one.
    fn compresses_blocks(&self) -> bool {
        false
    }

    /// Every layer of one block, in block order; one result per job. Called only when
    /// [`LayerCompressor::compresses_blocks`]; the default compresses them in turn.
    fn compress_block(
        &mut self,
        jobs: &[LayerJob<B>],
    ) -> Result<Vec<Option<Replacement<B::Tensor>>>> {
        jobs.iter().map(|job| self.compress(job)).collect()
    }

    /// Experts the router sends fewer calibration tokens than this get statistics from every
    /// calibration token run through them instead (see [`ExpertCalibration`]).
    fn expert_min_tokens(&self) -> usize {
        DEFAULT_EXPERT_MIN_TOKENS
    }

    /// Whether routers of sparse MLPs are offered to [`LayerCompressor::compress`] (they are
    /// left unquantized by default: a few KB that decide where every token goes).
    fn compresses_routers(&self) -> bool {
        false
    }
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

/// Input statistics per owning linear layer ([`LinearId::input_owner`]).
struct HessianHook<'a, B: Backend> {
    backend: &'a B,
    inputs: BTreeMap<LinearId, InputStats<B>>,
}

impl<B: Backend> LinearHook<B> for HessianHook<'_, B> {
    fn inputs_only(&self) -> bool {
        true
    }
    fn linear_input(&mut self, id: LinearId, x: &B::Tensor) -> crunch_model::Result<()> {
        // q, k and v (and gate and up, and each expert's gate and up) see the same tensor:
        // accumulate it once.
        if id.input_owner() != id {
            return Ok(());
        }
        self.inputs
            .entry(id)
            .or_insert_with(InputStats::new)
            .add(self.backend, x)
    }
}

/// Statistics of the down projections of `experts` run on every token (their gate and up see
/// the MLP's input, whose statistics the router's already are): the layers in `downs`.
struct AllTokensHook<'a, B: Backend> {
    backend: &'a B,
    layer: usize,
    experts: Vec<usize>,
    downs: Vec<LinearId>,
    inputs: BTreeMap<LinearId, InputStats<B>>,
}

impl<B: Backend> LinearHook<B> for AllTokensHook<'_, B> {
    fn linear_input(&mut self, _: LinearId, _: &B::Tensor) -> crunch_model::Result<()> {
        Ok(())
    }
    fn all_tokens_experts(&mut self, layer: usize) -> Vec<usize> {
        if layer == self.layer {
            self.experts.clone()
        } else {
            Vec::new()
        }
    }
    fn all_tokens_input(&mut self, id: LinearId, x: &B::Tensor) -> crunch_model::Result<()> {
        if !self.downs.contains(&id) || self.backend.shape(x).first() == Some(&0) {
            return Ok(());
        }
        self.inputs
            .entry(id)
            .or_insert_with(InputStats::new)
            .add(self.backend, x)
    }
}

/// Streams `windows` (all of one length) through the checkpoint block by block (see the crate
/// docs), calling `compressor` on every linear layer of every block (routers of sparse MLPs
/// only if [`LayerCompressor::compresses_routers`]).
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
        .map(|ids| embed_tokens(backend, cfg, &model_embed, ids))
        .collect::<std::result::Result<_, _>>()?;
    drop(model_embed);
    let rope = RopeTables::new(backend, w, cfg, windows[0].len())?;
    let min_tokens = compressor.expert_min_tokens();

    for layer in 0..cfg.layers {
        progress.block(layer, cfg.layers);
        let mut block = load_block(backend, w, cfg, layer)?;
        progress.step("capturing inputs");
        let mut hook = HessianHook {
            backend,
            inputs: BTreeMap::new(),
        };
        // Only the inputs are gathered: the pass stops at the block's last linear input.
        for x in &acts {
            block_forward(backend, cfg, &block, layer, x, &rope, &mut hook)?;
        }
        let specs = block_linears(cfg, layer);
        // Experts the router starved: a second pass runs every token through them.
        let routed = |e: usize| -> usize {
            specs
                .iter()
                .find(|s| s.role == LinearRole::Expert(e))
                .and_then(|s| hook.inputs.get(&s.id.input_owner()))
                .map_or(0, |i| i.tokens)
        };
        let starved: Vec<usize> = match cfg.layer_moe(layer) {
            Some(m) => (0..m.experts).filter(|&e| routed(e) < min_tokens).collect(),
            None => Vec::new(),
        };
        let mut all_tokens = AllTokensHook {
            backend,
            layer,
            experts: starved.clone(),
            downs: starved.iter().map(|&e| down_of(&specs, e)).collect(),
            inputs: BTreeMap::new(),
        };
        if !starved.is_empty() {
            progress.step("experts on every token");
            for x in &acts {
                block_forward(backend, cfg, &block, layer, x, &rope, &mut all_tokens)?;
            }
        }
        let router = specs
            .iter()
            .find(|s| s.role == LinearRole::Router)
            .map(|s| s.id);
        // Each layer's input statistics, and how an expert's were gathered.
        let resolve = |spec: &LinearSpec| -> Result<(&InputStats<B>, Option<ExpertCalibration>)> {
            let owner = spec.id.input_owner();
            let (inputs, expert) = match spec.role {
                LinearRole::Expert(e) if starved.contains(&e) => {
                    // gate and up read the MLP's input: the router's statistics.
                    let src = if owner == down_of(&specs, e) {
                        all_tokens.inputs.get(&owner)
                    } else {
                        router.and_then(|r| hook.inputs.get(&r))
                    };
                    let calib = ExpertCalibration {
                        routed_tokens: routed(e),
                        all_tokens: true,
                        tokens: src.map_or(0, |s| s.tokens),
                    };
                    (src, Some(calib))
                }
                LinearRole::Expert(e) => {
                    let src = hook.inputs.get(&owner);
                    let calib = ExpertCalibration {
                        routed_tokens: routed(e),
                        all_tokens: false,
                        tokens: src.map_or(0, |s| s.tokens),
                    };
                    (src, Some(calib))
                }
                _ => (hook.inputs.get(&owner), None),
            };
            let inputs = inputs.ok_or_else(|| Error::NoInputs {
                layer: spec.id.full_name(),
            })?;
            Ok((inputs, expert))
        };
        let offered: Vec<&LinearSpec> = specs
            .iter()
            .filter(|s| s.role != LinearRole::Router || compressor.compresses_routers())
            .collect();
        let replace =
            |block: &mut Block<B>, name: &str, new: Option<Replacement<B::Tensor>>| -> Result<()> {
                let linear = linear_of(block, name);
                match new {
                    None => {}
                    Some(Replacement::Host(w)) => {
                        let shape = backend.shape(&linear.weight);
                        linear.weight = backend.upload_weight(w, &shape)?
                    }
                    Some(Replacement::Device(t)) => linear.weight = t,
                }
                Ok(())
            };
        if compressor.compresses_blocks() {
            progress.step("solving");
            // Handles (cheap clones) of the weights, so every job can borrow one at once.
            let weights: Vec<B::Tensor> = offered
                .iter()
                .map(|s| linear_of(&mut block, s.id.name).weight.clone())
                .collect();
            let jobs = offered
                .iter()
                .zip(&weights)
                .map(|(spec, w)| {
                    let (inputs, expert) = resolve(spec)?;
                    Ok(LayerJob::calibrated(backend, spec.id, w, inputs, expert))
                })
                .collect::<Result<Vec<_>>>()?;
            let news = compressor.compress_block(&jobs)?;
            drop(jobs);
            drop(weights);
            for (spec, new) in offered.iter().zip(news) {
                replace(&mut block, spec.id.name, new)?;
            }
        } else {
            for spec in &offered {
                let name = spec.id.name;
                progress.step(name);
                let weight = linear_of(&mut block, name).weight.clone();
                let (inputs, expert) = resolve(spec)?;
                let job = LayerJob::calibrated(backend, spec.id, &weight, inputs, expert);
                let new = compressor.compress(&job)?;
                drop(job);
                drop(weight);
                replace(&mut block, name, new)?;
            }
        }
        drop(hook);
        drop(all_tokens);
        progress.step("propagating");
        for x in acts.iter_mut() {
            *x = block_forward(backend, cfg, &block, layer, x, &rope, &mut ())?;
        }
    }
    Ok(())
}

/// Layer `name` of `block` (a name from the block's own layout).
fn linear_of<'b, B: Backend>(block: &'b mut Block<B>, name: &str) -> &'b mut Linear<B> {
    block.linear_mut(name).expect("a layer of the block")
}

/// The down projection of expert `e` (the last of its layers).
fn down_of(specs: &[crunch_model::layout::LinearSpec], e: usize) -> LinearId {
    specs
        .iter()
        .rfind(|s| s.role == LinearRole::Expert(e))
        .map(|s| s.id)
        .expect("an expert has a down projection")
}
