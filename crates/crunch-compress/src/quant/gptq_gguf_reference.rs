//! Pins GPTQ onto ggml's grids ([`gptq_gguf`]) against a direct, slow reading: Algorithm 1 of
//! the GPTQ paper with the inverse Hessian of the not-yet-quantized columns kept explicitly in
//! f64 (no Cholesky factor, no lazy batching), each (super-)block's grid fitted by the type's
//! encoder on the row's current values when column q reaches the block's first column, with
//! the Hessian diagonal as importance; then every column rounded to the nearest value the grid
//! holds there, and its error spread by the OBS update
//!   w_j −= (w_q − q̂)/[H⁻¹]_qq · [H⁻¹]_qj, followed by the elimination of column q from H⁻¹.
//!
//! Both are floating point (f32 Cholesky form against f64), so a case whose reference comes
//! within rounding noise of a discontinuity is replaced by the next seed (at least 3 accepted
//! seeds are required, so a systematic difference fails): a value within [`CODE_MARGIN`]
//! level spacings of the midpoint between two levels, or a block whose fitted grid changes when
//! its values are perturbed by a relative [`FIT_PERTURBATION`] (a near-tie of the encoder's
//! search or of the f16 rounding of its scales). Accepted cases must give identical bytes.
//!
//! Q8_0, Q3_K and Q6_K are not compared here: with their nearly symmetric level sets
//! (−128..127, −4..3 with scales −32..31, −32..31) a positive and a negative scale fit a block almost equally well, and the encoder's
//! choice between them flips under perturbations far below f32 rounding in most blocks, so
//! nearly every case is a near-tie. The fast path's decoding of every type is checked in
//! `gptq_gguf.rs` instead.

use super::gptq_gguf::gptq_gguf;
use super::gptq_reference::{ordered_inverse, without_dead_columns};
use crate::testutil::{eliminate, on_seeds, reference_problem};
use crate::{GptqOptions, Hessian};
use crunch_formats::gguf::quants::{Codec, Grid};
use crunch_formats::DType;

const CODE_MARGIN: f64 = 1e-4;
const FIT_PERTURBATION: f32 = 2e-6;

/// Codes a block of `dtype` can hold at one position.
fn levels(dtype: DType) -> usize {
    match dtype {
        DType::Q2K => 4,
        DType::Q3K => 8,
        DType::Q4_0 | DType::Q4_1 | DType::Q4K | DType::IQ4NL | DType::IQ4XS => 16,
        DType::Q5_0 | DType::Q5_1 | DType::Q5K => 32,
        DType::Q6K => 64,
        DType::Q8_0 => 256,
        _ => unreachable!(),
    }
}

/// The fit of `x`, or `None` when a perturbation of the values changes it (a near-tie).
fn stable_fit(codec: &Codec, x: &[f32], imp: &[f32]) -> Option<Grid> {
    let grid = codec.fit(x, Some(imp));
    let perturbed = [
        x.iter()
            .map(|v| v * (1.0 + FIT_PERTURBATION))
            .collect::<Vec<_>>(),
        x.iter().map(|v| v * (1.0 - FIT_PERTURBATION)).collect(),
        (x.iter().enumerate())
            .map(|(i, v)| v * (1.0 + if i % 2 == 0 { 1.0 } else { -1.0 } * FIT_PERTURBATION))
            .collect(),
    ];
    for p in &perturbed {
        let g2 = codec.fit(p, Some(imp));
        if g2 != grid {
            return None;
        }
    }
    Some(grid)
}

