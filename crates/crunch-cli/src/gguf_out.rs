//! `crunch quantize MODEL --format gguf --mix Q4_K_M --out OUT.gguf [--calib FILE]`: one GGUF
//! file llama.cpp loads, every tensor's type chosen by a llama-quantize preset (plus
//! `--tensor-type` overrides), encoded by crunch's encoders weighted by each input column's
//! importance (E[x²] over the calibration text, on by default when `--calib` is given).

use crate::calib_args::file_name;
use crate::device::with_backend;
use crate::progress;
use crate::quantize::{Bars, MethodArg, QuantizeArgs};
use anyhow::{anyhow, bail, Result};
use crunch_calib::collect_importance;
use crunch_export::gguf::{
    self, importance_by_gguf_name, read_imatrix, Importance, Inputs, Mix, Preset,
};
use crunch_formats::gguf::quants::ENCODABLE;
use crunch_formats::gguf::GgufValue;
use crunch_formats::DType;
use crunch_model::Checkpoint;
use std::collections::BTreeMap;
use std::time::Instant;

/// `PATTERN=TYPE` of `--tensor-type`.
fn parse_override(s: &str) -> Result<(String, DType)> {
    let (p, t) = s
        .rsplit_once('=')
        .ok_or_else(|| anyhow!("--tensor-type `{s}`: expected PATTERN=TYPE, e.g. ffn_down=Q6_K"))?;
    let dtype = DType::from_ggml_name(t)
        .filter(|d| ENCODABLE.contains(d) || matches!(d, DType::F32 | DType::F16 | DType::BF16))
        .ok_or_else(|| {
            let names: Vec<&str> = ENCODABLE.iter().map(|d| d.ggml_name()).collect();
            anyhow!(
                "--tensor-type `{s}`: `{t}` is not a type crunch writes (F32, F16, BF16, {})",
                names.join(", ")
            )
        })?;
    if p.is_empty() {
        bail!("--tensor-type `{s}`: empty pattern");
    }
    Ok((p.to_string(), dtype))
}

