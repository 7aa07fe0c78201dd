//! Rotary position embedding tables, computed as transformers computes them.

use crate::config::{ModelConfig, RopeScaling};

/// Inverse frequencies `θ_i = base^(-2i/d)`, rescaled as the config asks, one per pair, for
/// the global (or only) rotary set of sequences of `positions` tokens (LongRoPE picks its
/// factors by the length). `freq_factors` (GGUF's `rope_freqs.weight`) divide them when
/// present.
pub fn inverse_frequencies(cfg: &ModelConfig, freq_factors: Option<&[f32]>) -> Vec<f64> {
    inverse_frequencies_for(cfg, freq_factors, 0)
}

fn base_frequencies(theta: f64, d: usize) -> Vec<f64> {
    (0..d / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f64 / d as f64))
        .collect()
}

/// [`inverse_frequencies`] for sequences of `positions` tokens.
pub fn inverse_frequencies_for(
    cfg: &ModelConfig,
    freq_factors: Option<&[f32]>,
    positions: usize,
) -> Vec<f64> {
    let d = cfg.head_dim;
    let mut inv = base_frequencies(cfg.rope_theta, d);
    match &cfg.rope_scaling {
        None => {}
        Some(RopeScaling::Linear { factor }) => inv.iter_mut().for_each(|f| *f /= factor),
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor: low,
            high_freq_factor: high,
            original_max_position: orig,
        }) => {
            // Long wavelengths are slowed by `factor`, short ones kept, and the band between
            // interpolated (Llama 3.1's recipe).
            let (factor, low, high, orig) = (*factor, *low, *high, *orig);
            let low_wavelen = orig / low;
            let high_wavelen = orig / high;
            for f in inv.iter_mut() {
                let wavelen = 2.0 * std::f64::consts::PI / *f;
                if wavelen > low_wavelen {
                    *f /= factor;
                } else if wavelen >= high_wavelen {
                    let smooth = (orig / wavelen - low) / (high - low);
                    *f = (1.0 - smooth) * *f / factor + smooth * *f;
                }
            }
        }
        Some(RopeScaling::LongRope {
            short_factor,
            long_factor,
            original_max_position,
            ..
        }) => {
            // transformers switches to the long factors once the sequence is longer than the
            // pretraining context.
            let ext = if positions > *original_max_position {
                long_factor
            } else {
                short_factor
            };
            for (f, e) in inv.iter_mut().zip(ext) {
                *f /= e;
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

/// The rotary sets of a model for sequences of `positions` tokens: set 0 for global layers
/// (every layer of most models), set 1 for Gemma's sliding-window layers (their own base, no
/// scaling). Each is (inverse frequencies, factor on cos and sin).
pub fn rope_sets(
    cfg: &ModelConfig,
    freq_factors: Option<&[f32]>,
    positions: usize,
) -> Vec<(Vec<f64>, f32)> {
    let attention_factor = match &cfg.rope_scaling {
        Some(RopeScaling::LongRope {
            attention_factor, ..
        }) => *attention_factor as f32,
        _ => 1.0,
    };
    let mut sets = vec![(
        inverse_frequencies_for(cfg, freq_factors, positions),
        attention_factor,
    )];
    if let Some(theta) = cfg.rope_local_theta {
        sets.push((base_frequencies(theta, cfg.head_dim), 1.0));
    }
    sets
}

/// `cos` and `sin` tables `[positions, head_dim / 2]`, row-major, for positions `0..n`.
/// Like transformers, the angle is formed in f32 from f32 frequencies.
pub fn tables(inv_freq: &[f64], n: usize) -> (Vec<f32>, Vec<f32>) {
    scaled_tables(inv_freq, n, 1.0)
}

/// [`tables`] with both multiplied by `factor` (LongRoPE's attention factor), in f32 as
/// transformers does.
pub fn scaled_tables(inv_freq: &[f64], n: usize, factor: f32) -> (Vec<f32>, Vec<f32>) {
    let half = inv_freq.len();
    let mut cos = Vec::with_capacity(n * half);
    let mut sin = Vec::with_capacity(n * half);
    for p in 0..n {
        for &f in inv_freq {
            let angle = p as f32 * f as f32;
            if factor == 1.0 {
                cos.push(angle.cos());
                sin.push(angle.sin());
            } else {
                cos.push(angle.cos() * factor);
                sin.push(angle.sin() * factor);
            }
        }
    }
    (cos, sin)
}
