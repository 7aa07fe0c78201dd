//! The machine's float32 matrix-multiply ceiling, measured with the same library (candle's
//! CPU gemm) and thread count that `crunch eval` uses: `gemm [N] [REPEATS]` times an N×N×N
//! product and prints one JSON line with the best GFLOP/s.

use candle_core::{Device, Tensor};
use std::time::Instant;

fn main() -> candle_core::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(2048, |s| s.parse().expect("N"));
    let repeats: usize = args.next().map_or(5, |s| s.parse().expect("REPEATS"));
    let a = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
    a.matmul(&b)?; // warm-up
    let mut best = f64::INFINITY;
    for _ in 0..repeats {
        let t = Instant::now();
        let c = a.matmul(&b)?;
        best = best.min(t.elapsed().as_secs_f64());
        drop(c);
    }
    let flops = 2.0 * (n as f64).powi(3);
    println!(
        "{}",
        serde_json::json!({
            "bench": "gemm_f32",
            "n": n,
            "threads": candle_core::utils::get_num_threads(),
            "best_seconds": best,
            "gflops": flops / best / 1e9,
        })
    );
    Ok(())
}
