//! `crunch compress MODEL --target-size 93.5MB --format gguf --out OUT.gguf --calib FILE`: the
//! budget search over GGUF types. Every block linear layer is encoded in each type of its
//! ladder (`crunch_search::gguf_levels`, weighted by the importance E[x²] collected on the
//! calibration text); the search picks one type per layer; the other tensors (token embedding,
//! output, norms) get the types of a llama-quantize preset. The file is written by the GGUF
//! export with the chosen types as per-tensor overrides and the searched bytes as given, and
//! `OUT.recipe.toml` beside it reproduces it (`crunch compress --recipe`) without searching.

use crate::compress::OutputArgs;
use crate::device::with_backend;
use crate::gguf_out::{self, GgufArgs, Given};
use crate::progress;
use crate::search::{cache_root, evo_params, run_search, Goal, How, SearchArgs, Space, JUMP_GGUF};
use crate::search_report::{compare_points, draw, record, summary};
use anyhow::{anyhow, bail, Result};
use crunch_calib::{GgufSpec, RecipeFile};
use crunch_export::gguf::{self, importance_by_gguf_name, Mix, Preset};
use crunch_formats::DType;
use crunch_model::model::tensor_shapes;
use crunch_model::weights::gguf_location;
use crunch_model::{Checkpoint, Model};
use crunch_runtime::Backend;
use crunch_search::database::model_hash;
use crunch_search::gguf_levels::{encode, padded, GgufDatabase};
use crunch_search::{hash_bytes, ModelFitness, HASH_START};
use serde_json::json;
use std::collections::BTreeMap;

use std::time::Instant;

/// The presets a `--target-size` is matched against (nearest file size).
const SIZE_PRESETS: [Preset; 10] = [
    Preset::Q2_K,
    Preset::Q3_K_S,
    Preset::Q3_K_M,
    Preset::Q3_K_L,
    Preset::Q4_K_S,
    Preset::Q4_K_M,
    Preset::Q5_K_S,
    Preset::Q5_K_M,
    Preset::Q6_K,
    Preset::Q8_0,
];

fn mix_of(preset: Preset) -> Mix {
    Mix {
        preset,
        overrides: Vec::new(),
        with_importance: true,
    }
}

/// llama.cpp's name of a block linear layer's weight (`blk.3.attn_q.weight`).
fn gguf_weight_name(ckpt: &Checkpoint, hf_layer: &str) -> String {
    gguf_location(&format!("{hf_layer}.weight"), ckpt.config.arch).name
}

pub(crate) fn is_block_linear(name: &str) -> bool {
    const SUFFIXES: [&str; 7] = [
        "attn_q.weight",
        "attn_k.weight",
        "attn_v.weight",
        "attn_output.weight",
        "ffn_gate.weight",
        "ffn_up.weight",
        "ffn_down.weight",
    ];
    name.starts_with("blk.") && SUFFIXES.iter().any(|s| name.ends_with(s))
}

