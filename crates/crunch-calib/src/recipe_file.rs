//! Recipes as TOML: what `crunch compress --recipe FILE` reads and what every crunch output
//! carries as `recipe.toml`, so a result can be reproduced by handing its recipe back.
//!
//! ```toml
//! skip = ["model.layers.0.*"]           # optional
//! format = "crunch"                    # optional: the output layout (`--format` overrides it)
//!
//! [calibration]                        # needed when a stage looks at data
//! data = "wiki.train.txt"              # or "self:128x512"
//! samples = 128
//! len = 512
//! seed = 0
//!
//! [[stage]]
//! method = "whitened-svd"
//! layers = ["*mlp*"]                   # optional; default every block linear layer
//! keep = 0.8
//!
//! [[stage]]
//! method = "gptq"                      # layers not factored above
//! layers = ["*self_attn*"]
//! bits = 4
//! group_size = 128                     # 0 = one group per output channel
//!
//! [[stage]]
//! method = "eora"
//! rank = 16
//!
//! [moe]                                # optional, mixture-of-experts models
//! expert_min_tokens = 64               # fewer routed calibration tokens: every token instead
//! routers = false                      # compress the routers too (default: left as they are)
//! ```
//!
//! Each stage's keys are its method's struct (`stages/`); keys a method does not read, and keys
//! outside their table, are refused.
//!
//! A GGUF export (`format = "gguf"`) has no stages: every tensor's type comes from a
//! llama-quantize preset, and crunch's importance-weighted encoders quantize it as the file is
//! written:
//!
//! ```toml
//! format = "gguf"
//! [calibration]                        # the text the importance E[x²] is collected on
//! data = "wiki.train.txt"
//! [gguf]
//! mix = "Q4_K_M"
//! tensor_types = ["ffn_down=Q6_K"]     # optional overrides, first match wins
//! importance = true                    # weight rounding errors by E[x²] (needs calibration)
//! # imatrix = "imatrix.gguf"           # or llama.cpp's importance file instead
//! ```

use crate::stages::Method;
use serde::ser::{Error as _, SerializeMap};
use serde::{Deserialize, Serialize, Serializer};

/// A recipe: the layers left alone, the calibration data, the output layout and the stages.
/// Read with [`RecipeFile::parse`], written with [`RecipeFile::to_toml`] (which leaves absent
/// options out).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RecipeFile {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip: Vec<String>,
    /// The output layout (`crunch`, `compressed-tensors`, ...; `crunch_export::Format`), when
    /// not crunch's own.
    pub format: Option<String>,
    /// How crunch's format stores the token embedding and an untied LM head
    /// (`crunch_export::crunch_dir::Embeddings`: keep, f16, q8_0, q6_k, ...); absent: keep.
    pub embeddings: Option<String>,
    pub calibration: Option<CalibrationSpec>,
    /// The GGUF export's type mix and importance (with `format = "gguf"`).
    pub gguf: Option<GgufSpec>,
    #[serde(rename = "stage", default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<Stage>,
    /// Mixture-of-experts settings (`[moe]`); absent: the defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moe: Option<MoeSpec>,
}

/// How mixture-of-experts models are calibrated and which of their layers are compressed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoeSpec {
    /// An expert the router sends fewer calibration tokens than this is calibrated on every
    /// calibration token run through it.
    #[serde(default = "default_expert_min_tokens")]
    pub expert_min_tokens: usize,
    /// Compress the routers too (by default they stay as they are).
    #[serde(default)]
    pub routers: bool,
}

fn default_expert_min_tokens() -> usize {
    crate::sequential::DEFAULT_EXPERT_MIN_TOKENS
}

impl Default for MoeSpec {
    fn default() -> Self {
        Self {
            expert_min_tokens: default_expert_min_tokens(),
            routers: false,
        }
    }
}

