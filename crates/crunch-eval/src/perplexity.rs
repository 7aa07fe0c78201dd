//! Perplexity by the GPTQ / llm-compressor protocol: the text is tokenized whole without
//! special tokens and cut into non-overlapping windows of `ctx` tokens; in each window every
//! position but the first is scored; PPL = exp(mean NLL). A trailing partial window is dropped,
//! as in the reference code, unless the text is shorter than one window, in which case the
//! whole text is one window.

use crate::scoring::{score_rows, RowScores};
use crunch_model::Model;
use crunch_runtime::{Backend, KvMode};
use serde::Serialize;
use std::time::Instant;

/// Logits are materialised this many rows at a time ([rows, vocab] f32), bounding memory.
pub(crate) const LOGIT_ROWS: usize = 256;

#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub ctx: usize,
    /// Evaluate only the first this many tokens of the text.
    pub max_tokens: Option<usize>,
    /// The key/value cache the model (not the base) attends through. Other than
    /// [`KvMode::F32`], each window goes through the cache path (`hidden_states_cached`, the
    /// window as one chunk): its keys and values are stored as a generating model stores
    /// them, and each position attends to what the cache held when that position was
    /// decoded (for KIVI, its own unfilled group in f32).
    pub kv_cache: KvMode,
}

#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// Mean negative log-likelihood per scored token (nats).
    pub nll: f64,
    pub ppl: f64,
    pub tokens_scored: usize,
    /// Tokens run through the model (windows × window length).
    pub tokens_evaluated: usize,
    pub windows: usize,
    pub ctx: usize,
    /// Share of scored positions whose arg-max is the next token.
    pub top1_accuracy: f64,
    /// Wall time of the forward passes and scoring (not loading or tokenizing).
    pub seconds: f64,
    /// `tokens_evaluated / seconds`.
    pub tokens_per_second: f64,
    /// Mean KL(base ‖ model) per scored token, with a base model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kl: Option<f64>,
    /// Share of scored positions where model and base pick the same top token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top1_agreement: Option<f64>,
}

/// Fewest scored tokens that make a measurement. Per-token NLL spreads by 2-3 nats on real
/// text, so below 32 tokens the standard error of the mean exceeds 0.4 nats (a ±50%
/// perplexity): a 2-token file used to be "scored" as if it meant something.
pub const MIN_SCORED_TOKENS: usize = 32;

/// How many positions the protocol scores in `tokens` (every window position but the first).
pub fn scored_tokens(tokens: &[u32], opts: &EvalOptions) -> usize {
    windows(tokens, opts).iter().map(|w| w.len() - 1).sum()
}

/// An error message when `tokens` hold too few positions to score (see
/// [`MIN_SCORED_TOKENS`]).
pub fn check_enough_tokens(tokens: &[u32], opts: &EvalOptions) -> Result<(), String> {
    let scored = scored_tokens(tokens, opts);
    if scored < MIN_SCORED_TOKENS {
        return Err(format!(
            "{} tokens give {scored} scored positions, fewer than the {MIN_SCORED_TOKENS} a \
             perplexity needs to mean anything; give a longer text",
            opts.max_tokens
                .map_or(tokens.len(), |m| m.min(tokens.len()))
        ));
    }
    Ok(())
}

/// Why an evaluation cannot report numbers.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Model(#[from] crunch_model::Error),
    /// Too short a text ([`check_enough_tokens`]'s reason).
    #[error("{0}")]
    TooFewTokens(String),
    #[error("base model has vocabulary {base} but the model has {model}; KL needs the same one")]
    Vocabularies { base: usize, model: usize },
    #[error(
        "window {window} (tokens {start}..{end}): {what}; the model computes non-finite values, \
         so no perplexity can be reported"
    )]
    NonFinite {
        window: usize,
        start: usize,
        end: usize,
        what: String,
    },
}

/// The windows of `tokens` that the protocol scores.
pub fn windows<'a>(tokens: &'a [u32], opts: &EvalOptions) -> Vec<&'a [u32]> {
    let n = opts
        .max_tokens
        .map_or(tokens.len(), |m| m.min(tokens.len()));
    let tokens = &tokens[..n];
    if tokens.len() < opts.ctx {
        return if tokens.len() >= 2 {
            vec![tokens]
        } else {
            vec![]
        };
    }
    tokens.chunks_exact(opts.ctx).collect()
}

