//! Routing GPTQ and SparseGPT to the GPU. The sequential loop is generic over the backend; when
//! the backend is the CUDA one (feature `cuda`) and the layer's weight and ΣXᵀX are on the GPU,
//! they run there (crunch_compress::CudaGptq) and the new weight never leaves the device.
//! Otherwise, or for options the GPU path does not cover, the host implementation runs.
//!
//! The backend type is only known at run time here, so the CUDA case is found by a type check
//! (`Any`) rather than by a trait every backend would have to implement.

use crate::sequential::{LayerJob, Replacement};
use crate::Result;
use crunch_compress::{
    DenseLinAlg, GptqOptions, Host, PrunedWeight, QuantSpec, QuantizedWeight, SparseGptOptions,
    Sparsity,
};
use crunch_runtime::Backend;

/// The dense linear algebra of the low-rank methods (SVD, SVD-LLM, EoRA): on the GPU when
/// `backend` is the CUDA one, else on the host.
pub(crate) fn linalg<B: Backend>(backend: &B) -> Result<Box<dyn DenseLinAlg>> {
    #[cfg(feature = "cuda")]
    if let Some(c) = (backend as &dyn std::any::Any).downcast_ref::<crunch_runtime::Cuda>() {
        let la = crunch_compress::CudaDense::new(c)
            .map_err(|e| crate::Error::Compress(e.to_string()))?;
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
    /// GPTQ of `job` on the GPU, or `None` when it has to run on the host.
    pub(crate) fn run<B: Backend + 'static>(
        &mut self,
        job: &LayerJob<B>,
        spec: QuantSpec,
        opts: &GptqOptions,
    ) -> Result<Option<(QuantizedWeight, Replacement<B::Tensor>)>> {
        #[cfg(feature = "cuda")]
        {
            cuda::run(&mut self.state, job, spec, opts)
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (job, spec, opts);
            Ok(None)
        }
    }

    /// SparseGPT of `job` on the GPU, or `None` when it has to run on the host.
    pub(crate) fn sparsegpt<B: Backend + 'static>(
        &mut self,
        job: &LayerJob<B>,
        sparsity: Sparsity,
        quant: Option<QuantSpec>,
        opts: &SparseGptOptions,
    ) -> Result<Option<(PrunedWeight, Replacement<B::Tensor>)>> {
        #[cfg(feature = "cuda")]
        {
            cuda::sparsegpt(&mut self.state, job, sparsity, quant, opts)
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (job, sparsity, quant, opts);
            Ok(None)
        }
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use crate::sequential::OnDevice;
    use crate::Error;
    use crunch_compress::{CudaGptq, DeviceHessian};
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
    ) -> Result<&'s mut State> {
        let fail = |e| Error::Compress(format!("{}: {e}", job.id.full_name()));
        if state.is_none() {
            *state = Some(State {
                gptq: CudaGptq::new(cuda).map_err(fail)?,
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
            st.prepared = Some(st.gptq.prepare(sum, opts).map_err(fail)?);
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

    pub(super) fn run<B: Backend>(
        state: &mut Option<State>,
        job: &LayerJob<B>,
        spec: QuantSpec,
        opts: &GptqOptions,
    ) -> Result<Option<(QuantizedWeight, Replacement<B::Tensor>)>> {
        let Some((cuda, weight, sum)) = on_cuda(job) else {
            return Ok(None);
        };
        let st = prepared(state, job, cuda, sum, opts)?;
        let prep = st.prepared.as_ref().expect("prepared");
        let fail = |e| Error::Compress(format!("{}: {e}", job.id.full_name()));
        match st.gptq.quantize(prep, weight, spec, opts).map_err(fail)? {
            None => Ok(None),
            Some((q, deq)) => Ok(Some((q, replacement::<B>(cuda, deq)?))),
        }
    }

    pub(super) fn sparsegpt<B: Backend>(
        state: &mut Option<State>,
        job: &LayerJob<B>,
        sparsity: Sparsity,
        quant: Option<QuantSpec>,
        opts: &SparseGptOptions,
    ) -> Result<Option<(PrunedWeight, Replacement<B::Tensor>)>> {
        let Some((cuda, weight, sum)) = on_cuda(job) else {
            return Ok(None);
        };
        let hopts = GptqOptions {
            act_order: false,
            damp: opts.damp,
            ..GptqOptions::default()
        };
        let st = prepared(state, job, cuda, sum, &hopts)?;
        let prep = st.prepared.as_ref().expect("prepared");
        let fail = |e| Error::Compress(format!("{}: {e}", job.id.full_name()));
        match st
            .gptq
            .sparsegpt(prep, weight, sparsity, quant, opts)
            .map_err(fail)?
        {
            None => Ok(None),
            Some((p, dense)) => Ok(Some((p, replacement::<B>(cuda, dense)?))),
        }
    }
}