/// How a GGUF export chooses and encodes each tensor's type.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GgufSpec {
    /// llama-quantize's preset (`Q4_K_M`, ...).
    pub mix: String,
    /// `PATTERN=TYPE` overrides of the preset's choice, by llama.cpp tensor name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tensor_types: Vec<String>,
    /// Weight rounding errors by each input column's E[x²] over the calibration data.
    pub importance: bool,
    /// llama.cpp's importance file (`llama-imatrix -o`), used instead of calibration.
    pub imatrix: Option<String>,
    /// `rtn` (importance-weighted rounding, the default) or `gptq` (error compensation onto
    /// the same grids, calibrated block by block; needs calibration data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// GPTQ's dampening (fraction of the mean Hessian diagonal) [default: 0.01].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damp: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationSpec {
    /// A text file, or `self:NxL`.
    pub data: String,
    pub samples: Option<usize>,
    pub len: Option<usize>,
    #[serde(default)]
    pub seed: u64,
}

/// One stage: a method and the layers it applies to.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    pub method: Method,
    /// Patterns of layer names (`*` wildcards, else substrings); empty = every block linear.
    pub layers: Vec<String>,
}

/// Why a recipe cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("{0}")]
    Toml(#[source] Box<toml::de::Error>),
    #[error("stage {index} ({method}): {source}")]
    StageKeys {
        index: usize,
        method: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("stage {index} ({method}): {why}")]
    StageValue {
        index: usize,
        method: String,
        why: String,
    },
}

/// The raw file: stages stay tables until each is read on its own, so an error names its stage.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    #[serde(default)]
    skip: Vec<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    embeddings: Option<String>,
    #[serde(default)]
    calibration: Option<CalibrationSpec>,
    #[serde(default)]
    gguf: Option<GgufSpec>,
    #[serde(rename = "stage", default)]
    stages: Vec<toml::Table>,
    #[serde(default)]
    moe: Option<MoeSpec>,
}

impl RecipeFile {
    /// Reads a recipe and checks every stage's keys and values.
    pub fn parse(text: &str) -> Result<Self, RecipeError> {
        let raw: RawRecipe = toml::from_str(text).map_err(|e| RecipeError::Toml(Box::new(e)))?;
        let stages = raw
            .stages
            .into_iter()
            .enumerate()
            .map(|(i, table)| Stage::from_table(table, i + 1))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            skip: raw.skip,
            format: raw.format,
            embeddings: raw.embeddings,
            calibration: raw.calibration,
            gguf: raw.gguf,
            stages,
            moe: raw.moe,
        })
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a recipe serializes")
    }

    /// Whether any stage looks at calibration data.
    pub fn needs_calibration(&self) -> bool {
        self.stages.iter().any(|s| s.method.needs_calibration())
    }

    /// The `[moe]` settings, defaults filled in.
    pub fn moe(&self) -> MoeSpec {
        self.moe.clone().unwrap_or_default()
    }
}

impl Stage {
    /// A stage from its TOML table (`method`, optional `layers`, the method's keys); `index`
    /// (from 1) names it in errors.
    pub fn from_table(mut table: toml::Table, index: usize) -> Result<Self, RecipeError> {
        let method_name = match table.get("method") {
            Some(toml::Value::String(s)) => s.clone(),
            _ => "?".into(),
        };
        let keys = |source| RecipeError::StageKeys {
            index,
            method: method_name.clone(),
            source: Box::new(source),
        };
        let layers = match table.remove("layers") {
            None => Vec::new(),
            Some(v) => Vec::<String>::deserialize(v).map_err(keys)?,
        };
        let method = Method::deserialize(toml::Value::Table(table)).map_err(keys)?;
        method
            .stage()
            .validate()
            .map_err(|why| RecipeError::StageValue {
                index,
                method: method_name.clone(),
                why,
            })?;
        Ok(Stage { method, layers })
    }

    /// The stage on one line, as `crunch.json` lists it (`method = "gptq", bits = 4, ...`).
    pub fn describe(&self) -> String {
        toml::to_string(self)
            .expect("a stage serializes")
            .trim()
            .replace('\n', ", ")
    }

    pub fn matches(&self, name: &str) -> bool {
        self.layers.is_empty() || self.layers.iter().any(|p| pattern_matches(p, name))
    }
}

