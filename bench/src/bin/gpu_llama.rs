//! GPU benchmark at Llama-3 scale (issue 6; `--features cuda`, run on the GPU machine).
//!
//!   gpu_llama make --shape 8b|70b [--layers N] --dir DIR
//!       writes DIR/config.json and DIR/model.safetensors: random bf16 weights with the exact
//!       shapes of Llama-3-8B or -70B (N decoder blocks if given), every matrix N(0, 0.02²)
//!       (Llama's initializer_range) and norms 1. Untimed setup.
//!   gpu_llama gptq --dir DIR --out OUT [--windows 128] [--ctx 2048]
//!       end to end like `crunch quantize --method gptq --bits 4 --group-size 128
//!       --device cuda-bf16`: open, calibrate on random token windows (seed 0), GPTQ, save in
//!       crunch's format. Prints one JSON line: seconds per stage (load = opening and reading
//!       weights, calibration = forward passes with XᵀX, gptq, propagate = the compressed
//!       block's forward pass, save), seconds per decoder block, peak GPU memory (sampled at
//!       every stage boundary; run nvidia-smi beside it for a continuous trace) and peak host
//!       memory (VmHWM).
//!   gpu_llama eval --dir DIR [--windows 8] [--ctx 2048]
//!       crunch's evaluation (crunch_eval::evaluate, as `crunch eval --device cuda-bf16`) on
//!       random tokens, its FLOP rate, and the measured cuBLAS bf16 GEMM ceiling.
//!
//! Random weights measure speed honestly; quality is measured on real weights elsewhere.

use anyhow::{bail, Result};
use crunch_bench::timing::run_recipe;
use crunch_bench::{peak_host_bytes, random_windows, write_random_bf16, Args};
use crunch_eval::{evaluate, EvalOptions};
use crunch_model::Checkpoint;
use crunch_runtime::{Cuda, Precision};
use serde_json::json;
use std::time::Instant;

struct Shape {
    hidden: usize,
    intermediate: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    vocab: usize,
}

const HEAD_DIM: usize = 128;

fn shape(name: &str) -> Result<Shape> {
    Ok(match name {
        "8b" => Shape {
            hidden: 4096,
            intermediate: 14336,
            layers: 32,
            heads: 32,
            kv_heads: 8,
            vocab: 128256,
        },
        "70b" => Shape {
            hidden: 8192,
            intermediate: 28672,
            layers: 80,
            heads: 64,
            kv_heads: 8,
            vocab: 128256,
        },
        _ => bail!("--shape {name}: expected 8b or 70b"),
    })
}

fn main() -> Result<()> {
    let args = Args(std::env::args().collect());
    match args.0.get(1).map(String::as_str) {
        Some("make") => make(&args),
        Some("gptq") => gptq(&args),
        Some("eval") => eval(&args),
        _ => bail!("usage: gpu_llama make|gptq|eval ... (see the file's docs)"),
    }
}

fn make(args: &Args) -> Result<()> {
    let mut s = shape(args.get("--shape").unwrap_or("8b"))?;
    s.layers = args.num("--layers", s.layers)?;
    let dir = args.path("--dir")?;
    std::fs::create_dir_all(&dir)?;
    let config = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": s.hidden,
        "intermediate_size": s.intermediate,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads,
        "head_dim": HEAD_DIM,
        "vocab_size": s.vocab,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": false,
        "torch_dtype": "bfloat16"
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    let (h, i, q, kv) = (
        s.hidden,
        s.intermediate,
        s.heads * HEAD_DIM,
        s.kv_heads * HEAD_DIM,
    );
    let mut tensors: Vec<(String, Vec<usize>)> =
        vec![("model.embed_tokens.weight".into(), vec![s.vocab, h])];
    for l in 0..s.layers {
        let p = format!("model.layers.{l}");
        for (n, shape) in [
            ("input_layernorm", vec![h]),
            ("self_attn.q_proj", vec![q, h]),
            ("self_attn.k_proj", vec![kv, h]),
            ("self_attn.v_proj", vec![kv, h]),
            ("self_attn.o_proj", vec![h, q]),
            ("post_attention_layernorm", vec![h]),
            ("mlp.gate_proj", vec![i, h]),
            ("mlp.up_proj", vec![i, h]),
            ("mlp.down_proj", vec![h, i]),
        ] {
            tensors.push((format!("{p}.{n}.weight"), shape));
        }
    }
    tensors.push(("model.norm.weight".into(), vec![h]));
    tensors.push(("lm_head.weight".into(), vec![s.vocab, h]));

    write_random_bf16(&dir, &tensors)?;
    Ok(())
}

