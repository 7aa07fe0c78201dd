//! GPTQ onto ggml's block grids (Q4_0 … Q8_0, Q2_K … Q6_K, IQ4_NL, IQ4_XS): the error
//! compensation of [`super::gptq`], with each (super-)block's grid — every stored parameter but
//! the codes, e.g. Q4_K's super-block scales and its sixteen quantized sub-block scales and
//! minimums — fitted by the type's own encoder ([`Codec::fit`]) when the column loop reaches
//! the block's first column, on the row's values as updated so far (pending in-block updates
//! included, as for GPTQ's dynamic groups), weighted by each column's importance. Every column
//! of the block is then rounded onto that fixed grid ([`Codec::quantize`]) and its error spread
//! over the columns not yet quantized.
//!
//! The importance of the fit defaults to the Hessian diagonal (2·E[xⱼ²] over the calibration
//! inputs the layer sees, i.e. llama.cpp's imatrix up to a factor): the grid is chosen for the
//! columns whose errors cost most in the layer's output.
//!
//! Limits: columns in order only (no act-order: a super-block's grid needs its columns
//! together); rows must be whole blocks (llama.cpp's mix presets already give other tensors a
//! 32-wide fallback type).

use super::gptq::GptqOptions;
use crate::column_loop::{self, apply_block_errors, current_values, ROW_CHUNK};
use crate::error::{CompressError, Result};
use crate::hessian::Hessian;
use crate::inverse::PreparedHessian;
use crunch_formats::gguf::quants::{Codec, Grid};
use crunch_formats::DType;
use crunch_repr::validate_weight;
use rayon::prelude::*;

/// A weight quantized onto a ggml type.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufQuantized {
    pub dtype: DType,
    /// The tensor's bytes as a GGUF file stores them (rows of whole blocks, in the weight's
    /// row order).
    pub bytes: Vec<u8>,
    /// What the bytes decode to, [rows, cols] row-major: bit-identical to ggml's decoder.
    pub dequantized: Vec<f32>,
}

/// GPTQ quantization of a row-major [rows, cols] weight onto ggml type `dtype` with the Hessian
/// of its inputs. `importance` (one non-negative weight per column) weights the grid fits; with
/// `None` the Hessian diagonal does. `opts.act_order` and `opts.mse_clip` are refused (the
/// type's encoder searches its own grid): see [`GptqOptions::in_order`].
pub fn gptq_gguf(
    weight: &[f32],
    rows: usize,
    cols: usize,
    hessian: &Hessian,
    dtype: DType,
    importance: Option<&[f32]>,
    opts: &GptqOptions,
) -> Result<GgufQuantized> {
    let codec = check_layer(weight, rows, cols, dtype, opts)?;
    hessian.validate_for(cols)?;
    let importance = checked_importance(importance, cols)?;
    let prepared = GgufHessian::new(hessian, opts)?;
    Ok(prepared.run(weight, cols, codec, importance, opts))
}

/// A Hessian checked, dampened and factored once for every layer that reads the same input
/// (q, k and v; gate and up): [`GgufHessian::quantize`] gives exactly what
/// [`gptq_gguf`] gives with the Hessian, without repeating the O(n³) factorization.
pub struct GgufHessian {
    prep: PreparedHessian,
    /// The Hessian diagonal (clamped at 0): the grid fits' default importance.
    diag: Vec<f32>,
}

impl GgufHessian {
    /// Prepares `hessian` with `opts.damp` (the only option the preparation reads).
    pub fn new(hessian: &Hessian, opts: &GptqOptions) -> Result<Self> {
        let n = hessian.n;
        Ok(Self {
            prep: column_loop::prepare(hessian, n, false, opts.damp)?,
            diag: (0..n).map(|i| hessian.get(i, i).max(0.0)).collect(),
        })
    }

    /// [`gptq_gguf`] of one layer reading this Hessian's input (prepared with the same
    /// `opts.damp`).
    pub fn quantize(
        &self,
        weight: &[f32],
        rows: usize,
        cols: usize,
        dtype: DType,
        importance: Option<&[f32]>,
        opts: &GptqOptions,
    ) -> Result<GgufQuantized> {
        let codec = check_layer(weight, rows, cols, dtype, opts)?;
        if self.cols() != cols {
            return Err(CompressError::HessianSize {
                hessian_n: self.cols(),
                cols,
            });
        }
        let importance = checked_importance(importance, cols)?;
        Ok(self.run(weight, cols, codec, importance, opts))
    }

    /// Input columns.
    pub fn cols(&self) -> usize {
        self.diag.len()
    }