/// Written as a flat table: `method` first, then `layers`, then the method's keys.
impl Serialize for Stage {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut keys = toml::Table::try_from(&self.method).map_err(S::Error::custom)?;
        let method = keys.remove("method");
        let mut map = ser.serialize_map(None)?;
        map.serialize_entry("method", &method)?;
        if !self.layers.is_empty() {
            map.serialize_entry("layers", &self.layers)?;
        }
        for (k, v) in &keys {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// A layer pattern: with `*` wildcards it must match the whole name, else it is a substring.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    if pattern.contains('*') {
        wildcard_match(pattern.as_bytes(), name.as_bytes())
    } else {
        name.contains(pattern)
    }
}

fn wildcard_match(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| wildcard_match(rest, &s[i..])),
        Some((c, rest)) => s.first() == Some(c) && wildcard_match(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::{Gptq, Rtn, WhitenedSvd};

    const EXAMPLE: &str = r#"
skip = ["model.layers.0.*"]
[calibration]
data = "self:8x32"
seed = 3
[[stage]]
method = "whitened-svd"
layers = ["*mlp*"]
keep = 0.8
[[stage]]
method = "gptq"
layers = ["*self_attn*"]
bits = 4
group_size = 64
[[stage]]
method = "eora"
rank = 16
[moe]
expert_min_tokens = 10
"#;

    #[test]
    fn parses_and_round_trips() {
        let r = RecipeFile::parse(EXAMPLE).unwrap();
        assert_eq!(r.stages.len(), 3);
        assert_eq!(
            r.stages[0].method,
            Method::WhitenedSvd(WhitenedSvd { keep: 0.8 })
        );
        assert!(r.stages[1].matches("model.layers.3.self_attn.q_proj"));
        assert!(!r.stages[1].matches("model.layers.3.mlp.up_proj"));
        assert_eq!(
            r.moe(),
            MoeSpec {
                expert_min_tokens: 10,
                routers: false
            }
        );
        // Defaults are written out, so the file says everything the run used.
        let Method::Gptq(g) = &r.stages[1].method else {
            panic!()
        };
        assert_eq!(
            (g.act_order, g.mse_clip, g.damp, g.symmetric),
            (true, true, 0.01, false)
        );
        let text = r.to_toml();
        assert!(
            text.contains("act_order = true")
                && text.contains("mse_clip = true")
                && text.contains("damp = 0.01"),
            "{text}"
        );
        assert_eq!(RecipeFile::parse(&text).unwrap(), r);
        assert_eq!(RecipeFile::parse(&text).unwrap().to_toml(), text);
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        let cases = [
            (
                "[[stage]]\nmethod = \"gptq\"\n",
                "stage 1 (gptq): missing field `bits`",
            ),
            ("[[stage]]\nmethod = \"gptq\"\nbits = 9\n", "bits 9"),
            (
                "[[stage]]\nmethod = \"wanda\"\nsparsity = \"3:2\"\n",
                "stage 1 (wanda)",
            ),
            ("[[stage]]\nmethod = \"svd\"\nkeep = 1.5\n", "keep 1.5"),
            (
                "[[stage]]\nmethod = \"eora\"\nrank = 0\n",
                "rank must be at least 1",
            ),
            (
                "[[stage]]\nmethod = \"sparsegpt\"\nsparsity = \"0.5\"\ngroup_size = 64\n",
                "need `bits`",
            ),
            (
                "[[stage]]\nmethod = \"prune\"\n",
                "unknown variant `prune`, expected one of `rtn`, `gptq`",
            ),
            ("[[stage]]\nbits = 4\n", "missing field `method`"),
        ];
        for (text, want) in cases {
            let err = RecipeFile::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn unknown_and_misplaced_keys_are_refused() {
        let cases = [
            // A typo.
            (
                "[[stage]]\nmethod = \"gptq\"\nbitz = 4\n",
                "unknown field `bitz`",
            ),
            // Keys of another method: rtn has no Hessian, so no act-order and no dampening.
            (
                "[[stage]]\nmethod = \"rtn\"\nbits = 4\nact_order = true\n",
                "stage 1 (rtn): unknown field `act_order`",
            ),
            (
                "[[stage]]\nmethod = \"rtn\"\nbits = 4\ndamp = 0.1\n",
                "unknown field `damp`",
            ),
            (
                "[[stage]]\nmethod = \"eora\"\nrank = 4\nbits = 4\n",
                "unknown field `bits`",
            ),
            (
                "[[stage]]\nmethod = \"magnitude\"\nsparsity = \"0.5\"\nkeep = 0.5\n",
                "unknown field `keep`",
            ),
            // Keys outside their table.
            (
                "[[stage]]\nmethod = \"rtn\"\nbits = 4\nseed = 1\n",
                "unknown field `seed`",
            ),
            (
                "bits = 4\n[[stage]]\nmethod = \"rtn\"\nbits = 4\n",
                "unknown field `bits`",
            ),
            (
                "[calibration]\ndata = \"x\"\nkeep = 0.5\n",
                "unknown field `keep`",
            ),
            (
                "[[stages]]\nmethod = \"rtn\"\nbits = 4\n",
                "unknown field `stages`",
            ),
        ];
        for (text, want) in cases {
            let err = RecipeFile::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        // The same keys where they belong are accepted.
        let ok = "[[stage]]\nmethod = \"gptq\"\nbits = 4\nact_order = true\ndamp = 0.1\n";
        let r = RecipeFile::parse(ok).unwrap();
        assert!(matches!(
            &r.stages[0].method,
            Method::Gptq(Gptq {
                act_order: true,
                ..
            })
        ));
        let rtn = RecipeFile::parse("[[stage]]\nmethod = \"rtn\"\nbits = 3\n").unwrap();
        assert_eq!(
            rtn.stages[0].method,
            Method::Rtn(Rtn {
                bits: 3,
                group_size: 128,
                symmetric: false,
                mse_clip: false
            })
        );
    }

    #[test]
    fn damp_reaches_gptq_as_the_f32_the_flag_gave_before() {
        // `damp` is read as f64 (so that recipes print it as written) and narrowed once.
        for d in ["0.01", "0.1", "0.05", "0.001", "0.25"] {
            let r = RecipeFile::parse(&format!(
                "[[stage]]\nmethod = \"gptq\"\nbits = 4\ndamp = {d}\n"
            ))
            .unwrap();
            let Method::Gptq(g) = &r.stages[0].method else {
                panic!()
            };
            assert_eq!(g.options().damp, d.parse::<f32>().unwrap(), "{d}");
        }
    }

    #[test]
    fn gguf_table_round_trips_and_refuses_unknown_keys() {
        let text = "format = \"gguf\"\n\n[calibration]\ndata = \"c.txt\"\nsamples = 4\nlen = 32\n\
                    seed = 0\n\n[gguf]\nmix = \"Q4_K_M\"\ntensor_types = [\"ffn_down=Q6_K\"]\n\
                    importance = true\n";
        let r = RecipeFile::parse(text).unwrap();
        let g = r.gguf.as_ref().unwrap();
        assert_eq!((g.mix.as_str(), g.importance), ("Q4_K_M", true));
        assert_eq!(g.tensor_types, ["ffn_down=Q6_K"]);
        assert!(r.stages.is_empty());
        assert_eq!(r.to_toml(), text);
        assert_eq!(RecipeFile::parse(&r.to_toml()).unwrap(), r);
        let bad = "[gguf]\nmix = \"Q4_K_M\"\nimportance = true\nbits = 4\n";
        let e = RecipeFile::parse(bad).unwrap_err().to_string();
        assert!(e.contains("unknown field `bits`"), "{e}");
    }

    #[test]
    fn skip_patterns() {
        assert!(pattern_matches("down_proj", "model.layers.3.mlp.down_proj"));
        assert!(pattern_matches(
            "model.layers.1.*q_proj",
            "model.layers.1.self_attn.q_proj"
        ));
        assert!(!pattern_matches(
            "model.layers.1.*q_proj",
            "model.layers.11.self_attn.q_proj"
        ));
        assert!(!pattern_matches(
            "model.layers.1.*q_proj",
            "model.layers.1.self_attn.k_proj"
        ));
    }
}
