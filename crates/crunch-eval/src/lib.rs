//! Evaluation of a language model on text: perplexity by the GPTQ / llm-compressor protocol,
//! and, against a base model, the mean KL divergence and top-1 agreement that "Accuracy is Not
//! All You Need" (Dutta et al., 2024) argues catch damage perplexity hides.

mod perplexity;
mod scoring;

pub use perplexity::{
    check_enough_tokens, evaluate, scored_tokens, windows, EvalError, EvalOptions, EvalReport,
    MIN_SCORED_TOKENS,
};
pub use scoring::{score_rows, RowScores};