pub fn run(c: &OutputArgs, s: &SearchArgs) -> Result<()> {
    let start = Instant::now();
    if s.prune_levels {
        bail!(
            "--prune-levels applies to crunch's levels (--levels); --format gguf searches GGUF \
             types, which are not pruned"
        );
    }
    let params = evo_params(s, c.calib.seed(), JUMP_GGUF)?;
    let recipe_out = gguf_out::recipe_path(&c.out);
    for out in [&c.out, &recipe_out] {
        crunch_export::check_output(
            out,
            &[c.model.as_path()],
            crunch_export::OutputKind::File,
            c.force,
        )?;
    }
    let ckpt = Checkpoint::open(&c.model)?;
    let given_mix = s.gguf.mix.as_deref().map(gguf_out::preset).transpose()?;
    // The preset of the untouched tensors, and the file's bytes outside the searched layers.
    let plan_of = |p: Preset| gguf::plan(&ckpt, &mix_of(p), &[]);
    let preset = match (given_mix, s.target_size) {
        (Some(p), _) => p,
        (None, Some(size)) => {
            let mut best = (u64::MAX, Preset::Q4_K_M);
            for p in SIZE_PRESETS {
                let d = plan_of(p)?.file_bytes().abs_diff(size);
                if d < best.0 {
                    best = (d, p);
                }
            }
            best.1
        }
        (None, None) => Preset::Q4_K_M,
    };
    // A first check before the (long) importance pass, without crunch's metadata.
    if let Some(size) = s.target_size {
        room_for_the_search(size, outside_search(&plan_of(preset)?), preset)?;
    }
    let mut file = RecipeFile {
        format: Some("gguf".into()),
        ..RecipeFile::default()
    };
    let (windows, importance, importance_desc) = match &s.gguf.imatrix {
        Some(path) => {
            let who = "a budget search";
            let (windows, _) = crate::compress::load_calibration(c, &mut file, &ckpt, who)?;
            let importance = importance_by_hf_name(&ckpt, gguf::read_imatrix(path)?);
            let name = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            (windows, importance, format!("imatrix {name}"))
        }
        None => {
            let got = gguf_out::calibrated_importance(c, &mut file, &ckpt, "a budget search")?;
            (got.windows, got.importance, got.desc)
        }
    };

    // The file's bytes outside the searched layers, with the metadata the file will carry
    // (its size depends on the number of per-tensor types only, not on which).
    let units = crunch_search::database::block_units(&ckpt)?.0;
    let final_mix = Mix {
        overrides: vec![(String::new(), DType::F32); units.len()],
        ..mix_of(preset)
    };
    let plan = gguf::plan(
        &ckpt,
        &mix_of(preset),
        &gguf_out::crunch_metadata(&final_mix, &importance_desc),
    )?;
    let fixed = outside_search(&plan);
    let goal = match (s.target_bpw, s.target_size, s.target_kl) {
        (Some(b), None, None) => Goal::Bpw(b),
        (None, Some(size), None) => {
            room_for_the_search(size, fixed, preset)?;
            Goal::Bits(((size - fixed) * 8) as f64)
        }
        (None, None, Some(k)) => Goal::Kl(k),
        _ => bail!("give one of --target-bpw, --target-size, --target-kl"),
    };

    // The fitness windows: the calibration windows, and the model's own samples with
    // --fitness-self (the importance above comes from the calibration windows alone).
    let windows = crate::calib_args::with_self_samples(&c.calib, c.device, &ckpt, &windows, s)?;
    let cache = cache_root(&s.search_cache);
    let bar = progress::bar(units.len(), "encoding the levels");
    let db = GgufDatabase::build(
        &ckpt,
        Some(&importance),
        Some(&cache.join("gguf-variants")),
        &mut |done, _| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    let costs = db.costs();
    // Uniform configurations are named by their types, e.g. `Q4_K/IQ4_NL`.
    let top = costs.iter().map(Vec::len).max().unwrap_or(0);
    let names: Vec<String> = (0..top)
        .map(|l| {
            let mut v: Vec<&str> = Vec::new();
            for t in &db.types {
                let n = t[l.min(t.len() - 1)].ggml_name();
                if !v.contains(&n) {
                    v.push(n);
                }
            }
            v.join("/")
        })
        .collect();
    let key = {
        let mut h = hash_bytes(HASH_START, &model_hash(&ckpt.path)?.to_le_bytes());
        h = hash_bytes(
            h,
            &crunch_search::database::windows_hash(&windows).to_le_bytes(),
        );
        h = hash_bytes(h, importance_desc.as_bytes());
        for (name, v) in &importance {
            h = hash_bytes(h, name.as_bytes());
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            h = hash_bytes(h, &bytes);
        }
        for n in &names {
            h = hash_bytes(h, n.as_bytes());
        }
        h = hash_bytes(h, preset.name().as_bytes());
        hash_bytes(h, serde_json::to_string(&params)?.as_bytes())
    };
    // The preset's own type of every searched layer: a seed, so the search starts no worse
    // than the file `crunch quantize --mix PRESET` writes (made to fit the budget if it does
    // not).
    let preset_levels = db.levels_of(|u| {
        let name = gguf_weight_name(&ckpt, &db.units[u].full_name());
        plan.tensors
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.dtype)
    });
    let space = Space {
        costs: &costs,
        names: &names,
        uniform: None,
        key,
        seeds: vec![(format!("{} types", preset.name()), preset_levels)],
    };
    let (outcome, compare) = with_backend!(c.device, b => {
        let (base, mut model) = crate::search::load_twice(&b, &ckpt)?;
        quantize_untouched(&ckpt, &plan, &importance, &mut model)?;
        let mut fit =
            ModelFitness::new(&base, model, &db, &windows, params.seed).with_held(s.kl_windows);
        let how = How {
            args: s,
            params: &params,
            goal: &goal,
            cache: &cache,
        };
        let o = run_search(&mut fit, &space, &how)?;
        let kl_set = &windows[..s.kl_windows.clamp(1, windows.len())];
        let compare = compare_points(&b, &base, &s.compare, kl_set)?;
        (o, compare)
    });
    let search_seconds = start.elapsed().as_secs_f64();

    let unit_names: Vec<String> = db.units.iter().map(|u| u.full_name()).collect();
    if let Some(p) = &s.plot {
        draw(
            p,
            &outcome,
            &unit_names,
            &|u, l| db.types[u][l].ggml_name().to_string(),
            &compare,
        )?;
    }
    // The chosen types as exact per-tensor overrides, and their bytes in llama.cpp's row order.
    let mut overrides = Vec::with_capacity(units.len());
    let mut encoded: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (u, &l) in outcome.config.iter().enumerate() {
        let l = l as usize;
        let dtype = db.types[u][l];
        let name = gguf_weight_name(&ckpt, &unit_names[u]);
        let rows = db.shapes[u].0;
        let hf = format!("{}.weight", unit_names[u]);
        let bytes = gguf::to_llama_rows(&ckpt.config, &hf, &db.encoded[u][l], rows);
        *counts.entry(dtype.ggml_name()).or_default() += 1;
        overrides.push(format!("{name}={}", dtype.ggml_name()));
        encoded.insert(name, bytes);
    }
    file.gguf = Some(GgufSpec {
        mix: preset.name().to_string(),
        tensor_types: overrides,
        importance: true,
        imatrix: s.gguf.imatrix.as_ref().map(|p| p.display().to_string()),
        ..GgufSpec::default()
    });
    let mut extra = record(s, &params, &outcome, windows.len(), search_seconds);
    extra["mix"] = json!(preset.name());
    extra["levels"] = json!(counts);
    extra["variants_cached"] = json!(db.cached);
    extra["variants_made"] = json!(db.made);
    extra["compare"] = compare
        .iter()
        .map(|(n, b, k)| json!({"file": n, "linear_bpw": b, "calibration_kl": k}))
        .collect();
    if !c.json {
        summary(s, &outcome, windows.len(), search_seconds);
    }
    let given = Given {
        importance: importance_by_gguf_name(importance, ckpt.config.arch),
        desc: importance_desc,
        encoded,
        search: extra,
    };
    gguf_out::run_with(c, file, &GgufArgs::default(), Some(given))
}

