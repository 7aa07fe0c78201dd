//! compressed-tensors' "pack-quantized" layout, which transformers (through the
//! `compressed-tensors` package) and vLLM load. Written for compressed-tensors 0.20.0
//! (decision 060); for 2, 4 and 8 bits the layout is the same in every version
//! from 0.15 on.
//!
//! A quantized linear layer `P` with `[out, in]` weight becomes
//! - `P.weight_packed` I32 `[out, ceil(in·bits/32)]`: each row's codes as one dense bit stream,
//!   code `i` at stream bits `i·bits ..`, word `w` holding stream bits `32w .. 32w+31` (least
//!   significant first), the last word zero-padded. compressed-tensors quantizes to *signed*
//!   values `s ∈ [−2^(b−1), 2^(b−1))` and packs `s + 2^(b−1)`: exactly crunch's unsigned code;
//! - `P.weight_scale` F16 `[out, groups]` (`[out, 1]` per channel);
//! - `P.weight_zero_point` I32 `[ceil(out·bits/32), groups]`, asymmetric only: the signed zero
//!   points `z − 2^(b−1)` offset back to crunch's unsigned `z` and packed the same way but along
//!   the *output* dimension (`packed_dim=0`), one stream per group column;
//! - `P.weight_shape` I64 `[2]` = `[out, in]` (what `torch.tensor(weight.shape)` gives).
//!
//! compressed-tensors dequantizes `(s − zs) · scale = (code − z) · scale`, crunch's formula.

use crate::crunch_dir::{save_tokenizer, write_files};
use crate::{atomic_dir, Error, QuantizedLayers, Refusal, Result, Target};
use crunch_formats::safetensors::{write_file, OwnedTensor};
use crunch_formats::DType;
use crunch_model::model::tensor_shapes;
use crunch_model::Checkpoint;
use crunch_repr::format::Recipe;
use crunch_repr::{pack_codes, QuantSpec, QuantizedWeight};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The compressed-tensors version whose layout and config schema this writes.
pub const COMPRESSED_TENSORS_VERSION: &str = "0.20.0";

/// The name errors give this layout.
const FORMAT: &str = "compressed-tensors";

/// Where the recipe goes in exported directories: not `crunch.json`, whose presence would make
/// crunch read the directory as its own format.
pub const RECIPE_COPY: &str = "crunch_recipe.json";

/// Packs `values` (each < 2^bits) into one dense little-endian bit stream of 32-bit words:
/// value `i` occupies stream bits `i·bits .. (i+1)·bits`, possibly across two words. This is
/// compressed-tensors' `pack_to_int32` (≥ 0.18) and, for 3 bits, also AutoGPTQ's packing.
pub(crate) fn pack_stream(values: impl IntoIterator<Item = u8>, bits: u8) -> Vec<u32> {
    // crunch's own packing is the same stream cut into bytes; words are four of them, little
    // endian, the last padded with zero bits.
    let codes: Vec<u8> = values.into_iter().collect();
    pack_codes(&codes, bits)
        .chunks(4)
        .map(|b| {
            let mut word = [0u8; 4];
            word[..b.len()].copy_from_slice(b);
            u32::from_le_bytes(word)
        })
        .collect()
}

pub(crate) fn i32_tensor(name: String, shape: Vec<usize>, words: &[u32]) -> OwnedTensor {
    OwnedTensor {
        name,
        dtype: DType::I32,
        shape,
        data: words.iter().flat_map(|w| w.to_le_bytes()).collect(),
    }
}

pub(crate) fn f16_tensor(name: String, shape: Vec<usize>, values: &[half::f16]) -> OwnedTensor {
    OwnedTensor {
        name,
        dtype: DType::F16,
        shape,
        data: values.iter().flat_map(|s| s.to_le_bytes()).collect(),
    }
}

/// The g_idx a weight without one implies; exporters that cannot store `g_idx` accept a stored
/// one only if it equals this.
pub(crate) fn has_custom_g_idx(q: &QuantizedWeight) -> bool {
    q.g_idx.as_ref().is_some_and(|g| {
        let len = q.spec.group_len(q.cols);
        g.iter().enumerate().any(|(c, &gi)| gi as usize != c / len)
    })
}

