//! One decoder block's pass: the attention inputs (norm, q/k/v, q/k norms, rotation), the
//! output projection, residuals and MLP, written once for every way the model runs a block
//! (a full pass, cached decoding, pages; calibration's blocks one by one). Where no hook reads
//! the layers' inputs, the norms, SwiGLU and residual adds go to the products through
//! [`Backend::linears_fused`] (decision 161).

use crate::config::{Activation, ModelConfig};
use crate::hooks::{LinearHook, LinearId};
use crate::layout::BLOCK_LINEARS;
use crate::model::{Block, Linear, Mlp, RopeTables};
use crate::Result;
use crunch_runtime::{AttentionMask, Backend, Epilogue, Prologue};

/// One decoder block, free-standing so that calibration can run blocks it loads one by one.
/// With a hook that asks for its inputs only ([`LinearHook::inputs_only`]) the pass stops at
/// the block's last linear input and returns `x` unchanged.
pub fn block_forward<B: Backend>(
    b: &B,
    cfg: &ModelConfig,
    blk: &Block<B>,
    layer: usize,
    x: &B::Tensor,
    rope: &RopeTables<B>,
    hook: &mut dyn LinearHook<B>,
) -> Result<B::Tensor> {
    let (cos, sin) = rope.set(blk.rope_set);
    let pass = BlockPass { b, cfg, blk, layer };
    let (q, k, v) = pass.attention_inputs(x, cos, sin, hook)?;
    let mask = AttentionMask::causal(blk.window);
    let a = b.attention(&q, &k, &v, mask, attention_scale(cfg))?;
    pass.output(x, &a, hook)
}

pub(crate) fn attention_scale(cfg: &ModelConfig) -> f32 {
    cfg.attention_scale()
}

/// `act(gate) · up` with the architecture's activation, the input of `next` (the down
/// projection: [`Backend::silu_mul_for`]).
pub(crate) fn gated<B: Backend>(
    b: &B,
    act: Activation,
    gate: &B::Tensor,
    up: &B::Tensor,
    next: &Linear<B>,
) -> Result<B::Tensor> {
    Ok(match act {
        Activation::Silu => b.silu_mul_for(gate, up, &Linear::bare_weights(&[next]))?,
        Activation::GeluTanh => b.gelu_mul(gate, up)?,
    })
}

/// One block at one layer of a pass: what both halves of the block read.
pub(crate) struct BlockPass<'a, B: Backend> {
    pub b: &'a B,
    pub cfg: &'a ModelConfig,
    pub blk: &'a Block<B>,
    pub layer: usize,
}

impl<B: Backend> BlockPass<'_, B> {
    /// First half of a block: RMSNorm, q/k/v projections, q/k norms and the rotation of rows
    /// `x [tokens, hidden]` with `cos`/`sin [tokens, head_dim / 2]` (each row its own position).
    /// Returns `q [tokens, heads, head_dim]`, `k`/`v [tokens, kv_heads, head_dim]`.
    pub fn attention_inputs(
        &self,
        x: &B::Tensor,
        cos: &B::Tensor,
        sin: &B::Tensor,
        hook: &mut dyn LinearHook<B>,
    ) -> Result<(B::Tensor, B::Tensor, B::Tensor)> {
        let (b, cfg, blk, layer) = (self.b, self.cfg, self.blk, self.layer);
        let tokens = b.shape(x)[0];
        let hd = cfg.head_dim;
        let qkv: Vec<&Linear<B>> = [Some(&blk.q), blk.k.as_ref(), blk.v.as_ref()]
            .into_iter()
            .flatten()
            .collect();
        let next = Linear::bare_weights(&qkv);
        let (q, k, v) = match (&blk.k, &blk.v) {
            // No hook reads the normed input: the norm may run inside the product (decision
            // 161).
            (Some(_), Some(_)) if !hook.reads_inputs() && next.len() == 3 => {
                let norm = Prologue::RmsNorm {
                    weight: &blk.attn_norm,
                    eps: cfg.rms_eps,
                };
                let mut y = b.linears_fused(x, &next, norm, Epilogue::None)?.into_iter();
                let mut next = || y.next().expect("three outputs for three layers");
                (next(), next(), next())
            }
            (Some(k), Some(v)) => {
                let h = b.rms_norm_for(x, &blk.attn_norm, cfg.rms_eps, &next)?;
                for &name in &BLOCK_LINEARS[..3] {
                    hook.linear_input(LinearId::new(layer, name), &h)?;
                }
                let mut y = Linear::forward_all(b, &h, &[&blk.q, k, v])?.into_iter();
                let mut next = || y.next().expect("three outputs for three layers");
                (next(), next(), next())
            }
            _ => {
                // Phi-3's fused projection: rows of q, then k, then v.
                let h = b.rms_norm_for(x, &blk.attn_norm, cfg.rms_eps, &next)?;
                hook.linear_input(LinearId::new(layer, "self_attn.qkv_proj"), &h)?;
                let qkv = blk.q.forward(b, &h)?;
                let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
                (
                    b.columns(&qkv, 0, qd)?,
                    b.columns(&qkv, qd, kvd)?,
                    b.columns(&qkv, qd + kvd, kvd)?,
                )
            }
        };
        let q = b.reshape(&q, &[tokens, cfg.heads, hd])?;
        let k = b.reshape(&k, &[tokens, cfg.kv_heads, hd])?;
        let v = b.reshape(&v, &[tokens, cfg.kv_heads, hd])?;
        let (q, k) = match (&blk.q_norm, &blk.k_norm) {
            (Some(qn), Some(kn)) => (
                b.rms_norm(&q, qn, cfg.rms_eps)?,
                b.rms_norm(&k, kn, cfg.rms_eps)?,
            ),
            _ => (q, k),
        };
        let q = b.rope(&q, cos, sin)?;
        let k = b.rope(&k, cos, sin)?;
        Ok((q, k, v))
    }

    /// Second half of a block: output projection of the attention result `a [tokens, heads *
    /// head_dim]` (Gemma: normed), residual, RMSNorm, MLP (Gemma: normed), residual.
    pub fn output(
        &self,
        x: &B::Tensor,
        a: &B::Tensor,
        hook: &mut dyn LinearHook<B>,
    ) -> Result<B::Tensor> {
        let (b, cfg, blk, layer) = (self.b, self.cfg, self.blk, self.layer);
        hook.linear_input(LinearId::new(layer, "self_attn.o_proj"), a)?;
        let o_bare = Linear::bare_weights(&[&blk.o]);
        let x_attn = if !hook.reads_inputs() && o_bare.len() == 1 && blk.post_attn_norm.is_none() {
            // The residual add in the product's store (decision 161).
            one(b.linears_fused(a, &o_bare, Prologue::None, Epilogue::Add(x))?)?
        } else {
            let mut o = blk.o.forward(b, a)?;
            if let Some(n) = &blk.post_attn_norm {
                o = b.rms_norm(&o, n, cfg.rms_eps)?;
            }
            b.add(x, &o)?
        };
        if let Some(out) = self.mlp_fused(&x_attn, hook)? {
            return Ok(out);
        }
        let next = match &blk.mlp {
            Mlp::Gated { gate, up, .. } => Linear::bare_weights(&[gate, up]),
            Mlp::FusedGated { gate_up, .. } => Linear::bare_weights(&[gate_up]),
            Mlp::Moe(_) => Vec::new(),
        };
        let h = b.rms_norm_for(&x_attn, &blk.mlp_norm, cfg.rms_eps, &next)?;
        let Some(mut m) = mlp_forward(b, cfg, &blk.mlp, layer, &h, hook)? else {
            return Ok(x.clone());
        };
        if let Some(n) = &blk.post_mlp_norm {
            m = b.rms_norm(&m, n, cfg.rms_eps)?;
        }
        Ok(b.add(&x_attn, &m)?)
    }
}

