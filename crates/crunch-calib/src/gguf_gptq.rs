//! GPTQ onto GGUF types for a whole model: the sequential calibration loop
//! ([`run_sequential`]) with each block linear layer quantized by
//! [`crunch_compress::gptq_gguf`] onto the ggml type a mix assigns it, and the next blocks
//! calibrated on the outputs of the quantized ones, as in the GPTQ paper.

use crate::sequential::{run_sequential, LayerCompressor, LayerJob, Progress, Replacement};
use crate::{Error, Result};
use crunch_compress::{gptq_gguf, GptqOptions};
use crunch_formats::DType;
use crunch_model::Checkpoint;
use crunch_runtime::Backend;
use std::collections::BTreeMap;

struct Compressor<'a> {
    types: &'a dyn Fn(&str) -> Option<DType>,
    opts: &'a GptqOptions,
    out: BTreeMap<String, Vec<u8>>,
}

impl<B: Backend> LayerCompressor<B> for Compressor<'_> {
    fn compress(&mut self, job: &LayerJob<B>) -> Result<Option<Replacement<B::Tensor>>> {
        // Experts are stacked into one tensor per kind in a GGUF file: left to the caller.
        if job.expert.is_some() {
            return Ok(None);
        }
        let name = format!("{}.weight", job.id.full_name());
        let Some(dtype) = (self.types)(&name) else {
            return Ok(None);
        };
        let q = gptq_gguf(
            job.weight()?,
            job.rows,
            job.cols,
            job.hessian()?,
            dtype,
            None,
            self.opts,
        )
        .map_err(|source| Error::Layer {
            layer: name.clone(),
            method: "gptq",
            source,
        })?;
        self.out.insert(name, q.bytes);
        Ok(Some(Replacement::Host(q.dequantized)))
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
