//! Routing GPTQ to the GPU. The sequential loop is generic over the backend; when the backend
//! is the CUDA one (feature `cuda`) and the layer's weight and ΣXᵀX are on the GPU, GPTQ runs
//! there (crunch_compress::CudaGptq) and the dequantized weight never leaves the device.
//! Otherwise, or for options the GPU path does not cover, the host implementation runs.
//!
//! The backend type is only known at run time here, so the CUDA case is found by a type check
//! (`Any`) rather than by a trait every backend would have to implement.

use crate::sequential::{LayerJob, Replacement};
use crate::Result;
use crunch_compress::{GptqOptions, QuantSpec, QuantizedWeight};
use crunch_runtime::Backend;

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
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use crate::sequential::{input_group, OnDevice};
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

    pub(super) fn run<B: Backend + 'static>(
        state: &mut Option<State>,
        job: &LayerJob<B>,
        spec: QuantSpec,
        opts: &GptqOptions,
    ) -> Result<Option<(QuantizedWeight, Replacement<B::Tensor>)>> {
        let Some(OnDevice {
            backend,
            weight,
            gram: Some(sum),
        }) = job.on_device()
        else {
            return Ok(None);
        };
        let (Some(cuda), Some(weight), Some(sum)) = (
            (backend as &dyn Any).downcast_ref::<Cuda>(),
            (weight as &dyn Any).downcast_ref::<CudaTensor>(),
            (sum as &dyn Any).downcast_ref::<CudaTensor>(),
        ) else {
            return Ok(None);
        };
        let name = job.id.full_name();
        let fail = |e: crunch_compress::CompressError| Error::Compress(format!("{name}: {e}"));
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
            input_group(job.id.name),
            opts.act_order,
            opts.damp.to_bits(),
        );
        if st.key != Some(key) {
            st.prepared = None; // free the previous factor before making the next
            st.prepared = Some(st.gptq.prepare(sum, opts).map_err(fail)?);
            st.key = Some(key);
        }
        let prep = st.prepared.as_ref().expect("prepared above");
        let Some((q, deq)) = st.gptq.quantize(prep, weight, spec, opts).map_err(fail)? else {
            return Ok(None);
        };
        let deq = cuda.weight_from(deq)?;
        let boxed: Box<dyn Any> = Box::new(deq);
        let tensor = *boxed
            .downcast::<B::Tensor>()
            .expect("the CUDA backend's tensor type");
        Ok(Some((q, Replacement::Device(tensor))))
    }
}
