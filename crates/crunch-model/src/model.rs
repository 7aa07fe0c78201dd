//! The decoder, written once against [`Backend`]: Llama, Mistral, Qwen2 and Qwen3 differ only
//! in the switches of [`ModelConfig`] (biases, q/k norms, sliding windows, rope scaling).

use crate::config::ModelConfig;
use crate::hooks::{LinearHook, LinearId};
use crate::rope;
use crate::weights::Weights;
use crate::Result;
use crunch_runtime::{AttentionMask, Backend};

/// The names, relative to a block, of the seven linear layers of every decoder block.
pub const BLOCK_LINEARS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

/// A linear layer y = x·Wᵀ (+ bias), with W stored in one of three ways: dense; factored
/// (W = A·B, run as two thin products so the rank saves work, not only storage); or dense plus
/// a low-rank correction (W = Ŵ + A·B, EoRA). The forward pass uses only `linear` and `add`,
/// so every backend runs all three.
pub struct Linear<B: Backend> {
    /// Dense layers: W `[out_features, in_features]`. Factored layers (`up` set): the first
    /// factor B `[rank, in_features]`. Calibration reads and replaces this for dense layers.
    pub weight: B::Tensor,
    /// Factored layers: the second factor A `[out_features, rank]`, applied to x·Bᵀ.
    pub up: Option<B::Tensor>,
    pub bias: Option<B::Tensor>,
    /// A correction added to the output: x·Bᵀ·Aᵀ.
    pub correction: Option<LowRank<B>>,
}

/// Two factors A `[out_features, rank]` and B `[rank, in_features]` of a low-rank term A·B.
pub struct LowRank<B: Backend> {
    pub a: B::Tensor,
    pub b: B::Tensor,
}

impl<B: Backend> LowRank<B> {
    /// x·(A·B)ᵀ = (x·Bᵀ)·Aᵀ.
    pub fn forward(&self, backend: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let t = backend.linear(x, &self.b, None)?;
        Ok(backend.linear(&t, &self.a, None)?)
    }
}

impl<B: Backend> Linear<B> {
    /// A dense layer.
    pub fn dense(weight: B::Tensor, bias: Option<B::Tensor>) -> Self {
        Self {
            weight,
            up: None,
            bias,
            correction: None,
        }
    }

    /// Whether `weight` is the whole weight W (neither factored nor corrected).
    pub fn is_dense(&self) -> bool {
        self.up.is_none() && self.correction.is_none()
    }

    pub fn forward(&self, backend: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let y = match &self.up {
            None => backend.linear(x, &self.weight, self.bias.as_ref())?,
            Some(a) => {
                let t = backend.linear(x, &self.weight, None)?;
                backend.linear(&t, a, self.bias.as_ref())?
            }
        };
        match &self.correction {
            None => Ok(y),
            Some(c) => Ok(backend.add(&y, &c.forward(backend, x)?)?),
        }
    }
}

pub struct Block<B: Backend> {
    pub attn_norm: B::Tensor,
    pub q: Linear<B>,
    pub k: Linear<B>,
    pub v: Linear<B>,
    pub o: Linear<B>,
    pub q_norm: Option<B::Tensor>,
    pub k_norm: Option<B::Tensor>,
    pub mlp_norm: B::Tensor,
    pub gate: Linear<B>,
    pub up: Linear<B>,
    pub down: Linear<B>,
    pub window: Option<usize>,
}

impl<B: Backend> Block<B> {
    /// The block's linear layer by its relative name (one of [`BLOCK_LINEARS`]).
    pub fn linear_mut(&mut self, name: &str) -> Option<&mut Linear<B>> {
        Some(match name {
            "self_attn.q_proj" => &mut self.q,
            "self_attn.k_proj" => &mut self.k,
            "self_attn.v_proj" => &mut self.v,
            "self_attn.o_proj" => &mut self.o,
            "mlp.gate_proj" => &mut self.gate,
            "mlp.up_proj" => &mut self.up,
            "mlp.down_proj" => &mut self.down,
            _ => return None,
        })
    }
}

/// Rotary tables for positions `0..n`, uploaded once per sequence.
pub struct RopeTables<B: Backend> {
    cos: B::Tensor,
    sin: B::Tensor,
    positions: usize,
}

