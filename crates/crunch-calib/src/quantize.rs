//! Quantizing a whole checkpoint: which layers, which method, driven block by block.

use crate::device_gptq::DeviceGptq;
use crate::sequential::{run_sequential, LayerCompressor, LayerJob, Progress, Replacement};
use crate::{Error, Result};
use crunch_compress::{gptq, rtn, GptqOptions, QuantSpec, QuantizedWeight};
use crunch_model::model::BLOCK_LINEARS;
use crunch_model::Checkpoint;
use crunch_runtime::Backend;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
pub enum Method {
    /// Round to nearest; needs no calibration data.
    Rtn,
    Gptq(GptqOptions),
}

#[derive(Clone, Debug)]
pub struct QuantizePlan {
    pub method: Method,
    pub spec: QuantSpec,
    /// MSE-optimal clipping search for the grid (RTN; GPTQ takes it from its options).
    pub mse_clip: bool,
    /// Layers left as they are: a pattern with `*` wildcards matched against the whole
    /// Hugging Face layer name, or else a substring of it.
    pub skip: Vec<String>,
}

impl QuantizePlan {
    pub fn skips(&self, name: &str) -> bool {
        self.skip.iter().any(|p| pattern_matches(p, name))
    }
}

/// A layer pattern: with `*` wildcards it must match the whole name, else it is a substring.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    if pattern.contains('*') {
        wildcard_match(pattern.as_bytes(), name.as_bytes())
    } else {
        name.contains(pattern)
    }
}

fn wildcard_match(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| wildcard_match(rest, &s[i..])),
        Some((c, rest)) => s.first() == Some(c) && wildcard_match(rest, &s[1..]),
    }
}

struct Quantizer<'a> {
    plan: &'a QuantizePlan,
    done: BTreeMap<String, QuantizedWeight>,
    device: DeviceGptq,
}

impl Quantizer<'_> {
    fn quantize<B: Backend>(
        &mut self,
        job: &LayerJob<B>,
    ) -> Result<Option<Replacement<B::Tensor>>> {
        let name = job.id.full_name();
        if self.plan.skips(&name) {
            return Ok(None);
        }
        if let Method::Gptq(opts) = &self.plan.method {
            if let Some((q, new)) = self.device.run(job, self.plan.spec, opts)? {
                self.done.insert(name, q);
                return Ok(Some(new));
            }
        }
        let w = job.weight()?;
        let q = match &self.plan.method {
            Method::Rtn => rtn(w, job.rows, job.cols, self.plan.spec, self.plan.mse_clip),
            Method::Gptq(opts) => gptq(w, job.rows, job.cols, job.hessian()?, self.plan.spec, opts),
        }
        .map_err(|e| Error::Compress(format!("{name}: {e}")))?;
        let deq = q.dequantize();
        self.done.insert(name, q);
        Ok(Some(Replacement::Host(deq)))
    }
}

impl<B: Backend> LayerCompressor<B> for Quantizer<'_> {
    fn compress(&mut self, job: &LayerJob<B>) -> Result<Option<Replacement<B::Tensor>>> {
        self.quantize(job)
    }
}

/// Quantizes every block linear layer of `ckpt` not skipped by the plan. GPTQ needs
/// calibration `windows`; RTN reads the weights directly and ignores them.
pub fn quantize_model<B: Backend>(
    backend: &B,
    ckpt: &Checkpoint,
    plan: &QuantizePlan,
    windows: Option<&[Vec<u32>]>,
    progress: &mut dyn Progress,
) -> Result<BTreeMap<String, QuantizedWeight>> {
    // Exact groups are checked by the caller when its output format needs them.
    plan.check(&ckpt.config, crunch_compress::GroupFit::ShortLastGroup)?;
    let mut q = Quantizer {
        plan,
        done: BTreeMap::new(),
        device: DeviceGptq::default(),
    };
    match (&plan.method, windows) {
        (Method::Gptq(_), Some(w)) => run_sequential(backend, ckpt, w, &mut q, progress)?,
        (Method::Gptq(_), None) => {
            return Err(Error::Data("GPTQ needs calibration data (--calib)".into()))
        }
        (Method::Rtn, _) => {
            let cfg = &ckpt.config;
            let empty = crunch_compress::Hessian::new(0);
            for layer in 0..cfg.layers {
                progress.block(layer, cfg.layers);
                for name in BLOCK_LINEARS {
                    progress.step(name);
                    let full = format!("model.layers.{layer}.{name}.weight");
                    let info = ckpt.weights.info(&full).ok_or_else(|| {
                        Error::Data(format!("{}: missing `{full}`", ckpt.path.display()))
                    })?;
                    let (rows, cols) = (info.shape[0], info.shape[1]);
                    let weight = ckpt.weights.read(&full, &[rows, cols], cfg)?;
                    let id = crunch_model::LinearId { layer, name };
                    let job = LayerJob::<B>::host(id, &weight, rows, cols, &empty);
                    q.quantize(&job)?;
                }
            }
        }
    }
    Ok(q.done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_patterns() {
        let plan = QuantizePlan {
            method: Method::Rtn,
            spec: QuantSpec::new(4, Some(32), false),
            mse_clip: false,
            skip: vec!["down_proj".into(), "model.layers.1.*q_proj".into()],
        };
        assert!(plan.skips("model.layers.3.mlp.down_proj"));
        assert!(plan.skips("model.layers.1.self_attn.q_proj"));
        assert!(!plan.skips("model.layers.11.self_attn.q_proj"));
        assert!(!plan.skips("model.layers.1.self_attn.k_proj"));
    }
}
