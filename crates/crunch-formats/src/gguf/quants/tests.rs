//! Codec properties: layouts, bit-exact agreement of the two-step API with the decoders,
//! error bounds, determinism, and the search against a slow exhaustive one.

use super::*;
use proptest::prelude::*;

/// Test data from crunch's one seeded stream.
use crunch_rng::SplitMix64 as Rng;

/// Weight-like test values.
trait Weights {
    /// Uniform in [0, 1) (24 random bits).
    fn uniform01(&mut self) -> f32;
    /// Roughly normal (sum of uniforms), with occasional outliers like real weights.
    fn weight(&mut self) -> f32;
    fn weights(&mut self, n: usize, scale: f32) -> Vec<f32>;
}

impl Weights for Rng {
    fn uniform01(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn weight(&mut self) -> f32 {
        let g: f32 = (0..4).map(|_| self.uniform01()).sum::<f32>() - 2.0;
        if self.next_u64().is_multiple_of(50) {
            g * 6.0
        } else {
            g
        }
    }
    fn weights(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.weight() * scale).collect()
    }
}

fn decode(dtype: DType, bytes: &[u8]) -> Vec<f32> {
    let mut out = vec![0f32; bytes.len() / dtype.block().1 * dtype.block().0];
    dequantize(dtype, bytes, &mut out).unwrap();
    out
}

fn weighted_error(x: &[f32], y: &[f32], w: Option<&[f32]>) -> f64 {
    x.iter()
        .zip(y)
        .enumerate()
        .map(|(i, (a, b))| w.map_or(1.0, |w| w[i]) as f64 * ((a - b) as f64).powi(2))
        .sum()
}

#[test]
fn block_structs_have_ggml_sizes() {
    fn check<B: GgmlBlock>() {
        assert_eq!(
            std::mem::size_of::<B>(),
            B::DTYPE.block().1,
            "{:?}",
            B::DTYPE
        );
        assert_eq!(B::VALUES, B::DTYPE.block().0);
    }
    check::<BlockQ4_0>();
    check::<BlockQ4_1>();
    check::<BlockQ5_0>();
    check::<BlockQ5_1>();
    check::<BlockQ8_0>();
    check::<BlockQ2K>();
    check::<BlockQ3K>();
    check::<BlockQ4K>();
    check::<BlockQ5K>();
    check::<BlockQ6K>();
    check::<BlockQ8K>();
    check::<BlockIQ1S>();
    check::<BlockIQ1M>();
    check::<BlockIQ2XXS>();
    check::<BlockIQ2XS>();
    check::<BlockIQ2S>();
    check::<BlockIQ3XXS>();
    check::<BlockIQ3S>();
    check::<BlockIQ4NL>();
    check::<BlockIQ4XS>();
}

#[test]
fn blocks_view_aligned_bytes_without_copying() {
    let bytes = vec![0u8; 144 * 3];
    // A Vec<u8> is at least 1-aligned; the view needs 2 for the f16 fields, so try both
    // offsets and accept whichever is aligned.
    let ok = blocks::<BlockQ4K>(&bytes).or_else(|| blocks::<BlockQ4K>(&bytes[1..=144 * 2]));
    assert!(ok.is_some());
    assert!(blocks::<BlockQ4K>(&bytes[..100]).is_none());
}

/// Encodes `x` (one row) and checks that the two-step API agrees with the decoder bit for
/// bit; returns the decoded row.
fn encode_and_check(codec: &Codec, x: &[f32], w: Option<&[f32]>) -> Vec<f32> {
    let n = codec.block_values();
    let mut bytes = vec![0u8; x.len() / n * codec.block_bytes()];
    let mut expect = Vec::with_capacity(x.len());
    for (b, (xb, out)) in x
        .chunks(n)
        .zip(bytes.chunks_mut(codec.block_bytes()))
        .enumerate()
    {
        let wb = w.map(|w| &w[b * n..(b + 1) * n]);
        let grid = codec.fit(xb, wb);
        let codes = codec.quantize_block(&grid, xb);
        expect.extend(
            codes
                .iter()
                .enumerate()
                .map(|(i, &c)| codec.dequantize(&grid, i, c)),
        );
        codec.pack(&grid, &codes, out);
    }
    let got = decode(codec.dtype(), &bytes);
    for (i, (g, e)) in got.iter().zip(&expect).enumerate() {
        assert_eq!(
            g.to_bits(),
            e.to_bits(),
            "{:?} value {i}: decoded {g} vs Codec::dequantize {e}",
            codec.dtype()
        );
    }
    assert_eq!(
        codec.encode_rows(x, x.len(), w).unwrap(),
        bytes,
        "encode_rows = block by block"
    );
    got
}