    fn run(
        &self,
        weight: &[f32],
        cols: usize,
        codec: Codec,
        importance: Option<Vec<f32>>,
        opts: &GptqOptions,
    ) -> GgufQuantized {
        let importance = importance.as_deref().unwrap_or(&self.diag);
        let rows = weight.len() / cols;
        let row_bytes = cols / codec.block_values() * codec.block_bytes();
        let mut bytes = vec![0u8; rows * row_bytes];
        let mut dequantized = vec![0f32; rows * cols];
        let job = Job {
            codec,
            cols,
            block_size: opts.block_size,
            importance,
            prep: &self.prep,
        };
        bytes
            .par_chunks_mut(ROW_CHUNK * row_bytes)
            .zip(dequantized.par_chunks_mut(ROW_CHUNK * cols))
            .zip(weight.par_chunks(ROW_CHUNK * cols))
            .for_each(|((bytes, deq), weight)| job.rows(weight, bytes, deq));
        GgufQuantized {
            dtype: codec.dtype(),
            bytes,
            dequantized,
        }
    }
}

/// The type's encoder, once the weight, its shape and the options are checked.
fn check_layer(
    weight: &[f32],
    rows: usize,
    cols: usize,
    dtype: DType,
    opts: &GptqOptions,
) -> Result<Codec> {
    let name = dtype.ggml_name();
    let codec = Codec::new(dtype).ok_or_else(|| {
        CompressError::InvalidOption(format!(
            "GPTQ onto GGUF grids: crunch does not encode {name}"
        ))
    })?;
    let n = codec.block_values();
    if cols % n != 0 {
        return Err(CompressError::InvalidOption(format!(
            "{name} needs rows of a multiple of {n} values, got {cols}"
        )));
    }
    if opts.act_order || opts.mse_clip {
        return Err(CompressError::InvalidOption(format!(
            "GPTQ onto {name}: act-order and MSE clipping do not apply (columns are quantized \
             in order, onto grids the type's encoder fits)"
        )));
    }
    validate_weight(weight, rows, cols)?;
    opts.validate()?;
    Ok(codec)
}

/// The caller's importance weights, checked (`None`: the Hessian diagonal's, filled in later).
fn checked_importance(importance: Option<&[f32]>, cols: usize) -> Result<Option<Vec<f32>>> {
    let Some(w) = importance else {
        return Ok(None);
    };
    if w.len() != cols {
        return Err(CompressError::InvalidOption(format!(
            "{} importance weights for {cols} columns",
            w.len()
        )));
    }
    if let Some(i) = w.iter().position(|v| !v.is_finite() || *v < 0.0) {
        return Err(CompressError::InvalidOption(format!(
            "importance weight {i} is {} (must be finite and non-negative)",
            w[i]
        )));
    }
    Ok(Some(w.to_vec()))
}

/// What every row chunk shares.
struct Job<'a> {
    codec: Codec,
    cols: usize,
    block_size: usize,
    importance: &'a [f32],
    prep: &'a PreparedHessian,
}

