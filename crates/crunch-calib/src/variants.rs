//! Every layer compressed several ways, for a search that combines them (EvoPress's database
//! of per-layer levels). Two ways to feed the methods ([`LevelInputs`]):
//! - `Independent` (EvoPress's database): one calibration pass; each method sees the inputs of
//!   the *uncompressed* model, the layer's weight staying as it was after its variants are
//!   made, so the Hessians of later blocks do not depend on which level an earlier layer will
//!   get.
//! - `Sequential`: one pass per method, each as [`crate::compress_model`] runs it alone — every
//!   layer from the inputs of the model compressed by that method so far. The variants of
//!   level `l` are then exactly the uniform model of level `l` (the one a search is compared
//!   with), and a layer's error correction accounts for the compressed layers before it.
//!
//! The model a search picks is then rebuilt by the one driver from a per-layer recipe.

use crate::compress::{block_layer_names, read_weight, run_main, weight_shape};
use crate::device_gptq::{linalg, DeviceGptq};
use crate::sequential::{run_sequential, LayerCompressor, LayerJob, Progress, Replacement};
use crate::stages::Method;
use crate::{Error, Result};
use crunch_compress::DenseLinAlg;
use crunch_model::model::BLOCK_LINEARS;
use crunch_model::Checkpoint;
use crunch_repr::CompressedLayer;
use crunch_runtime::Backend;

/// Receives the variants of one layer: (index into the methods, the compressed layer).
pub type VariantSink<'s> = dyn FnMut(&str, Vec<(usize, CompressedLayer)>) -> Result<()> + 's;

/// What each method's variants are made from (see the module's documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LevelInputs {
    Independent,
    #[default]
    Sequential,
}

struct Variants<'a, 's> {
    methods: &'a [Method],
    /// Sequential pass of this method only: every layer is made and replaced by its variant.
    only: Option<usize>,
    /// Whether (layer, method index) is still wanted (not cached already).
    wanted: &'a dyn Fn(&str, usize) -> bool,
    sink: &'a mut VariantSink<'s>,
    device: DeviceGptq,
    la: &'a dyn DenseLinAlg,
}

impl Variants<'_, '_> {
    fn compress<B: Backend>(
        &mut self,
        job: &LayerJob<B>,
    ) -> Result<Option<Replacement<B::Tensor>>> {
        let name = job.id.full_name();
        let mut out = Vec::new();
        let mut replacement = None;
        for (i, method) in self.methods.iter().enumerate() {
            match self.only {
                Some(only) if i != only => continue,
                None if !(self.wanted)(&name, i) => continue,
                _ => {}
            }
            let Some((c, new)) = run_main(job, &name, method, &mut self.device, self.la, None)?
            else {
                continue;
            };
            let layer = CompressedLayer::new(method.name(), c);
            // Independent inputs: the layer keeps its original weight (a GPU result is
            // dropped); a sequential pass goes on with the compressed one.
            if self.only.is_some() {
                replacement = Some(new.unwrap_or_else(|| Replacement::Host(layer.dense())));
            }
            out.push((i, layer));
        }
        (self.sink)(&name, out)?;
        Ok(replacement)
    }
}

impl<B: Backend> LayerCompressor<B> for Variants<'_, '_> {
    fn compress(&mut self, job: &LayerJob<B>) -> Result<Option<Replacement<B::Tensor>>> {
        Variants::compress(self, job)
    }
}

/// Compresses every block linear layer of `ckpt` by each of `methods` (main compressions:
/// quantizers, pruners), from the calibration inputs `inputs` says, and hands each layer's
/// variants to `sink` as soon as they are made. `wanted(layer, i)` = false skips a variant
/// (one cached already; a sequential pass runs whole when any of its layers is wanted, and
/// hands them all over). Every method is checked against every layer's shape first.
#[allow(clippy::too_many_arguments)]
pub fn compress_variants<B: Backend>(
    backend: &B,
    ckpt: &Checkpoint,
    methods: &[Method],
    inputs: LevelInputs,
    windows: Option<&[Vec<u32>]>,
    wanted: &dyn Fn(&str, usize) -> bool,
    sink: &mut VariantSink<'_>,
    progress: &mut dyn Progress,
) -> Result<()> {
    // Routers of sparse MLPs stay unquantized, as in a recipe without `[moe] routers`.
    let names = block_layer_names(ckpt, false);
    for (_, name) in &names {
        let (rows, cols) = weight_shape(ckpt, name)?;
        for m in methods {
            m.stage()
                .check_shape(rows, cols)
                .map_err(|source| Error::Layer {
                    layer: name.clone(),
                    method: m.name(),
                    source,
                })?;
        }
    }
    let needs_data = methods.iter().find(|m| m.needs_calibration());
    if let (Some(m), None) = (needs_data, windows) {
        return Err(Error::NeedsCalibration { method: m.name() });
    }
    let la = linalg(backend)?;
    let mut v = Variants {
        methods,
        only: None,
        wanted,
        sink,
        device: DeviceGptq::default(),
        la: la.as_ref(),
    };
    let Some(w) = windows.filter(|_| needs_data.is_some()) else {
        let empty = crunch_compress::Hessian::new(0);
        for (id, name) in &names {
            if id.name == BLOCK_LINEARS[0] {
                progress.block(id.layer, ckpt.config.layers);
            }
            progress.step(id.name);
            let (weight, rows, cols) = read_weight(ckpt, name)?;
            let job = LayerJob::<B>::host(*id, &weight, rows, cols, &empty);
            v.compress(&job)?;
        }
        return Ok(());
    };
    match inputs {
        LevelInputs::Independent => run_sequential(backend, ckpt, w, &mut v, progress),
        LevelInputs::Sequential => {
            for i in 0..methods.len() {
                if !names.iter().any(|(_, n)| (v.wanted)(n, i)) {
                    continue;
                }
                v.only = Some(i);
                run_sequential(backend, ckpt, w, &mut v, progress)?;
            }
            Ok(())
        }
    }
}