impl<B: Backend> RopeTables<B> {
    /// Tables for a checkpoint without loading the model (calibration streams blocks alone).
    pub fn new(backend: &B, w: &Weights, cfg: &ModelConfig, positions: usize) -> Result<Self> {
        let factors = rope_freq_factors(w, cfg)?;
        let inv_freq = rope::inverse_frequencies(cfg, factors.as_deref());
        Self::from_inv_freq(backend, &inv_freq, positions)
    }

    fn from_inv_freq(backend: &B, inv_freq: &[f64], positions: usize) -> Result<Self> {
        let (cos, sin) = rope::tables(inv_freq, positions);
        let half = inv_freq.len();
        Ok(RopeTables {
            cos: backend.upload(cos, &[positions, half])?,
            sin: backend.upload(sin, &[positions, half])?,
            positions,
        })
    }

    /// How many positions the tables cover (`0..len`).
    pub fn len(&self) -> usize {
        self.positions
    }

    pub fn is_empty(&self) -> bool {
        self.positions == 0
    }

    /// `cos` and `sin` rows `[positions.len(), head_dim / 2]` for arbitrary absolute
    /// positions, one per token row (a gather, so rows of a batch may sit at different
    /// positions).
    pub fn at(&self, backend: &B, positions: &[u32]) -> Result<(B::Tensor, B::Tensor)> {
        if let Some(&p) = positions.iter().find(|&&p| p as usize >= self.positions) {
            return Err(crate::Error::PastRope {
                position: p,
                positions: self.positions,
            });
        }
        Ok((
            backend.embedding(&self.cos, positions)?,
            backend.embedding(&self.sin, positions)?,
        ))
    }
}

pub struct Model<B: Backend> {
    pub config: ModelConfig,
    pub backend: B,
    pub embed: B::Tensor,
    pub blocks: Vec<Block<B>>,
    pub norm: B::Tensor,
    /// Shares storage with `embed` when embeddings are tied.
    pub lm_head: B::Tensor,
    inv_freq: Vec<f64>,
}

/// What every weight is loaded from: the backend it goes to, the source and the config.
struct Loader<'a, B: Backend> {
    backend: &'a B,
    w: &'a Weights,
    cfg: &'a ModelConfig,
}

impl<B: Backend> Loader<'_, B> {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<B::Tensor> {
        Ok(self
            .backend
            .upload(self.w.read(name, shape, self.cfg)?, shape)?)
    }

    /// A matrix a linear layer multiplies by (see [`Backend::upload_weight`]), in its stored
    /// encoding when the backend multiplies packed weights and the source can hand it over.
    fn weight(&self, name: &str, shape: &[usize]) -> Result<B::Tensor> {
        if self.backend.prefers_packed() {
            if let Some(p) = self.w.packed(name, shape, self.cfg)? {
                return Ok(self.backend.upload_packed(p)?);
            }
        }
        let data = self.w.read(name, shape, self.cfg)?;
        Ok(self.backend.upload_weight(data, shape)?)
    }

    /// Factors `{name}.{kind}_a` `[out, rank]` and `{name}.{kind}_b` `[rank, inp]`, if stored.
    fn low_rank(
        &self,
        name: &str,
        kind: &str,
        (out, inp): (usize, usize),
    ) -> Result<Option<LowRank<B>>> {
        let a = format!("{name}.{kind}_a");
        let Some(rank) = factor_rank(self.w, &a)? else {
            return Ok(None);
        };
        Ok(Some(LowRank {
            a: self.weight(&a, &[out, rank])?,
            b: self.weight(&format!("{name}.{kind}_b"), &[rank, inp])?,
        }))
    }

    /// Loads linear layer `name`: factored when the source stores `name.lr_a`/`name.lr_b`,
    /// otherwise dense from `name.weight`, plus a correction when it stores `name.eora_a`/`_b`.
    fn linear(&self, name: &str, out: usize, inp: usize, bias: bool) -> Result<Linear<B>> {
        let (weight, up) = match self.low_rank(name, "lr", (out, inp))? {
            Some(f) => (f.b, Some(f.a)),
            None => (self.weight(&format!("{name}.weight"), &[out, inp])?, None),
        };
        Ok(Linear {
            weight,
            up,
            bias: if bias {
                Some(self.tensor(&format!("{name}.bias"), &[out])?)
            } else {
                None
            },
            correction: self.low_rank(name, "eora", (out, inp))?,
        })
    }
}

