//! Evaluation of a language model on text: perplexity by the GPTQ / llm-compressor protocol,
//! and, against a base model, the mean KL divergence and top-1 agreement that "Accuracy is Not
//! All You Need" (Dutta et al., 2024) argues catch damage perplexity hides. [`BaseLogits`]
//! keeps a base model's logits for scoring many candidates on the same tokens (the budget
//! search's fitness).

mod kl;
mod kv_modes;
mod perplexity;
mod scoring;

pub use kl::{BaseLogits, ScoreTiming};
pub use kv_modes::evaluate_kv_modes;
pub use perplexity::{
    check_enough_tokens, evaluate, scored_tokens, windows, EvalError, EvalOptions, EvalReport,
    MIN_SCORED_TOKENS,
};
pub use scoring::{score_rows, RowScores};