/// Checks what every exported layout relies on: a consistent weight, and zero points at the
/// middle of the grid for symmetric specs (compressed-tensors stores none, GPTQ implies it).
pub(crate) fn check_weight(name: &str, format: &'static str, q: &QuantizedWeight) -> Result<()> {
    q.validate().map_err(Error::layer(name))?;
    let mid = 1u8 << (q.spec.bits - 1);
    if q.spec.symmetric && q.zeros.iter().any(|&z| z != mid) {
        return Err(refused(name, format, Refusal::SymmetricZeroPoint { mid }));
    }
    Ok(())
}

/// `layer` refused by `format`.
pub(crate) fn refused(layer: &str, format: &'static str, why: Refusal) -> Error {
    Error::Refused {
        layer: layer.into(),
        format,
        why,
    }
}

/// The stored tensors of one quantized layer `prefix`.
pub fn layer_tensors(prefix: &str, q: &QuantizedWeight) -> Result<Vec<OwnedTensor>> {
    check_weight(prefix, FORMAT, q)?;
    if has_custom_g_idx(q) {
        return Err(refused(prefix, FORMAT, Refusal::ActOrderGroups));
    }
    let (rows, cols, bits, groups) = (q.rows, q.cols, q.spec.bits, q.n_groups());
    let row_words = (cols * bits as usize).div_ceil(32);
    let mut packed = Vec::with_capacity(rows * row_words);
    for row in q.codes.chunks(cols) {
        packed.extend(pack_stream(row.iter().copied(), bits));
    }
    let mut out = vec![
        i32_tensor(
            format!("{prefix}.weight_packed"),
            vec![rows, row_words],
            &packed,
        ),
        f16_tensor(
            format!("{prefix}.weight_scale"),
            vec![rows, groups],
            &q.scales,
        ),
    ];
    if !q.spec.symmetric {
        // One stream per group column, running down the output rows; stored [words, groups].
        let col_words = (rows * bits as usize).div_ceil(32);
        let streams: Vec<Vec<u32>> = (0..groups)
            .map(|g| pack_stream((0..rows).map(|r| q.zeros[r * groups + g]), bits))
            .collect();
        let zp: Vec<u32> = (0..col_words)
            .flat_map(|w| streams.iter().map(move |s| s[w]))
            .collect();
        out.push(i32_tensor(
            format!("{prefix}.weight_zero_point"),
            vec![col_words, groups],
            &zp,
        ));
    }
    out.push(OwnedTensor {
        name: format!("{prefix}.weight_shape"),
        dtype: DType::I64,
        shape: vec![2],
        data: [rows as i64, cols as i64]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
    });
    Ok(out)
}

/// Every `nn.Linear` module of the model: the 2-D weights other than the embedding, and
/// `lm_head`, which exists as a module even when tied to the embedding.
pub(crate) fn linear_modules(ckpt: &Checkpoint) -> Vec<String> {
    let mut out: Vec<String> = tensor_shapes(&ckpt.config)
        .into_iter()
        .filter(|(n, s)| s.len() == 2 && n != "model.embed_tokens.weight")
        .filter_map(|(n, _)| n.strip_suffix(".weight").map(str::to_string))
        .collect();
    if !out.iter().any(|n| n == "lm_head") {
        out.push("lm_head".into());
    }
    out
}

/// `quantization_config` for `layers` of a model whose Linear modules are `linears`. One
/// config group per distinct spec: with a single spec it targets every `Linear` and ignores
/// the rest by name; with several, each group lists its layers.
pub fn quantization_config(
    layers: &BTreeMap<String, QuantizedWeight>,
    linears: &[String],
) -> Value {
    let mut by_spec: BTreeMap<(u8, Option<usize>, bool), Vec<&str>> = BTreeMap::new();
    for (name, q) in layers {
        let s = q.spec;
        by_spec
            .entry((s.bits, s.group_size, s.symmetric))
            .or_default()
            .push(name);
    }
    let single = by_spec.len() == 1;
    let groups: serde_json::Map<String, Value> = by_spec
        .iter()
        .enumerate()
        .map(|(i, ((bits, group, sym), names))| {
            let targets = if single {
                json!(["Linear"])
            } else {
                json!(names)
            };
            let weights = json!({
                "num_bits": bits,
                "type": "int",
                "symmetric": sym,
                "group_size": group,
                "strategy": if group.is_some() { "group" } else { "channel" },
                "dynamic": false,
            });
            let scheme = json!({
                "targets": targets,
                "weights": weights,
                "input_activations": null,
                "output_activations": null,
                "format": "pack-quantized",
            });
            (format!("group_{i}"), scheme)
        })
        .collect();
    let ignore: Vec<&String> = linears
        .iter()
        .filter(|n| !layers.contains_key(*n))
        .collect();
    json!({
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "config_groups": groups,
        "ignore": ignore,
        "kv_cache_scheme": null,
        "global_compression_ratio": null,
        "sparsity_config": {},
        "transform_config": {},
        "version": COMPRESSED_TENSORS_VERSION,
    })
}