/// The rank of stored factor `a` `[out, rank]` of a low-rank layer, if the source has one.
fn factor_rank(w: &Weights, a: &str) -> Result<Option<usize>> {
    match w.info(a) {
        None => Ok(None),
        Some(info) => match info.shape[..] {
            [_, rank] => Ok(Some(rank)),
            _ => Err(crate::Error::tensor(
                w.source().path(),
                crate::TensorProblem::NotAFactor {
                    tensor: a.into(),
                    found: info.shape,
                },
            )),
        },
    }
}

/// Loads decoder block `layer` alone: calibration streams blocks one at a time.
pub fn load_block<B: Backend>(
    backend: &B,
    w: &Weights,
    cfg: &ModelConfig,
    layer: usize,
) -> Result<Block<B>> {
    let load = Loader { backend, w, cfg };
    let p = format!("model.layers.{layer}");
    let (h, hd) = (cfg.hidden, cfg.head_dim);
    let norm = |n: &str, len: usize| load.tensor(&format!("{p}.{n}.weight"), &[len]);
    let lin = |n: &str, out, inp, bias| load.linear(&format!("{p}.{n}"), out, inp, bias);
    Ok(Block {
        attn_norm: norm("input_layernorm", h)?,
        q: lin("self_attn.q_proj", cfg.q_dim(), h, cfg.qkv_bias)?,
        k: lin("self_attn.k_proj", cfg.kv_dim(), h, cfg.qkv_bias)?,
        v: lin("self_attn.v_proj", cfg.kv_dim(), h, cfg.qkv_bias)?,
        o: lin("self_attn.o_proj", h, cfg.q_dim(), cfg.o_bias)?,
        q_norm: cfg
            .qk_norm
            .then(|| norm("self_attn.q_norm", hd))
            .transpose()?,
        k_norm: cfg
            .qk_norm
            .then(|| norm("self_attn.k_norm", hd))
            .transpose()?,
        mlp_norm: norm("post_attention_layernorm", h)?,
        gate: lin("mlp.gate_proj", cfg.intermediate, h, cfg.mlp_bias)?,
        up: lin("mlp.up_proj", cfg.intermediate, h, cfg.mlp_bias)?,
        down: lin("mlp.down_proj", h, cfg.intermediate, cfg.mlp_bias)?,
        window: cfg.layer_window[layer],
    })
}

impl<B: Backend> Model<B> {
    /// Loads every weight. `on_block` is called after each decoder block (for progress).
    pub fn load(
        backend: B,
        config: ModelConfig,
        w: &Weights,
        mut on_block: impl FnMut(usize),
    ) -> Result<Self> {
        let cfg = &config;
        let load = Loader {
            backend: &backend,
            w,
            cfg,
        };
        let embed_name = "model.embed_tokens.weight";
        let embed_shape = [cfg.vocab, cfg.hidden];
        // A backend that keeps weights packed keeps the table packed too (it is also the
        // output projection when embeddings are tied); rows are dequantized on lookup.
        let embed = if backend.prefers_packed() {
            load.weight(embed_name, &embed_shape)?
        } else {
            load.tensor(embed_name, &embed_shape)?
        };
        let mut blocks = Vec::with_capacity(cfg.layers);
        for layer in 0..cfg.layers {
            blocks.push(load_block(&backend, w, cfg, layer)?);
            on_block(layer);
        }
        let norm = load.tensor("model.norm.weight", &[cfg.hidden])?;
        let lm_head = if cfg.tie_embeddings || !w.contains("lm_head.weight") {
            embed.clone()
        } else {
            load.weight("lm_head.weight", &[cfg.vocab, cfg.hidden])?
        };
        let freq_factors = rope_freq_factors(w, cfg)?;
        let inv_freq = rope::inverse_frequencies(cfg, freq_factors.as_deref());
        Ok(Self {
            config,
            backend,
            embed,
            blocks,
            norm,
            lm_head,
            inv_freq,
        })
    }

    pub fn rope_tables(&self, positions: usize) -> Result<RopeTables<B>> {
        RopeTables::from_inv_freq(&self.backend, &self.inv_freq, positions)
    }

    /// Token embeddings `[tokens, hidden]`.
    pub fn embed(&self, ids: &[u32]) -> Result<B::Tensor> {
        Ok(self.backend.embedding(&self.embed, ids)?)
    }

