//! The host side of a budget search's layer swap at Llama-3-8B's MLP shape (14336 × 4096), at
//! each of crunch's ten default levels: a variant made dense as `CompressedLayer::dense` does
//! (one thread, a fresh buffer) against `crunch_search::swap::dense_into` (the rayon pool, a
//! fresh buffer, then a kept one). Random codes: the time does not depend on them.
//!
//! `cargo run -p crunch-search --example swap_timing [ROWS COLS REPS]` (the dev profile is
//! optimized in this workspace)
//! Prints one JSON line per level (milliseconds, the best of REPS) and checks that the three
//! give the same bits.

use crunch_repr::{QuantSpec, QuantizedWeight};
use crunch_search::swap::dequantize_into;
use half::f16;
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("ROWS COLS REPS are numbers"))
        .collect();
    let (rows, cols, reps) = match args[..] {
        [r, c, n] => (r, c, n),
        [] => (14336, 4096, 3),
        _ => panic!("usage: swap_timing [ROWS COLS REPS]"),
    };
    let levels = [
        (2, 128),
        (3, 128),
        (3, 64),
        (3, 32),
        (4, 128),
        (4, 64),
        (4, 32),
        (5, 128),
        (6, 128),
        (8, 128),
    ];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (bits, group) in levels {
        let spec = QuantSpec::new(bits, Some(group), false);
        let groups = rows * spec.n_groups(cols);
        let maxq = spec.maxq() as u64;
        let q = QuantizedWeight {
            spec,
            rows,
            cols,
            codes: (0..rows * cols)
                .map(|_| (next() % (maxq + 1)) as u8)
                .collect(),
            scales: (0..groups)
                .map(|_| f16::from_f32(1e-3 * (1 + next() % 100) as f32))
                .collect(),
            zeros: (0..groups).map(|_| (next() % (maxq + 1)) as u8).collect(),
            g_idx: None,
        };
        let best = |f: &mut dyn FnMut()| -> f64 {
            (0..reps)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .fold(f64::INFINITY, f64::min)
        };
        let mut want = Vec::new();
        let serial = best(&mut || want = q.dequantize());
        let mut fresh = Vec::new();
        let parallel_fresh = best(&mut || {
            fresh = Vec::new();
            dequantize_into(&q, &mut fresh);
        });
        let mut kept = vec![0.0; rows * cols];
        let parallel_kept = best(&mut || dequantize_into(&q, &mut kept));
        let bits_of = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits_of(&want), bits_of(&fresh));
        assert_eq!(bits_of(&want), bits_of(&kept));
        println!(
            "{}",
            serde_json::json!({
                "rows": rows, "cols": cols, "bits": bits, "group": group,
                "threads": rayon::current_num_threads(),
                "dense_serial_ms": serial,
                "dense_into_fresh_ms": parallel_fresh,
                "dense_into_kept_ms": parallel_kept,
                "speedup_kept": serial / parallel_kept,
            })
        );
    }
}
