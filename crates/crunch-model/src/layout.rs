//! What a config's decoder blocks hold, in Hugging Face naming: every linear layer (name,
//! shape, bias, role) and every norm. The loader, the structural check, calibration, the
//! compressors' layer lists and the writers all read the model's shape from here.

use crate::config::{ModelConfig, MoeNaming};
use crate::hooks::{intern, LinearId};

/// What a linear layer does in its block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearRole {
    /// q, k, v (or Phi-3's fused qkv).
    AttentionInput,
    AttentionOutput,
    /// A dense MLP's gate, up (or fused gate_up) and down.
    Mlp,
    /// A sparse MLP's router: left uncompressed unless a plan asks for it by name.
    Router,
    /// Expert `e` of a sparse MLP.
    Expert(usize),
}

/// One linear layer of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearSpec {
    pub id: LinearId,
    /// out_features.
    pub rows: usize,
    /// in_features.
    pub cols: usize,
    pub bias: bool,
    pub role: LinearRole,
}

/// A sparse MLP's names: (module, router, expert parts gate/up/down).
pub fn moe_names(naming: MoeNaming) -> (&'static str, &'static str, [&'static str; 3]) {
    match naming {
        MoeNaming::Mixtral => (
            "block_sparse_moe",
            "block_sparse_moe.gate",
            ["w1", "w3", "w2"],
        ),
        MoeNaming::Qwen => ("mlp", "mlp.gate", ["gate_proj", "up_proj", "down_proj"]),
    }
}

/// The relative name of part `part` (0 gate, 1 up, 2 down) of expert `e`.
pub fn expert_linear(naming: MoeNaming, e: usize, part: usize) -> &'static str {
    let (module, _, parts) = moe_names(naming);
    intern(format!("{module}.experts.{e}.{}", parts[part]))
}

/// The relative name of expert `e` as a module (`mlp.experts.3`), as recipes record it.
pub fn expert_module(naming: MoeNaming, e: usize) -> String {
    format!("{}.experts.{e}", moe_names(naming).0)
}

/// The layers of the dense Llama-style block, the names [`block_linears`] gives every
/// architecture without fused projections or experts.
pub const BLOCK_LINEARS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

/// Every linear layer of block `layer`, in the order the forward pass applies them.
pub fn block_linears(cfg: &ModelConfig, layer: usize) -> Vec<LinearSpec> {
    let h = cfg.hidden;
    let spec = |name: &'static str, rows, cols, bias, role| LinearSpec {
        id: LinearId::new(layer, name),
        rows,
        cols,
        bias,
        role,
    };
    let mut out = Vec::new();
    if cfg.fused_qkv {
        let rows = cfg.q_dim() + 2 * cfg.kv_dim();
        out.push(spec(
            "self_attn.qkv_proj",
            rows,
            h,
            cfg.qkv_bias,
            LinearRole::AttentionInput,
        ));
    } else {
        for (name, rows) in [
            ("self_attn.q_proj", cfg.q_dim()),
            ("self_attn.k_proj", cfg.kv_dim()),
            ("self_attn.v_proj", cfg.kv_dim()),
        ] {
            out.push(spec(
                name,
                rows,
                h,
                cfg.qkv_bias,
                LinearRole::AttentionInput,
            ));
        }
    }
    out.push(spec(
        "self_attn.o_proj",
        h,
        cfg.q_dim(),
        cfg.o_bias,
        LinearRole::AttentionOutput,
    ));
    match cfg.layer_moe(layer) {
        Some(m) => {
            let (_, router, _) = moe_names(m.naming);
            out.push(spec(router, m.experts, h, false, LinearRole::Router));
            for e in 0..m.experts {
                let role = LinearRole::Expert(e);
                let i = m.intermediate;
                out.push(spec(expert_linear(m.naming, e, 0), i, h, false, role));
                out.push(spec(expert_linear(m.naming, e, 1), i, h, false, role));
                out.push(spec(expert_linear(m.naming, e, 2), h, i, false, role));
            }
        }
        None => {
            let (i, bias) = (cfg.intermediate, cfg.mlp_bias);
            if cfg.fused_gate_up {
                out.push(spec("mlp.gate_up_proj", 2 * i, h, bias, LinearRole::Mlp));
            } else {
                out.push(spec("mlp.gate_proj", i, h, bias, LinearRole::Mlp));
                out.push(spec("mlp.up_proj", i, h, bias, LinearRole::Mlp));
            }
            out.push(spec("mlp.down_proj", h, i, bias, LinearRole::Mlp));
        }
    }
    out
}

/// Every block's linear layers, block by block.
pub fn all_linears(cfg: &ModelConfig) -> Vec<LinearSpec> {
    (0..cfg.layers)
        .flat_map(|l| block_linears(cfg, l))
        .collect()
}

/// The norms of a block (relative names without `.weight`) and their lengths: the
/// hidden-width ones, then the per-head q/k norms.
pub fn block_norms(cfg: &ModelConfig) -> Vec<(&'static str, usize)> {
    let mut out = hidden_norms(cfg);
    out.extend(head_norms(cfg));
    out
}

fn hidden_norms(cfg: &ModelConfig) -> Vec<(&'static str, usize)> {
    let mut out = vec![
        ("input_layernorm", cfg.hidden),
        ("post_attention_layernorm", cfg.hidden),
    ];
    if cfg.sandwich_norms {
        out.push(("pre_feedforward_layernorm", cfg.hidden));
        out.push(("post_feedforward_layernorm", cfg.hidden));
    }
    out
}

fn head_norms(cfg: &ModelConfig) -> Vec<(&'static str, usize)> {
    if cfg.qk_norm {
        vec![
            ("self_attn.q_norm", cfg.head_dim),
            ("self_attn.k_norm", cfg.head_dim),
        ]
    } else {
        Vec::new()
    }
}

/// Every tensor a model of `cfg` stores, with its shape, in Hugging Face naming (per block:
/// hidden-width norms, linear layers, q/k norms; tiny test models are written in this order).
pub fn tensor_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let h = cfg.hidden;
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![cfg.vocab, h])];
    for l in 0..cfg.layers {
        let p = format!("model.layers.{l}");
        for (name, len) in hidden_norms(cfg) {
            out.push((format!("{p}.{name}.weight"), vec![len]));
        }
        for s in block_linears(cfg, l) {
            out.push((format!("{p}.{}.weight", s.id.name), vec![s.rows, s.cols]));
            if s.bias {
                out.push((format!("{p}.{}.bias", s.id.name), vec![s.rows]));
            }
        }
        for (name, len) in head_norms(cfg) {
            out.push((format!("{p}.{name}.weight"), vec![len]));
        }
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    if !cfg.tie_embeddings {
        out.push(("lm_head.weight".to_string(), vec![cfg.vocab, h]));
    }
    out
}
