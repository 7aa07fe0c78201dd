//! Per-tensor type choice: llama-quantize's presets ("file types" such as Q4_K_M) as crunch's
//! own table of rules, plus per-tensor overrides.
//!
//! The behaviour is llama.cpp's (`llama_tensor_get_type` in src/llama-quant.cpp, read for
//! understanding; decision 083 records the reading), restricted to the dense architectures
//! crunch runs (no experts, no Falcon, no fused QKV):
//!
//! 1. Tensors that are not 2-D `*.weight` matrices (norms, biases, `rope_freqs`) keep their
//!    type.
//! 2. An override pattern that matches the tensor's name sets its type.
//! 3. Otherwise the preset's default type, changed by the first matching rule of the table
//!    below for the tensor's category. The output matrix (and the token embedding when it is
//!    tied to it) becomes Q6_K, or Q8_0 when its rows are not a whole number of the default
//!    type's blocks.
//! 4. A type whose blocks do not divide the tensor's rows falls back (Q2_K, Q3_K → Q4_0;
//!    Q4_K → Q5_0; Q5_K → Q5_1; Q6_K → Q8_0; IQ4_XS → IQ4_NL), and to F16 if even that does
//!    not fit.
//!
//! Layer-dependent rules count the tensors of a category in llama.cpp's processing order
//! (by block number): `i` is this tensor's index among them, `n` their number.

use crunch_formats::DType;
use std::fmt;

/// One of llama-quantize's file types.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preset {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    IQ4_NL,
    IQ4_XS,
}

/// Every preset, with llama.cpp's `LLAMA_FTYPE_*` number (written as `general.file_type`).
const PRESETS: [(Preset, &str, u32); 19] = [
    (Preset::F32, "F32", 0),
    (Preset::F16, "F16", 1),
    (Preset::BF16, "BF16", 32),
    (Preset::Q4_0, "Q4_0", 2),
    (Preset::Q4_1, "Q4_1", 3),
    (Preset::Q5_0, "Q5_0", 8),
    (Preset::Q5_1, "Q5_1", 9),
    (Preset::Q8_0, "Q8_0", 7),
    (Preset::Q2_K, "Q2_K", 10),
    (Preset::Q3_K_S, "Q3_K_S", 11),
    (Preset::Q3_K_M, "Q3_K_M", 12),
    (Preset::Q3_K_L, "Q3_K_L", 13),
    (Preset::Q4_K_S, "Q4_K_S", 14),
    (Preset::Q4_K_M, "Q4_K_M", 15),
    (Preset::Q5_K_S, "Q5_K_S", 16),
    (Preset::Q5_K_M, "Q5_K_M", 17),
    (Preset::Q6_K, "Q6_K", 18),
    (Preset::IQ4_NL, "IQ4_NL", 25),
    (Preset::IQ4_XS, "IQ4_XS", 30),
];

impl Preset {
    pub fn all() -> impl Iterator<Item = Preset> {
        PRESETS.iter().map(|p| p.0)
    }

    /// The preset called `name` (case-insensitive, as llama-quantize spells them).
    pub fn parse(name: &str) -> Option<Self> {
        PRESETS
            .iter()
            .find(|p| p.1.eq_ignore_ascii_case(name))
            .map(|p| p.0)
    }

