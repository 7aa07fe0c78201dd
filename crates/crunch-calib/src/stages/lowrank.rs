//! Low-rank stages: `svd` and `whitened-svd` (ranks from one global budget per stage), and the
//! `eora` correction.

use super::{LayerInput, StageMethod};
use crunch_compress::{
    eora_with, singular_values_with, truncated_svd_with, whitened_singular_values_with,
    whitened_svd_with, CompressError, EoraOptions, RankChoice, WhitenOptions,
};
use crunch_repr::{Compressed, Factored, Produces};
use serde::{Deserialize, Serialize};

/// Checks a budget's `keep` fraction.
fn check_keep(keep: f64) -> Result<(), String> {
    if keep > 0.0 && keep <= 1.0 {
        Ok(())
    } else {
        Err(format!("keep {keep} must be in (0, 1]"))
    }
}

/// The rank the budget gave `l`: `None` keeps the layer dense, rank 0 makes it zero.
fn factor(
    l: &LayerInput,
    fit: impl FnOnce(usize) -> Result<Factored, CompressError>,
) -> Result<Option<Compressed>, CompressError> {
    match l.rank {
        None | Some(RankChoice::Dense) => Ok(None),
        Some(RankChoice::Factored(0)) => {
            Ok(Some(Compressed::Factored(Factored::zero(l.rows, l.cols))))
        }
        Some(RankChoice::Factored(r)) => Ok(Some(Compressed::Factored(fit(r)?))),
    }
}

/// `svd`: truncated SVD of the weights; needs no data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Svd {
    /// Fraction of the matched layers' parameters kept, in (0, 1].
    pub keep: f64,
}

impl StageMethod for Svd {
    fn needs_calibration(&self) -> bool {
        false
    }
    fn produces(&self) -> Produces {
        Produces::Factored
    }
    fn validate(&self) -> Result<(), String> {
        check_keep(self.keep)
    }
    fn compress(&self, l: &LayerInput) -> Result<Option<Compressed>, CompressError> {
        factor(l, |r| {
            Ok(truncated_svd_with(l.la, l.weight, l.rows, l.cols, r)?.factored)
        })
    }
    fn budget(&self) -> Option<f64> {
        Some(self.keep)
    }
    fn spectrum(&self, l: &LayerInput) -> Result<Vec<f64>, CompressError> {
        singular_values_with(l.la, l.weight, l.rows, l.cols)
    }
}

/// `whitened-svd`: SVD-LLM, truncation in the whitened space of the calibration inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhitenedSvd {
    /// Fraction of the matched layers' parameters kept, in (0, 1].
    pub keep: f64,
}

impl StageMethod for WhitenedSvd {
    fn needs_calibration(&self) -> bool {
        true
    }
    fn produces(&self) -> Produces {
        Produces::Factored
    }
    fn validate(&self) -> Result<(), String> {
        check_keep(self.keep)
    }
    fn compress(&self, l: &LayerInput) -> Result<Option<Compressed>, CompressError> {
        let h = l.hessian()?;
        let opts = WhitenOptions::default();
        factor(l, |r| {
            Ok(whitened_svd_with(l.la, l.weight, l.rows, l.cols, h, r, &opts)?.factored)
        })
    }
    fn budget(&self) -> Option<f64> {
        Some(self.keep)
    }
    fn spectrum(&self, l: &LayerInput) -> Result<Vec<f64>, CompressError> {
        let opts = WhitenOptions::default();
        whitened_singular_values_with(l.la, l.weight, l.rows, l.cols, l.hessian()?, &opts)
    }
}

/// `eora`: a low-rank correction of what the layer's main compression lost, fitted in the
/// eigenspace of its calibration inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Eora {
    /// Rank of the correction (capped at the layer's smaller dimension).
    pub rank: usize,
}

impl StageMethod for Eora {
    fn needs_calibration(&self) -> bool {
        true
    }
    fn produces(&self) -> Produces {
        Produces::Correction
    }
    fn validate(&self) -> Result<(), String> {
        if self.rank == 0 {
            return Err("rank must be at least 1".into());
        }
        Ok(())
    }
    fn compress(&self, l: &LayerInput) -> Result<Option<Compressed>, CompressError> {
        let base = l.base.ok_or(CompressError::InvalidOption(
            "EoRA corrects another stage's result; this layer has none".into(),
        ))?;
        let rank = self.rank.min(l.rows.min(l.cols));
        let h = l.hessian()?;
        let opts = EoraOptions::default();
        let lr = eora_with(l.la, l.weight, base, l.rows, l.cols, h, rank, &opts)?;
        Ok(Some(Compressed::Factored(lr.factored)))
    }
}