/// Relative RMS error bound per type on the test distribution (roughly normal, 2% outliers
/// at 6σ), from the step size: a b-bit grid over ±3σ has steps of 6σ/2ᵇ and RMS rounding
/// error step/√12; the bounds allow 1.5× that (outlier blocks and, for K types, quantized
/// sub-scales cost more).
fn rel_rms_bound(dtype: DType) -> f64 {
    let bits: f64 = match dtype {
        DType::Q2K => 2.0,
        DType::Q3K => 3.0,
        DType::Q4_0 | DType::Q4_1 | DType::Q4K | DType::IQ4NL | DType::IQ4XS => 4.0,
        DType::Q5_0 | DType::Q5_1 | DType::Q5K => 5.0,
        DType::Q6K => 6.0,
        _ => 8.0,
    };
    1.5 * 6.0 / 2f64.powf(bits) / 12f64.sqrt()
}

#[test]
fn every_codec_round_trips_within_its_bound() {
    let mut rng = Rng(7);
    for dtype in ENCODABLE {
        let codec = Codec::new(dtype).unwrap();
        let x = rng.weights(256 * 16, 0.02);
        let y = encode_and_check(&codec, &x, None);
        let rel =
            (weighted_error(&x, &y, None) / weighted_error(&x, &vec![0.0; x.len()], None)).sqrt();
        assert!(
            rel < rel_rms_bound(dtype),
            "{dtype:?}: relative RMS error {rel:.4} over bound {:.4}",
            rel_rms_bound(dtype)
        );
    }
}

#[test]
fn zero_and_constant_blocks_are_exact() {
    for dtype in ENCODABLE {
        let codec = Codec::new(dtype).unwrap();
        let n = codec.block_values();
        let y = encode_and_check(&codec, &vec![0.0; n], None);
        assert!(y.iter().all(|&v| v == 0.0), "{dtype:?} zeros: {y:?}");
        // A block of one value repeated, at a level every type can hold exactly once scaled.
        let y = encode_and_check(&codec, &vec![-0.5; n], None);
        let err = y.iter().map(|v| (v + 0.5).abs()).fold(0f32, f32::max);
        assert!(err < 1e-3, "{dtype:?} constant block: max error {err}");
    }
}

#[test]
fn encoding_is_deterministic() {
    let mut rng = Rng(11);
    let x = rng.weights(256 * 64, 0.05);
    let w: Vec<f32> = (0..256).map(|_| rng.uniform01() + 0.01).collect();
    for dtype in ENCODABLE {
        let codec = Codec::new(dtype).unwrap();
        let a = codec.encode_rows(&x, 256, Some(&w)).unwrap();
        let b = codec.encode_rows(&x, 256, Some(&w)).unwrap();
        assert_eq!(a, b, "{dtype:?}");
    }
}

#[test]
fn importance_lowers_the_weighted_error() {
    // Importance concentrated on a few columns (as activations are): fitting with it must
    // cost less weighted error than fitting without it, for every type.
    let mut rng = Rng(3);
    let cols = 256;
    let x = rng.weights(cols * 32, 0.03);
    let w: Vec<f32> = (0..cols)
        .map(|c| {
            if c % 7 == 0 {
                50.0
            } else {
                0.2 + rng.uniform01()
            }
        })
        .collect();
    for dtype in ENCODABLE {
        let codec = Codec::new(dtype).unwrap();
        let with = decode(dtype, &codec.encode_rows(&x, cols, Some(&w)).unwrap());
        let without = decode(dtype, &codec.encode_rows(&x, cols, None).unwrap());
        let wrow: Vec<f32> = w.iter().cycle().take(x.len()).copied().collect();
        let (e1, e0) = (
            weighted_error(&x, &with, Some(&wrow)),
            weighted_error(&x, &without, Some(&wrow)),
        );
        assert!(
            e1 < e0,
            "{dtype:?}: weighted error {e1:.3e} with importance vs {e0:.3e} without"
        );
    }
}

