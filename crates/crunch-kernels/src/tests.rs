//! Every encoding's product, on every instruction set this CPU has, against the reference:
//! the weights dequantized (crunch-formats) times the activations as quantized, summed in
//! f64. Shapes cover single rows, odd row counts (remainders of the 4 × 2 blocks and of the
//! 16-row panels), rows that are not a multiple of 64 (padding) and both activation
//! precisions.

use crate::formats::tests::random_blocks;
use crate::{ActBits, Acts, Bytes, Isa, Options, PackedMatrix};
use crunch_formats::gguf::quants::ENCODABLE;
use crunch_formats::DType;

/// Where each block type keeps its f16 scales (and mins), for `random_blocks`.
fn layout(dtype: DType) -> &'static [usize] {
    match dtype {
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => &[0],
        DType::Q4_1 | DType::Q5_1 | DType::Q4K | DType::Q5K => &[0, 2],
        DType::Q2K => &[80, 82],
        DType::Q3K => &[108],
        DType::Q6K => &[208],
        _ => &[],
    }
}

fn activations(seed: u64, len: usize) -> Vec<f32> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            // Mostly moderate values with an occasional outlier, as real activations have.
            let v = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            if s.is_multiple_of(97) {
                v * 40.0
            } else {
                v
            }
        })
        .collect()
}

fn matrix(dtype: DType, rows: usize, cols: usize, seed: u64) -> PackedMatrix {
    let (per, bytes) = dtype.block();
    let data = match dtype {
        DType::F32 => activations(seed, rows * cols)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::F16 => activations(seed, rows * cols)
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        DType::BF16 => activations(seed, rows * cols)
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        _ => random_blocks(seed, rows * cols / per * bytes, bytes, layout(dtype)),
    };
    PackedMatrix::new(dtype, rows, cols, Bytes::owned(data)).unwrap()
}

/// max |got - want| / max |want|.
fn relative(got: &[f32], want: &[f64]) -> f64 {
    let diff = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0f64, f64::max);
    diff / want.iter().map(|w| w.abs()).fold(0f64, f64::max)
}

/// max |got - want| / max over outputs of Σ_j |w_j·x_j|.
fn error_vs_terms(
    got: &[f32],
    want: &[f64],
    w: &[f32],
    x: &[f32],
    n: usize,
    rows: usize,
    cols: usize,
) -> f64 {
    let diff = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0f64, f64::max);
    let mut scale = 0f64;
    for c in 0..n {
        for r in 0..rows {
            let t: f64 = (0..cols)
                .map(|j| (w[r * cols + j] as f64 * x[c * cols + j] as f64).abs())
                .sum();
            scale = scale.max(t);
        }
    }
    diff / scale
}

fn reference(w: &[f32], x: &[f32], n: usize, rows: usize, cols: usize) -> Vec<f64> {
    let mut y = vec![0f64; n * rows];
    for c in 0..n {
        for r in 0..rows {
            y[c * rows + r] = (0..cols)
                .map(|j| w[r * cols + j] as f64 * x[c * cols + j] as f64)
                .sum();
        }
    }
    y
}

/// Every encodable block type but the IQ ones, which have no packed product.
fn block_types() -> impl Iterator<Item = DType> {
    ENCODABLE
        .into_iter()
        .filter(|d| !matches!(d, DType::IQ4NL | DType::IQ4XS))
}

