//! The trait every weight compressor implements, and its quantizer implementations.
//!
//! The output is a [`QuantizedWeight`] for now. Pruning and low-rank factorization will need
//! other outputs; the plan (decision 050) is an enum `CompressedLinear` when the first of them
//! lands, not before: a one-variant enum today would only add matching to every caller.

use crate::error::{CompressError, Result};
use crate::gptq::{gptq, GptqOptions};
use crate::hessian::Hessian;
use crate::rtn::rtn;
use crate::spec::QuantSpec;
use crate::weight::QuantizedWeight;

/// A method that compresses one linear weight, row-major [rows = out, cols = in].
pub trait Compressor: Send + Sync {
    /// Short stable name, for logs and file metadata ("rtn", "gptq").
    fn name(&self) -> &'static str;
    /// Whether [`Compressor::compress`] needs the Hessian of the layer's inputs (and so a
    /// calibration pass).
    fn needs_hessian(&self) -> bool;
    fn compress(
        &self,
        weight: &[f32],
        rows: usize,
        cols: usize,
        hessian: Option<&Hessian>,
    ) -> Result<QuantizedWeight>;
}

/// Round-to-nearest; ignores any Hessian.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rtn {
    pub spec: QuantSpec,
    pub mse_clip: bool,
}

impl Compressor for Rtn {
    fn name(&self) -> &'static str {
        "rtn"
    }
    fn needs_hessian(&self) -> bool {
        false
    }
    fn compress(
        &self,
        weight: &[f32],
        rows: usize,
        cols: usize,
        _hessian: Option<&Hessian>,
    ) -> Result<QuantizedWeight> {
        rtn(weight, rows, cols, self.spec, self.mse_clip)
    }
}

/// GPTQ; needs the Hessian.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gptq {
    pub spec: QuantSpec,
    pub opts: GptqOptions,
}

impl Compressor for Gptq {
    fn name(&self) -> &'static str {
        "gptq"
    }
    fn needs_hessian(&self) -> bool {
        true
    }
    fn compress(
        &self,
        weight: &[f32],
        rows: usize,
        cols: usize,
        hessian: Option<&Hessian>,
    ) -> Result<QuantizedWeight> {
        let hessian = hessian.ok_or(CompressError::MissingHessian)?;
        gptq(weight, rows, cols, hessian, self.spec, &self.opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    #[test]
    fn trait_objects_dispatch_to_the_free_functions() {
        let mut rng = Rng::new(11);
        let (rows, cols) = (6, 32);
        let w = rng.normals(rows * cols);
        let mut h = Hessian::new(cols);
        h.add_batch(&rng.normals(64 * cols));
        let spec = QuantSpec::new(4, Some(16), false);
        let opts = GptqOptions::default();
        let methods: Vec<Box<dyn Compressor>> = vec![
            Box::new(Rtn {
                spec,
                mse_clip: true,
            }),
            Box::new(Gptq { spec, opts }),
        ];
        assert_eq!(
            methods
                .iter()
                .map(|m| (m.name(), m.needs_hessian()))
                .collect::<Vec<_>>(),
            [("rtn", false), ("gptq", true)]
        );
        assert_eq!(
            methods[0].compress(&w, rows, cols, None).unwrap(),
            rtn(&w, rows, cols, spec, true).unwrap()
        );
        assert_eq!(
            methods[1].compress(&w, rows, cols, Some(&h)).unwrap(),
            gptq(&w, rows, cols, &h, spec, &opts).unwrap()
        );
        assert_eq!(
            methods[1].compress(&w, rows, cols, None),
            Err(CompressError::MissingHessian)
        );
    }
}