    /// Runs decoder block `layer` on hidden states `x [tokens, hidden]`, telling `hook` the
    /// input of every linear layer before it is applied.
    pub fn block_forward(
        &self,
        layer: usize,
        x: &B::Tensor,
        rope: &RopeTables<B>,
        hook: &mut dyn LinearHook<B>,
    ) -> Result<B::Tensor> {
        block_forward(
            &self.backend,
            &self.config,
            &self.blocks[layer],
            layer,
            x,
            rope,
            hook,
        )
    }

    /// Final norm and output projection of hidden rows `x [n, hidden]`: logits `[n, vocab]`.
    pub fn logits(&self, x: &B::Tensor, hook: &mut dyn LinearHook<B>) -> Result<B::Tensor> {
        let b = &self.backend;
        let h = b.rms_norm(x, &self.norm, self.config.rms_eps)?;
        hook.linear_input(LinearId::LM_HEAD, &h)?;
        Ok(b.linear(&h, &self.lm_head, None)?)
    }

    /// Hidden states after the last block (before the final norm) for one sequence.
    pub fn hidden_states(&self, ids: &[u32], hook: &mut dyn LinearHook<B>) -> Result<B::Tensor> {
        let rope = self.rope_tables(ids.len())?;
        let mut x = self.embed(ids)?;
        for layer in 0..self.blocks.len() {
            x = self.block_forward(layer, &x, &rope, hook)?;
        }
        Ok(x)
    }

    /// Logits `[tokens, vocab]` for one sequence (convenient for short inputs; evaluation
    /// computes logits in row chunks instead, to bound memory).
    pub fn forward(&self, ids: &[u32]) -> Result<B::Tensor> {
        let x = self.hidden_states(ids, &mut ())?;
        self.logits(&x, &mut ())
    }
}

/// One decoder block, free-standing so that calibration can run blocks it loads one by one.
pub fn block_forward<B: Backend>(
    b: &B,
    cfg: &ModelConfig,
    blk: &Block<B>,
    layer: usize,
    x: &B::Tensor,
    rope: &RopeTables<B>,
    hook: &mut dyn LinearHook<B>,
) -> Result<B::Tensor> {
    let (q, k, v) = attention_inputs(b, cfg, blk, layer, x, &rope.cos, &rope.sin, hook)?;
    let mask = AttentionMask::causal(blk.window);
    let a = b.attention(&q, &k, &v, mask, attention_scale(cfg))?;
    block_output(b, cfg, blk, layer, x, &a, hook)
}

pub(crate) fn attention_scale(cfg: &ModelConfig) -> f32 {
    1.0 / (cfg.head_dim as f32).sqrt()
}

