//! GPTQ onto GGUF types for a whole model: the sequential calibration loop
//! ([`run_sequential`]) with each block linear layer quantized by
//! [`crunch_compress::gptq_gguf`] onto the ggml type a mix assigns it, and the next blocks
//! calibrated on the outputs of the quantized ones, as in the GPTQ paper.

use crate::sequential::{run_sequential, LayerCompressor, LayerJob, Progress, Replacement};
use crate::{Error, Result};
use crunch_compress::{GgufHessian, GgufQuantized, GptqOptions, Hessian};
use crunch_formats::DType;
use crunch_model::hooks::LinearId;
use crunch_model::Checkpoint;
use crunch_runtime::Backend;
use rayon::prelude::*;
use std::collections::BTreeMap;

struct Compressor<'a> {
    types: &'a dyn Fn(&str) -> Option<DType>,
    opts: &'a GptqOptions,
    out: BTreeMap<String, Vec<u8>>,
}

/// One layer to solve: what the parallel part needs, borrowed from its job.
struct Layer<'j> {
    job: usize,
    name: String,
    dtype: DType,
    weight: &'j [f32],
    rows: usize,
    cols: usize,
    hessian: &'j Hessian,
}

impl<B: Backend> LayerCompressor<B> for Compressor<'_> {
    fn compress(&mut self, job: &LayerJob<B>) -> Result<Option<Replacement<B::Tensor>>> {
        Ok(self
            .compress_block(std::slice::from_ref(job))?
            .pop()
            .flatten())
    }

    /// The block's layers in parallel, each group reading one input (q, k, v; gate, up)
    /// sharing one factorization of its Hessian. Every layer's result is what it would be
    /// alone: the solves are independent, and each is deterministic.
    fn compress_block(
        &mut self,
        jobs: &[LayerJob<B>],
    ) -> Result<Vec<Option<Replacement<B::Tensor>>>> {
        let mut groups: BTreeMap<LinearId, Vec<Layer>> = BTreeMap::new();
        for (k, job) in jobs.iter().enumerate() {
            // Experts are stacked into one tensor per kind in a GGUF file: left to the caller.
            if job.expert.is_some() {
                continue;
            }
            let name = format!("{}.weight", job.id.full_name());
            let Some(dtype) = (self.types)(&name) else {
                continue;
            };
            groups.entry(job.id.input_owner()).or_default().push(Layer {
                job: k,
                name,
                dtype,
                weight: job.weight()?,
                rows: job.rows,
                cols: job.cols,
                hessian: job.hessian()?,
            });
        }
        let opts = self.opts;
        let error = |layer: &Layer, source| Error::Layer {
            layer: layer.name.clone(),
            method: "gptq",
            source,
        };
        let solved: Vec<Vec<(usize, Result<GgufQuantized>)>> = groups
            .into_par_iter()
            .map(|(_, layers)| {
                // A failed factorization is reported for the group's first layer, as a
                // layer-by-layer run would.
                let prepared = match GgufHessian::new(layers[0].hessian, opts) {
                    Ok(p) => p,
                    Err(e) => return vec![(layers[0].job, Err(error(&layers[0], e)))],
                };
                layers
                    .par_iter()
                    .map(|l| {
                        let q = prepared
                            .quantize(l.weight, l.rows, l.cols, l.dtype, None, opts)
                            .map_err(|e| error(l, e));
                        (l.job, q)
                    })
                    .collect()
            })
            .collect();
        let mut by_job: BTreeMap<usize, Result<GgufQuantized>> =
            solved.into_iter().flatten().collect();
        let mut out = Vec::with_capacity(jobs.len());
        for (k, job) in jobs.iter().enumerate() {
            // The first failure in block order, as a layer-by-layer run would report.
            out.push(match by_job.remove(&k) {
                None => None,
                Some(q) => {
                    let q = q?;
                    self.out
                        .insert(format!("{}.weight", job.id.full_name()), q.bytes);
                    Some(Replacement::Host(q.dequantized))
                }
            });
        }
        Ok(out)
    }

    fn compresses_blocks(&self) -> bool {
        true
    }
}

/// Quantizes every dense block linear layer of `ckpt` for which `types(hf_name)` names a ggml
/// type (`model.layers.0.self_attn.q_proj.weight` → `Some(Q4_K)`) by GPTQ onto that type,
/// calibrated on `windows` block by block. Returns each such layer's bytes in its type, rows in
/// the Hugging Face order (a writer that stores q/k rows permuted permutes whole rows: they are
/// whole blocks), keyed by the Hugging Face name. Layers `types` gives `None`, and experts of
/// sparse MLPs, are left as they are.
pub fn gptq_gguf_model<B: Backend>(
    backend: &B,
    ckpt: &Checkpoint,
    windows: &[Vec<u32>],
    types: &dyn Fn(&str) -> Option<DType>,
    opts: &GptqOptions,
    progress: &mut dyn Progress,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut c = Compressor {
        types,
        opts,
        out: BTreeMap::new(),
    };
    run_sequential(backend, ckpt, windows, &mut c, progress)?;
    Ok(c.out)
}
