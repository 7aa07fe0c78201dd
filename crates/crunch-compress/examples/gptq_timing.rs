//! Times Hessian accumulation, RTN and GPTQ on SmolLM-135M-sized layers (random data).
//!
//! cargo run --release -p crunch-compress --example gptq_timing

use crunch_compress::{gptq, rtn, GptqOptions, Hessian};
use crunch_repr::QuantSpec;
use std::time::Instant;

/// xorshift-based uniform noise in [−1, 1): timing needs no better randomness.
fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn main() {
    let tokens = 4096;
    for (rows, cols) in [(1536, 576), (576, 1536)] {
        let w = noise(1, rows * cols);
        // Correlated inputs: each column adds a shared signal to its own noise.
        let own = noise(2, tokens * cols);
        let shared = noise(3, tokens);
        let x: Vec<f32> = own
            .iter()
            .enumerate()
            .map(|(k, v)| v + shared[k / cols])
            .collect();
        let t = Instant::now();
        let mut h = Hessian::new(cols);
        for batch in x.chunks(1024 * cols) {
            h.add_batch(batch);
        }
        let t_hessian = t.elapsed();
        for (spec, act_order) in [
            (QuantSpec::new(4, Some(64), false), true),
            (QuantSpec::new(4, None, true), false),
        ] {
            let opts = GptqOptions {
                act_order,
                ..GptqOptions::default()
            };
            let t = Instant::now();
            let q = gptq(&w, rows, cols, &h, spec, &opts).unwrap();
            let t_gptq = t.elapsed();
            let t = Instant::now();
            rtn(&w, rows, cols, spec, false).unwrap();
            let t_rtn = t.elapsed();
            println!(
                "{rows}×{cols} bits {} group {:?} act-order {act_order}: gptq {:.3} s, rtn {:.3} s, \
                 Hessian of {tokens} tokens {:.3} s, {:.2} bits/weight",
                spec.bits,
                spec.group_size,
                t_gptq.as_secs_f64(),
                t_rtn.as_secs_f64(),
                t_hessian.as_secs_f64(),
                q.bits_per_weight()
            );
        }
    }
}
