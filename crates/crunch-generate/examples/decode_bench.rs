//! Prefill and decode speed of one model, as `llama-bench -p 512 -n 128` measures them, without
//! the command line around it (a quick loop for kernel work and for `perf record`):
//! `cargo run --release -p crunch-generate --example decode_bench -- MODEL [THREADS] [REPS]`.
//! One JSON line per test and repetition: pp512 (512 tokens in one prefill) and tg128 (128
//! greedy decode steps after a one-token prompt).

use crunch_generate::Engine;
use std::time::Instant;

fn argmax(l: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in l.iter().enumerate() {
        if v > l[best] {
            best = i;
        }
    }
    best as u32
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = args
        .get(1)
        .expect("usage: decode_bench MODEL [THREADS] [REPS]");
    let threads: usize = args.get(2).map_or(0, |s| s.parse().expect("THREADS"));
    let reps: usize = args.get(3).map_or(3, |s| s.parse().expect("REPS"));
    let only = std::env::var("ONLY").unwrap_or_default();
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("thread pool");
    let engine = Engine::load(model.as_ref(), Some(640), |_| {}).expect("model");
    let first = engine.encode("The", false).expect("tokens")[0];
    for _ in 0..reps {
        if only.is_empty() || only == "pp" {
            let ids = vec![first; 512];
            let mut seq = engine.sequence(513);
            let t = Instant::now();
            engine.prefill(&mut seq, &ids).expect("prefill");
            let s = t.elapsed().as_secs_f64();
            println!(
                "{{\"test\":\"pp512\",\"threads\":{},\"seconds\":{s:.4},\"tokens_per_second\":{:.1}}}",
                rayon::current_num_threads(),
                512.0 / s
            );
        }
        if only.is_empty() || only == "tg" {
            let mut seq = engine.sequence(130);
            let l = engine.prefill(&mut seq, &[first]).expect("prefill");
            let mut tok = argmax(&l);
            let t = Instant::now();
            for _ in 0..128 {
                let l = engine
                    .decode(&mut [&mut seq], &[tok])
                    .expect("decode")
                    .remove(0);
                tok = argmax(&l);
            }
            let s = t.elapsed().as_secs_f64();
            println!(
                "{{\"test\":\"tg128\",\"threads\":{},\"seconds\":{s:.4},\"tokens_per_second\":{:.1}}}",
                rayon::current_num_threads(),
                128.0 / s
            );
        }
    }
}
