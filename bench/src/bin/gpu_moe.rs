//! GPU benchmark at the Qwen3-30B-A3B shape (issue 16): GPTQ of a mixture-of-experts model,
//! end to end, with per-block timings projected to the full depth.
//!
//!   gpu_moe make --shape qwen3-30b-a3b|tiny [--layers N] --dir DIR
//!       writes DIR/config.json and DIR/model.safetensors: random bf16 weights with the exact
//!       shapes of Qwen3-30B-A3B (hidden 2048, 32 heads of 128, 4 KV heads, q/k norms, 128
//!       experts of width 768 with 8 per token, renormalised; vocab 151936, untied head) and
//!       N decoder blocks (default all 48); every matrix N(0, 0.02²), norms 1. `tiny` is a
//!       scaled-down shape for checking the logic on a CPU. Untimed setup.
//!   gpu_moe gptq --dir DIR --out OUT [--windows 128] [--ctx 2048] [--full-layers 48]
//!                [--device cuda|cpu]
//!       end to end like `crunch compress` with one GPTQ stage (4-bit g128, symmetric — what
//!       vLLM's fused-MoE kernels take — act-order with static groups, damp 0.01) on `cuda`
//!       in bf16 mode: open, calibrate on random token windows (seed 0; experts calibrated on
//!       their routed tokens, or on every token below 64), GPTQ every linear layer but the
//!       routers, save in crunch's format. Prints one JSON line: seconds per stage and per
//!       block, peak GPU memory sampled at stage boundaries (run nvidia-smi beside it for a
//!       trace), peak host memory (VmHWM), routed tokens per expert, how many experts took the
//!       every-token path, and the end-to-end time projected to `--full-layers` blocks
//!       (time outside the blocks + full × mean block + the save scaled by bytes).
//!
//! Random weights route tokens about uniformly, so every expert sees about windows × ctx ×
//! 8 / 128 tokens: a fair load for timing, not a measure of quality.

use anyhow::{bail, Result};
use crunch_bench::timing::{run_recipe, Device, Run};
use crunch_bench::{peak_host_bytes, random_windows, write_random_bf16, Args};
use crunch_model::testing::tensor_shapes;
use crunch_model::{Checkpoint, ModelConfig};
use crunch_runtime::Cpu;
use serde_json::json;
use std::path::Path;

/// The config.json of a shape.
fn config(shape: &str, layers: Option<usize>) -> Result<serde_json::Value> {
    let mut c = json!({
        "architectures": ["Qwen3MoeForCausalLM"],
        "model_type": "qwen3_moe",
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "moe_intermediate_size": 768,
        "num_hidden_layers": 48,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "head_dim": 128,
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "norm_topk_prob": true,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "vocab_size": 151936,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 40960,
        "tie_word_embeddings": false,
        "attention_bias": false,
        "hidden_act": "silu",
        "torch_dtype": "bfloat16"
    });
    match shape {
        "qwen3-30b-a3b" => {}
        "tiny" => {
            for (k, v) in [
                ("hidden_size", 256),
                ("intermediate_size", 512),
                ("moe_intermediate_size", 128),
                ("num_hidden_layers", 2),
                ("num_attention_heads", 4),
                ("num_key_value_heads", 2),
                ("head_dim", 64),
                ("num_experts", 16),
                ("num_experts_per_tok", 4),
                ("vocab_size", 1024),
            ] {
                c[k] = v.into();
            }
        }
        other => bail!("--shape {other}: expected qwen3-30b-a3b or tiny"),
    }
    if let Some(l) = layers {
        c["num_hidden_layers"] = l.into();
    }
    Ok(c)
}

fn main() -> Result<()> {
    let args = Args(std::env::args().collect());
    match args.0.get(1).map(String::as_str) {
        Some("make") => make(&args),
        Some("gptq") => match args.get("--device").unwrap_or("cuda") {
            "cpu" => gptq(&args, Cpu),
            #[cfg(feature = "cuda")]
            "cuda" => gptq(
                &args,
                crunch_runtime::Cuda::with_precision(0, crunch_runtime::Precision::Bf16)?,
            ),
            other => bail!("--device {other}: cpu, or cuda in a build with --features cuda"),
        },
        _ => bail!("usage: gpu_moe make|gptq ... (see the file's docs)"),
    }
}

