//! `gpu_packed check --model`'s generation checks through crunch-generate's `Engine` — what
//! `crunch generate|chat|serve --device cuda` run: the same model loaded as `Engine<Host>`
//! and as `Engine<Cuda>` (packed weights, f32 mode), greedy generation (one sequence, as
//! `generate`) and a batch decoded together (as the server's scheduler does), token for token.

use anyhow::Result;
use crunch_generate::{Engine, Request, Runtime, Sampler, SamplingParams, Sequence};
use crunch_runtime::{Cuda, KvMode};
use serde_json::json;

const PROMPT: &str = "The three most important inventions of the twentieth century are";
const BATCH: [&str; 3] = [
    "The capital of France is",
    "Water boils at a temperature of",
    "Once upon a time, in a small village,",
];

/// Runs the checks, printing one JSON line each; returns how many failed. Required to be
/// identical: greedy generation and batched decoding in f32 (`--kv-cache f32`). Reported
/// only: q8 and kivi2 caches, which the CUDA backend keeps on the host (the same `QuantKv`)
/// but fills from GPU-computed keys, whose last-bit differences a 2-bit code can amplify
/// (decision 131).
pub fn check_engine(path: &str, tokens: usize, gpu: &Cuda) -> Result<usize> {
    let ctx = Some(512);
    let host = Engine::load(path.as_ref(), ctx, |_| {})?;
    let dev = Engine::load_on(gpu.clone(), path.as_ref(), ctx, |_| {})?;
    println!(
        "{}",
        json!({"check": "engine_loaded", "cpu_weight_bytes": host.weight_bytes(),
               "gpu_weight_bytes": dev.weight_bytes(), "device": dev.backend().describe()})
    );
    let mut failed = 0;
    for mode in ["f32", "q8", "kivi2"] {
        let mode = KvMode::parse(mode).map_err(anyhow::Error::msg)?;
        let a = greedy(&host, mode, tokens)?;
        let b = greedy(&dev, mode, tokens)?;
        let required = mode == KvMode::F32;
        failed += usize::from(required && a != b);
        println!(
            "{}",
            json!({"check": "engine_greedy", "kv_cache": mode.to_string(), "tokens": tokens,
                   "identical": a == b, "required": required,
                   "first_difference": a.iter().zip(&b).position(|(x, y)| x != y),
                   "cpu_text": host.tokenizer.decode(&a, false).unwrap_or_default(),
                   "gpu_text": dev.tokenizer.decode(&b, false).unwrap_or_default(),
                   "pass": !required || a == b})
        );
    }
    let steps = 12;
    let a = batched(&host, steps)?;
    let b = batched(&dev, steps)?;
    failed += usize::from(a != b);
    println!(
        "{}",
        json!({"check": "engine_batched_decode", "sequences": BATCH.len(), "steps": steps,
               "identical": a == b, "cpu": a, "gpu": b, "pass": a == b})
    );
    Ok(failed)
}

/// Greedy generation of `tokens` tokens of [`PROMPT`] (end-of-sequence ignored).
fn greedy<B: Runtime>(e: &Engine<B>, mode: KvMode, tokens: usize) -> Result<Vec<u32>> {
    let prompt = e.encode(PROMPT, true)?;
    let mut seq = e.sequence_with(prompt.len() + tokens + 1, mode);
    let req = Request {
        prompt,
        max_tokens: tokens,
        sampling: SamplingParams::default(),
        stop: Vec::new(),
        ignore_eos: true,
    };
    Ok(e.generate(&mut seq, &req, &mut |_| {})?.token_ids)
}

/// [`BATCH`]'s prompts prefilled one by one, then `steps` greedy tokens for all of them from
/// one `Engine::decode` call per step.
fn batched<B: Runtime>(e: &Engine<B>, steps: usize) -> Result<Vec<Vec<u32>>> {
    let mut seqs: Vec<Sequence<B>> = Vec::new();
    let mut samplers = Vec::new();
    let mut out: Vec<Vec<u32>> = Vec::new();
    for p in BATCH {
        let ids = e.encode(p, true)?;
        let mut seq = e.sequence(ids.len() + steps + 1);
        let logits = e.prefill(&mut seq, &ids)?;
        let mut s = Sampler::new(SamplingParams::default());
        out.push(vec![s.sample(&logits, &ids)]);
        samplers.push(s);
        seqs.push(seq);
    }
    for _ in 1..steps {
        let last: Vec<u32> = out.iter().map(|o| *o.last().expect("a token")).collect();
        let mut refs: Vec<&mut Sequence<B>> = seqs.iter_mut().collect();
        let logits = e.decode(&mut refs, &last)?;
        for ((o, s), l) in out.iter_mut().zip(&mut samplers).zip(&logits) {
            let tok = s.sample(l, o);
            o.push(tok);
        }
    }
    Ok(out)
}
