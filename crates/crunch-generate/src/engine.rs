//! A loaded model ready to generate: the weights on a backend (the host's by default, packed;
//! or a GPU's: [`Runtime`]), its tokenizer, metadata and chat template, and rotary tables for
//! the whole context. [`Sequence`]s hold one conversation's key/value cache each;
//! [`Engine::generate`] runs prefill (in chunks) and decoding for one of them,
//! [`Engine::decode`] advances many at once (the server).

use crate::detok::TextStream;
use crate::meta::ModelMeta;
use crate::runtime::Runtime;
use crate::sampling::{Sampler, SamplingParams};
use crate::template::{ChatTemplate, Message};
use crate::{Error, Result};
use crunch_model::model::{Linear, RopeTables};
use crunch_model::{Checkpoint, KvCache, Model, PagedCache};
use crunch_runtime::{Backend, BlockTable, Host, KvMode};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokenizers::Tokenizer;

/// Prompt tokens per prefill pass: large enough that each unpacked weight tile serves many
/// rows, small enough to bound the activations (and attention's per-pass work).
pub const PREFILL_CHUNK: usize = 512;

/// Context used when neither the caller nor the checkpoint says otherwise.
pub const DEFAULT_CONTEXT: usize = 4096;

pub struct Engine<B: Runtime = Host> {
    pub model: Model<B>,
    pub tokenizer: Tokenizer,
    pub meta: ModelMeta,
    pub path: PathBuf,
    template: Option<ChatTemplate>,
    rope: RopeTables<B>,
    context: usize,
    /// How new sequences store keys and values (`--kv-cache`).
    kv_mode: KvMode,
}

/// One sequence's cache and the tokens in it.
pub struct Sequence<B: Runtime = Host> {
    cache: KvCache<B>,
    tokens: Vec<u32>,
}

impl<B: Runtime> Sequence<B> {
    /// Tokens whose keys and values are cached.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn capacity(&self) -> usize {
        self.cache.capacity()
    }

    /// How this sequence's cache stores keys and values.
    pub fn kv_mode(&self) -> KvMode {
        self.cache.mode()
    }

    /// Bytes its cache holds now (stores are allocated for the capacity at first use).
    pub fn kv_bytes(&self) -> usize {
        self.cache.stores().map(B::kv_store_bytes).sum()
    }
}

/// One sequence of a paged cache ([`Engine::paged_cache`], decision 141): its block table
/// and the tokens whose keys and values its pages hold.
#[derive(Debug, Default)]
pub struct PagedSequence {
    pub table: BlockTable,
    tokens: Vec<u32>,
}

impl PagedSequence {
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Frees its pages and forgets its tokens (a finished or preempted sequence).
    pub fn release<B: Backend>(&mut self, cache: &mut PagedCache<B>) {
        cache.release(&mut self.table);
        self.tokens.clear();
    }
}