/// Evaluates `model` (and `base`, when given) on `tokens`. `progress(done, total)` is called
/// after each window.
pub fn evaluate<B: Backend>(
    model: &Model<B>,
    base: Option<&Model<B>>,
    tokens: &[u32],
    opts: &EvalOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<EvalReport, EvalError> {
    check_enough_tokens(tokens, opts).map_err(EvalError::TooFewTokens)?;
    let wins = windows(tokens, opts);
    let vocab = model.config.vocab;
    if let Some(b) = base {
        if b.config.vocab != vocab {
            return Err(EvalError::Vocabularies {
                base: b.config.vocab,
                model: vocab,
            });
        }
    }
    let start = Instant::now();
    let mut total = RowScores::default();
    for (i, w) in wins.iter().enumerate() {
        total.add(
            &score_window(model, base, w, opts.kv_cache)
                .map_err(|e| window_error(e, i, opts.ctx, w.len()))?,
        );
        progress(i + 1, wins.len());
    }
    Ok(report(&total, &wins, opts, start, base.is_some()))
}

/// The report of `total` over `wins`, timed from `start`; KL and agreement when `with_base`.
pub(crate) fn report(
    total: &RowScores,
    wins: &[&[u32]],
    opts: &EvalOptions,
    start: Instant,
    with_base: bool,
) -> EvalReport {
    let seconds = start.elapsed().as_secs_f64();
    let evaluated: usize = wins.iter().map(|w| w.len()).sum();
    let scored = total.positions.max(1) as f64;
    let nll = total.nll / scored;
    EvalReport {
        nll,
        ppl: nll.exp(),
        tokens_scored: total.positions,
        tokens_evaluated: evaluated,
        windows: wins.len(),
        ctx: opts.ctx,
        top1_accuracy: total.top1_correct as f64 / scored,
        seconds,
        tokens_per_second: evaluated as f64 / seconds.max(1e-9),
        kl: with_base.then(|| total.kl / scored),
        top1_agreement: with_base.then(|| total.top1_agree as f64 / scored),
    }
}

/// The error of window `i` (of `len` tokens, windows of `ctx`).
pub(crate) fn window_error(e: WindowError, i: usize, ctx: usize, len: usize) -> EvalError {
    match e {
        WindowError::NonFinite(what) => EvalError::NonFinite {
            window: i + 1,
            start: i * ctx,
            end: i * ctx + len,
            what,
        },
        WindowError::Model(e) => EvalError::Model(e),
    }
}

pub(crate) enum WindowError {
    /// The first non-finite logit (or score), described.
    NonFinite(String),
    Model(crunch_model::Error),
}

impl From<crunch_model::Error> for WindowError {
    fn from(e: crunch_model::Error) -> Self {
        WindowError::Model(e)
    }
}

impl From<crunch_runtime::Error> for WindowError {
    fn from(e: crunch_runtime::Error) -> Self {
        WindowError::Model(e.into())
    }
}

/// The first non-finite value of logits `[rows, vocab]` for positions from `start`, described.
fn first_non_finite(logits: &[f32], vocab: usize, start: usize, who: &str) -> Option<String> {
    let i = logits.iter().position(|v| !v.is_finite())?;
    Some(format!(
        "{who} logit of token {} at position {} is {}",
        i % vocab,
        start + i / vocab,
        logits[i]
    ))
}

fn score_window<B: Backend>(
    model: &Model<B>,
    base: Option<&Model<B>>,
    window: &[u32],
    kv: KvMode,
) -> Result<RowScores, WindowError> {
    let b = &model.backend;
    let hidden = window_hidden(model, window, kv)?;
    let base_hidden = base.map(|m| m.hidden_states(window, &mut ())).transpose()?;
    // Row t predicts token t + 1; the last row predicts nothing inside the window.
    let rows = window.len() - 1;
    let mut scores = RowScores::default();
    for start in (0..rows).step_by(LOGIT_ROWS) {
        let len = LOGIT_ROWS.min(rows - start);
        let logits = model.logits(&b.rows(&hidden, start, len)?, &mut ())?;
        let base_logits = match (base, &base_hidden) {
            (Some(m), Some(h)) => Some(m.logits(&m.backend.rows(h, start, len)?, &mut ())?),
            _ => None,
        };
        let targets = &window[start + 1..start + 1 + len];
        scores.add(&score_chunk(
            model,
            &logits,
            base_logits.as_ref(),
            targets,
            start,
        )?);
    }
    Ok(scores)
}

/// Hidden states of `window` after the last block, attending through a cache in `kv` mode
/// (the window as one chunk: each position sees the cache as it stood when it was decoded),
/// or, for the f32 cache, by the full-sequence pass.
pub(crate) fn window_hidden<B: Backend>(
    model: &Model<B>,
    window: &[u32],
    kv: KvMode,
) -> Result<B::Tensor, WindowError> {
    if kv.is_full() {
        return Ok(model.hidden_states(window, &mut ())?);
    }
    let rope = model.rope_tables(window.len())?;
    let mut cache = [model.kv_cache_with(window.len(), kv)];
    Ok(model.hidden_states_cached(window, &mut cache, &rope, &mut ())?)
}

/// Scores one chunk of logits rows (positions `start..`) against `targets` and, when given,
/// the base model's logits of the same rows: on the device when the backend can (a GPU returns
/// four numbers per row instead of the logits), else on the host.
pub(crate) fn score_chunk<B: Backend>(
    model: &Model<B>,
    logits: &B::Tensor,
    base_logits: Option<&B::Tensor>,
    targets: &[u32],
    start: usize,
) -> Result<RowScores, WindowError> {
    let b = &model.backend;
    let mut scores = RowScores::default();
    if let Some(rows) = b.score_rows(logits, base_logits, targets)? {
        // Scored on the device: a non-finite logit shows as a non-finite NLL or KL.
        if let Some(p) = rows
            .iter()
            .position(|r| !(r[0].is_finite() && r[2].is_finite()))
        {
            return Err(WindowError::NonFinite(format!(
                "the score at position {} is not finite (NLL {}, KL {})",
                start + p,
                rows[p][0],
                rows[p][2]
            )));
        }
        for r in rows {
            scores.add(&RowScores {
                positions: 1,
                nll: r[0],
                top1_correct: r[1] as usize,
                kl: r[2],
                top1_agree: r[3] as usize,
            });
        }
        return Ok(scores);
    }
    let logits = b.to_f32(logits)?;
    let base_logits = base_logits.map(|l| b.to_f32(l)).transpose()?;
    let vocab = model.config.vocab;
    if let Some(what) = first_non_finite(&logits, vocab, start, "the model's") {
        return Err(WindowError::NonFinite(what));
    }
    if let Some(what) = base_logits
        .as_deref()
        .and_then(|l| first_non_finite(l, vocab, start, "the base model's"))
    {
        return Err(WindowError::NonFinite(what));
    }
    scores.add(&score_rows(&logits, base_logits.as_deref(), targets, vocab));
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_the_protocol() {
        let t: Vec<u32> = (0..10).collect();
        let o = |ctx, max| EvalOptions {
            ctx,
            max_tokens: max,
            kv_cache: KvMode::F32,
        };
        assert_eq!(windows(&t, &o(4, None)), vec![&t[0..4], &t[4..8]]);
        assert_eq!(windows(&t, &o(4, Some(5))), vec![&t[0..4]]);
        assert_eq!(windows(&t, &o(16, None)), vec![&t[..]]);
        assert!(windows(&t[..1], &o(16, None)).is_empty());
        assert_eq!(scored_tokens(&t, &o(4, None)), 6);
        let e = check_enough_tokens(&t[..2], &o(2048, None)).unwrap_err();
        assert!(e.contains("2 tokens give 1 scored positions"), "{e}");
        let long: Vec<u32> = (0..100).collect();
        assert!(check_enough_tokens(&long, &o(2048, None)).is_ok());
        assert!(check_enough_tokens(&long, &o(2048, Some(20))).is_err());
    }

    #[test]
    fn non_finite_logits_are_described() {
        let l = [0.0, 1.0, 2.0, 3.0, f32::NAN, 5.0];
        let d = first_non_finite(&l, 3, 10, "the model's").unwrap();
        assert_eq!(d, "the model's logit of token 1 at position 11 is NaN");
        assert!(first_non_finite(&l[..4], 3, 0, "x").is_none());
    }
}