/// What sets one Hugging Face quantized layout apart from another.
pub(crate) struct Layout<'a> {
    /// The stored tensors of one quantized layer.
    pub tensors: &'a dyn Fn(&str, &QuantizedWeight) -> Result<Vec<OwnedTensor>>,
    /// `config.json`'s `quantization_config`.
    pub quant: Value,
    /// Further files (name, contents) beside config.json.
    pub extra: Vec<(&'static str, String)>,
}

/// A Hugging Face directory with `layers` stored as `layout` says. Shared by the
/// compressed-tensors and GPTQ writers: everything but the quantized tensors is the same.
pub(crate) fn write_hf_dir(
    ckpt: &Checkpoint,
    layers: &QuantizedLayers,
    recipe: &Recipe,
    to: &Target,
    layout: Layout,
) -> Result<()> {
    refuse_rope_freqs(ckpt)?;
    for (name, q) in layers {
        check_linear(ckpt, name, q.rows, q.cols)?;
    }
    // Convert every quantized layer before touching the disk, so a refusal costs nothing.
    let mut packed = BTreeMap::new();
    for (name, q) in layers {
        packed.insert(name.as_str(), (layout.tensors)(name, q)?);
    }
    write_tensors_dir(ckpt, packed, recipe, to, layout.quant, layout.extra)
}

/// Refuses a model whose rope scaling only GGUF's `rope_freqs.weight` holds.
pub(crate) fn refuse_rope_freqs(ckpt: &Checkpoint) -> Result<()> {
    if ckpt.config.rope_scaling.is_none() && ckpt.weights.contains("rope_freqs.weight") {
        // llama.cpp keeps Llama 3 rope scaling only as this tensor; transformers and vLLM read
        // it from config.json and would silently run without it.
        return Err(Error::RopeFreqsOnly);
    }
    Ok(())
}

/// Refuses `name` unless it is a linear layer of the model with a `rows`×`cols` weight.
pub(crate) fn check_linear(ckpt: &Checkpoint, name: &str, rows: usize, cols: usize) -> Result<()> {
    let want = vec![rows, cols];
    let found = tensor_shapes(&ckpt.config)
        .into_iter()
        .any(|(n, s)| n.strip_suffix(".weight") == Some(name) && s == want);
    if !found || !linear_modules(ckpt).iter().any(|n| n == name) {
        return Err(Error::NotALinear {
            layer: name.into(),
            rows,
            cols,
        });
    }
    Ok(())
}