/// One generation request.
#[derive(Clone, Debug)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Strings that end generation (not included in the text).
    pub stop: Vec<String>,
    /// Keep going past end-of-sequence tokens (benchmarks).
    pub ignore_eos: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_tokens`, or the context is full.
    Length,
}

#[derive(Clone, Debug, Serialize)]
pub struct Generation {
    pub text: String,
    pub token_ids: Vec<u32>,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Prompt tokens actually run (fewer than the prompt when a cached prefix was reused).
    pub prefill_tokens: usize,
    pub prefill_seconds: f64,
    /// Forward passes of one token each after the prefill.
    pub decode_steps: usize,
    pub decode_seconds: f64,
    pub finish: Finish,
}

/// Every tensor a linear layer holds.
fn linear_tensors<B: Backend>(l: &Linear<B>) -> Vec<&B::Tensor> {
    let mut v = vec![&l.weight];
    v.extend(l.up.iter());
    v.extend(l.bias.iter());
    if let Some(c) = &l.correction {
        v.extend([&c.a, &c.b]);
    }
    v
}

impl Engine {
    /// Loads `path` (any checkpoint crunch opens) on the host for contexts of up to `context`
    /// tokens (default: the model's maximum, at most [`DEFAULT_CONTEXT`]).
    pub fn load(
        path: &Path,
        context: Option<usize>,
        on_block: impl FnMut(usize),
    ) -> Result<Engine> {
        Engine::load_on(Host, path, context, on_block)
    }
}

impl<B: Runtime> Engine<B> {
    /// [`Engine::load`] onto `backend` (a GPU made with `Cuda::with_packed_weights` keeps the
    /// linear layers packed there).
    pub fn load_on(
        backend: B,
        path: &Path,
        context: Option<usize>,
        on_block: impl FnMut(usize),
    ) -> Result<Engine<B>> {
        let ckpt = Checkpoint::open(path)?;
        let tokenizer = ckpt.tokenizer()?;
        let meta = ModelMeta::read(path, &tokenizer).map_err(Error::Model)?;
        let context = context.unwrap_or(ckpt.config.max_position.min(DEFAULT_CONTEXT));
        if context == 0 {
            return Err(Error::Request(
                "the context must hold at least one token".into(),
            ));
        }
        let model = ckpt.load(backend, on_block)?;
        let rope = model.rope_tables(context)?;
        let template = meta
            .chat_template
            .as_deref()
            .map(|t| ChatTemplate::new(t, &meta.bos_token, &meta.eos_token))
            .transpose()
            .map_err(|e| Error::Model(format!("{}: {e}", path.display())))?;
        Ok(Engine {
            model,
            tokenizer,
            meta,
            path: path.to_path_buf(),
            template,
            rope,
            context,
            kv_mode: KvMode::F32,
        })
    }

    /// The backend the model runs on.
    pub fn backend(&self) -> &B {
        &self.model.backend
    }

    /// Makes new sequences store keys and values as `mode` says.
    pub fn set_kv_cache(&mut self, mode: KvMode) {
        self.kv_mode = mode;
    }

    pub fn kv_mode(&self) -> KvMode {
        self.kv_mode
    }

    /// The longest sequence (prompt and generated tokens) this engine runs.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Bytes of the model's weights as held in memory (packed encodings, shared storage
    /// counted once).
    pub fn weight_bytes(&self) -> usize {
        let m = &self.model;
        let mut all: Vec<&B::Tensor> = vec![&m.embed, &m.norm, &m.lm_head];
        for b in &m.blocks {
            all.extend(b.norms());
            for l in b.linears() {
                all.extend(linear_tensors(l));
            }
        }
        let mut total = 0;
        for (i, t) in all.iter().enumerate() {
            if !all[..i].iter().any(|s| B::same_storage(s, t)) {
                total += B::tensor_bytes(t);
            }
        }
        total
    }

    /// Bytes of a key/value cache of `capacity` positions in this engine's mode.
    pub fn kv_bytes(&self, capacity: usize) -> usize {
        self.kv_bytes_in(self.kv_mode, capacity)
    }

    /// Bytes of a key/value cache of `capacity` positions stored as `mode` says.
    pub fn kv_bytes_in(&self, mode: KvMode, capacity: usize) -> usize {
        let (grows, fixed) = self.model.kv_cache_bytes(mode, capacity);
        grows.ceil() as usize + fixed
    }

    /// Token ids of `text`; `special`: add the tokenizer's special tokens (a BOS) as a plain
    /// prompt would have them.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(text, special)
            .map_err(|e| Error::Model(format!("tokenizing: {e}")))?
            .get_ids()
            .to_vec())
    }

    /// The prompt text for a conversation, from the model's own chat template.
    pub fn render_chat(&self, messages: &[Message]) -> Result<String> {
        let t = self.template.as_ref().ok_or_else(|| {
            Error::Request(format!(
                "{}: the model has no chat template (tokenizer_config.json chat_template or GGUF tokenizer.chat_template)",
                self.path.display()
            ))
        })?;
        t.render(messages, true).map_err(Error::Request)
    }

    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }

    /// An empty sequence with room for `capacity` tokens (at most the context), its cache in
    /// the engine's mode.
    pub fn sequence(&self, capacity: usize) -> Sequence<B> {
        self.sequence_with(capacity, self.kv_mode)
    }

    /// [`Engine::sequence`] with its cache stored as `mode` says.
    pub fn sequence_with(&self, capacity: usize, mode: KvMode) -> Sequence<B> {
        Sequence {
            cache: self.model.kv_cache_with(capacity.min(self.context), mode),
            tokens: Vec::new(),
        }
    }

    /// Runs `ids` through `seq` in chunks; returns the logits of the last one.
    pub fn prefill(&self, seq: &mut Sequence<B>, ids: &[u32]) -> Result<Vec<f32>> {
        let cache = &mut seq.cache;
        self.prefill_with(ids, &mut seq.tokens, |chunk| {
            self.model
                .hidden_states_batch(chunk, &mut [&mut *cache], &self.rope, &mut ())
        })
    }

    /// Feeds one token to each sequence in one batched forward pass; returns each one's
    /// logits.
    pub fn decode(&self, seqs: &mut [&mut Sequence<B>], ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        assert_eq!(seqs.len(), ids.len());
        let mut caches: Vec<&mut KvCache<B>> = seqs.iter_mut().map(|s| &mut s.cache).collect();
        let h = self
            .model
            .hidden_states_batch(ids, &mut caches, &self.rope, &mut ())?;
        self.step_logits(&h, seqs.iter_mut().map(|s| &mut s.tokens), ids)
    }

    /// What a prefill does whatever holds the cache: `ids` (not empty) through `forward` (the
    /// hidden states of a chunk, its keys and values cached) in chunks of [`PREFILL_CHUNK`],
    /// `tokens` extended by each chunk once it is cached; the logits of the last position.
    fn prefill_with(
        &self,
        ids: &[u32],
        tokens: &mut Vec<u32>,
        mut forward: impl FnMut(&[u32]) -> crunch_model::Result<B::Tensor>,
    ) -> Result<Vec<f32>> {
        if ids.is_empty() {
            return Err(Error::Request("nothing to prefill".into()));
        }
        let mut last = None;
        for chunk in ids.chunks(PREFILL_CHUNK) {
            let h = forward(chunk)?;
            tokens.extend_from_slice(chunk);
            last = Some((h, chunk.len()));
        }
        let (h, n) = last.expect("at least one chunk");
        let b = &self.model.backend;
        let h = b.rows(&h, n - 1, 1).map_err(crunch_model::Error::from)?;
        let logits = self.model.logits(&h, &mut ())?;
        Ok(b.to_f32(&logits).map_err(crunch_model::Error::from)?)
    }

    /// What a decode step does after the forward pass: the logits of `h` (one row per
    /// sequence), split by sequence, and each sequence's `tokens` given its new id.
    fn step_logits<'a>(
        &self,
        h: &B::Tensor,
        tokens: impl Iterator<Item = &'a mut Vec<u32>>,
        ids: &[u32],
    ) -> Result<Vec<Vec<f32>>> {
        let logits = self.model.logits(h, &mut ())?;
        let all = self
            .model
            .backend
            .to_f32(&logits)
            .map_err(crunch_model::Error::from)?;
        for (t, &id) in tokens.zip(ids) {
            t.push(id);
        }
        let vocab = all.len() / ids.len().max(1);
        Ok(all.chunks(vocab).map(<[f32]>::to_vec).collect())
    }

    /// Bytes one page of `page_size` positions holds (every block's f32 keys and values).
    pub fn page_bytes(&self, page_size: usize) -> usize {
        self.model.page_bytes(page_size)
    }

    /// A paged key/value pool of `pages` pages of `page_size` positions for the server
    /// (decision 141); `Ok(None)` where it does not apply: a compressed `--kv-cache` mode
    /// (those keep per-sequence stores) or a backend without a paged cache.
    pub fn paged_cache(&self, pages: usize, page_size: usize) -> Result<Option<PagedCache<B>>> {
        if !self.kv_mode.is_full() {
            return Ok(None);
        }
        Ok(self.model.paged_cache(pages, page_size)?)
    }

    /// [`Engine::prefill`] of a paged sequence, whose table must already cover
    /// `seq.tokens().len() + ids.len()` positions (`PagedCache::reserve`); positions must stay
    /// within the context.
    pub fn prefill_paged(
        &self,
        cache: &mut PagedCache<B>,
        seq: &mut PagedSequence,
        ids: &[u32],
    ) -> Result<Vec<f32>> {
        // Checked before the (shared) empty check: harmless, as a sequence never holds more
        // than the context, so an empty `ids` cannot fail this.
        if seq.tokens.len() + ids.len() > self.context {
            return Err(Error::Request(format!(
                "{} tokens do not fit the context of {}",
                seq.tokens.len() + ids.len(),
                self.context
            )));
        }
        let table = &mut seq.table;
        self.prefill_with(ids, &mut seq.tokens, |chunk| {
            self.model
                .hidden_states_paged(chunk, cache, &mut [&mut *table], &self.rope, &mut ())
        })
    }

    /// [`Engine::decode`] of paged sequences (each table covering one more position): one
    /// forward pass, attention one call per block for all of them.
    pub fn decode_paged(
        &self,
        cache: &mut PagedCache<B>,
        seqs: &mut [&mut PagedSequence],
        ids: &[u32],
    ) -> Result<Vec<Vec<f32>>> {
        assert_eq!(seqs.len(), ids.len());
        if let Some(s) = seqs.iter().find(|s| s.tokens.len() >= self.context) {
            return Err(Error::Request(format!(
                "a sequence of {} tokens is at the context's end ({})",
                s.tokens.len(),
                self.context
            )));
        }
        let mut tables: Vec<&mut BlockTable> = seqs.iter_mut().map(|s| &mut s.table).collect();
        let h = self
            .model
            .hidden_states_paged(ids, cache, &mut tables, &self.rope, &mut ())?;
        self.step_logits(&h, seqs.iter_mut().map(|s| &mut s.tokens), ids)
    }

    /// Generates for `req` in `seq`, reusing its cache when it holds a prefix of the prompt
    /// (a conversation's earlier turns); `on_text` receives the text as it becomes final.
    pub fn generate(
        &self,
        seq: &mut Sequence<B>,
        req: &Request,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation> {
        req.sampling.validate().map_err(Error::Request)?;
        let cap = seq.capacity();
        let n = req.prompt.len();
        if n == 0 {
            return Err(Error::Request("the prompt is empty".into()));
        }
        if n >= cap {
            return Err(Error::Request(format!(
                "the prompt has {n} tokens; the context holds {cap} (prompt and reply)"
            )));
        }
        if let Some(&bad) = req
            .prompt
            .iter()
            .find(|&&t| t as usize >= self.model.config.vocab)
        {
            return Err(Error::Request(format!(
                "token id {bad} is outside the vocabulary"
            )));
        }
        let reuse = seq.tokens.len() < n && req.prompt.starts_with(&seq.tokens);
        if !reuse {
            *seq = self.sequence_with(cap, seq.kv_mode());
        }
        let rest = &req.prompt[seq.tokens.len()..];
        let t0 = Instant::now();
        let mut logits = self.prefill(seq, rest)?;
        let prefill_seconds = t0.elapsed().as_secs_f64();
        let prefill_tokens = rest.len();

        let mut sampler = Sampler::new(req.sampling.clone());
        let mut stream = TextStream::new(&self.tokenizer, req.stop.clone());
        let mut history = req.prompt.clone();
        let mut generated = Vec::new();
        let mut text = String::new();
        let max = req.max_tokens.min(cap - n);
        let mut decode_seconds = 0.0;
        let mut decode_steps = 0;
        let mut finish = Finish::Length;
        while generated.len() < max {
            let tok = sampler.sample(&logits, &history);
            generated.push(tok);
            history.push(tok);
            if !req.ignore_eos && self.meta.eos.contains(&tok) {
                finish = Finish::Stop;
                break;
            }
            let step = stream.push(tok).map_err(Error::Model)?;
            on_text(&step.text);
            text.push_str(&step.text);
            if step.stopped {
                finish = Finish::Stop;
                break;
            }
            if generated.len() == max {
                break;
            }
            let t = Instant::now();
            logits = self
                .decode(&mut [&mut *seq], &[tok])?
                .pop()
                .expect("one sequence");
            decode_seconds += t.elapsed().as_secs_f64();
            decode_steps += 1;
        }
        let tail = stream.finish();
        on_text(&tail);
        text.push_str(&tail);
        Ok(Generation {
            text,
            prompt_tokens: n,
            generated_tokens: generated.len(),
            token_ids: generated,
            prefill_tokens,
            prefill_seconds,
            decode_steps,
            decode_seconds,
            finish,
        })
    }
}
