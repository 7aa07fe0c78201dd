//! Every layer compressed several ways, for a search that combines them (EvoPress's database
//! of per-layer levels). Unlike [`crate::compress_model`], each method sees the inputs of the
//! *uncompressed* model: the layer's weight stays as it was after its variants are made, so
//! the Hessians of later blocks do not depend on which level an earlier layer will get (the
//! choice is made later, by the search). The model a search picks is then rebuilt by the one
//! driver from a per-layer recipe.

use crate::compress::{block_layer_names, layer_input, read_weight, weight_shape};
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

struct Variants<'a, 's> {
    methods: &'a [Method],
    /// Whether (layer, method index) is still wanted (not cached already).
    wanted: &'a dyn Fn(&str, usize) -> bool,
    sink: &'a mut VariantSink<'s>,
    device: DeviceGptq,
    la: &'a dyn DenseLinAlg,
}

impl Variants<'_, '_> {
    fn compress<B: Backend>(&mut self, job: &LayerJob<B>) -> Result<()> {
        let name = job.id.full_name();
        let mut out = Vec::new();
        for (i, method) in self.methods.iter().enumerate() {
            if !(self.wanted)(&name, i) {
                continue;
            }
            let failed = |source| Error::Layer {
                layer: name.clone(),
                method: method.name(),
                source,
            };
            // The GPU's dense result is dropped: the layer keeps its original weight.
            let on_gpu = match method.stage().on_gpu() {
                Some(work) => self.device.run(job, method.name(), work)?,
                None => None,
            };
            let c = match on_gpu {
                Some((c, _)) => c,
                None => {
                    let input = layer_input(job, &name, method, self.la)?;
                    match method.stage().compress(&input).map_err(failed)? {
                        Some(c) => c,
                        None => continue,
                    }
                }
            };
            out.push((i, CompressedLayer::new(method.name(), c)));
        }
        (self.sink)(&name, out)
    }
}

impl<B: Backend> LayerCompressor<B> for Variants<'_, '_> {
    fn compress(&mut self, job: &LayerJob<B>) -> Result<Option<Replacement<B::Tensor>>> {
        Variants::compress(self, job)?;
        Ok(None)
    }
}

/// Compresses every block linear layer of `ckpt` by each of `methods` (main compressions:
/// quantizers, pruners), each from the uncompressed model's calibration inputs, and hands each
/// layer's variants to `sink` as soon as they are made. `wanted(layer, i)` = false skips a
/// variant (one cached already). Every method is checked against every layer's shape first.
pub fn compress_variants<B: Backend>(
    backend: &B,
    ckpt: &Checkpoint,
    methods: &[Method],
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
        wanted,
        sink,
        device: DeviceGptq::default(),
        la: la.as_ref(),
    };
    match windows.filter(|_| needs_data.is_some()) {
        Some(w) => run_sequential(backend, ckpt, w, &mut v, progress),
        None => {
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
            Ok(())
        }
    }
}
