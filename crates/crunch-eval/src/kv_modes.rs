//! Several key/value cache modes in one pass over the windows (`crunch eval --kv-cache
//! f16,q8,kivi2`): the model with its f32 cache is the base, its hidden states computed once
//! per window, and each mode's run of the window through its compressed cache is scored
//! against it, so one run gives each mode's perplexity, KL(f32 cache ‖ mode) and top-1
//! agreement for about half the work of one `--base` evaluation per mode.

use crate::perplexity::{
    check_enough_tokens, report, score_chunk, window_error, window_hidden, windows, EvalError,
    EvalOptions, EvalReport, WindowError, LOGIT_ROWS,
};
use crate::scoring::RowScores;
use crunch_model::Model;
use crunch_runtime::{Backend, KvMode};
use std::time::Instant;

/// One report per mode of `modes`, in order (`opts.kv_cache` is ignored). `seconds` and
/// `tokens_per_second` are those of the whole run, every mode together.
pub fn evaluate_kv_modes<B: Backend>(
    model: &Model<B>,
    tokens: &[u32],
    opts: &EvalOptions,
    modes: &[KvMode],
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<EvalReport>, EvalError> {
    check_enough_tokens(tokens, opts).map_err(EvalError::TooFewTokens)?;
    let wins = windows(tokens, opts);
    let start = Instant::now();
    let mut totals = vec![RowScores::default(); modes.len()];
    for (i, w) in wins.iter().enumerate() {
        score_window(model, w, modes, &mut totals)
            .map_err(|e| window_error(e, i, opts.ctx, w.len()))?;
        progress(i + 1, wins.len());
    }
    Ok(totals
        .iter()
        .map(|t| report(t, &wins, opts, start, true))
        .collect())
}

fn score_window<B: Backend>(
    model: &Model<B>,
    window: &[u32],
    modes: &[KvMode],
    totals: &mut [RowScores],
) -> Result<(), WindowError> {
    let b = &model.backend;
    let base = window_hidden(model, window, KvMode::F32)?;
    let hidden = modes
        .iter()
        .map(|&m| match m {
            KvMode::F32 => Ok(base.clone()),
            m => window_hidden(model, window, m),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rows = window.len() - 1;
    for start in (0..rows).step_by(LOGIT_ROWS) {
        let len = LOGIT_ROWS.min(rows - start);
        let base_logits = model.logits(&b.rows(&base, start, len)?, &mut ())?;
        let targets = &window[start + 1..start + 1 + len];
        for (h, total) in hidden.iter().zip(totals.iter_mut()) {
            let logits = model.logits(&b.rows(h, start, len)?, &mut ())?;
            total.add(&score_chunk(
                model,
                &logits,
                Some(&base_logits),
                targets,
                start,
            )?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate;
    use crunch_model::testing::{reference_ids, tiny_specs, write_tiny_model};
    use crunch_model::Checkpoint;
    use crunch_runtime::Cpu;

    /// One pass over every mode gives what one `--base` evaluation per mode gives.
    #[test]
    fn one_pass_equals_one_evaluation_per_mode() {
        let spec = &tiny_specs()[0];
        let dir = tempfile::tempdir().unwrap();
        write_tiny_model(spec, dir.path(), 0).unwrap();
        let ckpt = Checkpoint::open(dir.path()).unwrap();
        let model = ckpt.load(Cpu, |_| {}).unwrap();
        let tokens = reference_ids(ckpt.config.vocab, 150);
        let modes = ["f32", "q8", "kivi2:8"].map(|m| KvMode::parse(m).unwrap());
        let opts = |kv_cache| EvalOptions {
            ctx: 40,
            max_tokens: None,
            kv_cache,
        };
        let all =
            evaluate_kv_modes(&model, &tokens, &opts(KvMode::F32), &modes, |_, _| {}).unwrap();
        for (m, r) in modes.iter().zip(&all) {
            let one = evaluate(&model, Some(&model), &tokens, &opts(*m), |_, _| {}).unwrap();
            assert!(
                (r.nll - one.nll).abs() < 1e-9,
                "{m}: {} vs {}",
                r.nll,
                one.nll
            );
            assert!((r.kl.unwrap() - one.kl.unwrap()).abs() < 1e-9, "{m}");
            assert_eq!(r.top1_agreement, one.top1_agreement, "{m}");
        }
        assert!(all[0].kl.unwrap().abs() < 1e-9);
    }
}