fn make(args: &Args) -> Result<()> {
    let layers = args.get("--layers").map(str::parse).transpose()?;
    let cfg_json = config(args.get("--shape").unwrap_or("qwen3-30b-a3b"), layers)?;
    let dir = args.path("--dir")?;
    std::fs::create_dir_all(&dir)?;
    let cfg = ModelConfig::from_hf_json(&dir.join("config.json"), &cfg_json)?;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&cfg_json)?,
    )?;
    write_random_bf16(&dir, &tensor_shapes(&cfg))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn gptq<D: Device>(args: &Args, device: D) -> Result<()> {
    let (dir, out) = (args.path("--dir")?, args.path("--out")?);
    let (n, ctx) = (args.num("--windows", 128)?, args.num("--ctx", 2048)?);
    let full = args.num("--full-layers", 48)?;
    let cfg = Checkpoint::open(&dir)?.config;
    let wins = random_windows(cfg.vocab, n, ctx);
    // Act-order as in gpu_llama's figures in BENCHMARKS.md; symmetric, as vLLM's fused-MoE
    // kernels take.
    let recipe = "[[stage]]\nmethod = \"gptq\"\nbits = 4\ngroup_size = 128\nsymmetric = true\n\
                  act_order = true\nmse_clip = false\n";
    let run = run_recipe(device, &dir, recipe, &wins, &out)?;
    println!("{}", report(&cfg, &dir, &out, &run, full, n, ctx));
    Ok(())
}

/// The result line, with the projection to `full` blocks.
fn report<D: Device>(
    cfg: &ModelConfig,
    dir: &Path,
    out: &Path,
    run: &Run<D>,
    full: usize,
    windows: usize,
    ctx: usize,
) -> serde_json::Value {
    let (layers, timer, total) = (&run.layers, &run.timer, run.total);
    let device = &timer.device;
    // Routed tokens of each expert (one record per expert: its down projection's).
    let experts: Vec<_> = layers
        .iter()
        .filter(|(n, _)| n.ends_with("down_proj") && n.contains(".experts."))
        .filter_map(|(_, l)| l.expert)
        .collect();
    let routed: Vec<f64> = experts.iter().map(|e| e.routed_tokens as f64).collect();
    let all_tokens = experts.iter().filter(|e| e.all_tokens).count();
    let blocks: f64 = timer.per_block.iter().sum();
    let mean_block = blocks / timer.per_block.len().max(1) as f64;
    let save = timer.seconds.get("save").copied().unwrap_or(0.0);
    let outside = total - blocks - save;
    // Saved bytes: the bf16 embedding and LM head, plus the quantized blocks.
    let output = crunch_export::size_on_disk(out) as f64;
    let fixed = (cfg.vocab * cfg.hidden * 2 * if cfg.tie_embeddings { 1 } else { 2 }) as f64;
    let per_block_bytes = (output - fixed).max(0.0) / cfg.layers.max(1) as f64;
    let full_bytes = fixed + full as f64 * per_block_bytes;
    let projected_save = save * full_bytes / output.max(1.0);
    let projected = outside + full as f64 * mean_block + projected_save;
    json!({
        "bench": "gpu_moe_gptq",
        "device": device.name(),
        "model": dir.display().to_string(),
        "arch": cfg.arch.name(),
        "layers": cfg.layers,
        "hidden": cfg.hidden,
        "experts": cfg.moe.as_ref().map(|m| m.experts),
        "experts_per_token": cfg.moe.as_ref().map(|m| m.top_k),
        "expert_intermediate": cfg.moe.as_ref().map(|m| m.intermediate),
        "windows": windows,
        "ctx": ctx,
        "method": format!(
            "gptq 4-bit g128 sym act-order (static groups), {}",
            if device.name() == "cpu" { "f32 on the cpu" } else { "bf16 forward on cuda" }
        ),
        "layers_quantized": layers.len(),
        "seconds": timer.seconds,
        "seconds_total": total,
        "seconds_per_block": timer.per_block,
        "mean_seconds_per_block": mean_block,
        "median_seconds_per_block": median(&timer.per_block),
        "seconds_outside_blocks_and_save": outside,
        "routed_tokens_per_expert": {
            "min": routed.iter().copied().fold(f64::INFINITY, f64::min),
            "median": median(&routed),
            "max": routed.iter().copied().fold(0.0, f64::max),
        },
        "experts_on_every_token": all_tokens,
        "peak_gpu_bytes_sampled": timer.peak_gpu,
        "peak_host_bytes": peak_host_bytes(),
        "output_bytes": output,
        "projection": {
            "layers": full,
            "save_seconds": projected_save,
            "output_bytes": full_bytes,
            "seconds_total": projected,
            "minutes_total": projected / 60.0,
        },
    })
}
