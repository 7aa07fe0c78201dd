//! Decoding throughput against the number of sequences decoded together (what the server's
//! continuous batching gains): `cargo run --release -p crunch-generate --example batch_bench
//! -- MODEL [BATCH...]`. One JSON line per batch size.

use crunch_generate::{Engine, Sampler, SamplingParams};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = args.get(1).expect("usage: batch_bench MODEL [BATCH...]");
    let batches: Vec<usize> = if args.len() > 2 {
        args[2..].iter().map(|s| s.parse().unwrap()).collect()
    } else {
        vec![1, 4, 16, 32]
    };
    let engine = Engine::load(model.as_ref(), Some(512), |_| {}).unwrap();
    let steps = 32;
    for &b in &batches {
        let prompt = engine
            .encode("Once upon a time, in a small village by the sea,", true)
            .unwrap();
        let mut seqs: Vec<_> = (0..b)
            .map(|_| engine.sequence(prompt.len() + steps + 1))
            .collect();
        let mut samplers: Vec<_> = (0..b)
            .map(|i| {
                Sampler::new(SamplingParams {
                    temperature: 0.8,
                    seed: i as u64,
                    ..Default::default()
                })
            })
            .collect();
        let mut last = Vec::new();
        for (s, smp) in seqs.iter_mut().zip(&mut samplers) {
            let l = engine.prefill(s, &prompt).unwrap();
            last.push(smp.sample(&l, &prompt));
        }
        let t = Instant::now();
        for _ in 0..steps {
            let mut refs: Vec<_> = seqs.iter_mut().collect();
            let logits = engine.decode(&mut refs, &last).unwrap();
            for ((l, smp), tok) in logits.iter().zip(&mut samplers).zip(&mut last) {
                *tok = smp.sample(l, &[]);
            }
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "{{\"batch\":{b},\"steps\":{steps},\"seconds\":{s:.3},\"tokens_per_second\":{:.1}}}",
            (b * steps) as f64 / s
        );
    }
}
