//! Named weight access with the checkpoint's naming and layout quirks undone, so the model
//! code sees Hugging Face names and layouts whatever the file format.

use crate::config::ModelConfig;
use crate::{Error, Result, TensorProblem};
use crunch_formats::{SharedBuffer, TensorInfo, TensorSource};
use crunch_runtime::kernels::{self, Bytes};
use crunch_runtime::PackedMatrix;
use std::sync::Arc;

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

    /// The stored description of `hf`, checked to have shape `shape`.
    fn checked_info(&self, hf: &str, shape: &[usize]) -> Result<(String, TensorInfo)> {
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
        Ok((stored, info))
    }

    /// The matrix `hf` (`shape = [rows, cols]`) in its stored encoding, for backends that
    /// multiply packed weights: the file's own bytes, shared with the mapped file where the
    /// layout allows (GGUF); `None` when the source cannot hand its bytes over or the kernels
    /// have no product for the encoding (the caller then reads f32).
    pub fn packed(
        &self,
        hf: &str,
        shape: &[usize],
        cfg: &ModelConfig,
    ) -> Result<Option<PackedMatrix>> {
        let (stored, info) = self.checked_info(hf, shape)?;
        let &[rows, cols] = shape else {
            return Ok(None);
        };
        if !kernels::supported(info.dtype) {
            return Ok(None);
        }
        let Some(raw) = self.source.raw_shared(&stored) else {
            return Ok(None);
        };
        let heads = match self.naming {
            Naming::Gguf { unpermute_qk: true } if hf.ends_with("self_attn.q_proj.weight") => {
                Some(cfg.heads)
            }
            Naming::Gguf { unpermute_qk: true } if hf.ends_with("self_attn.k_proj.weight") => {
                Some(cfg.kv_heads)
            }
            _ => None,
        };
        let bad = |problem| Error::tensor(self.source.path(), problem);
        let unusable = |problem: String| {
            bad(TensorProblem::Unusable {
                tensor: stored.clone(),
                problem,
            })
        };
        let bytes = match heads {
            // Rows are whole blocks, so llama.cpp's row order is undone on the stored bytes.
            Some(heads) => {
                let stored = &raw.buffer[raw.range.clone()];
                Bytes::owned(unpermute_rows(stored, heads, cfg.head_dim, rows))
            }
            None => {
                let len = raw.range.len();
                Bytes::shared(Arc::new(Shared(raw.buffer)), raw.range.start, len)
                    .ok_or_else(|| unusable("its stored range lies outside the file".into()))?
            }
        };
        let m = PackedMatrix::new(info.dtype, rows, cols, bytes).map_err(unusable)?;
        // The same refusal of non-finite weights as `read` (a NaN scale in one block would
        // make every output NaN).
        if let Some((i, value)) = m.first_non_finite() {
            return Err(bad(TensorProblem::NonFinite {
                tensor: stored,
                value,
                at: format!("row {}, column {}", i / cols, i % cols),
            }));
        }
        Ok(Some(m))
    }

    /// Reads `hf` as f32, checking that its shape is `shape`.
    pub fn read(&self, hf: &str, shape: &[usize], cfg: &ModelConfig) -> Result<Vec<f32>> {
        let (stored, _) = self.checked_info(hf, shape)?;
        let bad = |problem| Error::tensor(self.source.path(), problem);
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
                data = unpermute_rows(&data, cfg.heads, cfg.head_dim, cfg.heads * cfg.head_dim);
            } else if hf.ends_with("self_attn.k_proj.weight")
                || hf.ends_with("self_attn.k_proj.bias")
            {
                data = unpermute_rows(
                    &data,
                    cfg.kv_heads,
                    cfg.head_dim,
                    cfg.kv_heads * cfg.head_dim,
                );
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

/// A mapped file's bytes as the kernels' byte owner.
struct Shared(SharedBuffer);

impl std::ops::Deref for Shared {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Undoes llama.cpp's q/k row permutation. Within each head, llama.cpp stores row `2i + j`
/// what Hugging Face stores at row `j * d/2 + i` (i < d/2, j ∈ {0, 1}). Rows are moved whole,
/// so `data` may hold any element type (`rows` rows of equal size).
fn unpermute_rows<T: Copy + Default>(
    data: &[T],
    heads: usize,
    head_dim: usize,
    rows: usize,
) -> Vec<T> {
    debug_assert_eq!(rows, heads * head_dim);
    let cols = data.len() / rows;
    let half = head_dim / 2;
    let mut out = vec![T::default(); data.len()];
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
        assert_eq!(unpermute_rows(&permute_rows(&data, 3, 8), 3, 8, 24), data);
    }
}