/// Refuses a `--target-size` that the tensors the search does not choose already fill.
fn room_for_the_search(size: u64, fixed: u64, preset: Preset) -> Result<()> {
    if size <= fixed {
        bail!(
            "--target-size {:.2} MB is below the {:.2} MB that {} gives the tensors the search \
             does not choose (embeddings, output, norms, metadata)",
            size as f64 / 1e6,
            fixed as f64 / 1e6,
            preset.name()
        );
    }
    Ok(())
}

/// The file's bytes outside the searched layers of `plan`: metadata, untouched tensors and
/// their padding. A searched layer costs its bytes padded
/// to the alignment (`GgufDatabase::costs`); the file's last tensor is not padded, so when it is
/// a searched one the estimate is at most 31 bytes above the file, never below.
fn outside_search(plan: &gguf::GgufPlan) -> u64 {
    let linear: u64 = plan
        .tensors
        .iter()
        .filter(|t| is_block_linear(&t.name))
        .map(|t| padded(t.bytes) as u64)
        .sum();
    let last_pad = plan
        .tensors
        .last()
        .filter(|t| is_block_linear(&t.name))
        .map_or(0, |t| (padded(t.bytes) - t.bytes) as u64);
    plan.file_bytes() + last_pad - linear
}

/// An importance file's vectors (keyed by llama.cpp names) under the checkpoint's Hugging Face
/// weight names, as the collected importance is; the output matrix's as `lm_head.weight` also
/// when the embedding is tied.
fn importance_by_hf_name(
    ckpt: &Checkpoint,
    by_gguf: BTreeMap<String, Vec<f32>>,
) -> BTreeMap<String, Vec<f32>> {
    let mut names: Vec<String> = tensor_shapes(&ckpt.config)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.push("lm_head.weight".into());
    names
        .into_iter()
        .filter_map(|hf| {
            let loc = gguf_location(&hf, ckpt.config.arch);
            let v = by_gguf.get(&loc.name).filter(|_| loc.expert.is_none())?;
            Some((hf, v.clone()))
        })
        .collect()
}