#[test]
fn block_products_match_the_reference() {
    for dtype in block_types() {
        let per = dtype.block().0;
        // Row lengths: one block, a length that leaves a partial 64-byte vector (for the
        // 32-weight types), and a longer one.
        let lens: Vec<usize> = if per == 32 {
            vec![32, 96, 544, 576]
        } else {
            vec![256, 768]
        };
        for (i, &cols) in lens.iter().enumerate() {
            // n > 4 is the blocked path: on AVX-512, panels of 16 rows (21 and 70 leave
            // partial panels) by 8 (I8) or 6 (I16) activation rows, then 4, 2, 1 (9, 17).
            for &(rows, n) in &[(1, 1), (7, 1), (13, 3), (33, 5), (21, 6), (70, 9), (40, 17)] {
                let seed = 1000 * i as u64 + rows as u64 * 7 + n as u64;
                let w = matrix(dtype, rows, cols, seed);
                let wf = w.dequantize();
                let x = activations(seed + 1, n * cols);
                let exact = reference(&wf, &x, n, rows, cols);
                for bits in [ActBits::I16, ActBits::I8] {
                    let mut acts = Acts::new(bits);
                    acts.quantize(&x, n, cols);
                    let xq: Vec<f32> = (0..n).flat_map(|c| acts.dequantize_row(c)).collect();
                    let want = reference(&wf, &xq, n, rows, cols);
                    for isa in Isa::available() {
                        let mut y = vec![f32::NAN; n * rows];
                        w.matmul_with(&x, n, &mut y, Options { isa, bits });
                        let err = error_vs_terms(&y, &want, &wf, &xq, n, rows, cols);
                        assert!(
                            err < 1e-6,
                            "{dtype:?} {rows}x{cols} n={n} {bits:?} {isa:?}: {err:e} vs quantized reference"
                        );
                        // Against the f32 activations: the activations' rounding error,
                        // measured against the size of the terms (a single output can be
                        // a near-cancelling sum). The 40x outliers here make chunks whose
                        // step is large for their other values: I16 stays under 2e-4, I8
                        // reaches 2e-2.
                        let err = error_vs_terms(&y, &exact, &wf, &x, n, rows, cols);
                        let tol = if bits == ActBits::I16 { 1e-3 } else { 5e-2 };
                        assert!(
                            err < tol,
                            "{dtype:?} {rows}x{cols} n={n} {bits:?} {isa:?}: {err:e} vs f32 reference"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn float_products_match_the_reference() {
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for &(rows, cols, n) in &[
            (1, 5, 1),
            (9, 33, 2),
            (70, 64, 4),
            (130, 100, 7),
            (65, 576, 33),
        ] {
            let w = matrix(dtype, rows, cols, rows as u64 + cols as u64);
            let wf = w.dequantize();
            let x = activations(n as u64 + 5, n * cols);
            let want = reference(&wf, &x, n, rows, cols);
            for isa in Isa::available() {
                let mut y = vec![f32::NAN; n * rows];
                w.matmul_with(
                    &x,
                    n,
                    &mut y,
                    Options {
                        isa,
                        bits: ActBits::I16,
                    },
                );
                let err = relative(&y, &want);
                assert!(err < 1e-5, "{dtype:?} {rows}x{cols} n={n} {isa:?}: {err:e}");
            }
        }
    }
}

#[test]
fn sizes_are_checked() {
    let err = PackedMatrix::new(DType::Q4_0, 2, 64, Bytes::owned(vec![0; 71])).unwrap_err();
    assert!(err.contains("need"), "{err}");
    let err = PackedMatrix::new(DType::Q4_0, 2, 40, Bytes::owned(vec![0; 72])).unwrap_err();
    assert!(err.contains("whole number"), "{err}");
    let err = PackedMatrix::new(DType::I32, 1, 1, Bytes::owned(vec![0; 4])).unwrap_err();
    assert!(err.contains("no packed kernel"), "{err}");
}

/// The decode rows (1 to 4 activation rows): every block count from 1 to 9 (each remainder
/// of the four-block steps of `quad.rs`, the pairs of `gemv.rs`), SmolLM2's widths, odd row
/// counts, against the f64 reference on the quantized activations (tolerance 1e-6 of the
/// terms' size, as above) and against the scalar path's own result (1e-6 relative).
#[test]
fn decode_rows_match_the_reference() {
    for dtype in [DType::Q4_0, DType::Q4_1, DType::Q8_0, DType::Q5_0] {
        let mut widths: Vec<usize> = (1..=9).map(|b| 32 * b).collect();
        widths.extend([544, 576, 1536]);
        for (i, &cols) in widths.iter().enumerate() {
            // Past 2^16 weights a product is split into tiles on the team, dealt out in
            // ranges with prefetches across the tiles' ends (decision 128): odd row counts
            // so the last tile is short.
            let big: &[(usize, usize)] = if cols >= 544 {
                &[(301, 1), (259, 2)]
            } else {
                &[]
            };
            for &(rows, n) in [(1, 1), (3, 2), (37, 1), (5, 3), (2, 4)].iter().chain(big) {
                let seed = 77 + 100 * i as u64 + 3 * rows as u64 + n as u64;
                let w = matrix(dtype, rows, cols, seed);
                let wf = w.dequantize();
                let x = activations(seed + 5, n * cols);
                for bits in [ActBits::I16, ActBits::I8] {
                    let mut acts = Acts::new(bits);
                    acts.quantize(&x, n, cols);
                    let xq: Vec<f32> = (0..n).flat_map(|c| acts.dequantize_row(c)).collect();
                    let want = reference(&wf, &xq, n, rows, cols);
                    let mut scalar = vec![f32::NAN; n * rows];
                    let opts = Options {
                        isa: Isa::Scalar,
                        bits,
                    };
                    w.matmul_with(&x, n, &mut scalar, opts);
                    for isa in Isa::available() {
                        let mut y = vec![f32::NAN; n * rows];
                        w.matmul_with(&x, n, &mut y, Options { isa, bits });
                        let err = error_vs_terms(&y, &want, &wf, &xq, n, rows, cols);
                        let what = format!("{dtype:?} {rows}x{cols} n={n} {bits:?} {isa:?}");
                        assert!(err < 1e-6, "{what}: {err:e} vs quantized reference");
                        let scalar64: Vec<f64> = scalar.iter().map(|&v| v as f64).collect();
                        let err = error_vs_terms(&y, &scalar64, &wf, &xq, n, rows, cols);
                        assert!(err < 1e-6, "{what}: {err:e} vs the scalar path");
                    }
                }
            }
        }
    }
}
