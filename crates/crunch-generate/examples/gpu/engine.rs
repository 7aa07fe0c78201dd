//! `gpu_packed check --model`'s generation checks through crunch-generate's `Engine` — what
//! `crunch generate|chat|serve --device cuda` run: the same model loaded as `Engine<Host>`
//! and as `Engine<Cuda>` (packed weights, f32 mode), greedy generation (one sequence, as
//! `generate`) and a batch decoded together (as the server's scheduler does), token for token.

use anyhow::Result;
use crunch_generate::{Engine, PagedSequence, Request, Runtime, Sampler, SamplingParams, Sequence};
use crunch_runtime::{Cuda, KvMode};
use serde_json::json;

const PROMPT: &str = "The three most important inventions of the twentieth century are";
const BATCH: [&str; 3] = [
    "The capital of France is",
    "Water boils at a temperature of",
    "Once upon a time, in a small village,",
];

/// Runs the checks, printing one JSON line each; returns how many failed. Required to be
/// identical: greedy generation in f32 and q8 (decision 138: the GPU's q8 cache is on the
/// device, holding the host quantizer's codes) and batched decoding in f32. Prefill logits of
/// the prompt, every mode: required within 1e-3 (max |GPU − CPU| / max |CPU|) for f32 and
/// f16; reported for the quantized modes, whose codes can flip where GPU-computed keys
/// differ from the CPU's in the last bits (decision 131). q8 included: on the H200 (s29) its
/// prefill logits differed by 7.2e-3 while its greedy tokens were identical and its eval KL
/// agreed to 1.6e-5 between the devices; with the device attention within 1.1e-5 of the host's
/// on identical codes, the likely cause (not isolated) is 8-bit codes that round the other way.
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
    for mode in [
        "f32",
        "f16",
        "q8",
        "q4",
        "kivi4",
        "kivi2",
        "kivi2:vg64:s1:pre:h",
    ] {
        let mode = KvMode::parse(mode).map_err(anyhow::Error::msg)?;
        let a = greedy(&host, mode, tokens)?;
        let b = greedy(&dev, mode, tokens)?;
        let required = mode == KvMode::F32 || mode == KvMode::Q8;
        failed += usize::from(required && a != b);
        let head_dim = dev.model.config.head_dim;
        println!(
            "{}",
            json!({"check": "engine_greedy", "kv_cache": mode.to_string(), "tokens": tokens,
                   "kv_memory": dev.backend().kv_memory(mode, head_dim),
                   "identical": a == b, "required": required,
                   "first_difference": a.iter().zip(&b).position(|(x, y)| x != y),
                   "cpu_text": host.tokenizer.decode(&a, false).unwrap_or_default(),
                   "gpu_text": dev.tokenizer.decode(&b, false).unwrap_or_default(),
                   "pass": !required || a == b})
        );
        let (la, lb) = (prefill_logits(&host, mode)?, prefill_logits(&dev, mode)?);
        let scale = la
            .iter()
            .fold(0f32, |m, x| m.max(x.abs()))
            .max(f32::MIN_POSITIVE);
        let diff = la
            .iter()
            .zip(&lb)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale;
        let required = matches!(mode, KvMode::F32 | KvMode::F16);
        let ok = diff <= 1e-3;
        failed += usize::from(required && !ok);
        println!(
            "{}",
            json!({"check": "engine_prefill_logits", "kv_cache": mode.to_string(),
                   "max_rel_diff": diff, "tolerance": 1e-3, "required": required,
                   "pass": !required || ok})
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
    // The server's paged pool (decision 141): the same batch on pages, on both devices,
    // against the per-sequence stores' tokens on the CPU.
    for (name, b) in [
        ("cpu", batched_paged(&host, steps)?),
        ("gpu", batched_paged(&dev, steps)?),
    ] {
        failed += usize::from(a != b);
        println!(
            "{}",
            json!({"check": "engine_paged_decode", "device": name, "sequences": BATCH.len(),
                   "steps": steps, "identical_to_cpu_stores": a == b, "paged": b,
                   "pass": a == b})
        );
    }
    Ok(failed)
}

/// [`batched`] on a paged pool of pages of 4 positions (so that sequences cross pages while
/// decoding), one `Engine::decode_paged` call per step.
fn batched_paged<B: Runtime>(e: &Engine<B>, steps: usize) -> Result<Vec<Vec<u32>>> {
    let mut cache = e
        .paged_cache(256, 4)?
        .ok_or_else(|| anyhow::anyhow!("the backend has no paged cache"))?;
    let mut seqs: Vec<PagedSequence> = Vec::new();
    let mut samplers = Vec::new();
    let mut out: Vec<Vec<u32>> = Vec::new();
    for p in BATCH {
        let ids = e.encode(p, true)?;
        let mut seq = PagedSequence::default();
        cache.reserve(&mut seq.table, ids.len())?;
        let logits = e.prefill_paged(&mut cache, &mut seq, &ids)?;
        let mut s = Sampler::new(SamplingParams::default());
        out.push(vec![s.sample(&logits, &ids)]);
        samplers.push(s);
        seqs.push(seq);
    }
    for _ in 1..steps {
        for s in &mut seqs {
            let n = s.tokens().len() + 1;
            cache.reserve(&mut s.table, n)?;
        }
        let last: Vec<u32> = out.iter().map(|o| *o.last().expect("a token")).collect();
        let mut refs: Vec<&mut PagedSequence> = seqs.iter_mut().collect();
        let logits = e.decode_paged(&mut cache, &mut refs, &last)?;
        for ((o, s), l) in out.iter_mut().zip(&mut samplers).zip(&logits) {
            let tok = s.sample(l, o);
            o.push(tok);
        }
    }
    Ok(out)
}

/// The logits after prefilling [`PROMPT`] with a `mode` cache.
fn prefill_logits<B: Runtime>(e: &Engine<B>, mode: KvMode) -> Result<Vec<f32>> {
    let prompt = e.encode(PROMPT, true)?;
    let mut seq = e.sequence_with(prompt.len() + 1, mode);
    Ok(e.prefill(&mut seq, &prompt)?)
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
