//! The output layouts, as one list: what `--format` accepts on every command that writes a
//! model, what each layout can hold (checked before any calibration), and its writer.
//!
//! Adding a layout: a variant in [`Format`] (with its name and description in `ALL`), its
//! capability in [`Format::refuses`], and its writer in [`Format::write`].

use crate::{compressed_tensors, crunch_dir, gptq_layout, sparse24};
use crate::{Error, Layers, QuantizedLayers, Refusal, Result, Target};
use crunch_model::Checkpoint;
use crunch_repr::format::Recipe;
use crunch_repr::{Compressed, GroupFit, Planned, Produces, Sparsity};

/// A layout crunch writes a compressed model in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// crunch's own (every kind of compressed layer; loads with `crunch eval` and `crunch info`).
    Crunch,
    /// compressed-tensors pack-quantized (transformers, vLLM).
    CompressedTensors,
    /// GPTQ v1: qweight/qzeros/scales/g_idx (AutoGPTQ, GPTQModel, vLLM).
    Gptq,
    /// GPTQ v2 (GPTQModel): zero points stored as they are.
    GptqV2,
    /// compressed-tensors sparse-24-bitmask: unquantized 2:4-pruned layers (transformers).
    Sparse24Bitmask,
    /// One GGUF file for llama.cpp: every tensor's type from a llama-quantize preset, encoded
    /// as the file is written ([`crate::gguf`]); a recipe with no stages and a `[gguf]` table.
    Gguf,
}

