//! The decoder, written once against [`Backend`]: every architecture differs only in the
//! switches of [`ModelConfig`] (biases, q/k norms, sliding windows, rope settings, fused
//! projections, sandwich norms, GeGLU, experts).

pub use crate::block::block_forward;
pub(crate) use crate::block::{attention_scale, gated, BlockPass};
use crate::config::ModelConfig;
use crate::hooks::{LinearHook, LinearId};
pub use crate::layout::{tensor_shapes, BLOCK_LINEARS};
use crate::moe::{load_moe, Moe};
use crate::rope;
use crate::rope_tables::rope_freq_factors;
pub use crate::rope_tables::{RopeRows, RopeTables};
use crate::weights::Weights;
use crate::Result;
use crunch_runtime::Backend;

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

    /// `x · Wᵀ` for every layer of `layers`, which all read `x`: through
    /// [`Backend::linears`] (one product where the backend can, decision 139) when every
    /// layer is a bare weight (dense, no bias), else one [`Linear::forward`] each.
    pub fn forward_all(backend: &B, x: &B::Tensor, layers: &[&Self]) -> Result<Vec<B::Tensor>> {
        if layers.iter().all(|l| l.is_dense() && l.bias.is_none()) {
            let ws: Vec<&B::Tensor> = layers.iter().map(|l| &l.weight).collect();
            return Ok(backend.linears(x, &ws)?);
        }
        layers.iter().map(|l| l.forward(backend, x)).collect()
    }

    /// The weights [`Linear::forward_all`] multiplies its input by directly (every layer a
    /// bare weight), else none: what [`Backend::rms_norm_for`] is told reads its output.
    pub fn bare_weights<'a>(layers: &[&'a Self]) -> Vec<&'a B::Tensor> {
        if layers.iter().all(|l| l.is_dense() && l.bias.is_none()) {
            layers.iter().map(|l| &l.weight).collect()
        } else {
            Vec::new()
        }
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

/// A block's MLP.
pub enum Mlp<B: Backend> {
    /// `down(act(gate(x)) · up(x))`.
    Gated {
        gate: Linear<B>,
        up: Linear<B>,
        down: Linear<B>,
    },
    /// Phi-3: gate and up as one projection (gate rows first).
    FusedGated { gate_up: Linear<B>, down: Linear<B> },
    /// A sparse mixture of experts.
    Moe(Moe<B>),
}

pub struct Block<B: Backend> {
    pub attn_norm: B::Tensor,
    /// `q_proj`, or Phi-3's fused `qkv_proj` (then `k` and `v` are `None`).
    pub q: Linear<B>,
    pub k: Option<Linear<B>>,
    pub v: Option<Linear<B>>,
    pub o: Linear<B>,
    pub q_norm: Option<B::Tensor>,
    pub k_norm: Option<B::Tensor>,
    /// Gemma: the norm on the attention output (`post_attention_layernorm`).
    pub post_attn_norm: Option<B::Tensor>,
    /// The MLP's input norm (`post_attention_layernorm`; Gemma's `pre_feedforward_layernorm`).
    pub mlp_norm: B::Tensor,
    pub mlp: Mlp<B>,
    /// Gemma: the norm on the MLP output (`post_feedforward_layernorm`).
    pub post_mlp_norm: Option<B::Tensor>,
    pub window: Option<usize>,
    /// Which rotary set ([`RopeTables`]) the block rotates with: 1 for Gemma's sliding
    /// layers, 0 otherwise.
    pub rope_set: usize,
}

impl<B: Backend> Block<B> {
    /// Every linear layer of the block (attention, then the MLP's: a sparse MLP's router, then
    /// each expert's gate, up and down).
    pub fn linears(&self) -> Vec<&Linear<B>> {
        let mut out = vec![&self.q];
        out.extend(self.k.iter().chain(self.v.iter()));
        out.push(&self.o);
        match &self.mlp {
            Mlp::Gated { gate, up, down } => out.extend([gate, up, down]),
            Mlp::FusedGated { gate_up, down } => out.extend([gate_up, down]),
            Mlp::Moe(m) => {
                out.push(&m.router);
                for e in &m.experts {
                    out.extend([&e.gate, &e.up, &e.down]);
                }
            }
        }
        out
    }

