//! Observation points on the forward pass: the input of every linear layer.
//!
//! Calibration (Hessians for GPTQ and SparseGPT, activation norms for Wanda, second moments
//! for whitened SVD) is built entirely on [`LinearHook`].

use crate::Result;
use crunch_runtime::Backend;
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

/// Which linear layer: `layer` is the decoder block (`usize::MAX` for the output head) and
/// `name` its name within the block, e.g. `self_attn.q_proj` or, for an expert of a sparse
/// MLP, `mlp.experts.17.gate_proj`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinearId {
    pub layer: usize,
    pub name: &'static str,
}

impl LinearId {
    pub const LM_HEAD: LinearId = LinearId {
        layer: usize::MAX,
        name: "lm_head",
    };

    pub fn new(layer: usize, name: &'static str) -> Self {
        LinearId { layer, name }
    }

    /// The Hugging Face name of the layer, e.g. `model.layers.3.self_attn.q_proj`.
    pub fn full_name(&self) -> String {
        if self.layer == usize::MAX {
            self.name.to_string()
        } else {
            format!("model.layers.{}.{}", self.layer, self.name)
        }
    }

    /// The layer whose input this one reads too (itself when none does): k and v read q's
    /// rows, up reads gate's, an expert's up (Mixtral's `w3`) its gate's (`w1`). A hook that
    /// gathers statistics of inputs gathers them once, for the owner.
    pub fn input_owner(&self) -> LinearId {
        let owner = match self.name {
            "self_attn.k_proj" | "self_attn.v_proj" => "self_attn.q_proj",
            "mlp.up_proj" => "mlp.gate_proj",
            n => match n.rsplit_once('.') {
                Some((expert, "up_proj")) if expert.contains(".experts.") => {
                    return LinearId::new(self.layer, intern(format!("{expert}.gate_proj")))
                }
                Some((expert, "w3")) if expert.contains(".experts.") => {
                    return LinearId::new(self.layer, intern(format!("{expert}.w1")))
                }
                _ => n,
            },
        };
        LinearId::new(self.layer, owner)
    }

    /// The expert this layer belongs to (`…experts.E.…`), if any.
    pub fn expert(&self) -> Option<usize> {
        let (_, rest) = self.name.split_once(".experts.")?;
        rest.split_once('.')?.0.parse().ok()
    }
}

/// A `&'static str` for a name made at run time (expert layers' names: `mlp.experts.17.
/// gate_proj`), so [`LinearId`] stays `Copy` for every architecture. Each distinct name is
/// leaked once; there are at most a few per expert of the model being run.
pub fn intern(name: String) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut set = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(&s) = set.get(name.as_str()) {
        return s;
    }
    let s: &'static str = Box::leak(name.into_boxed_str());
    set.insert(s);
    s
}

pub trait LinearHook<B: Backend> {
    /// Called with `x [tokens, in_features]`, the input of linear layer `id`, before it is
    /// applied. An expert of a sparse MLP sees only the tokens routed to it, and is not called
    /// at all when none is.
    fn linear_input(&mut self, id: LinearId, x: &B::Tensor) -> Result<()>;

    /// Whether this hook reads the inputs [`LinearHook::linear_input`] is given. When it does
    /// not (the empty hook: generation, evaluation), the model may run a layer's norm or
    /// activation fused into its product ([`Backend::linears_fused`], decision 161) and then
    /// does not call `linear_input` for the inputs it did not materialise.
    fn reads_inputs(&self) -> bool {
        true
    }

    /// Whether this hook wants the linear inputs only: a block run with it may stop once its
    /// last linear input reached the hook (the down projection's product and the residual
    /// after it are skipped; see [`crate::model::block_forward`]).
    fn inputs_only(&self) -> bool {
        false
    }

    /// Experts of the sparse MLP of block `layer` that should also run on *every* token, for
    /// this hook's eyes only ([`LinearHook::all_tokens_input`]); the block's output is
    /// unchanged. Calibration asks for this for experts the router sends too few tokens to.
    fn all_tokens_experts(&mut self, _layer: usize) -> Vec<usize> {
        Vec::new()
    }

    /// The input of expert layer `id` when every token of the block runs through the expert
    /// (for the experts [`LinearHook::all_tokens_experts`] named).
    fn all_tokens_input(&mut self, _id: LinearId, _x: &B::Tensor) -> Result<()> {
        Ok(())
    }
}

/// The empty hook.
impl<B: Backend> LinearHook<B> for () {
    fn linear_input(&mut self, _: LinearId, _: &B::Tensor) -> Result<()> {
        Ok(())
    }

    fn reads_inputs(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_and_experts() {
        let id = |n: &str| LinearId::new(2, intern(n.to_string()));
        assert_eq!(id("self_attn.v_proj").input_owner(), id("self_attn.q_proj"));
        assert_eq!(id("self_attn.o_proj").input_owner(), id("self_attn.o_proj"));
        assert_eq!(id("mlp.up_proj").input_owner(), id("mlp.gate_proj"));
        assert_eq!(
            id("mlp.experts.7.up_proj").input_owner(),
            id("mlp.experts.7.gate_proj")
        );
        assert_eq!(
            id("block_sparse_moe.experts.3.w3").input_owner(),
            id("block_sparse_moe.experts.3.w1")
        );
        assert_eq!(
            id("block_sparse_moe.experts.3.w2").input_owner(),
            id("block_sparse_moe.experts.3.w2")
        );
        assert_eq!(id("mlp.experts.12.down_proj").expert(), Some(12));
        assert_eq!(id("mlp.gate").expert(), None);
        assert!(std::ptr::eq(
            intern("mlp.experts.1.w1".into()),
            intern("mlp.experts.1.w1".into())
        ));
        assert_eq!(
            id("mlp.gate_up_proj").full_name(),
            "model.layers.2.mlp.gate_up_proj"
        );
    }
}