/// The slow reference for the one-level symmetric types: every f16 scale on a fine grid
/// (4000 steps from 0 to a quarter of the largest magnitude), each with every value rounded to
/// its nearest level (the best codes for that scale), keeping the least error. The fit must
/// come within 1% of it in total over many blocks. For Q8_0 the reference only looks where
/// the search does (the largest value at least 124 levels out: see `SWEEP_SHORT_MAX`), since
/// with 256 levels a far smaller scale can round 32 values luckily but hardly matters.
#[test]
fn one_level_fit_is_near_the_exhaustive_optimum() {
    let mut rng = Rng(5);
    for (dtype, min_levels) in [
        (DType::Q4_0, 0.0),
        (DType::Q5_0, 0.0),
        (DType::IQ4NL, 0.0),
        (DType::Q8_0, 124.0),
    ] {
        let codec = Codec::new(dtype).unwrap();
        let (mut ours, mut best_total) = (0f64, 0f64);
        for _ in 0..40 {
            let x = rng.weights(32, 0.02);
            let w: Vec<f32> = (0..32).map(|_| 0.1 + rng.uniform01()).collect();
            let g = codec.fit(&x, Some(&w));
            let y: Vec<f32> = (0..32)
                .map(|i| codec.dequantize(&g, i, codec.quantize(&g, i, x[i])))
                .collect();
            ours += weighted_error(&x, &y, Some(&w));
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            let mut best = f64::INFINITY;
            for k in 1..4000 {
                for sign in [1.0f32, -1.0] {
                    let d = half::f16::from_f32(sign * amax * k as f32 / 4000.0 / 4.0);
                    if amax / d.to_f32().abs() < min_levels {
                        continue;
                    }
                    let grid = Grid {
                        d,
                        ..Grid::default()
                    };
                    let y: Vec<f32> = (0..32)
                        .map(|i| codec.dequantize(&grid, i, codec.quantize(&grid, i, x[i])))
                        .collect();
                    best = best.min(weighted_error(&x, &y, Some(&w)));
                }
            }
            best_total += best;
        }
        assert!(
            ours <= best_total * 1.01,
            "{dtype:?}: fit error {ours:.4e} vs exhaustive {best_total:.4e}"
        );
    }
}

/// The slow reference for the two-level types: plain round-to-nearest as ggml's reference
/// encoders do it without an imatrix (absmax sub-block scales, absmax super-block scale).
/// The search must beat it in total.
#[test]
fn two_level_fit_beats_absmax_rounding() {
    let mut rng = Rng(9);
    for dtype in [DType::Q3K, DType::Q6K, DType::IQ4XS, DType::Q4K, DType::Q2K] {
        let codec = Codec::new(dtype).unwrap();
        let sub = codec.sub_block();
        let (mut ours, mut naive) = (0f64, 0f64);
        for _ in 0..8 {
            let x = rng.weights(256, 0.02);
            let y = encode_and_check(&codec, &x, None);
            ours += weighted_error(&x, &y, None);
            naive += weighted_error(&x, &absmax_two_level(&codec, &x, sub), None);
        }
        assert!(ours < naive, "{dtype:?}: {ours:.4e} vs absmax {naive:.4e}");
    }
}

/// Absmax rounding through the public API: sub-block scales mapping each sub-block's range
/// onto the levels, quantized with an absmax super-block scale.
fn absmax_two_level(codec: &Codec, x: &[f32], sub: usize) -> Vec<f32> {
    let dtype = codec.dtype();
    let affine = matches!(dtype, DType::Q2K | DType::Q4K | DType::Q5K);
    let (top, scale_max, min_max) = match dtype {
        DType::Q2K => (3.0, 15.0, 15.0),
        DType::Q3K => (4.0, 31.0, 0.0),
        DType::Q4K => (15.0, 63.0, 63.0),
        DType::Q6K => (32.0, 127.0, 0.0),
        _ => (127.0, 31.0, 0.0), // IQ4_XS: levels up to ±127
    };
    let subs: Vec<(f32, f32)> = x
        .chunks(sub)
        .map(|c| {
            if affine {
                let lo = c.iter().fold(0f32, |a, &v| a.min(v));
                let hi = c.iter().fold(f32::MIN, |a, &v| a.max(v));
                ((hi - lo) / top, -lo)
            } else {
                let amax = c.iter().fold(0f32, |a, v| a.max(v.abs()));
                (amax / top, 0.0)
            }
        })
        .collect();
    let smax = subs.iter().fold(0f32, |a, s| a.max(s.0));
    let mmax = subs.iter().fold(0f32, |a, s| a.max(s.1));
    let mut g = Grid {
        d: half::f16::from_f32(smax / scale_max),
        dmin: half::f16::from_f32(if min_max > 0.0 { mmax / min_max } else { 0.0 }),
        ..Grid::default()
    };
    for (j, &(s, m)) in subs.iter().enumerate() {
        let d = g.d.to_f32();
        g.scales[j] = if d > 0.0 { (s / d).round() as i8 } else { 0 };
        if min_max > 0.0 && g.dmin.to_f32() > 0.0 {
            g.mins[j] = (m / g.dmin.to_f32()).round().min(min_max) as u8;
        }
    }
    x.iter()
        .enumerate()
        .map(|(i, &v)| codec.dequantize(&g, i, codec.quantize(&g, i, v)))
        .collect()
}

