//! Routing GPTQ and SparseGPT to the GPU. The sequential loop is generic over the backend; when
//! the backend is the CUDA one (feature `cuda`) and the layer's weight and ΣXᵀX are on the GPU,
//! they run there (crunch_compress::CudaGptq) and the new weight never leaves the device.
//! Otherwise, or for options the GPU path does not cover, the host implementation runs.
//!
//! The backend type is only known at run time here, so the CUDA case is found by a type check
//! (`Any`) rather than by a trait every backend would have to implement.

use crate::sequential::{LayerJob, Replacement};
use crate::stages::OnGpu;
use crate::Result;
use crunch_compress::{DenseLinAlg, Host};
use crunch_repr::Compressed;
use crunch_runtime::Backend;

/// The dense linear algebra of the low-rank methods (SVD, SVD-LLM, EoRA): on the GPU when
/// `backend` is the CUDA one, else on the host.
pub(crate) fn linalg<B: Backend>(backend: &B) -> Result<Box<dyn DenseLinAlg>> {
    #[cfg(feature = "cuda")]
    if let Some(c) = (backend as &dyn std::any::Any).downcast_ref::<crunch_runtime::Cuda>() {
        let la = crunch_compress::CudaDense::new(c).map_err(crate::Error::Gpu)?;
        return Ok(Box::new(la));
    }
    let _ = backend;
    Ok(Box::new(Host))
}

/// The GPU side's state across layers (kernels, and the prepared Hessian of the last input
/// group, which q/k/v and gate/up share).
#[derive(Default)]
pub(crate) struct DeviceGptq {
    #[cfg(feature = "cuda")]
    state: Option<cuda::State>,
}

impl DeviceGptq {
    /// `work` (GPTQ or SparseGPT, for stage `method`) on the GPU, or `None` when it has to run
    /// on the host.
    pub(crate) fn run<B: Backend + 'static>(
        &mut self,
        job: &LayerJob<B>,
        method: &'static str,
        work: OnGpu,
    ) -> Result<Option<(Compressed, Replacement<B::Tensor>)>> {
        #[cfg(feature = "cuda")]
        {
            cuda::run(&mut self.state, job, method, work)
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (job, method, work);
            Ok(None)
        }
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use crate::sequential::OnDevice;
    use crate::Error;
    use crunch_compress::{CompressError, CudaGptq, DeviceHessian, GptqOptions};
    use crunch_runtime::{Cuda, CudaTensor};
    use std::any::Any;

    pub(super) struct State {
        gptq: CudaGptq,
        /// (layer, input group, act-order, damp bits) of `prepared`.
        key: Option<(usize, &'static str, bool, u32)>,
        prepared: Option<DeviceHessian>,
    }

    /// The CUDA backend, the layer's weight and ΣXᵀX, if that is where they are.
    fn on_cuda<'a, B: Backend>(
        job: &LayerJob<'a, B>,
    ) -> Option<(&'a Cuda, &'a CudaTensor, &'a CudaTensor)> {
        let OnDevice {
            backend,
            weight,
            gram: Some(sum),
        } = job.on_device()?
        else {
            return None;
        };
        Some((
            (backend as &dyn Any).downcast_ref::<Cuda>()?,
            (weight as &dyn Any).downcast_ref::<CudaTensor>()?,
            (sum as &dyn Any).downcast_ref::<CudaTensor>()?,
        ))
    }

    /// The state, with the layer's Hessian prepared (reused across layers of one input group).
    fn prepared<'s, B: Backend>(
        state: &'s mut Option<State>,
        job: &LayerJob<B>,
        cuda: &Cuda,
        sum: &CudaTensor,
        opts: &GptqOptions,
    ) -> Result<&'s mut State, CompressError> {
        if state.is_none() {
            *state = Some(State {
                gptq: CudaGptq::new(cuda)?,
                key: None,
                prepared: None,
            });
        }
        let st = state.as_mut().expect("set above");
        let key = (
            job.id.layer,
            // Layers reading one input share its statistics, hence its prepared factor.
            job.id.input_owner().name,
            opts.act_order,
            opts.damp.to_bits(),
        );
        if st.key != Some(key) {
            st.prepared = None; // free the previous factor before making the next
            st.prepared = Some(st.gptq.prepare(sum, opts)?);
            st.key = Some(key);
        }
        Ok(st)
    }

    /// An f32 GPU tensor as the backend stores weights, as `B::Tensor` (which it is).
    fn replacement<B: Backend>(cuda: &Cuda, t: CudaTensor) -> Result<Replacement<B::Tensor>> {
        let boxed: Box<dyn Any> = Box::new(cuda.weight_from(t)?);
        let t = *boxed
            .downcast::<B::Tensor>()
            .expect("the CUDA backend's tensor type");
        Ok(Replacement::Device(t))
    }

    /// The compressed layer and its dense form on the GPU, or `None` when the host must do it.
    fn solve(
        state: &mut Option<State>,
        job: &LayerJob<impl Backend>,
        (cuda, weight, sum): (&Cuda, &CudaTensor, &CudaTensor),
        work: OnGpu,
    ) -> Result<Option<(Compressed, CudaTensor)>, CompressError> {
        Ok(match work {
            OnGpu::Gptq(spec, opts) => {
                let st = prepared(state, job, cuda, sum, &opts)?;
                let prep = st.prepared.as_ref().expect("prepared");
                st.gptq
                    .quantize(prep, weight, spec, &opts)?
                    .map(|(q, deq)| (Compressed::Quantized(q), deq))
            }
            OnGpu::SparseGpt(sparsity, quant, opts) => {
                let hopts = GptqOptions {
                    act_order: false,
                    damp: opts.damp,
                    ..GptqOptions::default()
                };
                let st = prepared(state, job, cuda, sum, &hopts)?;
                let prep = st.prepared.as_ref().expect("prepared");
                st.gptq
                    .sparsegpt(prep, weight, sparsity, quant, &opts)?
                    .map(|(p, dense)| (Compressed::Pruned(p), dense))
            }
        })
    }

    pub(super) fn run<B: Backend>(
        state: &mut Option<State>,
        job: &LayerJob<B>,
        method: &'static str,
        work: OnGpu,
    ) -> Result<Option<(Compressed, Replacement<B::Tensor>)>> {
        let Some(on) = on_cuda(job) else {
            return Ok(None);
        };
        let solved = solve(state, job, on, work).map_err(|source| Error::Layer {
            layer: job.id.full_name(),
            method,
            source,
        })?;
        match solved {
            None => Ok(None),
            Some((c, dense)) => Ok(Some((c, replacement::<B>(on.0, dense)?))),
        }
    }
}