impl Format {
    /// Every layout: (format, name on the command line and in recipes, what it is).
    pub const ALL: [(Format, &'static str, &'static str); 6] = [
        (
            Format::Crunch,
            "crunch",
            "crunch's own: every kind of compressed layer; loads with `crunch eval`/`crunch info`",
        ),
        (
            Format::CompressedTensors,
            "compressed-tensors",
            "compressed-tensors pack-quantized (transformers, vLLM): quantized layers",
        ),
        (
            Format::Gptq,
            "gptq",
            "GPTQ v1, qweight/qzeros/scales/g_idx (AutoGPTQ, GPTQModel, vLLM): one grid for all \
             quantized layers",
        ),
        (
            Format::GptqV2,
            "gptq-v2",
            "GPTQ v2 (GPTQModel): as gptq, zero points stored as they are (0 allowed)",
        ),
        (
            Format::Sparse24Bitmask,
            "sparse-24-bitmask",
            "compressed-tensors sparse-24-bitmask (transformers): unquantized 2:4-pruned layers",
        ),
        (
            Format::Gguf,
            "gguf",
            "one GGUF file for llama.cpp (--out FILE.gguf): per-tensor types from --mix, \
             importance-weighted k-quant encoders (crunch quantize only)",
        ),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(f, _, _)| *f == self)
            .expect("every format is listed")
            .1
    }

    /// The format called `name`, if any.
    pub fn from_name(name: &str) -> Option<Format> {
        Self::ALL.iter().find(|(_, n, _)| *n == name).map(|f| f.0)
    }

    /// Why this layout cannot hold `what` for a `rows`×`cols` layer, if it cannot.
    pub fn refuses(self, what: Produces, (rows, cols): (usize, usize)) -> Option<Refusal> {
        // compressed-tensors and the GPTQ layout hold whole groups only.
        let quantized_only = |what| match what {
            Produces::Quantized(spec) if !crunch_repr::EXPORT_BITS.contains(&spec.bits) => {
                Some(Refusal::Bits(spec.bits))
            }
            Produces::Quantized(spec) => spec
                .check_layer(cols, GroupFit::Exact)
                .err()
                .map(Refusal::Grid),
            Produces::Pruned { .. } => Some(Refusal::NotQuantized("pruned")),
            Produces::Lut(_) => Some(Refusal::Codebook),
            Produces::Factored => Some(Refusal::NotQuantized("factored")),
            Produces::Correction => Some(Refusal::Correction),
        };
        match self {
            Format::Crunch => None,
            Format::CompressedTensors => quantized_only(what),
            Format::Gptq | Format::GptqV2 => quantized_only(what).or_else(|| {
                (rows % 32 != 0 || cols % 32 != 0).then_some(Refusal::DimsNot32 { rows, cols })
            }),
            Format::Sparse24Bitmask => match what {
                Produces::Pruned {
                    sparsity: Sparsity::NM { n: 2, m: 4 },
                    quant: None,
                } => None,
                Produces::Pruned { quant: Some(_), .. } => Some(Refusal::PrunedAndQuantized),
                Produces::Pruned { sparsity, .. } => Some(Refusal::NotTwoFour(sparsity)),
                Produces::Correction => Some(Refusal::Correction),
                _ => Some(Refusal::NotPruned),
            },
            // The GGUF writer quantizes from the source itself; compressed layers are not
            // its input (yet: GPTQ onto the k-quant grids will hand in encoded tensors).
            Format::Gguf => Some(Refusal::GgufFromSource),
        }
    }

    /// Checks, before anything is computed, that this layout can hold every planned layer of
    /// `ckpt`, and the model itself.
    pub fn check(self, ckpt: &Checkpoint, planned: &[Planned]) -> Result<()> {
        self.check_layers(planned)?;
        if self != Format::Crunch {
            compressed_tensors::refuse_rope_freqs(ckpt)?;
        }
        if self == Format::CompressedTensors {
            let specs = planned
                .iter()
                .filter_map(|p| match p.produces {
                    Produces::Quantized(s) => Some((p.layer.clone(), s)),
                    _ => None,
                })
                .collect();
            compressed_tensors::check_moe_layout(ckpt, &specs)?;
        }
        Ok(())
    }

    /// [`Format::check`] of the planned layers alone.
    pub fn check_layers(self, planned: &[Planned]) -> Result<()> {
        for p in planned {
            if let Some(why) = self.refuses(p.produces, p.shape) {
                return Err(self.refused(&p.layer, why));
            }
        }
        if matches!(self, Format::Gptq | Format::GptqV2) {
            let mut specs = planned.iter().filter_map(|p| match p.produces {
                Produces::Quantized(s) => Some((&p.layer, s)),
                _ => None,
            });
            if let Some((_, first)) = specs.next() {
                if let Some((layer, _)) = specs.find(|(_, s)| *s != first) {
                    return Err(self.refused(layer, Refusal::MixedSpecs));
                }
            }
        }
        Ok(())
    }

    fn refused(self, layer: &str, why: Refusal) -> Error {
        Error::Refused {
            layer: layer.into(),
            format: self.name(),
            why,
        }
    }

    /// Writes `ckpt` with `layers` replaced by their compressed form to `to` in this layout,
    /// with `recipe` (crunch.json, or its copy) beside.
    pub fn write(
        self,
        ckpt: &Checkpoint,
        layers: &Layers,
        recipe: &Recipe,
        to: &Target,
    ) -> Result<()> {
        let quantized = || self.quantized(layers);
        match self {
            Format::Crunch => crunch_dir::write(ckpt, layers, recipe, to),
            Format::CompressedTensors => compressed_tensors::write(ckpt, &quantized()?, recipe, to),
            Format::Gptq | Format::GptqV2 => {
                let v = match self {
                    Format::Gptq => gptq_layout::CheckpointFormat::V1,
                    _ => gptq_layout::CheckpointFormat::V2,
                };
                gptq_layout::write(ckpt, &quantized()?, recipe, to, v)
            }
            Format::Sparse24Bitmask => sparse24::write(ckpt, layers, recipe, to),
            Format::Gguf => Err(self.refused("model", Refusal::GgufFromSource)),
        }
    }

    /// The quantized weight of every layer, for the layouts that hold nothing else.
    fn quantized(self, layers: &Layers) -> Result<QuantizedLayers> {
        layers
            .iter()
            .map(|(name, l)| {
                let what = l.main.produces();
                match (&l.main, &l.correction) {
                    (Compressed::Quantized(q), None) => Ok((name.clone(), q.clone())),
                    (_, Some(_)) => Err(self.refused(name, Refusal::Correction)),
                    _ => Err(self.refused(
                        name,
                        self.refuses(what, l.shape()).unwrap_or(Refusal::NotPruned),
                    )),
                }
            })
            .collect()
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Format::from_name(s).ok_or_else(|| {
            let names: Vec<&str> = Format::ALL.iter().map(|f| f.1).collect();
            format!("unknown format `{s}` (one of {})", names.join(", "))
        })
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crunch_repr::QuantSpec;

    #[test]
    fn names_round_trip_and_capabilities_are_stated() {
        for (f, name, _) in Format::ALL {
            assert_eq!(name.parse::<Format>(), Ok(f));
            assert_eq!(f.name(), name);
        }
        assert!("ggml"
            .parse::<Format>()
            .unwrap_err()
            .contains("sparse-24-bitmask"));
        let q4 = Produces::Quantized(QuantSpec::new(4, Some(128), false));
        let two_four = Produces::Pruned {
            sparsity: Sparsity::NM { n: 2, m: 4 },
            quant: None,
        };
        let shape = (64, 128);
        for (f, _, _) in Format::ALL {
            assert_eq!(
                f.refuses(q4, shape).is_none(),
                !matches!(f, Format::Sparse24Bitmask | Format::Gguf)
            );
            assert_eq!(
                f.refuses(two_four, shape).is_none(),
                matches!(f, Format::Crunch | Format::Sparse24Bitmask)
            );
            assert_eq!(
                f.refuses(Produces::Factored, shape).is_none(),
                f == Format::Crunch
            );
        }
        assert!(matches!(
            Format::Gptq.refuses(q4, (48, 128)),
            Some(Refusal::DimsNot32 { .. })
        ));
        // Whole groups only in the Hugging Face layouts; crunch's format keeps a shorter one.
        let ragged = Produces::Quantized(QuantSpec::new(4, Some(48), false));
        assert!(matches!(
            Format::CompressedTensors.refuses(ragged, (64, 64)),
            Some(Refusal::Grid(_))
        ));
        assert!(Format::Crunch.refuses(ragged, (64, 64)).is_none());
        let q3 = Produces::Quantized(QuantSpec::new(3, Some(128), false));
        let plan = |layer: &str, produces| Planned {
            layer: layer.into(),
            shape,
            produces,
        };
        let planned = vec![plan("a", q4), plan("b", q3)];
        assert!(Format::CompressedTensors.check_layers(&planned).is_ok());
        let e = Format::Gptq.check_layers(&planned).unwrap_err().to_string();
        assert!(
            e.contains("b: gptq cannot store it") && e.contains("one bit width"),
            "{e}"
        );
    }
}
