//! Throughput of the packed products on SmolLM2-135M's layer shapes, one JSON line per case:
//! `cargo run --release -p crunch-kernels --example kernel_bench [-- ISA]`
//! (`KERNEL_BENCH_ROWS=1`, `KERNEL_BENCH_TYPES=Q4_0,Q8_0` and `KERNEL_BENCH_HEAD=0` narrow it).
//!
//! Besides wall-clock throughput (`gmacs`) each line gives `cpu_gmacs`: the same work over
//! the CPU time of the calling thread (`/proc/thread-self/schedstat`; so run it with
//! `RAYON_NUM_THREADS=1`), which on a shared, busy machine still compares two kernels fairly
//! where the wall clock does not.

use crunch_formats::DType;
use crunch_kernels::{ActBits, Bytes, Isa, Options, PackedMatrix};
use std::time::Instant;

fn main() {
    let isa = match std::env::args().nth(1).as_deref() {
        Some("scalar") => Isa::Scalar,
        Some("avx2") => Isa::Avx2,
        _ => Isa::detect(),
    };
    // SmolLM2-135M: every linear layer of one block, and the output head.
    let shapes = [
        (576, 576),
        (192, 576),
        (1536, 576),
        (576, 1536),
        (49152, 576),
    ];
    for dtype in [
        DType::Q4_0,
        DType::Q8_0,
        DType::Q5_0,
        DType::Q4K,
        DType::Q6K,
    ] {
        // `KERNEL_BENCH_TYPES=Q4_0,Q8_0` measures only those encodings.
        if let Ok(types) = std::env::var("KERNEL_BENCH_TYPES") {
            if !types.split(',').any(|t| t == format!("{dtype:?}")) {
                continue;
            }
        }
        for bits in [ActBits::I16, ActBits::I8] {
            // `KERNEL_BENCH_ROWS=1` (or 512) measures only that many activation rows.
            let only: Option<usize> = std::env::var("KERNEL_BENCH_ROWS")
                .ok()
                .and_then(|v| v.parse().ok());
            for n in [1usize, 512] {
                if only.is_some_and(|o| o != n) {
                    continue;
                }
                let mut macs = 0f64;
                let mut secs = 0f64;
                let mut cpu = 0f64;
                let mut best = 0f64;
                for &(rows, cols) in &shapes {
                    let (per, bytes) = dtype.block();
                    if cols % per != 0 {
                        continue;
                    }
                    // The head is memory-bound at one row; `KERNEL_BENCH_HEAD=0` leaves it
                    // out (the layers' matrices stay in cache: the kernels' own speed).
                    let head = std::env::var("KERNEL_BENCH_HEAD").map_or(true, |v| v != "0");
                    if rows == 49152 && (n > 1 || !head) {
                        continue;
                    }
                    let data: Vec<u8> = (0..rows * cols / per * bytes)
                        .map(|i| ((i * 2654435761usize) >> 7) as u8 & 0x3f)
                        .collect();
                    let w = PackedMatrix::new(dtype, rows, cols, Bytes::owned(data)).unwrap();
                    let x: Vec<f32> = (0..n * cols)
                        .map(|i| ((i % 17) as f32 - 8.0) / 8.0)
                        .collect();
                    let mut y = vec![0f32; n * rows];
                    let opts = Options { isa, bits };
                    w.matmul_with(&x, n, &mut y, opts);
                    let reps = ((2e8 / (rows * cols * n) as f64) as usize).clamp(3, 2000);
                    let t = Instant::now();
                    let c = cpu_seconds();
                    // The fastest of 10 slices of the repetitions: on a busy machine the
                    // slices that ran undisturbed (`best_gmacs`).
                    let slice = reps.div_ceil(10);
                    let mut fastest = f64::INFINITY;
                    for s in 0..10 {
                        let t = Instant::now();
                        for _ in s * slice..((s + 1) * slice).min(reps) {
                            w.matmul_with(&x, n, &mut y, opts);
                        }
                        let count = ((s + 1) * slice).min(reps).saturating_sub(s * slice);
                        if count > 0 {
                            fastest = fastest.min(t.elapsed().as_secs_f64() / count as f64);
                        }
                    }
                    secs += t.elapsed().as_secs_f64() / reps as f64;
                    cpu += (cpu_seconds() - c) / reps as f64;
                    best += fastest;
                    macs += (rows * cols * n) as f64;
                }
                if macs == 0.0 {
                    continue;
                }
                println!(
                    "{{\"dtype\":\"{dtype:?}\",\"bits\":\"{bits:?}\",\"isa\":\"{}\",\"n\":{n},\"gmacs\":{:.1},\"ms\":{:.3},\"cpu_gmacs\":{:.1},\"best_gmacs\":{:.1}}}",
                    isa.name(),
                    macs / secs / 1e9,
                    secs * 1e3,
                    macs / cpu / 1e9,
                    macs / best / 1e9
                );
            }
        }
    }
}

/// CPU time of the calling thread so far, in seconds (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns * 1e-9)
}
