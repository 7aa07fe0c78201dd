//! Recipe stages: one typed struct per method (`quant.rs`, `prune.rs`, `lowrank.rs`), each with
//! exactly the keys its method reads, and the one list of methods below.
//!
//! A stage's TOML table is `method = "name"`, optionally `layers = [patterns]`, and the
//! method's own keys; any other key is refused (`deny_unknown_fields`), so a typo or a key of
//! another method cannot silently do less. Adding a method: its algorithm in `crunch-compress`,
//! its stage struct (implementing [`StageMethod`]) in the file of its family here, and one line
//! in [`methods!`] below.

mod lowrank;
mod prune;
mod quant;

pub use lowrank::{Eora, Factor};
pub use prune::{ScorePruning, SparseGpt};
pub use quant::{Gptq, Lut, Rtn};

use crunch_compress::{CompressError, DenseLinAlg, GptqOptions, Hessian, RankChoice};
use crunch_repr::format::LayerRecipe;
use crunch_repr::{Compressed, GroupFit, Produces, QuantSpec, Sparsity};
use serde::{Deserialize, Serialize};

/// What a method does to a layer, which decides the command that offers it and how it combines
/// with other stages: a layer takes one main compression (quantize, prune or factor) and at most
/// one correction on top.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Quantize,
    Prune,
    LowRank,
    /// Fitted to what the layer's main compression lost, added on top of it (EoRA).
    Correction,
}

/// Work a GPU can do for a stage, when the layer is there (`crate::device_gptq`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum OnGpu {
    Gptq(QuantSpec, GptqOptions),
    SparseGpt(
        Sparsity,
        Option<QuantSpec>,
        crunch_compress::SparseGptOptions,
    ),
}

/// One linear layer, as a stage's method sees it.
pub struct LayerInput<'a> {
    /// Hugging Face layer name, e.g. `model.layers.3.mlp.up_proj`.
    pub name: &'a str,
    /// `[rows, cols]`, row-major f32.
    pub weight: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    /// The Hessian of the layer's calibration inputs, for stages that need calibration.
    pub hessian: Option<&'a Hessian>,
    /// Where the dense decompositions of low-rank methods run.
    pub la: &'a dyn DenseLinAlg,
    /// The rank a low-rank stage's budget gave this layer.
    pub rank: Option<RankChoice>,
    /// For a correction: the dense weight of the layer's main compression.
    pub base: Option<&'a [f32]>,
}

impl LayerInput<'_> {
    /// The Hessian; an error for a method not listed as needing data.
    pub fn hessian(&self) -> Result<&Hessian, CompressError> {
        self.hessian.ok_or(CompressError::EmptyHessian)
    }
}

/// What every stage struct implements (whether it reads calibration data is in the list,
/// [`methods!`]).
pub(crate) trait StageMethod {
    /// What it stores per layer (what an output format checks before anything runs).
    fn produces(&self) -> Produces;
    /// Values serde cannot check (bit widths, ranges, keys that need each other).
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    /// Checks the stage against one layer's shape before anything runs: the grid and the
    /// sparsity pattern it [`produces`](StageMethod::produces) must fit the layer's columns
    /// (`QuantSpec::check_layer`: a group size that does not divide them is kept, with a
    /// shorter last group, and described in the returned note; an output layout that cannot
    /// store that refuses it itself).
    fn check_shape(&self, _rows: usize, cols: usize) -> Result<Option<String>, CompressError> {
        let quant = match self.produces() {
            Produces::Quantized(spec) => Some(spec),
            Produces::Pruned { sparsity, quant } => {
                sparsity.validate(cols)?;
                quant
            }
            Produces::Lut(spec) => {
                spec.validate(cols)?;
                None
            }
            Produces::Factored | Produces::Correction => None,
        };
        match quant {
            Some(spec) => Ok(spec.check_layer(cols, GroupFit::ShortLastGroup)?),
            None => Ok(None),
        }
    }
    /// Compresses one layer: `None` leaves it as it is (a low-rank budget that keeps it dense).
    /// A correction returns its factors as [`Compressed::Factored`].
    fn compress(&self, layer: &LayerInput) -> Result<Option<Compressed>, CompressError>;
    /// The method's settings that `crunch.json` records beside the stored layer.
    fn annotate(&self, _entry: &mut LayerRecipe) {}
    /// The GPU version of the method, if it has one.
    fn on_gpu(&self) -> Option<OnGpu> {
        None
    }
    /// Low-rank stages: the fraction of the matched layers' parameters kept, which one global
    /// budget turns into a rank per layer from every layer's spectrum.
    fn budget(&self) -> Option<f64> {
        None
    }
    /// Low-rank stages: the singular values the budget ranks this layer by.
    fn spectrum(&self, _layer: &LayerInput) -> Result<Vec<f64>, CompressError> {
        Ok(Vec::new())
    }
}