    pub fn name(self) -> &'static str {
        PRESETS.iter().find(|p| p.0 == self).expect("listed").1
    }

    /// llama.cpp's `LLAMA_FTYPE_*` value.
    pub fn file_type(self) -> u32 {
        PRESETS.iter().find(|p| p.0 == self).expect("listed").2
    }

    /// The type most tensors get.
    pub fn default_type(self) -> DType {
        use Preset::*;
        match self {
            F32 => DType::F32,
            F16 => DType::F16,
            BF16 => DType::BF16,
            Q4_0 => DType::Q4_0,
            Q4_1 => DType::Q4_1,
            Q5_0 => DType::Q5_0,
            Q5_1 => DType::Q5_1,
            Q8_0 => DType::Q8_0,
            Q2_K => DType::Q2K,
            Q3_K_S | Q3_K_M | Q3_K_L => DType::Q3K,
            Q4_K_S | Q4_K_M => DType::Q4K,
            Q5_K_S | Q5_K_M => DType::Q5K,
            Q6_K => DType::Q6K,
            IQ4_NL => DType::IQ4NL,
            IQ4_XS => DType::IQ4XS,
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a tensor is, for the rules (llama.cpp's `tensor_category`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    Output,
    TokenEmbd,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnDown,
    FfnGate,
    FfnUp,
    Other,
}

impl Category {
    /// The category of a llama.cpp tensor name.
    pub fn of(name: &str) -> Self {
        match name {
            "output.weight" => Category::Output,
            "token_embd.weight" => Category::TokenEmbd,
            n if n.contains("attn_v.weight") => Category::AttnV,
            n if n.contains("attn_k.weight") => Category::AttnK,
            n if n.contains("attn_q.weight") => Category::AttnQ,
            n if n.contains("attn_output.weight") => Category::AttnOutput,
            n if n.contains("ffn_up") => Category::FfnUp,
            n if n.contains("ffn_gate") => Category::FfnGate,
            n if n.contains("ffn_down") => Category::FfnDown,
            _ => Category::Other,
        }
    }
}

/// When a rule applies.
#[derive(Clone, Copy, Debug)]
enum When {
    Always,
    /// llama.cpp's `use_more_bits(i, n)`: the first and last eighth of the layers, and every
    /// third in between.
    MoreBits,
    /// `i < n / d`.
    FirstPart(usize),
    /// `i < k`.
    FirstCount(usize),
    /// Grouped-query attention with at least this many query heads per key/value head.
    GqaAtLeast(usize),
    /// `i < n / d`, and only with importance data (`true`) or only without (`false`).
    FirstPartImportance(usize, bool),
}

/// One rule: for these presets and this category, when the condition holds, this type.
struct Rule(&'static [Preset], Category, When, DType);

/// The rules, first match wins (per preset and category). Everything not listed keeps the
/// preset's default type.
const RULES: &[Rule] = {
    use Category::*;
    use Preset::*;
    use When::*;
    &[
        Rule(&[Q2_K], AttnV, GqaAtLeast(4), DType::Q4K),
        Rule(&[Q2_K], AttnV, Always, DType::Q3K),
        Rule(&[Q3_K_M], AttnV, FirstCount(2), DType::Q5K),
        Rule(&[Q3_K_M], AttnV, Always, DType::Q4K),
        Rule(&[Q3_K_L], AttnV, Always, DType::Q5K),
        Rule(&[IQ4_NL, IQ4_XS], AttnV, GqaAtLeast(4), DType::Q5K),
        Rule(&[Q4_K_M, Q5_K_M], AttnV, MoreBits, DType::Q6K),
        Rule(&[Q4_K_S], AttnV, FirstCount(4), DType::Q5K),
        Rule(&[Q2_K], FfnDown, Always, DType::Q3K),
        Rule(&[Q3_K_M], FfnDown, FirstPart(16), DType::Q5K),
        Rule(&[Q3_K_M], FfnDown, Always, DType::Q4K),
        Rule(&[Q3_K_L], FfnDown, Always, DType::Q5K),
        Rule(&[Q4_K_M, Q5_K_M], FfnDown, MoreBits, DType::Q6K),
        Rule(
            &[IQ4_NL, IQ4_XS],
            FfnDown,
            FirstPartImportance(8, false),
            DType::Q5K,
        ),
        Rule(&[Q4_K_S], FfnDown, FirstPart(8), DType::Q5K),
        Rule(&[Q4_0], FfnDown, FirstPartImportance(8, true), DType::Q4_1),
        Rule(&[Q5_0], FfnDown, FirstPartImportance(8, true), DType::Q5_1),
        Rule(&[Q2_K], AttnOutput, Always, DType::Q3K),
        Rule(&[Q3_K_M], AttnOutput, Always, DType::Q4K),
        Rule(&[Q3_K_L], AttnOutput, Always, DType::Q5K),
    ]
};

/// What the rules need to know about the model.
#[derive(Clone, Copy, Debug)]
pub struct ModelFacts {
    /// Query heads per key/value head.
    pub gqa: usize,
    /// The token embedding is also the output matrix.
    pub tied: bool,
    /// llama.cpp's 70B Llama (80 layers, grouped-query attention): its attn_v gets Q5_K for
    /// Q3_K/Q4_K.
    pub is_70b: bool,
}

/// How to choose each tensor's type: a preset, overrides, and whether importance data is
/// used (two of llama.cpp's rules depend on it).
#[derive(Clone, Debug)]
pub struct Mix {
    pub preset: Preset,
    /// `(pattern, type)`: the first whose pattern matches a tensor's llama.cpp name sets its
    /// type (before the fallbacks). `*` matches any run of characters; a pattern without `*`
    /// matches any name containing it.
    pub overrides: Vec<(String, DType)>,
    pub with_importance: bool,
}

impl Mix {
    pub fn preset(preset: Preset) -> Self {
        Self {
            preset,
            overrides: Vec::new(),
            with_importance: false,
        }
    }

    /// The type of every tensor: `tensors` are (llama.cpp name, row-major shape, stored type)
    /// in llama.cpp's processing order (see [`llama_order`]).
    pub fn assign(&self, tensors: &[(String, Vec<usize>, DType)], facts: ModelFacts) -> Vec<DType> {
        let count = |c: Category| {
            tensors
                .iter()
                .filter(|t| Category::of(&t.0) == c && quantizable(&t.0, &t.1))
                .count()
        };
        let (n_v, n_down) = (count(Category::AttnV), count(Category::FfnDown));
        let (mut i_v, mut i_down) = (0, 0);
        tensors
            .iter()
            .map(|(name, shape, stored)| {
                if !quantizable(name, shape) {
                    return *stored;
                }
                let cat = Category::of(name);
                let (i, n) = match cat {
                    Category::AttnV => (i_v, n_v),
                    Category::FfnDown => (i_down, n_down),
                    _ => (0, 0),
                };
                let (t, counted) = self.choose(name, shape, cat, i, n, facts);
                // llama.cpp advances these counters only when its rules run (not for
                // overridden tensors).
                match cat {
                    Category::AttnV if counted => i_v += 1,
                    Category::FfnDown if counted => i_down += 1,
                    _ => {}
                }
                t
            })
            .collect()
    }

    fn choose(
        &self,
        name: &str,
        shape: &[usize],
        cat: Category,
        i: usize,
        n: usize,
        facts: ModelFacts,
    ) -> (DType, bool) {
        let row = shape.last().copied().unwrap_or(1);
        let default = self.preset.default_type();
        let manual = self
            .overrides
            .iter()
            .find(|(p, _)| pattern_matches(p, name))
            .map(|(_, t)| *t);
        let chosen = match manual {
            Some(t) => t,
            None if !default.is_quantized() => default,
            None if cat == Category::Output || (facts.tied && cat == Category::TokenEmbd) => {
                if !row.is_multiple_of(default.block().0) {
                    DType::Q8_0
                } else if default != DType::Q8_0 {
                    DType::Q6K
                } else {
                    default
                }
            }
            None => {
                let mut t = RULES
                    .iter()
                    .filter(|r| r.0.contains(&self.preset) && r.1 == cat)
                    .find(|r| self.holds(r.2, i, n, facts))
                    .map_or(default, |r| r.3);
                if cat == Category::AttnV && facts.is_70b && matches!(t, DType::Q3K | DType::Q4K) {
                    t = DType::Q5K;
                }
                t
            }
        };
        let counted = manual.is_none() && default.is_quantized();
        if chosen.is_quantized() {
            (fallback(chosen, row), counted)
        } else {
            (chosen, counted)
        }
    }

    fn holds(&self, when: When, i: usize, n: usize, facts: ModelFacts) -> bool {
        match when {
            When::Always => true,
            When::MoreBits => i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2,
            When::FirstPart(d) => i < n / d,
            When::FirstCount(k) => i < k,
            When::GqaAtLeast(g) => facts.gqa >= g,
            When::FirstPartImportance(d, with) => i < n / d && self.with_importance == with,
        }
    }
}

/// Whether llama-quantize would consider quantizing this tensor: a matrix (2-D or more) whose
/// name ends in `weight` and is not a norm.
pub fn quantizable(name: &str, shape: &[usize]) -> bool {
    shape.len() >= 2 && name.ends_with("weight") && !name.contains("_norm.weight")
}

/// The type llama.cpp falls back to when `t`'s blocks do not divide rows of `row` values.
pub fn fallback(t: DType, row: usize) -> DType {
    if row.is_multiple_of(t.block().0) {
        return t;
    }
    let f = match t {
        DType::Q2K | DType::Q3K => DType::Q4_0,
        DType::Q4K => DType::Q5_0,
        DType::Q5K => DType::Q5_1,
        DType::Q6K => DType::Q8_0,
        DType::IQ4XS
        | DType::IQ1S
        | DType::IQ1M
        | DType::IQ2XXS
        | DType::IQ2XS
        | DType::IQ2S
        | DType::IQ3XXS
        | DType::IQ3S => DType::IQ4NL,
        other => other,
    };
    if row.is_multiple_of(f.block().0) {
        f
    } else {
        DType::F16
    }
}

/// llama.cpp's processing (and writing) order: tensors outside blocks first, then block by
/// block, by name within each.
pub fn llama_order(name: &str) -> (i64, String) {
    let layer = name
        .strip_prefix("blk.")
        .and_then(|r| r.split('.').next())
        .and_then(|l| l.parse::<i64>().ok())
        .unwrap_or(-1);
    (layer, name.to_string())
}

/// `*` wildcards match any run of characters and the whole name must match; a pattern
/// without `*` matches any name that contains it.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    fn wild(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| wild(rest, &s[i..])),
            Some((c, rest)) => s.first() == Some(c) && wild(rest, &s[1..]),
        }
    }
    if pattern.contains('*') {
        wild(pattern.as_bytes(), name.as_bytes())
    } else {
        name.contains(pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M: 9 query heads on 3 key/value heads, tied embeddings.
    const SMOLLM2_FACTS: ModelFacts = ModelFacts {
        gqa: 3,
        tied: true,
        is_70b: false,
    };

    /// SmolLM2-135M's tensors (30 layers, hidden 576, 9/3 heads, tied) in llama.cpp order.
    fn smollm2() -> Vec<(String, Vec<usize>, DType)> {
        let mut t = vec![
            ("output_norm.weight".to_string(), vec![576], DType::F32),
            (
                "token_embd.weight".to_string(),
                vec![49152, 576],
                DType::F32,
            ),
        ];
        for l in 0..30 {
            for (n, s) in [
                ("attn_k.weight", vec![192, 576]),
                ("attn_norm.weight", vec![576]),
                ("attn_output.weight", vec![576, 576]),
                ("attn_q.weight", vec![576, 576]),
                ("attn_v.weight", vec![192, 576]),
                ("ffn_down.weight", vec![576, 1536]),
                ("ffn_gate.weight", vec![1536, 576]),
                ("ffn_norm.weight", vec![576]),
                ("ffn_up.weight", vec![1536, 576]),
            ] {
                t.push((format!("blk.{l}.{n}"), s, DType::F32));
            }
        }
        t
    }

    fn types_of(preset: Preset) -> Vec<(String, DType)> {
        let t = smollm2();
        let facts = SMOLLM2_FACTS;
        let mix = Mix {
            with_importance: true,
            ..Mix::preset(preset)
        };
        t.iter()
            .map(|x| x.0.clone())
            .zip(mix.assign(&t, facts))
            .collect()
    }

    fn type_of(types: &[(String, DType)], name: &str) -> DType {
        types.iter().find(|t| t.0 == name).unwrap().1
    }

    #[test]
    fn q4_k_m_on_smollm2_falls_back_on_576_wide_rows() {
        let t = types_of(Preset::Q4_K_M);
        assert_eq!(type_of(&t, "token_embd.weight"), DType::Q8_0);
        assert_eq!(type_of(&t, "output_norm.weight"), DType::F32);
        assert_eq!(type_of(&t, "blk.0.attn_q.weight"), DType::Q5_0);
        // attn_v: use_more_bits -> Q6_K -> Q8_0 for 576-wide rows; else Q4_K -> Q5_0.
        assert_eq!(type_of(&t, "blk.0.attn_v.weight"), DType::Q8_0);
        assert_eq!(type_of(&t, "blk.4.attn_v.weight"), DType::Q5_0);
        assert_eq!(type_of(&t, "blk.5.attn_v.weight"), DType::Q8_0);
        // ffn_down has 1536-wide rows: K types fit.
        assert_eq!(type_of(&t, "blk.0.ffn_down.weight"), DType::Q6K);
        assert_eq!(type_of(&t, "blk.4.ffn_down.weight"), DType::Q4K);
        assert_eq!(type_of(&t, "blk.29.ffn_down.weight"), DType::Q6K);
    }

    #[test]
    fn more_bits_matches_llama_cpp_formula() {
        // n = 30: first 3, last 4 (i >= 26), and i = 5, 8, ..., 23.
        let mix = Mix::preset(Preset::Q4_K_M);
        let facts = ModelFacts {
            gqa: 1,
            tied: false,
            is_70b: false,
        };
        let got: Vec<usize> = (0..30)
            .filter(|&i| mix.holds(When::MoreBits, i, 30, facts))
            .collect();
        assert_eq!(got, vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
    }

    #[test]
    fn overrides_win_and_still_fall_back() {
        let t = smollm2();
        let facts = SMOLLM2_FACTS;
        let mix = Mix {
            overrides: vec![
                ("ffn_down".into(), DType::Q2K),
                ("blk.1.attn_q*".into(), DType::Q6K),
            ],
            ..Mix::preset(Preset::Q4_K_M)
        };
        let got = mix.assign(&t, facts);
        let of = |n: &str| got[t.iter().position(|x| x.0 == n).unwrap()];
        assert_eq!(of("blk.0.ffn_down.weight"), DType::Q2K);
        assert_eq!(of("blk.1.attn_q.weight"), DType::Q8_0);
        assert_eq!(of("blk.2.attn_q.weight"), DType::Q5_0);
    }

    #[test]
    fn presets_parse_by_name() {
        for p in Preset::all() {
            assert_eq!(Preset::parse(&p.to_string().to_lowercase()), Some(p));
        }
        assert_eq!(Preset::parse("Q4_K_M").unwrap().file_type(), 15);
        assert!(Preset::parse("Q9_K").is_none());
        assert_eq!(
            llama_order("blk.10.attn_q.weight"),
            (10, "blk.10.attn_q.weight".into())
        );
        assert_eq!(llama_order("output.weight").0, -1);
    }
}