/// Splits wall time into stages at the calibration loop's progress callbacks, synchronising
/// the GPU at each so that queued work is charged to the stage that queued it.
fn gptq(args: &Args) -> Result<()> {
    let (dir, out) = (args.path("--dir")?, args.path("--out")?);
    let (n, ctx) = (args.num("--windows", 128)?, args.num("--ctx", 2048)?);
    let cuda = Cuda::with_precision(0, Precision::Bf16)?;
    let c = Checkpoint::open(&dir)?.config;
    let wins = random_windows(c.vocab, n, ctx);
    // Act-order without MSE grids, as in the figures of BENCHMARKS.md (written out: the
    // defaults have moved since, decision 092).
    let recipe = "[[stage]]\nmethod = \"gptq\"\nbits = 4\ngroup_size = 128\nact_order = true\n\
                  mse_clip = false\n";
    let run = run_recipe(cuda, &dir, recipe, &wins, &out)?;
    let blocks = run.timer.per_block.len().max(1) as f64;
    let line = json!({
        "bench": "gpu_llama_gptq",
        "device": run.timer.device.device_name(),
        "model": dir.display().to_string(),
        "layers": c.layers,
        "hidden": c.hidden,
        "intermediate": c.intermediate,
        "windows": n,
        "ctx": ctx,
        "method": "gptq 4-bit g128 asym act-order (static groups), bf16 forward",
        "seconds": run.timer.seconds,
        "seconds_total": run.total,
        "seconds_per_block": run.timer.per_block,
        "mean_seconds_per_block": run.timer.per_block.iter().sum::<f64>() / blocks,
        "peak_gpu_bytes_sampled": run.timer.peak_gpu,
        "peak_host_bytes": peak_host_bytes(),
        "output_bytes": crunch_export::size_on_disk(&out),
    });
    println!("{line}");
    Ok(())
}

fn eval(args: &Args) -> Result<()> {
    let dir = args.path("--dir")?;
    let (n, ctx) = (args.num("--windows", 8)?, args.num("--ctx", 2048)?);
    let cuda = Cuda::with_precision(0, Precision::Bf16)?;
    let ckpt = Checkpoint::open(&dir)?;
    let load = Instant::now();
    let model = ckpt.load(cuda.clone(), |_| {})?;
    cuda.synchronize()?;
    let load_s = load.elapsed().as_secs_f64();
    let c = &ckpt.config;
    let opts = EvalOptions {
        ctx,
        max_tokens: None,
        kv_cache: crunch_runtime::KvMode::F32,
    };
    // One untimed window first (kernel compilation, cuBLAS heuristics, memory pool).
    let warm: Vec<u32> = random_windows(c.vocab, 1, ctx).concat();
    evaluate(&model, None, &warm, &opts, |_, _| {})?;
    let tokens: Vec<u32> = random_windows(c.vocab, n + 1, ctx)[1..].concat();
    let report = evaluate(&model, None, &tokens, &opts, |_, _| {})?;
    cuda.synchronize()?;

    // Matrix-product FLOPs of one window as executed: the block linears on every token, the
    // LM head on the ctx − 1 scored rows, and attention's two products over the full ctx × ctx
    // score matrix (the causal half is computed, then masked).
    let (h, q, kv, i) = (
        c.hidden,
        c.heads * c.head_dim,
        c.kv_heads * c.head_dim,
        c.intermediate,
    );
    let per_token_linear = 2 * (h * q + 2 * h * kv + q * h + 3 * h * i) * c.layers;
    let linear = (per_token_linear * ctx) as f64;
    let head = (2 * h * c.vocab * (ctx - 1)) as f64;
    let attention = (c.layers * 2 * 2 * ctx * ctx * c.head_dim * c.heads) as f64;
    let flops = (linear + head + attention) * n as f64;
    let achieved = flops / report.seconds;
    let mut ceiling = vec![];
    for (m, nn, k) in [
        (8192, 8192, 8192),
        (4096, 4096, 4096),
        (ctx, i, h),
        (ctx, h, i),
        (ctx - 1, c.vocab, h),
    ] {
        let f = cuda.gemm_bf16_flops(m, nn, k, 20)?;
        ceiling.push(json!({"m": m, "n": nn, "k": k, "tflops": f / 1e12}));
    }
    let best = ceiling
        .iter()
        .map(|v| v["tflops"].as_f64().unwrap_or(0.0))
        .fold(0.0, f64::max);
    let line = json!({
        "bench": "gpu_llama_eval",
        "device": cuda.device_name(),
        "layers": c.layers,
        "hidden": h,
        "windows": n,
        "ctx": ctx,
        "load_seconds": load_s,
        "eval_seconds": report.seconds,
        "tokens_per_second": report.tokens_per_second,
        "flops_per_window": {"linear": linear, "lm_head": head, "attention": attention},
        "achieved_tflops": achieved / 1e12,
        "achieved_tflops_without_attention": (linear + head) * n as f64 / report.seconds / 1e12,
        "gemm_bf16_ceiling": ceiling,
        "ceiling_tflops": best,
        "fraction_of_ceiling": achieved / 1e12 / best,
        "nll": report.nll,
    });
    println!("{line}");
    Ok(())
}