pub fn run(args: QuantizeArgs) -> Result<()> {
    let start = Instant::now();
    if args.method.unwrap_or(MethodArg::Rtn) == MethodArg::Gptq {
        bail!(
            "--format gguf supports --method rtn (importance-weighted rounding onto the GGUF \
             grids); GPTQ onto those grids is not implemented yet"
        );
    }
    let name = args.mix.as_deref().unwrap_or("Q4_K_M");
    let preset = Preset::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Preset::all().map(Preset::name).collect();
        anyhow!("--mix `{name}`: not a preset (one of {})", names.join(", "))
    })?;
    let overrides = args
        .tensor_type
        .iter()
        .map(|s| parse_override(s))
        .collect::<Result<Vec<_>>>()?;
    // Checked before the (long) importance pass: never the input, never an unforced overwrite.
    if !args.plan {
        crate::output_notes(crunch_export::prepare_output(
            &args.out,
            &[&args.model],
            crunch_export::OutputKind::File,
            args.force,
        )?);
    }
    if let Some(path) = &args.save_imatrix {
        crunch_export::check_output(
            path,
            &[&args.model],
            crunch_export::OutputKind::File,
            args.force,
        )?;
    }
    if args.save_imatrix.is_some() && args.calib.calib.is_none() {
        bail!("--save-imatrix needs --calib (the text to collect the importance on)");
    }
    let ckpt = Checkpoint::open(&args.model)?;

    // Importance: llama.cpp's imatrix file, or collected from --calib (unless turned off).
    let (importance, importance_desc): (Option<Importance>, String) = if let Some(path) =
        &args.imatrix
    {
        (
            Some(read_imatrix(path)?),
            format!("imatrix {}", file_name(path)),
        )
    } else if args.calib.calib.is_some()
        && !args.no_importance
        && (!args.plan || args.save_imatrix.is_some())
    {
        let (windows, calibration) = args.calib.load(&ckpt, args.device, "importance")?;
        let bar = progress::bar(ckpt.config.layers, "importance");
        let hf = with_backend!(args.device, b => collect_importance(
            &b,
            &ckpt,
            &windows,
            &mut Bars(bar.clone()),
        )?);
        bar.finish_and_clear();
        let desc = format!(
            "E[x^2] over {} x {} tokens of {} (seed {})",
            calibration.samples, calibration.tokens_per_sample, calibration.data, calibration.seed
        );
        let importance = importance_by_gguf_name(hf);
        if let Some(path) = &args.save_imatrix {
            let rows = calibration.samples * calibration.tokens_per_sample;
            gguf::write_imatrix(
                path,
                &importance,
                rows,
                calibration.tokens_per_sample,
                &calibration.data,
                args.force,
            )?;
        }
        (Some(importance), desc)
    } else {
        (None, "none".into())
    };
    let importance_seconds = start.elapsed().as_secs_f64();

    // Two of llama.cpp's preset rules depend on whether importance data is used.
    let with_importance =
        args.imatrix.is_some() || (args.calib.calib.is_some() && !args.no_importance);
    let mix = Mix {
        preset,
        overrides,
        with_importance,
    };
    let extra = vec![
        (
            "crunch.version".to_string(),
            GgufValue::String(env!("CARGO_PKG_VERSION").into()),
        ),
        (
            "crunch.mix".to_string(),
            GgufValue::String(mix_description(&mix)),
        ),
        (
            "crunch.importance".to_string(),
            GgufValue::String(importance_desc.clone()),
        ),
    ];
    let plan = gguf::plan(&ckpt, &mix, &extra)?;
    let mut types: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for t in &plan.tensors {
        let e = types.entry(t.dtype.ggml_name()).or_default();
        e.0 += 1;
        e.1 += t.bytes as u64;
    }
    let linear = |t: &gguf::PlannedTensor| t.name.starts_with("blk.") && t.shape.len() == 2;
    let summary = serde_json::json!({
        "out": args.out,
        "format": "gguf",
        "mix": mix_description(&mix),
        "method": "rtn",
        "importance": importance_desc,
        "tensors": plan.tensors.len(),
        "types": types.iter().map(|(k, (n, b))| (k.to_string(), serde_json::json!({"tensors": n, "bytes": b}))).collect::<serde_json::Map<_, _>>(),
        "size_on_disk": plan.file_bytes(),
        "bits_per_weight": plan.bits_per_weight(|t| t.shape.len() == 2),
        "linear_bits_per_weight": plan.bits_per_weight(linear),
    });
    if args.plan {
        let tensors: Vec<serde_json::Value> = plan
            .tensors
            .iter()
            .map(|t| {
                serde_json::json!({
                    "name": t.name, "shape": t.shape, "type": t.dtype.ggml_name(),
                    "source": t.source.ggml_name(), "bytes": t.bytes,
                })
            })
            .collect();
        let mut v = summary;
        v["tensors"] = tensors.into();
        v["importance_seconds"] = importance_seconds.into();
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }

    let n = plan.tensors.len();
    let bar = progress::bar(n, "encoding");
    let inputs = Inputs {
        importance: importance.as_ref(),
        encoded: None,
    };
    gguf::write(
        &ckpt,
        &plan,
        &inputs,
        &args.out,
        args.force,
        &mut |i, _, name| {
            bar.set_position(i as u64);
            bar.set_message(name.to_string());
        },
    )?;
    bar.finish_and_clear();
    let total_seconds = start.elapsed().as_secs_f64();
    let mut v = summary;
    v["importance_seconds"] = importance_seconds.into();
    v["encode_seconds"] = (total_seconds - importance_seconds).into();
    v["total_seconds"] = total_seconds.into();
    if args.json {
        println!("{v}");
    } else {
        println!(
            "{}: {} ({} importance), {:.3} bits per weight ({:.3} in block linear layers), {:.1} MB, {total_seconds:.1} s",
            args.out.display(),
            mix_description(&mix),
            if importance.is_some() { "with" } else { "no" },
            v["bits_per_weight"].as_f64().unwrap_or(0.0),
            v["linear_bits_per_weight"].as_f64().unwrap_or(0.0),
            plan.file_bytes() as f64 / 1e6
        );
    }
    Ok(())
}

fn mix_description(mix: &Mix) -> String {
    let mut s = mix.preset.name().to_string();
    for (p, t) in &mix.overrides {
        s.push_str(&format!(" {p}={}", t.ggml_name()));
    }
    s
}