/// First half of a block: RMSNorm, q/k/v projections, q/k norms and the rotation of rows
/// `x [tokens, hidden]` with `cos`/`sin [tokens, head_dim / 2]` (each row its own position).
/// Returns `q [tokens, heads, head_dim]`, `k`/`v [tokens, kv_heads, head_dim]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_inputs<B: Backend>(
    b: &B,
    cfg: &ModelConfig,
    blk: &Block<B>,
    layer: usize,
    x: &B::Tensor,
    cos: &B::Tensor,
    sin: &B::Tensor,
    hook: &mut dyn LinearHook<B>,
) -> Result<(B::Tensor, B::Tensor, B::Tensor)> {
    let tokens = b.shape(x)[0];
    let hd = cfg.head_dim;
    let h = b.rms_norm(x, &blk.attn_norm, cfg.rms_eps)?;
    for name in &BLOCK_LINEARS[..3] {
        hook.linear_input(LinearId { layer, name }, &h)?;
    }
    let q = b.reshape(&blk.q.forward(b, &h)?, &[tokens, cfg.heads, hd])?;
    let k = b.reshape(&blk.k.forward(b, &h)?, &[tokens, cfg.kv_heads, hd])?;
    let v = b.reshape(&blk.v.forward(b, &h)?, &[tokens, cfg.kv_heads, hd])?;
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
/// head_dim]`, residual, RMSNorm, SwiGLU MLP, residual.
pub(crate) fn block_output<B: Backend>(
    b: &B,
    cfg: &ModelConfig,
    blk: &Block<B>,
    layer: usize,
    x: &B::Tensor,
    a: &B::Tensor,
    hook: &mut dyn LinearHook<B>,
) -> Result<B::Tensor> {
    let id = |name: &'static str| LinearId { layer, name };
    hook.linear_input(id(BLOCK_LINEARS[3]), a)?;
    let x = b.add(x, &blk.o.forward(b, a)?)?;

    let h = b.rms_norm(&x, &blk.mlp_norm, cfg.rms_eps)?;
    hook.linear_input(id(BLOCK_LINEARS[4]), &h)?;
    hook.linear_input(id(BLOCK_LINEARS[5]), &h)?;
    let m = b.silu_mul(&blk.gate.forward(b, &h)?, &blk.up.forward(b, &h)?)?;
    hook.linear_input(id(BLOCK_LINEARS[6]), &m)?;
    Ok(b.add(&x, &blk.down.forward(b, &m)?)?)
}

/// Every tensor a model of `cfg` stores, with its shape, in Hugging Face naming.
pub fn tensor_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i, hd) = (cfg.hidden, cfg.intermediate, cfg.head_dim);
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![cfg.vocab, h])];
    for l in 0..cfg.layers {
        let p = format!("model.layers.{l}");
        out.push((format!("{p}.input_layernorm.weight"), vec![h]));
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        for name in BLOCK_LINEARS {
            let (o, n, bias) = match name {
                "self_attn.q_proj" => (cfg.q_dim(), h, cfg.qkv_bias),
                "self_attn.k_proj" | "self_attn.v_proj" => (cfg.kv_dim(), h, cfg.qkv_bias),
                "self_attn.o_proj" => (h, cfg.q_dim(), cfg.o_bias),
                "mlp.down_proj" => (h, i, cfg.mlp_bias),
                _ => (i, h, cfg.mlp_bias),
            };
            out.push((format!("{p}.{name}.weight"), vec![o, n]));
            if bias {
                out.push((format!("{p}.{name}.bias"), vec![o]));
            }
        }
        if cfg.qk_norm {
            out.push((format!("{p}.self_attn.q_norm.weight"), vec![hd]));
            out.push((format!("{p}.self_attn.k_norm.weight"), vec![hd]));
        }
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    if !cfg.tie_embeddings {
        out.push(("lm_head.weight".to_string(), vec![cfg.vocab, h]));
    }
    out
}

/// llama.cpp stores Llama 3's rope rescaling as per-frequency divisors.
fn rope_freq_factors(w: &Weights, cfg: &ModelConfig) -> Result<Option<Vec<f32>>> {
    const NAME: &str = "rope_freqs.weight";
    if cfg.rope_scaling.is_some() || !w.contains(NAME) {
        return Ok(None);
    }
    Ok(Some(w.read(NAME, &[cfg.head_dim / 2], cfg)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crunch_runtime::Cpu;

    fn up(v: Vec<f32>, shape: &[usize]) -> <Cpu as Backend>::Tensor {
        Cpu.upload(v, shape).unwrap()
    }

    /// Factored, corrected and rank-0 layers against the dense weight they stand for.
    #[test]
    fn linear_forms_match_their_dense_weight() {
        let x = up((0..6).map(|i| i as f32 - 2.0).collect(), &[2, 3]);
        let (a, b) = (vec![1.0, 2.0], vec![0.5, -1.0, 2.0]); // A [2, 1], B [1, 3]
        let ab: Vec<f32> = a
            .iter()
            .flat_map(|ai| b.iter().map(move |bj| ai * bj))
            .collect();
        let bias = Some(up(vec![0.25, -0.5], &[2]));
        let run = |l: &Linear<Cpu>| Cpu.to_f32(&l.forward(&Cpu, &x).unwrap()).unwrap();
        let dense = run(&Linear::dense(up(ab.clone(), &[2, 3]), bias.clone()));
        let factored = Linear {
            weight: up(b.clone(), &[1, 3]),
            up: Some(up(a.clone(), &[2, 1])),
            bias: bias.clone(),
            correction: None,
        };
        assert!(!factored.is_dense());
        assert_eq!(run(&factored), dense);
        let corrected = Linear {
            correction: Some(LowRank {
                a: up(a, &[2, 1]),
                b: up(b, &[1, 3]),
            }),
            ..Linear::dense(up(vec![0.0; 6], &[2, 3]), bias.clone())
        };
        assert_eq!(run(&corrected), dense);
        let rank0 = Linear {
            correction: Some(LowRank {
                a: up(vec![], &[2, 0]),
                b: up(vec![], &[0, 3]),
            }),
            ..Linear::dense(up(ab, &[2, 3]), bias)
        };
        assert_eq!(run(&rank0), dense);
    }
}
