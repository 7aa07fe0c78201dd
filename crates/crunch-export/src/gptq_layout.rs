//! The classic GPTQ layout (AutoGPTQ, GPTQModel, vLLM, TGI, exllama): decision 060.
//!
//! A quantized linear layer `P` with `[out, in]` weight becomes
//! - `P.qweight` I32 `[in·bits/32, out]`: column `r` holds output row `r`'s codes packed along
//!   the input dimension as one dense little-endian bit stream (code `i` at stream bits
//!   `i·bits ..`). For 2, 4 and 8 bits that is 32/bits codes per word; for 3 bits it is exactly
//!   AutoGPTQ's 32-codes-in-3-words packing, codes 10 and 21 spanning two words;
//! - `P.qzeros` I32 `[groups, out·bits/32]`: the zero points of each group packed the same way
//!   along the output dimension. GPTQ v1 (`checkpoint_format: "gptq"`, what every engine loads)
//!   stores `zero − 1` and loaders add the 1 back, so a zero point of 0 cannot be stored; GPTQ
//!   v2 (`"gptq_v2"`, GPTQModel) stores the zero point itself;
//! - `P.scales` F16 `[groups, out]`;
//! - `P.g_idx` I32 `[in]`: the group of each input column;
//!
//! dequantized as `(code − zero) · scale`. Both dimensions must be multiples of 32: AutoGPTQ
//! sizes its buffers as `in / 32 · bits` and `out / 32 · bits`.

use crate::compressed_tensors::{
    check_weight, f16_tensor, has_custom_g_idx, i32_tensor, linear_modules, pack_stream, refused,
    write_hf_dir, Layout,
};
use crate::{QuantizedLayers, Refusal, Result, Target};
use crunch_formats::safetensors::OwnedTensor;
use crunch_model::Checkpoint;
use crunch_repr::format::Recipe;
use crunch_repr::QuantizedWeight;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// How zero points are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// `zero − 1` (AutoGPTQ's historical convention; the default, loaded everywhere).
    V1,
    /// The zero point itself (GPTQModel's `gptq_v2`).
    V2,
}

impl CheckpointFormat {
    /// The `checkpoint_format` value in `quantize_config.json`.
    pub fn name(self) -> &'static str {
        match self {
            CheckpointFormat::V1 => "gptq",
            CheckpointFormat::V2 => "gptq_v2",
        }
    }

    /// The layout's name on the command line.
    fn format(self) -> &'static str {
        match self {
            CheckpointFormat::V1 => "gptq",
            CheckpointFormat::V2 => "gptq-v2",
        }
    }
}

/// The stored tensors of one quantized layer `prefix`.
pub fn layer_tensors(
    prefix: &str,
    q: &QuantizedWeight,
    format: CheckpointFormat,
) -> Result<Vec<OwnedTensor>> {
    check_weight(prefix, format.format(), q)?;
    let (rows, cols, bits, groups) = (q.rows, q.cols, q.spec.bits, q.n_groups());
    if rows % 32 != 0 || cols % 32 != 0 {
        return Err(refused(
            prefix,
            format.format(),
            Refusal::DimsNot32 { rows, cols },
        ));
    }
    let stored_zero = |z: u8| match format {
        CheckpointFormat::V2 => Ok(z),
        CheckpointFormat::V1 => z
            .checked_sub(1)
            .ok_or_else(|| refused(prefix, format.format(), Refusal::ZeroPointZero)),
    };
    let (in_words, out_words) = (cols * bits as usize / 32, rows * bits as usize / 32);
    // Pack each output row's codes, then lay the words out transposed: qweight[w][r].
    let row_streams: Vec<Vec<u32>> = q
        .codes
        .chunks(cols)
        .map(|row| pack_stream(row.iter().copied(), bits))
        .collect();
    let qweight: Vec<u32> = (0..in_words)
        .flat_map(|w| row_streams.iter().map(move |s| s[w]))
        .collect();
    let mut qzeros = Vec::with_capacity(groups * out_words);
    let mut scales = Vec::with_capacity(groups * rows);
    for g in 0..groups {
        let zeros = (0..rows)
            .map(|r| stored_zero(q.zeros[r * groups + g]))
            .collect::<Result<Vec<u8>>>()?;
        qzeros.extend(pack_stream(zeros, bits));
        scales.extend((0..rows).map(|r| q.scales[r * groups + g]));
    }
    let g_idx: Vec<u32> = (0..cols).map(|c| q.group_of(c) as u32).collect();
    Ok(vec![
        i32_tensor(format!("{prefix}.qweight"), vec![in_words, rows], &qweight),
        i32_tensor(format!("{prefix}.qzeros"), vec![groups, out_words], &qzeros),
        f16_tensor(format!("{prefix}.scales"), vec![groups, rows], &scales),
        i32_tensor(format!("{prefix}.g_idx"), vec![cols], &g_idx),
    ])
}

