//! Named weight access with the checkpoint's naming and layout quirks undone, so the model
//! code sees Hugging Face names and layouts whatever the file format.

use crate::config::ModelConfig;
use crate::{Error, Result, TensorProblem};
use crunch_formats::{TensorInfo, TensorSource};

/// How stored tensor names relate to Hugging Face names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    HuggingFace,
    /// llama.cpp names (`blk.N.attn_q.weight`). `unpermute_qk`: llama.cpp's converter reorders
    /// the rows of q and k for its interleaved rotary layout on Llama-architecture files.
    Gguf {
        unpermute_qk: bool,
    },
}

pub struct Weights {
    source: Box<dyn TensorSource>,
    naming: Naming,
}

impl Weights {
    pub fn new(source: Box<dyn TensorSource>, naming: Naming) -> Self {
        Self { source, naming }
    }

    pub fn source(&self) -> &dyn TensorSource {
        self.source.as_ref()
    }

    pub fn naming(&self) -> Naming {
        self.naming
    }

    /// The stored name of a Hugging Face tensor name.
    pub fn stored_name(&self, hf: &str) -> String {
        match self.naming {
            Naming::HuggingFace => hf.to_string(),
            Naming::Gguf { .. } => gguf_name(hf),
        }
    }

    pub fn contains(&self, hf: &str) -> bool {
        self.source.info(&self.stored_name(hf)).is_some()
    }

    pub fn info(&self, hf: &str) -> Option<TensorInfo> {
        self.source.info(&self.stored_name(hf))
    }

    /// The stored bytes of `hf` if it is kept as F16/BF16 under its Hugging Face name (see
    /// [`TensorSource::raw_half`]); `None` for GGUF, whose tensors are renamed and permuted.
    /// Bytes holding a NaN or an infinity give `None` too, so the caller's fallback
    /// ([`Weights::read`]) reports them.
    pub fn raw_half(&self, hf: &str) -> Option<(crunch_formats::DType, &[u8])> {
        match self.naming {
            Naming::HuggingFace => self
                .source
                .raw_half(hf)
                .filter(|(d, b)| crunch_formats::dtype::first_non_finite(*d, b).is_none()),
            Naming::Gguf { .. } => None,
        }
    }

    /// Reads `hf` as f32, checking that its shape is `shape`.
    pub fn read(&self, hf: &str, shape: &[usize], cfg: &ModelConfig) -> Result<Vec<f32>> {
        let stored = self.stored_name(hf);
        let bad = |problem| Error::tensor(self.source.path(), problem);
        let info = self.source.info(&stored).ok_or_else(|| {
            bad(TensorProblem::Missing {
                tensor: stored.clone(),
                implied_by: None,
            })
        })?;
        if info.shape != shape {
            return Err(bad(TensorProblem::Shape {
                tensor: stored,
                found: info.shape,
                expected: shape.to_vec(),
                implied_by: "the config".into(),
            }));
        }
        let mut data = self.source.read_f32(&stored)?;
        // A NaN or infinity in a weight or norm makes every output NaN (or silently wrong,
        // after quantization rounds around it): refuse it here, where every read passes.
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            let at = match shape {
                [_, cols] => format!("row {}, column {}", i / cols, i % cols),
                _ => format!("index {i}"),
            };
            return Err(bad(TensorProblem::NonFinite {
                tensor: stored,
                value: data[i],
                at,
            }));
        }
        if let Naming::Gguf { unpermute_qk: true } = self.naming {
            if hf.ends_with("self_attn.q_proj.weight") || hf.ends_with("self_attn.q_proj.bias") {
                data = unpermute_rows(&data, cfg.heads, cfg.head_dim);
            } else if hf.ends_with("self_attn.k_proj.weight")
                || hf.ends_with("self_attn.k_proj.bias")
            {
                data = unpermute_rows(&data, cfg.kv_heads, cfg.head_dim);
            }
        }
        Ok(data)
    }
}

/// Maps a Hugging Face tensor name to llama.cpp's. The GGUF fixtures in [`crate::testing`]
/// are named with it too, so what checks the table is the tests below and loading a real
/// llama.cpp file (SmolLM2's GGUF, every tensor name, in crunch-eval's `smollm2` test).
pub fn gguf_name(hf: &str) -> String {
    const GLOBAL: &[(&str, &str)] = &[
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    const LAYER: &[(&str, &str)] = &[
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("self_attn.q_norm", "attn_q_norm"),
        ("self_attn.k_norm", "attn_k_norm"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
    ];
    if let Some((_, g)) = GLOBAL.iter().find(|(h, _)| *h == hf) {
        return g.to_string();
    }
    if let Some(rest) = hf.strip_prefix("model.layers.") {
        if let Some((layer, tail)) = rest.split_once('.') {
            for (h, g) in LAYER {
                if let Some(suffix) = tail.strip_prefix(h) {
                    return format!("blk.{layer}.{g}{suffix}");
                }
            }
        }
    }
    hf.to_string()
}

/// Undoes llama.cpp's q/k row permutation. Within each head, llama.cpp stores row `2i + j`
/// what Hugging Face stores at row `j * d/2 + i` (i < d/2, j ∈ {0, 1}).
fn unpermute_rows(data: &[f32], heads: usize, head_dim: usize) -> Vec<f32> {
    let rows = heads * head_dim;
    let cols = data.len() / rows;
    let half = head_dim / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = h * head_dim + 2 * i + j;
                let dst = h * head_dim + j * half + i;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_llama_cpp() {
        assert_eq!(
            gguf_name("model.layers.12.self_attn.q_proj.weight"),
            "blk.12.attn_q.weight"
        );
        assert_eq!(
            gguf_name("model.layers.0.self_attn.k_proj.bias"),
            "blk.0.attn_k.bias"
        );
        assert_eq!(
            gguf_name("model.layers.3.mlp.down_proj.weight"),
            "blk.3.ffn_down.weight"
        );
        assert_eq!(gguf_name("model.embed_tokens.weight"), "token_embd.weight");
        assert_eq!(gguf_name("lm_head.weight"), "output.weight");
    }

    #[test]
    fn unpermute_inverts_the_converter() {
        use crate::testing::permute_rows;
        let data: Vec<f32> = (0..3 * 8 * 5).map(|x| x as f32).collect();
        assert_eq!(unpermute_rows(&permute_rows(&data, 3, 8), 3, 8), data);
    }
}