impl<B: Backend> BlockPass<'_, B> {
    /// The second half's MLP and residual as two fused calls (decision 161): rms_norm → gate/up
    /// → silu_mul, then down → + `x_attn`; `None` (nothing run) unless the MLP is a bare SwiGLU
    /// with no norm after it and no hook reads its layers' inputs.
    fn mlp_fused(
        &self,
        x_attn: &B::Tensor,
        hook: &mut dyn LinearHook<B>,
    ) -> Result<Option<B::Tensor>> {
        let (b, cfg, blk) = (self.b, self.cfg, self.blk);
        let Mlp::Gated { gate, up, down } = &blk.mlp else {
            return Ok(None);
        };
        let gate_up = Linear::bare_weights(&[gate, up]);
        let down = Linear::bare_weights(&[down]);
        if hook.reads_inputs()
            || hook.inputs_only()
            || cfg.activation != Activation::Silu
            || blk.post_mlp_norm.is_some()
            || gate_up.len() != 2
            || down.len() != 1
        {
            return Ok(None);
        }
        let norm = Prologue::RmsNorm {
            weight: &blk.mlp_norm,
            eps: cfg.rms_eps,
        };
        let silu = Epilogue::SiluMul { next: &down };
        let m = one(b.linears_fused(x_attn, &gate_up, norm, silu)?)?;
        let out = b.linears_fused(&m, &down, Prologue::None, Epilogue::Add(x_attn))?;
        Ok(Some(one(out)?))
    }
}

/// The one output of a [`Backend::linears_fused`] call with one.
fn one<T>(mut ys: Vec<T>) -> Result<T> {
    match (ys.pop(), ys.is_empty()) {
        (Some(y), true) => Ok(y),
        _ => Err(crunch_runtime::Error("linears_fused: expected one output".into()).into()),
    }
}

/// The MLP's output, or `None` when a dense MLP stops after its down projection's input
/// reached a hook that asks for inputs only.
fn mlp_forward<B: Backend>(
    b: &B,
    cfg: &ModelConfig,
    mlp: &Mlp<B>,
    layer: usize,
    h: &B::Tensor,
    hook: &mut dyn LinearHook<B>,
) -> Result<Option<B::Tensor>> {
    let id = |name: &'static str| LinearId::new(layer, name);
    let act = cfg.activation;
    let m = match mlp {
        Mlp::Gated { gate, up, down } => {
            hook.linear_input(id("mlp.gate_proj"), h)?;
            hook.linear_input(id("mlp.up_proj"), h)?;
            let y = Linear::forward_all(b, h, &[gate, up])?;
            gated(b, act, &y[0], &y[1], down)?
        }
        Mlp::FusedGated { gate_up, down } => {
            hook.linear_input(id("mlp.gate_up_proj"), h)?;
            let y = gate_up.forward(b, h)?;
            let i = cfg.intermediate;
            gated(b, act, &b.columns(&y, 0, i)?, &b.columns(&y, i, i)?, down)?
        }
        Mlp::Moe(moe) => return moe.forward(b, act, layer, h, hook).map(Some),
    };
    hook.linear_input(id("mlp.down_proj"), &m)?;
    if hook.inputs_only() {
        return Ok(None);
    }
    let (Mlp::Gated { down, .. } | Mlp::FusedGated { down, .. }) = mlp else {
        unreachable!("a dense MLP")
    };
    down.forward(b, &m).map(Some)
}
