//! What compressing one linear layer produces, whatever the method (decision 050's planned
//! enum): integer codes, a pruned (possibly jointly quantized) weight, or two low-rank factors;
//! optionally plus an EoRA correction fitted to what the first compression lost.

use crate::factored::Factored;
use crate::lut::{LutSpec, LutWeight};
use crate::pruned::PrunedWeight;
use crate::quantized::QuantizedWeight;
use crate::sparsity::Sparsity;
use crate::spec::QuantSpec;

#[derive(Clone, Debug, PartialEq)]
pub enum Compressed {
    Quantized(QuantizedWeight),
    /// Codes indexing per-row (or per-group) codebooks of f16 levels (decision 143).
    Lut(LutWeight),
    Pruned(PrunedWeight),
    /// W ≈ A·B, run as two matrix products.
    Factored(Factored),
}

/// What a method will store for every layer it compresses, known before it runs: what an
/// output format checks, so that a format that cannot hold a recipe's result refuses it before
/// any calibration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Produces {
    /// Integer codes on this grid ([`Compressed::Quantized`]).
    Quantized(QuantSpec),
    /// Codes indexing codebooks of this shape ([`Compressed::Lut`]).
    Lut(LutSpec),
    /// A pruned weight in this pattern, its kept values quantized on `quant`'s grid if given
    /// ([`Compressed::Pruned`]).
    Pruned {
        sparsity: Sparsity,
        quant: Option<QuantSpec>,
    },
    /// Two low-rank factors ([`Compressed::Factored`]); layers whose budget leaves them dense
    /// are not compressed at all.
    Factored,
    /// A low-rank correction added to another method's result ([`CompressedLayer::correction`]).
    Correction,
}

/// What a recipe will store in one layer, known before it runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// Hugging Face layer name, without `.weight`.
    pub layer: String,
    /// `[rows, cols]` of its weight.
    pub shape: (usize, usize),
    pub produces: Produces,
}

/// One compressed linear layer: the main compression and an optional low-rank correction,
/// so the layer computes x·(Ŵ + A·B)ᵀ.
#[derive(Clone, Debug, PartialEq)]
pub struct CompressedLayer {
    /// The method that made `main` ("gptq", "sparsegpt", "whitened-svd", ...).
    pub method: String,
    pub main: Compressed,
    pub correction: Option<Factored>,
    /// An expert of a sparse MLP: where its calibration statistics came from.
    pub expert: Option<ExpertCalibration>,
}

/// How an expert's calibration statistics were gathered, recorded in the output's recipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpertCalibration {
    /// Calibration tokens the router sent to the expert.
    pub routed_tokens: usize,
    /// The statistics come from every calibration token run through the expert (the router
    /// sent it fewer than the plan's threshold), not from the routed ones.
    pub all_tokens: bool,
    /// Tokens behind the statistics.
    pub tokens: usize,
}

impl Compressed {
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Compressed::Quantized(q) => (q.rows, q.cols),
            Compressed::Lut(q) => (q.rows, q.cols),
            Compressed::Pruned(p) => (p.rows, p.cols),
            Compressed::Factored(f) => (f.rows, f.cols),
        }
    }

    /// The weight as the model runs it, row-major [rows, cols].
    pub fn dense(&self) -> Vec<f32> {
        match self {
            Compressed::Quantized(q) => q.dequantize(),
            Compressed::Lut(q) => q.dequantize(),
            Compressed::Pruned(p) => p.dequantize(),
            Compressed::Factored(f) => f.dense(),
        }
    }

    /// Storage per original weight; unquantized values count 16 bits (stored as f16).
    pub fn bits_per_weight(&self) -> f64 {
        match self {
            Compressed::Quantized(q) => q.bits_per_weight(),
            Compressed::Lut(q) => q.bits_per_weight(),
            Compressed::Pruned(p) => p.bits_per_weight(),
            Compressed::Factored(f) => factor_bits_per_weight(f),
        }
    }

    /// What kind of storage this is (the description a format checks).
    pub fn produces(&self) -> Produces {
        match self {
            Compressed::Quantized(q) => Produces::Quantized(q.spec),
            Compressed::Lut(q) => Produces::Lut(q.spec),
            Compressed::Pruned(p) => Produces::Pruned {
                sparsity: p.sparsity,
                quant: p.quant.as_ref().map(|q| q.spec),
            },
            Compressed::Factored(_) => Produces::Factored,
        }
    }

    /// The quantized codes on a uniform grid, if any: of a quantized layer, or of a jointly
    /// pruned and quantized one (a lookup-table layer has none: [`Compressed::lut`]).
    pub fn quantized(&self) -> Option<&QuantizedWeight> {
        match self {
            Compressed::Quantized(q) => Some(q),
            Compressed::Pruned(p) => p.quant.as_ref(),
            Compressed::Lut(_) | Compressed::Factored(_) => None,
        }
    }

    /// The lookup-table weight, if this is one.
    pub fn lut(&self) -> Option<&LutWeight> {
        match self {
            Compressed::Lut(q) => Some(q),
            _ => None,
        }
    }
}

/// Two f16 factors, per weight of the dense layer they stand for.
pub fn factor_bits_per_weight(f: &Factored) -> f64 {
    16.0 * f.params() as f64 / (f.rows * f.cols).max(1) as f64
}

impl CompressedLayer {
    pub fn new(method: &str, main: Compressed) -> Self {
        Self {
            method: method.into(),
            main,
            correction: None,
            expert: None,
        }
    }

    pub fn shape(&self) -> (usize, usize) {
        self.main.shape()
    }

    /// Ŵ (+ A·B with a correction): the dense weight the compressed layer computes with.
    pub fn dense(&self) -> Vec<f32> {
        let mut w = self.main.dense();
        if let Some(c) = &self.correction {
            for (w, d) in w.iter_mut().zip(c.dense()) {
                *w += d;
            }
        }
        w
    }

    /// Main storage plus the correction's f16 factors, per weight.
    pub fn bits_per_weight(&self) -> f64 {
        self.main.bits_per_weight() + self.correction.as_ref().map_or(0.0, factor_bits_per_weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn dense_adds_the_correction_and_bits_add_up() {
        let (rows, cols) = (4, 8);
        let q = QuantizedWeight {
            spec: QuantSpec::new(4, None, false),
            rows,
            cols,
            codes: (0..rows * cols).map(|i| (i * 7 % 16) as u8).collect(),
            scales: vec![f16::from_f32(0.125); rows],
            zeros: vec![8; rows],
            g_idx: None,
        };
        let base = q.dequantize();
        let mut layer = CompressedLayer::new("rtn", Compressed::Quantized(q.clone()));
        assert_eq!(layer.dense(), base);
        let c = Factored {
            rows,
            cols,
            rank: 1,
            a: vec![1.0; rows],
            b: vec![0.5; cols],
        };
        layer.correction = Some(c);
        assert!(layer
            .dense()
            .iter()
            .zip(&base)
            .all(|(a, b)| (a - b - 0.5).abs() < 1e-6));
        let extra = 16.0 * (rows + cols) as f64 / (rows * cols) as f64;
        assert!((layer.bits_per_weight() - q.bits_per_weight() - extra).abs() < 1e-12);
        assert_eq!(layer.main.produces(), Produces::Quantized(q.spec));
        assert_eq!(layer.main.quantized(), Some(&q));
    }
}