/// The token embedding and output matrix of the candidate model as the file will hold them
/// (the preset's types, importance-weighted as the writer encodes them), so that the search's
/// KL is the file's.
fn quantize_untouched<B: Backend + Clone>(
    ckpt: &Checkpoint,
    plan: &gguf::GgufPlan,
    importance: &BTreeMap<String, Vec<f32>>,
    model: &mut Model<B>,
) -> Result<()> {
    let cfg = &ckpt.config;
    let typed = |name: &str| {
        plan.tensors
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.dtype)
    };
    let lossy = |d: DType| !matches!(d, DType::F32);
    let roundtrip = |hf: &str, dtype: DType, imp: Option<&[f32]>| -> Result<Vec<f32>> {
        let v = ckpt.weights.read(hf, &[cfg.vocab, cfg.hidden], cfg)?;
        Ok(match dtype {
            DType::F16 => v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
            DType::BF16 => v
                .iter()
                .map(|&x| half::bf16::from_f32(x).to_f32())
                .collect(),
            d => {
                let bytes = encode(&v, cfg.hidden, d, imp).map_err(|e| anyhow!("{hf}: {e}"))?;
                let mut out = vec![0f32; v.len()];
                crunch_formats::gguf::quants::dequantize(d, &bytes, &mut out)
                    .map_err(|e| anyhow!("{hf}: {e}"))?;
                out
            }
        })
    };
    let shape = [cfg.vocab, cfg.hidden];
    let out_imp = importance.get("lm_head.weight").map(Vec::as_slice);
    let b = model.backend.clone();
    let tied = typed("output.weight").is_none();
    if let Some(d) = typed("token_embd.weight").filter(|&d| lossy(d)) {
        // A tied embedding is the output matrix too: llama.cpp weights it by the output's
        // importance.
        let imp = if tied { out_imp } else { None };
        let v = roundtrip("model.embed_tokens.weight", d, imp)?;
        let t = if b.prefers_packed() {
            b.upload_weight(v, &shape)?
        } else {
            b.upload(v, &shape)?
        };
        if tied {
            model.lm_head = t.clone();
        }
        model.embed = t;
    }
    if let Some(d) = typed("output.weight").filter(|&d| lossy(d)) {
        let v = roundtrip("lm_head.weight", d, out_imp)?;
        model.lm_head = b.upload_weight(v, &shape)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crunch_model::model::BLOCK_LINEARS;

    #[test]
    fn block_linears_by_gguf_name() {
        assert!(is_block_linear("blk.0.attn_q.weight"));
        assert!(is_block_linear("blk.29.ffn_down.weight"));
        assert!(!is_block_linear("token_embd.weight"));
        assert!(!is_block_linear("blk.0.attn_norm.weight"));
        assert_eq!(BLOCK_LINEARS.len(), 7);
    }
}