    /// Every norm weight of the block.
    pub fn norms(&self) -> Vec<&B::Tensor> {
        let mut out = vec![&self.attn_norm, &self.mlp_norm];
        out.extend(
            [
                &self.q_norm,
                &self.k_norm,
                &self.post_attn_norm,
                &self.post_mlp_norm,
            ]
            .into_iter()
            .flatten(),
        );
        out
    }

    /// The block's linear layer by its relative name (see [`crate::layout::block_linears`]).
    pub fn linear_mut(&mut self, name: &str) -> Option<&mut Linear<B>> {
        match name {
            "self_attn.q_proj" if self.k.is_some() => return Some(&mut self.q),
            "self_attn.qkv_proj" if self.k.is_none() => return Some(&mut self.q),
            "self_attn.k_proj" => return self.k.as_mut(),
            "self_attn.v_proj" => return self.v.as_mut(),
            "self_attn.o_proj" => return Some(&mut self.o),
            _ => {}
        }
        match (&mut self.mlp, name) {
            (Mlp::Gated { gate, .. }, "mlp.gate_proj") => Some(gate),
            (Mlp::Gated { up, .. }, "mlp.up_proj") => Some(up),
            (Mlp::Gated { down, .. } | Mlp::FusedGated { down, .. }, "mlp.down_proj") => Some(down),
            (Mlp::FusedGated { gate_up, .. }, "mlp.gate_up_proj") => Some(gate_up),
            (Mlp::Moe(m), n) => m.linear_mut(n),
            _ => None,
        }
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
    freq_factors: Option<Vec<f32>>,
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

    /// An RMSNorm's weight as the forward pass multiplies by it: Gemma's stored offsets `w`
    /// become `1 + w` (in f32, as transformers computes `1.0 + weight.float()`).
    fn norm(&self, name: &str, len: usize) -> Result<B::Tensor> {
        let mut v = self.w.read(name, &[len], self.cfg)?;
        if self.cfg.norm_offset {
            v.iter_mut().for_each(|x| *x += 1.0);
        }
        Ok(self.backend.upload(v, &[len])?)
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
    let (h, hd, i) = (cfg.hidden, cfg.head_dim, cfg.intermediate);
    let norm = |n: &str, len: usize| load.norm(&format!("{p}.{n}.weight"), len);
    let lin = |n: &str, out, inp, bias| load.linear(&format!("{p}.{n}"), out, inp, bias);
    let (q, k, v) = if cfg.fused_qkv {
        let rows = cfg.q_dim() + 2 * cfg.kv_dim();
        (
            lin("self_attn.qkv_proj", rows, h, cfg.qkv_bias)?,
            None,
            None,
        )
    } else {
        (
            lin("self_attn.q_proj", cfg.q_dim(), h, cfg.qkv_bias)?,
            Some(lin("self_attn.k_proj", cfg.kv_dim(), h, cfg.qkv_bias)?),
            Some(lin("self_attn.v_proj", cfg.kv_dim(), h, cfg.qkv_bias)?),
        )
    };
    let mlp = match cfg.layer_moe(layer) {
        Some(m) => Mlp::Moe(load_moe(m, &|n, out, inp| lin(n, out, inp, false), h)?),
        None if cfg.fused_gate_up => Mlp::FusedGated {
            gate_up: lin("mlp.gate_up_proj", 2 * i, h, cfg.mlp_bias)?,
            down: lin("mlp.down_proj", h, i, cfg.mlp_bias)?,
        },
        None => Mlp::Gated {
            gate: lin("mlp.gate_proj", i, h, cfg.mlp_bias)?,
            up: lin("mlp.up_proj", i, h, cfg.mlp_bias)?,
            down: lin("mlp.down_proj", h, i, cfg.mlp_bias)?,
        },
    };
    let sandwich = cfg.sandwich_norms;
    Ok(Block {
        attn_norm: norm("input_layernorm", h)?,
        q,
        k,
        v,
        o: lin("self_attn.o_proj", h, cfg.q_dim(), cfg.o_bias)?,
        q_norm: cfg
            .qk_norm
            .then(|| norm("self_attn.q_norm", hd))
            .transpose()?,
        k_norm: cfg
            .qk_norm
            .then(|| norm("self_attn.k_norm", hd))
            .transpose()?,
        post_attn_norm: sandwich
            .then(|| norm("post_attention_layernorm", h))
            .transpose()?,
        mlp_norm: if sandwich {
            norm("pre_feedforward_layernorm", h)?
        } else {
            norm("post_attention_layernorm", h)?
        },
        mlp,
        post_mlp_norm: sandwich
            .then(|| norm("post_feedforward_layernorm", h))
            .transpose()?,
        window: cfg.layer_window[layer],
        rope_set: usize::from(cfg.rope_local_theta.is_some() && cfg.layer_window[layer].is_some()),
    })
}

/// Token embeddings `[ids.len(), hidden]` from `table`, scaled as the architecture asks
/// (Gemma: by √hidden).
pub fn embed_tokens<B: Backend>(
    b: &B,
    cfg: &ModelConfig,
    table: &B::Tensor,
    ids: &[u32],
) -> Result<B::Tensor> {
    let x = b.embedding(table, ids)?;
    match cfg.embed_scale {
        Some(s) => Ok(b.scale_rows(&x, &vec![s; ids.len()])?),
        None => Ok(x),
    }
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
        let norm = load.norm("model.norm.weight", cfg.hidden)?;
        let lm_head = if cfg.tie_embeddings || !w.contains("lm_head.weight") {
            embed.clone()
        } else {
            load.weight("lm_head.weight", &[cfg.vocab, cfg.hidden])?
        };
        let freq_factors = rope_freq_factors(w, cfg)?;
        Ok(Self {
            config,
            backend,
            embed,
            blocks,
            norm,
            lm_head,
            freq_factors,
        })
    }

    /// Rotary tables for sequences of up to `positions` tokens.
    pub fn rope_tables(&self, positions: usize) -> Result<RopeTables<B>> {
        RopeTables::build(
            &self.backend,
            &self.config,
            self.freq_factors.as_deref(),
            positions,
        )
    }

    /// The inverse frequencies of rotary set `set` for sequences of `positions` tokens (what
    /// [`Model::rope_tables`] forms its angles from).
    pub fn rope_inverse_frequencies(&self, positions: usize, set: usize) -> Vec<f64> {
        let mut sets = rope::rope_sets(&self.config, self.freq_factors.as_deref(), positions);
        sets.swap_remove(set.min(sets.len() - 1)).0
    }

    /// Token embeddings `[tokens, hidden]`.
    pub fn embed(&self, ids: &[u32]) -> Result<B::Tensor> {
        embed_tokens(&self.backend, &self.config, &self.embed, ids)
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

    /// `forward_all` gives each layer's own `forward`: bare weights (through
    /// `Backend::linears`) and a set with a biased or factored layer (one `forward` each).
    #[test]
    fn forward_all_equals_one_forward_each() {
        let x = up((0..6).map(|i| i as f32 * 0.5 - 1.0).collect(), &[2, 3]);
        let w = |k: f32, rows: usize| {
            up(
                (0..rows * 3).map(|i| i as f32 * k - 1.0).collect(),
                &[rows, 3],
            )
        };
        let bare = [
            Linear::dense(w(0.25, 4), None),
            Linear::dense(w(-0.5, 1), None),
        ];
        let biased = Linear::dense(w(1.5, 2), Some(up(vec![0.5, -2.0], &[2])));
        let factored = Linear {
            weight: w(0.75, 1),
            up: Some(up(vec![1.0, -3.0], &[2, 1])),
            bias: None,
            correction: None,
        };
        let run = |ls: &[&Linear<Cpu>]| {
            let all = Linear::forward_all(&Cpu, &x, ls).unwrap();
            assert_eq!(all.len(), ls.len());
            for (y, l) in all.iter().zip(ls) {
                let want = Cpu.to_f32(&l.forward(&Cpu, &x).unwrap()).unwrap();
                assert_eq!(Cpu.to_f32(y).unwrap(), want);
            }
        };
        run(&[&bare[0], &bare[1]]);
        run(&[&bare[0], &biased, &bare[1]]);
        run(&[&factored, &bare[1]]);
        // What a producer is told reads its output (`Backend::rms_norm_for`): the weights
        // `forward_all` hands to `linears`, or none when any layer is biased or factored.
        let shapes = |ls: &[&Linear<Cpu>]| -> Vec<Vec<usize>> {
            Linear::bare_weights(ls)
                .iter()
                .map(|t| Cpu.shape(t))
                .collect()
        };
        assert_eq!(shapes(&[&bare[0], &bare[1]]), vec![vec![4, 3], vec![1, 3]]);
        assert!(shapes(&[&bare[0], &biased]).is_empty());
        assert!(shapes(&[&factored]).is_empty());
    }
}