#[test]
fn encode_rows_refuses_bad_input() {
    let c = Codec::new(DType::Q4K).unwrap();
    let e = c.encode_rows(&[0.0; 576], 576, None).unwrap_err();
    assert!(e.contains("Q4_K needs rows of a multiple of 256"), "{e}");
    let e = c.encode_rows(&[f32::NAN; 256], 256, None).unwrap_err();
    assert!(e.contains("value 0") && e.contains("NaN"), "{e}");
    let e = c
        .encode_rows(&[0.0; 256], 256, Some(&[-1.0; 256]))
        .unwrap_err();
    assert!(e.contains("importance weight 0"), "{e}");
    assert!(Codec::new(DType::IQ2XXS).is_none());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any finite input: the two-step API equals the decoder bit for bit, and every decoded
    /// value lies within the block's range widened by one step of the grid.
    #[test]
    fn any_block_round_trips(
        seed in any::<u64>(),
        scale in prop_oneof![Just(1e-6f32), Just(1e-2f32), Just(1.0f32), Just(300.0f32)],
        which in 0usize..ENCODABLE.len(),
    ) {
        let dtype = ENCODABLE[which];
        let codec = Codec::new(dtype).unwrap();
        let mut rng = Rng(seed);
        let x = rng.weights(codec.block_values() * 2, scale);
        let y = encode_and_check(&codec, &x, None);
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        for (a, b) in x.iter().zip(&y) {
            prop_assert!(b.is_finite());
            prop_assert!((a - b).abs() <= amax * 1.01 + 1e-30, "{dtype:?}: {a} -> {b}");
        }
    }
}

// --- Decoders by hand.

fn f16_bytes(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_le_bytes()
}

/// Decodes a 32-value block of a 4-bit type with d = 0.5 whose byte j is `(15 - j) << 4 | j`:
/// value j has code j, value j + 16 code 15 - j.
fn decode_nibble_ramp(dtype: DType) -> Vec<f32> {
    let mut b = f16_bytes(0.5).to_vec();
    b.extend((0..16u8).map(|j| ((15 - j) << 4) | j));
    decode(dtype, &b)
}

#[test]
fn q4_0_by_hand() {
    let y = decode_nibble_ramp(DType::Q4_0);
    for j in 0..16 {
        assert_eq!(y[j], (j as f32 - 8.0) * 0.5);
        assert_eq!(y[j + 16], (7.0 - j as f32) * 0.5);
    }
}

#[test]
fn q8_0_by_hand() {
    let mut b = f16_bytes(2.0).to_vec();
    b.extend((0..32).map(|j| (j as i8 - 16) as u8));
    let y = decode(DType::Q8_0, &b);
    assert_eq!(y[0], -32.0);
    assert_eq!(y[31], 30.0);
}

#[test]
fn q8_k_by_hand() {
    let mut b = 0.25f32.to_le_bytes().to_vec();
    b.extend((0..256).map(|j| (j as u8).wrapping_sub(128)));
    b.extend([0u8; 32]);
    let y = decode(DType::Q8K, &b);
    for (j, &v) in y.iter().enumerate() {
        assert_eq!(v, 0.25 * (j as u8).wrapping_sub(128) as i8 as f32);
    }
}

#[test]
fn iq4_nl_by_hand() {
    let y = decode_nibble_ramp(DType::IQ4NL);
    for j in 0..16 {
        assert_eq!(y[j], IQ4_LEVELS[j] as f32 * 0.5);
        assert_eq!(y[j + 16], IQ4_LEVELS[15 - j] as f32 * 0.5);
    }
}

#[test]
fn wrong_length_and_integer_types_are_errors() {
    let mut y = [0f32; 32];
    let err = dequantize(DType::Q4_0, &[0; 17], &mut y).unwrap_err();
    assert!(err.contains("need 18 bytes, got 17"), "{err}");
    let mut y = [0f32; 31];
    let err = dequantize(DType::Q4_0, &[0; 18], &mut y).unwrap_err();
    assert!(
        err.contains("not a whole number of Q4_0 blocks of 32"),
        "{err}"
    );
    let err = dequantize(DType::I32, &[0; 4], &mut [0f32; 1]).unwrap_err();
    assert!(err.contains("integer"), "{err}");
}

#[test]
fn parallel_path_matches_serial() {
    // 4096 Q4_1 blocks: above the parallel threshold; compare against block-by-block.
    let n_blocks = PARALLEL_MIN_ELEMENTS / 32 * 2;
    let bytes: Vec<u8> = (0..n_blocks * 20)
        .map(|i| match i % 20 {
            1 | 3 => 0x30, // keep d and m small and finite
            _ => (i * 7919 % 251) as u8,
        })
        .collect();
    let par = decode(DType::Q4_1, &bytes);
    for (blk, want) in bytes.chunks(20).zip(par.chunks(32)) {
        let mut y = [0f32; 32];
        decode_one::<BlockQ4_1>(blk, &mut y);
        assert_eq!(&y[..], want);
    }
}