/// Declares the method list: the tagged [`Method`] enum, [`METHODS`], and the dispatch.
macro_rules! methods {
    ($($name:literal => $variant:ident($ty:ty), $family:ident, data: $data:literal;)*) => {
        /// A stage's method and its settings, tagged by `method` in a recipe.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "method")]
        pub enum Method {
            $(#[serde(rename = $name)] $variant($ty),)*
        }

        /// Every method, by name, with its family and whether it needs calibration data: the
        /// one list the recipe parser, the CLI's `--method` values and the error messages read.
        pub const METHODS: &[(&str, Family, bool)] = &[$(($name, Family::$family, $data),)*];

        impl Method {
            pub fn name(&self) -> &'static str {
                match self {
                    $(Method::$variant(_) => $name,)*
                }
            }

            pub fn family(&self) -> Family {
                match self {
                    $(Method::$variant(_) => Family::$family,)*
                }
            }

            /// Whether the method reads the calibration Hessian of each layer (so a recipe
            /// with it needs calibration data).
            pub fn needs_calibration(&self) -> bool {
                match self {
                    $(Method::$variant(_) => $data,)*
                }
            }

            pub(crate) fn stage(&self) -> &dyn StageMethod {
                match self {
                    $(Method::$variant(m) => m,)*
                }
            }
        }
    };
}

methods! {
    "rtn" => Rtn(Rtn), Quantize, data: false;
    "gptq" => Gptq(Gptq), Quantize, data: true;
    "lut" => Lut(Lut), Quantize, data: true;
    "magnitude" => Magnitude(Magnitude), Prune, data: false;
    "wanda" => Wanda(Wanda), Prune, data: true;
    "sparsegpt" => SparseGpt(SparseGpt), Prune, data: true;
    "svd" => Svd(Svd), LowRank, data: false;
    "whitened-svd" => WhitenedSvd(WhitenedSvd), LowRank, data: true;
    "eora" => Eora(Eora), Correction, data: true;
}

/// `magnitude` and `wanda` share their keys and their way of pruning (by a score, without
/// updating the kept weights); `svd` and `whitened-svd` share theirs.
pub type Magnitude = ScorePruning<false>;
pub type Wanda = ScorePruning<true>;
pub type Svd = Factor<false>;
pub type WhitenedSvd = Factor<true>;

impl Method {
    pub fn produces(&self) -> Produces {
        self.stage().produces()
    }

    /// The names of the methods of one family, for help texts and errors.
    pub fn names(family: Family) -> Vec<&'static str> {
        METHODS
            .iter()
            .filter(|(_, f, _)| *f == family)
            .map(|(n, _, _)| *n)
            .collect()
    }
}

/// The default of `group_size` in every stage that quantizes.
pub(crate) fn default_group_size() -> usize {
    128
}

/// The default dampening of GPTQ and SparseGPT, a fraction of the mean Hessian diagonal.
pub(crate) fn default_damp() -> f64 {
    0.01
}

/// A recipe's `group_size` (0 = one group per output row) as a spec's group.
pub(crate) fn group(group_size: usize) -> Option<usize> {
    (group_size != 0).then_some(group_size)
}

/// Checks a bit width and a dampening as every quantizing stage reads them.
pub(crate) fn check_bits_and_damp(bits: Option<u8>, damp: Option<f64>) -> Result<(), String> {
    if let Some(bits) = bits.filter(|b| !crunch_repr::SUPPORTED_BITS.contains(b)) {
        return Err(format!(
            "bits {bits} is not one of {:?}",
            crunch_repr::SUPPORTED_BITS
        ));
    }
    if let Some(d) = damp.filter(|d| !(d.is_finite() && *d >= 0.0)) {
        return Err(format!("damp {d} must be finite and ≥ 0"));
    }
    Ok(())
}

/// Sparsity patterns as recipes write them: "0.5" (fraction pruned), "50%", "2:4".
pub(crate) mod sparsity_str {
    use crunch_repr::Sparsity;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(s: &Sparsity, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Sparsity, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
