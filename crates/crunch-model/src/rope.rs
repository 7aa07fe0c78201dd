//! Rotary position embedding tables, computed as transformers computes them.

use crate::config::{ModelConfig, RopeScaling};

/// Inverse frequencies `θ_i = base^(-2i/d)`, rescaled as the config asks, one per pair.
/// `freq_factors` (GGUF's `rope_freqs.weight`) divide them when present.
pub fn inverse_frequencies(cfg: &ModelConfig, freq_factors: Option<&[f32]>) -> Vec<f64> {
    let d = cfg.head_dim;
    let mut inv: Vec<f64> = (0..d / 2)
        .map(|i| 1.0 / cfg.rope_theta.powf((2 * i) as f64 / d as f64))
        .collect();
    match cfg.rope_scaling {
        None => {}
        Some(RopeScaling::Linear { factor }) => inv.iter_mut().for_each(|f| *f /= factor),
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position,
        }) => {
            // Long wavelengths are slowed by `factor`, short ones kept, and the band between
            // interpolated (Llama 3.1's recipe).
            let low_wavelen = original_max_position / low_freq_factor;
            let high_wavelen = original_max_position / high_freq_factor;
            for f in inv.iter_mut() {
                let wavelen = 2.0 * std::f64::consts::PI / *f;
                if wavelen > low_wavelen {
                    *f /= factor;
                } else if wavelen >= high_wavelen {
                    let smooth = (original_max_position / wavelen - low_freq_factor)
                        / (high_freq_factor - low_freq_factor);
                    *f = (1.0 - smooth) * *f / factor + smooth * *f;
                }
            }
        }
    }
    if let Some(factors) = freq_factors {
        for (f, s) in inv.iter_mut().zip(factors) {
            *f /= *s as f64;
        }
    }
    inv
}

/// `cos` and `sin` tables `[positions, head_dim / 2]`, row-major, for positions `0..n`.
/// Like transformers, the angle is formed in f32 from f32 frequencies.
pub fn tables(inv_freq: &[f64], n: usize) -> (Vec<f32>, Vec<f32>) {
    let half = inv_freq.len();
    let mut cos = Vec::with_capacity(n * half);
    let mut sin = Vec::with_capacity(n * half);
    for p in 0..n {
        for &f in inv_freq {
            let angle = p as f32 * f as f32;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}