/// `quantization_config` (also written as `quantize_config.json`). GPTQ has one global spec,
/// so every layer must share it; layers left unquantized are listed under GPTQModel's and
/// vLLM's `dynamic` as negative (`-:`) patterns.
pub fn quantization_config(
    layers: &BTreeMap<String, QuantizedWeight>,
    linears: &[String],
    recipe: &Recipe,
    format: CheckpointFormat,
) -> Result<Value> {
    let mut specs = layers.iter().map(|(n, q)| (n, q.spec));
    let (_, spec) = specs
        .next()
        .ok_or_else(|| refused("model", format.format(), Refusal::NothingQuantized))?;
    if let Some((name, _)) = specs.find(|(_, s)| *s != spec) {
        return Err(refused(name, format.format(), Refusal::MixedSpecs));
    }
    let desc_act = layers.values().any(has_custom_g_idx);
    let act_order = recipe.layers.values().any(|l| l.act_order);
    let mut v = json!({
        "quant_method": "gptq",
        "bits": spec.bits,
        "group_size": spec.group_size.map_or(-1, |g| g as i64),
        "desc_act": desc_act,
        // crunch's act-order keeps groups in column order: AutoGPTQ's static groups.
        "static_groups": act_order && !desc_act,
        "sym": spec.symmetric,
        "lm_head": false,
        "checkpoint_format": format.name(),
        "model_file_base_name": "model",
        "meta": {"quantizer": [format!("crunch:{}", recipe.crunch_version)]},
    });
    let damps: Vec<Option<f32>> = recipe.layers.values().map(|l| l.damp).collect();
    if let Some(Some(d)) = damps.first().filter(|d| damps.iter().all(|x| x == *d)) {
        v["damp_percent"] = json!((*d as f64 * 1e6).round() / 1e6);
    }
    let skipped: serde_json::Map<String, Value> = linears
        .iter()
        .filter(|n| *n != "lm_head" && !layers.contains_key(*n))
        .map(|n| (format!("-:^{}$", n.replace('.', "\\.")), json!({})))
        .collect();
    if !skipped.is_empty() {
        v["dynamic"] = Value::Object(skipped);
    }
    Ok(v)
}

/// Writes `ckpt` with `layers` quantized, to `to` in the GPTQ layout with zero points stored as
/// `format` says (V1 is the layout every engine loads).
pub fn write(
    ckpt: &Checkpoint,
    layers: &QuantizedLayers,
    recipe: &Recipe,
    to: &Target,
    format: CheckpointFormat,
) -> Result<()> {
    let quant = quantization_config(layers, &linear_modules(ckpt), recipe, format)?;
    let text = serde_json::to_string_pretty(&quant).expect("json") + "\n";
    let layout = Layout {
        tensors: &|p: &str, q: &QuantizedWeight| layer_tensors(p, q, format),
        quant,
        extra: vec![("quantize_config.json", text)],
    };
    write_hf_dir(ckpt, layers, recipe, to, layout)
}
