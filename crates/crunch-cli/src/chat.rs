//! `crunch chat MODEL`: an interactive conversation in the model's chat template. Each line
//! on stdin is a user message; `/reset` starts over, `/exit` (or end of input) quits. The
//! key/value cache of the conversation so far is kept, so a turn only runs its new tokens.
//! `--device cuda` runs it on a GPU (as `crunch generate`).

use crate::device::with_runtime;
use crate::generate::{load_on, note_kv_location, speed, summary, ModelArgs, SamplingArgs};
use anyhow::{bail, Result};
use clap::Args;
use crunch_generate::{Message, Request, Runtime};
use std::io::{BufRead, IsTerminal, Write};

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A system message at the start of the conversation.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Most tokens per reply.
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub max_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn run(args: ChatArgs) -> Result<()> {
    let sampling = args.sampling.params()?;
    if args.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    with_runtime!(args.model.device, b => run_on(b, &args, sampling))
}

fn run_on<B: Runtime>(
    backend: B,
    args: &ChatArgs,
    sampling: crunch_generate::SamplingParams,
) -> Result<()> {
    let mut engine = load_on(backend, &args.model.path, args.model.ctx, false)?;
    engine.set_kv_cache(args.sampling.kv_cache);
    note_kv_location(
        engine.backend(),
        args.sampling.kv_cache,
        engine.model.config.head_dim,
    );
    if !engine.has_chat_template() {
        bail!(
            "{}: the model has no chat template; use `crunch generate` for plain prompts",
            args.model.path.display()
        );
    }
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "{} ({} MB of weights). /reset starts over, /exit quits.",
            engine.meta.name,
            engine.weight_bytes() / 1_000_000
        );
    }
    let fresh = || -> Vec<Message> {
        args.system
            .iter()
            .map(|s| Message::new("system", s))
            .collect()
    };
    let mut history = fresh();
    let mut seq = engine.sequence(engine.context());
    let (mut prompt_tokens, mut generated, mut prefill_s, mut decode_s, mut steps) =
        (0usize, 0usize, 0f64, 0f64, 0usize);
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        let text = line.trim();
        match text {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history = fresh();
                seq = engine.sequence(engine.context());
                eprintln!("(conversation reset)");
                continue;
            }
            _ => {}
        }
        history.push(Message::new("user", text));
        let prompt = engine.encode(&engine.render_chat(&history)?, false)?;
        if prompt.len() + 1 >= engine.context() {
            eprintln!(
                "(the conversation is {} tokens, the context {}: /reset to start over)",
                prompt.len(),
                engine.context()
            );
            history.pop();
            continue;
        }
        let req = Request {
            prompt,
            max_tokens: args.max_tokens,
            sampling: sampling.clone(),
            stop: args.sampling.stop.clone(),
            ignore_eos: false,
        };
        let mut out = std::io::stdout().lock();
        let g = engine.generate(&mut seq, &req, &mut |t| {
            let _ = out.write_all(t.as_bytes());
            let _ = out.flush();
        })?;
        let _ = writeln!(out);
        drop(out);
        eprintln!("[{}]", summary(&g));
        history.push(Message::new("assistant", &g.text));
        prompt_tokens += g.prefill_tokens;
        generated += g.generated_tokens;
        prefill_s += g.prefill_seconds;
        decode_s += g.decode_seconds;
        steps += g.decode_steps;
    }
    eprintln!(
        "prompt: {prompt_tokens} tokens, {:.1} tokens/s | generation: {generated} tokens, {:.1} tokens/s",
        speed(prompt_tokens, prefill_s),
        speed(steps, decode_s)
    );
    Ok(())
}