impl Job<'_> {
    /// GPTQ of a chunk of rows: `weight` [n, cols] in, its blocks' bytes and decoded values out.
    fn rows(&self, weight: &[f32], bytes: &mut [u8], deq: &mut [f32]) {
        let (cols, codec) = (self.cols, self.codec);
        let nb = codec.block_values();
        let blocks = cols / nb;
        let n = weight.len() / cols;
        let PreparedHessian {
            dead, hinv_u: u, ..
        } = self.prep;
        // Dead columns (no calibration signal) are zeroed, as in GPTQ: they quantize to 0.
        let mut w: Vec<f32> = (0..n * cols)
            .map(|k| if dead[k % cols] { 0.0 } else { weight[k] })
            .collect();
        let mut codes = vec![0u8; n * cols];
        let mut grids = vec![Grid::default(); n * blocks];
        let mut err = vec![0f32; n * self.block_size];
        let mut values = Vec::with_capacity(nb);
        for i1 in (0..cols).step_by(self.block_size) {
            let i2 = (i1 + self.block_size).min(cols);
            let width = i2 - i1;
            for r in 0..n {
                let row = &mut w[r * cols..(r + 1) * cols];
                let row_err = &mut err[r * width..(r + 1) * width];
                for i in i1..i2 {
                    let (b, k) = (i / nb, i % nb);
                    if k == 0 {
                        current_values(row, row_err, u, cols, i1, i, i + nb, &mut values);
                        grids[r * blocks + b] =
                            codec.fit(&values, Some(&self.importance[i..i + nb]));
                    }
                    let grid = &grids[r * blocks + b];
                    let x = row[i];
                    let code = codec.quantize(grid, k, x);
                    let q = codec.dequantize(grid, k, code);
                    codes[r * cols + i] = code;
                    deq[r * cols + i] = q;
                    let u_row = &u[i * cols..(i + 1) * cols];
                    let e = (x - q) / u_row[i];
                    row_err[i - i1] = e;
                    for (wj, &uj) in row[i + 1..i2].iter_mut().zip(&u_row[i + 1..i2]) {
                        *wj -= e * uj;
                    }
                }
            }
            apply_block_errors(&mut w, &err, u, n, cols, (i1, i2));
        }
        let bb = codec.block_bytes();
        for (k, (grid, out)) in grids.iter().zip(bytes.chunks_exact_mut(bb)).enumerate() {
            let (r, b) = (k / blocks, k % blocks);
            let start = r * cols + b * nb;
            codec.pack(grid, &codes[start..start + nb], out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{output_error, problem};

    /// The same types RTN-encoded with the same importance (the Hessian diagonal).
    fn rtn(w: &[f32], cols: usize, h: &Hessian, dtype: DType) -> Vec<f32> {
        let codec = Codec::new(dtype).unwrap();
        let diag: Vec<f32> = (0..cols).map(|i| h.get(i, i)).collect();
        let bytes = codec.encode_rows(w, cols, Some(&diag)).unwrap();
        let mut out = vec![0f32; w.len()];
        crunch_formats::gguf::quants::dequantize(dtype, &bytes, &mut out).unwrap();
        out
    }

    #[test]
    fn decodes_to_its_dequantized_values_and_beats_rtn() {
        let (rows, cols) = (16, 512);
        let (w, h) = problem(3, rows, cols, 4.0);
        for dtype in [
            DType::Q4_0,
            DType::Q5_1,
            DType::Q2K,
            DType::Q3K,
            DType::Q4K,
            DType::Q6K,
            DType::IQ4XS,
        ] {
            let q = gptq_gguf(
                &w,
                rows,
                cols,
                &h,
                dtype,
                None,
                &GptqOptions::in_order(0.01),
            )
            .unwrap();
            let mut decoded = vec![0f32; w.len()];
            crunch_formats::gguf::quants::dequantize(dtype, &q.bytes, &mut decoded).unwrap();
            assert_eq!(decoded, q.dequantized, "{dtype:?}");
            let (e_gptq, e_rtn) = (
                output_error(&w, &q.dequantized, &h),
                output_error(&w, &rtn(&w, cols, &h, dtype), &h),
            );
            assert!(
                e_gptq < 0.5 * e_rtn,
                "{dtype:?}: GPTQ {e_gptq} vs RTN {e_rtn}"
            );
        }
    }

    #[test]
    fn output_is_identical_for_any_thread_count() {
        let (rows, cols) = (70, 256);
        let (w, h) = problem(4, rows, cols, 1.0);
        let opts = GptqOptions {
            block_size: 96,
            ..GptqOptions::in_order(0.01)
        };
        crate::testutil::same_on_any_thread_count(|| {
            gptq_gguf(&w, rows, cols, &h, DType::Q4K, None, &opts).unwrap()
        });
    }

    #[test]
    fn a_shared_prepared_hessian_gives_the_same_bytes() {
        let cols = 256;
        let (w, h) = problem(6, 48, cols, 2.0);
        let opts = GptqOptions::in_order(0.01);
        let shared = GgufHessian::new(&h, &opts).unwrap();
        // Layers of different heights and types reading one input, as q/k/v do.
        for (rows, dtype) in [(48, DType::Q4K), (16, DType::Q6K), (32, DType::Q5_0)] {
            let w = &w[..rows * cols];
            let imp: Vec<f32> = (0..cols).map(|i| 1.0 + (i % 7) as f32).collect();
            for importance in [None, Some(imp.as_slice())] {
                assert_eq!(
                    shared
                        .quantize(w, rows, cols, dtype, importance, &opts)
                        .unwrap(),
                    gptq_gguf(w, rows, cols, &h, dtype, importance, &opts).unwrap(),
                    "{dtype:?}"
                );
            }
        }
        let err = shared.quantize(&w[..64], 1, 64, DType::Q4_0, None, &opts);
        assert!(matches!(err, Err(CompressError::HessianSize { .. })));
    }

    #[test]
    fn rejects_what_it_cannot_encode() {
        let (w, h) = problem(5, 4, 64, 1.0);
        let opts = GptqOptions::in_order(0.01);
        let err = |dtype, imp: Option<&[f32]>, opts: &GptqOptions| {
            gptq_gguf(&w, 4, 64, &h, dtype, imp, opts).unwrap_err()
        };
        assert!(
            matches!(err(DType::Q4K, None, &opts), CompressError::InvalidOption(m) if m.contains("multiple of 256"))
        );
        assert!(matches!(
            err(DType::F16, None, &opts),
            CompressError::InvalidOption(_)
        ));
        let act = GptqOptions {
            act_order: true,
            ..opts
        };
        assert!(matches!(
            err(DType::Q4_0, None, &act),
            CompressError::InvalidOption(_)
        ));
        assert!(matches!(
            err(DType::Q4_0, Some(&[1.0; 63]), &opts),
            CompressError::InvalidOption(_)
        ));
        let mut neg = vec![1.0; 64];
        neg[7] = -1.0;
        assert!(matches!(
            err(DType::Q4_0, Some(&neg), &opts),
            CompressError::InvalidOption(_)
        ));
    }
}
