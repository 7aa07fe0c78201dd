//! Ladder pruning before a search (decision 148, opt-in: `crunch compress --prune-levels`).
//!
//! A search's mutations move a layer one rank up or down its ladder. In a ladder that mixes
//! kinds of level (free f16 group scales and coded ones, decision 145), neighbouring ranks
//! can be a level and a worse one of nearly the same size. A layer that should go from 3-bit
//! per channel to 2-bit g16 with coded scales then has to cross 2-bit g32 with free scales
//! first, and the search rarely makes that crossing. In s32, one 22-level ladder ended at a
//! higher calibration KL than the 15-level one inside it.
//!
//! The pruning: measure each level's uniform model (every layer at that level) on the held
//! calibration windows, the same KL the search scores. Then drop every level whose uniform
//! model is larger than another level's and no better. What is left is the uniform models'
//! Pareto front, a ladder in which each step up costs bits and buys KL.
//!
//! Limit: this is a judgement on whole models. A level dominated as a uniform model could
//! still suit a few layers, and the search then cannot give it to them.

use crate::database::{rank_order, Database};
use crate::{Error, Result};

/// Which levels are on the front of (size, KL), for `sizes` ascending (a database's ladder):
/// level `i` is kept when its KL is below every smaller level's. The smallest level is always
/// kept (the budget needs a floor). A NaN KL is never kept, except at the smallest level.
pub fn undominated(sizes: &[f64], kls: &[f64]) -> Vec<bool> {
    debug_assert_eq!(sizes.len(), kls.len());
    debug_assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "sizes ascending");
    let mut best = f64::INFINITY;
    kls.iter()
        .enumerate()
        .map(|(i, &k)| {
            let keep = i == 0 || k < best;
            if k < best {
                best = k;
            }
            keep
        })
        .collect()
}

impl Database {
    /// Keeps the levels where `keep` is true (at least two), with their variants, and ranks
    /// the units' ladders again.
    pub fn retain_levels(&mut self, keep: &[bool]) -> Result<()> {
        if keep.len() != self.levels.len() {
            return Err(Error::Params(format!(
                "{} flags for {} levels",
                keep.len(),
                self.levels.len()
            )));
        }
        if keep.iter().filter(|&&k| k).count() < 2 {
            return Err(Error::Params(
                "pruning would leave fewer than two levels to search".into(),
            ));
        }
        let mut flags = keep.iter();
        self.levels
            .retain(|_| *flags.next().expect("one flag per level"));
        for row in &mut self.variants {
            let mut flags = keep.iter();
            row.retain(|_| *flags.next().expect("one flag per level"));
        }
        self.order = rank_order(&self.variants, &self.shapes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::undominated;
    use proptest::prelude::*;

    #[test]
    fn a_larger_and_worse_level_is_dropped() {
        // 2g32s6, 2g64, 2g16s6, 2g32: 2g64 and 2g32 are larger and worse than a smaller level.
        let sizes = [2.273, 2.281, 2.523, 2.563];
        let kls = [1.9, 2.1, 1.5, 1.6];
        assert_eq!(undominated(&sizes, &kls), [true, false, true, false]);
        // The smallest level stays even when it is the worst.
        assert_eq!(undominated(&[1.0, 2.0], &[5.0, 1.0]), [true, true]);
        assert_eq!(undominated(&[1.0, 2.0], &[f64::NAN, 1.0]), [true, true]);
    }

    proptest! {
        /// What is kept is a front: KL falls strictly along it, and every dropped level has a
        /// smaller kept level with a KL no higher.
        #[test]
        fn what_is_kept_is_the_front(kls in prop::collection::vec(0.0f64..10.0, 1..12)) {
            let sizes: Vec<f64> = (0..kls.len()).map(|i| i as f64).collect();
            let keep = undominated(&sizes, &kls);
            prop_assert!(keep[0]);
            let kept: Vec<f64> = (0..kls.len()).filter(|&i| keep[i]).map(|i| kls[i]).collect();
            prop_assert!(kept.windows(2).all(|w| w[1] < w[0]));
            for i in (0..kls.len()).filter(|&i| !keep[i]) {
                prop_assert!((0..i).any(|j| keep[j] && kls[j] <= kls[i]));
            }
        }
    }
}