/// A Hugging Face directory whose layers in `packed` are stored as the given tensors, every
/// other tensor as f32, with `quant` as config.json's `quantization_config`.
pub(crate) fn write_tensors_dir(
    ckpt: &Checkpoint,
    mut packed: BTreeMap<&str, Vec<OwnedTensor>>,
    recipe: &Recipe,
    to: &Target,
    quant: Value,
    extra: Vec<(&'static str, String)>,
) -> Result<()> {
    let cfg = &ckpt.config;
    let tokenizer = ckpt.tokenizer_if_present()?;
    atomic_dir(to.dir, &[&ckpt.path], to.overwrite, |dir| {
        let mut tensors = Vec::new();
        for (name, shape) in tensor_shapes(cfg) {
            match name.strip_suffix(".weight").and_then(|p| packed.remove(p)) {
                Some(t) => tensors.extend(t),
                None => {
                    let v = ckpt.weights.read(&name, &shape, cfg)?;
                    tensors.push(OwnedTensor::f32(name, &shape, &v));
                }
            }
        }
        // transformers' loaders have long required this safetensors metadata.
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        write_file(&dir.join("model.safetensors"), &tensors, &meta)?;
        let mut config = cfg.to_hf_json();
        config["quantization_config"] = quant;
        let config = serde_json::to_string_pretty(&config).expect("json") + "\n";
        let recipe = recipe.to_json();
        let mut files = vec![("config.json", config.as_str()), (RECIPE_COPY, &recipe)];
        files.extend(extra.iter().map(|(n, t)| (*n, t.as_str())));
        write_files(dir, files.iter().chain(to.extra))?;
        save_tokenizer(dir, tokenizer.as_ref())
    })
}

/// What vLLM's fused-MoE loader (`CompressedTensorsMoEMethod`, which turns a sparse MLP's
/// per-expert `experts.E.{gate,up,down}_proj.weight_packed` / `weight_scale` /
/// `weight_shape` into one fused kernel's stacked `w13_*` and `w2_*`) accepts: every
/// projection of every expert of a sparse MLP quantized with one and the same scheme, or
/// none of them; pack-quantized 4 or 8 bits, symmetric; the router left as a float
/// `Linear` (vLLM builds it with no quantization). Anything else would be written, then fail
/// to load there, so it is refused here with the reason. `specs` is the grid of every
/// quantized layer (Hugging Face names without `.weight`), planned or made.
pub fn check_moe_layout(ckpt: &Checkpoint, specs: &BTreeMap<String, QuantSpec>) -> Result<()> {
    use crunch_model::layout::{block_linears, LinearRole};
    let refused = |layer: &str, why| Error::Refused {
        layer: layer.into(),
        format: "compressed-tensors",
        why,
    };
    let cfg = &ckpt.config;
    for layer in (0..cfg.layers).filter(|&l| cfg.layer_moe(l).is_some()) {
        let mut experts = Vec::new();
        for s in &block_linears(cfg, layer) {
            let name = s.id.full_name();
            match s.role {
                LinearRole::Router if specs.contains_key(&name) => {
                    return Err(refused(&name, Refusal::QuantizedRouter))
                }
                LinearRole::Expert(_) => experts.push((name.clone(), specs.get(&name))),
                _ => {}
            }
        }
        let Some((first, q0)) = experts.iter().find_map(|(n, q)| Some((n, (*q)?))) else {
            continue;
        };
        if let Some((n, _)) = experts.iter().find(|(_, q)| *q != Some(q0)) {
            return Err(refused(
                n,
                Refusal::MixedExperts {
                    first: first.clone(),
                },
            ));
        }
        if !matches!(q0.bits, 4 | 8) || !q0.symmetric {
            return Err(refused(first, Refusal::MoeGrid(*q0)));
        }
    }
    Ok(())
}

/// Writes `ckpt` with `layers` (Hugging Face layer names without `.weight`) quantized, to
/// `to` in compressed-tensors' pack-quantized layout. Refuses layers with act-order `g_idx`,
/// and MoE layouts vLLM's fused-MoE loader would not take ([`check_moe_layout`]).
pub fn write(
    ckpt: &Checkpoint,
    layers: &QuantizedLayers,
    recipe: &Recipe,
    to: &Target,
) -> Result<()> {
    let specs = layers.iter().map(|(n, q)| (n.clone(), q.spec)).collect();
    check_moe_layout(ckpt, &specs)?;
    let layout = Layout {
        tensors: &layer_tensors,
        quant: quantization_config(layers, &linear_modules(ckpt)),
        extra: Vec::new(),
    };
    write_hf_dir(ckpt, layers, recipe, to, layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_packing_matches_hand_worked_words() {
        // 4 bits: eight codes per word, first code in the low nibble.
        assert_eq!(
            pack_stream([1, 2, 3, 4, 5, 6, 7, 8, 9], 4),
            vec![0x8765_4321, 0x9]
        );
        // 3 bits: code 10 straddles words 0 and 1 (low two bits at 30..31, high bit at 32).
        let mut v = vec![0u8; 32];
        v[10] = 0b101;
        v[11] = 0b111;
        assert_eq!(pack_stream(v, 3), vec![0b01 << 30, 0b1 | 0b111 << 1, 0]);
        assert_eq!(pack_stream([0xAB, 0xCD, 0xEF], 8), vec![0x00EF_CDAB]);
    }
}