/// Column-by-column GPTQ onto `dtype`: the bytes, or `None` for a case with a near-tie.
fn direct(weight: &[f32], h: &Hessian, rows: usize, dtype: DType, damp: f32) -> Option<Vec<u8>> {
    let n = h.n;
    let codec = Codec::new(dtype).unwrap();
    let (nb, top) = (codec.block_values(), levels(dtype) - 1);
    let (hd, zeroed) = without_dead_columns(weight, h);
    let imp: Vec<f32> = (0..n).map(|i| h.get(i, i)).collect();
    // Columns in their own order (no act-order): GPTQ's set-up with the identity order.
    let (_, mut hinv) = ordered_inverse(&hd, n, false, damp);
    let mut w: Vec<f64> = zeroed.iter().map(|&v| v as f64).collect();
    let mut codes = vec![0u8; rows * n];
    let mut grids = vec![Grid::default(); rows * n / nb];
    for q in 0..n {
        let (b, k) = (q / nb, q % nb);
        for r in 0..rows {
            let g = r * n / nb + b;
            if k == 0 {
                let values: Vec<f32> = w[r * n + q..r * n + q + nb]
                    .iter()
                    .map(|&v| v as f32)
                    .collect();
                grids[g] = stable_fit(&codec, &values, &imp[q..q + nb])?;
            }
            let x = w[r * n + q];
            // The nearest level, and how far x is from the midpoint to each neighbour.
            let value = |c: usize| codec.dequantize(&grids[g], k, c as u8) as f64;
            let c = (0..=top)
                .min_by(|&a, &b| (value(a) - x).abs().total_cmp(&(value(b) - x).abs()))
                .unwrap();
            for other in [c.wrapping_sub(1), c + 1].into_iter().filter(|&o| o <= top) {
                let step = (value(other) - value(c)).abs();
                let mid = (value(other) + value(c)) / 2.0;
                if step > 0.0 && (x - mid).abs() < CODE_MARGIN * step {
                    return None;
                }
            }
            codes[r * n + q] = c as u8;
            let e = (x - value(c)) / hinv[q * n + q];
            for j in q + 1..n {
                w[r * n + j] -= e * hinv[q * n + j];
            }
        }
        eliminate(&mut hinv, n, q);
    }
    let bb = codec.block_bytes();
    let mut out = vec![0u8; rows * n / nb * bb];
    for (g, o) in out.chunks_exact_mut(bb).enumerate() {
        codec.pack(&grids[g], &codes[g * nb..(g + 1) * nb], o);
    }
    Some(out)
}

fn check(
    name: &str,
    dtype: DType,
    rows: usize,
    cols: usize,
    block_size: usize,
    dead: Option<usize>,
) {
    let opts = GptqOptions {
        block_size,
        ..GptqOptions::in_order(0.01)
    };
    on_seeds(name, 3, |seed| {
        let (w, x) = reference_problem(seed, rows, cols, dead);
        let mut h = Hessian::new(cols);
        h.add_batch(&x);
        let Some(slow) = direct(&w, &h, rows, dtype, opts.damp) else {
            return false;
        };
        let fast = gptq_gguf(&w, rows, cols, &h, dtype, None, &opts).unwrap();
        let differing = fast.bytes.iter().zip(&slow).filter(|(a, b)| a != b).count();
        assert_eq!(
            differing, 0,
            "{name}, seed {seed}: {differing} bytes differ"
        );
        true
    });
}

#[test]
fn matches_direct_on_one_level_types() {
    // Blocks of 24 columns: 32-wide blocks straddle the lazy-update blocks, so the pending
    // updates must be included when a block's grid is fitted.
    check("Q4_0 b24", DType::Q4_0, 4, 96, 24, None);
    check("Q5_1 b40 dead", DType::Q5_1, 4, 96, 40, Some(37));
    check("Q5_0 b128", DType::Q5_0, 3, 64, 128, None);
    check("IQ4_NL b16", DType::IQ4NL, 3, 64, 16, None);
}

#[test]
fn matches_direct_on_super_block_types() {
    // Two super-blocks per row, lazy blocks of 96: the second super-block starts inside a
    // lazy block and runs past it.
    check("Q4_K b96", DType::Q4K, 2, 512, 96, None);
    check("Q2_K b128 dead", DType::Q2K, 2, 512, 128, Some(300));
    check("IQ4_XS b200", DType::IQ4XS, 2, 512, 200, None);
}
