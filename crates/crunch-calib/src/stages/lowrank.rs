//! Low-rank stages: `svd` and `whitened-svd` (ranks from one global budget per stage), and the
//! `eora` correction.

use super::{LayerInput, StageMethod};
use crunch_compress::{
    eora, singular_values, truncated_svd, whiten, whitened_svd, CompressError, EoraOptions,
    RankChoice, WhitenOptions,
};
use crunch_repr::{Compressed, Factored, Produces};
use serde::{Deserialize, Serialize};

/// `svd` (`Factor<false>`): truncated SVD of the weights, no data. `whitened-svd`
/// (`Factor<true>`): SVD-LLM, truncation in the whitened space of the calibration inputs. Both
/// take each layer's rank from one budget shared by the stage's layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Factor<const WHITENED: bool> {
    /// Fraction of the matched layers' parameters kept, in (0, 1].
    pub keep: f64,
}

impl<const WHITENED: bool> StageMethod for Factor<WHITENED> {
    fn produces(&self) -> Produces {
        Produces::Factored
    }
    fn validate(&self) -> Result<(), String> {
        match self.keep > 0.0 && self.keep <= 1.0 {
            true => Ok(()),
            false => Err(format!("keep {} must be in (0, 1]", self.keep)),
        }
    }
    fn compress(&self, l: &LayerInput) -> Result<Option<Compressed>, CompressError> {
        let whiten = WhitenOptions::default();
        let fit = |r| match WHITENED {
            true => whitened_svd(l.la, l.weight, l.rows, l.cols, l.hessian()?, r, &whiten),
            false => truncated_svd(l.la, l.weight, l.rows, l.cols, r),
        };
        Ok(match l.rank {
            None | Some(RankChoice::Dense) => None,
            Some(RankChoice::Factored(0)) => Some(Factored::zero(l.rows, l.cols)),
            Some(RankChoice::Factored(r)) => Some(fit(r)?.factored),
        }
        .map(Compressed::Factored))
    }
    fn budget(&self) -> Option<f64> {
        Some(self.keep)
    }
    fn spectrum(&self, l: &LayerInput) -> Result<Vec<f64>, CompressError> {
        let opts = WhitenOptions::default();
        match WHITENED {
            true => {
                whiten(l.la, l.weight, l.rows, l.cols, l.hessian()?, &opts)?.singular_values(l.la)
            }
            false => singular_values(l.la, l.weight, l.rows, l.cols),
        }
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
        let lr = eora(l.la, l.weight, base, l.rows, l.cols, h, rank, &opts)?;
        Ok(Some(Compressed::Factored(lr.factored)))
    }
}
