//! Observation points on the forward pass: the input of every linear layer.
//!
//! Calibration (Hessians for GPTQ and SparseGPT, activation norms for Wanda, second moments
//! for whitened SVD) is built entirely on [`LinearHook`].

use crate::Result;
use crunch_runtime::Backend;

/// Which linear layer: `layer` is the decoder block (`usize::MAX` for the output head) and
/// `name` its name within the block, e.g. `self_attn.q_proj`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinearId {
    pub layer: usize,
    pub name: &'static str,
}

impl LinearId {
    pub const LM_HEAD: LinearId = LinearId {
        layer: usize::MAX,
        name: "lm_head",
    };

    /// The Hugging Face name of the layer, e.g. `model.layers.3.self_attn.q_proj`.
    pub fn full_name(&self) -> String {
        if self.layer == usize::MAX {
            self.name.to_string()
        } else {
            format!("model.layers.{}.{}", self.layer, self.name)
        }
    }
}

pub trait LinearHook<B: Backend> {
    /// Called with `x [tokens, in_features]`, the input of linear layer `id`, before it is applied.
    fn linear_input(&mut self, id: LinearId, x: &B::Tensor) -> Result<()>;
}

/// The empty hook.
impl<B: Backend> LinearHook<B> for () {
    fn linear_input(&mut self, _: LinearId, _: &B::Tensor) -> Result<()> {
        Ok(())
    }
}
