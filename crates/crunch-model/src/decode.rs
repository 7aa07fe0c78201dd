//! Incremental decoding with a key/value cache, written once against [`Backend`].
//!
//! A batch of sequences advances together: the embedding, every linear layer and the MLP run
//! on all new rows at once (`[sequences × tokens, hidden]`; rows are independent), while
//! attention runs per sequence, its new queries against that sequence's cached keys and
//! values plus its own new ones (`AttentionMask::query_offset` = the cache length).

use crate::model::{attention_scale, Block, BlockPass, Model, RopeTables};
use crate::{CacheProblem, Error, LinearHook, Result};
use crunch_runtime::{AttentionMask, Backend, KvMode, KvSpec};

/// Keys and values of one sequence, per decoder block, for incremental decoding.
pub struct KvCache<B: Backend> {
    /// Per block: the backend's store of keys and values (keys already normalised (Qwen3,
    /// Gemma 3) and
    /// rotated, so they are never recomputed), made on first use with room for `capacity`
    /// positions.
    layers: Vec<Option<B::KvStore>>,
    capacity: usize,
    len: usize,
    /// How the stores hold keys and values (`--kv-cache`).
    mode: KvMode,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for a model of `layers` decoder blocks and up to `capacity` positions.
    pub fn new(layers: usize, capacity: usize) -> Self {
        Self::with_mode(layers, capacity, KvMode::F32)
    }

    /// [`KvCache::new`] with keys and values stored as `mode` says.
    pub fn with_mode(layers: usize, capacity: usize, mode: KvMode) -> Self {
        KvCache {
            layers: (0..layers).map(|_| None).collect(),
            capacity,
            len: 0,
            mode,
        }
    }

    pub fn mode(&self) -> KvMode {
        self.mode
    }

    /// Each block's store made so far (for their sizes).
    pub fn stores(&self) -> impl Iterator<Item = &B::KvStore> + '_ {
        self.layers.iter().flatten()
    }

    /// Tokens cached so far: the absolute position of the next token.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the cache has room for.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Block `layer`'s store, made now if this is its first use (given the inverse
    /// frequencies of its keys' rotation, `inv_freq()`, when the mode quantizes keys before it).
    fn store(
        &mut self,
        b: &B,
        cfg: &crate::ModelConfig,
        layer: usize,
        inv_freq: impl FnOnce() -> Vec<f64>,
    ) -> Result<&mut B::KvStore> {
        if self.layers[layer].is_none() {
            let freqs = self.mode.needs_rope().then(inv_freq);
            self.layers[layer] = Some(b.kv_alloc(KvSpec {
                capacity: self.capacity,
                kv_heads: cfg.kv_heads,
                head_dim: cfg.head_dim,
                mode: self.mode,
                inv_freq: freqs.as_deref(),
            })?);
        }
        Ok(self.layers[layer].as_mut().expect("made above"))
    }
}

/// One block's new rows in a cached step, as [`Model::cached_step`] hands them to the cache:
/// every sequence's rows together, sequence-major.
pub(crate) struct NewRows<'a, B: Backend> {
    pub layer: usize,
    pub blk: &'a Block<B>,
    /// `[rows, heads, head_dim]`, normalised and rotated.
    pub q: &'a B::Tensor,
    /// `[rows, kv_heads, head_dim]`, normalised and rotated.
    pub k: &'a B::Tensor,
    /// `[rows, kv_heads, head_dim]`.
    pub v: &'a B::Tensor,
    /// The attention's softmax scale.
    pub scale: f32,
}

/// `t`, the new tokens of each of `seqs` sequences in a step of `ids` (sequence-major): an
/// error unless there is at least one sequence and `ids` share out evenly and not emptily.
pub(crate) fn tokens_each(ids: &[u32], seqs: usize) -> Result<usize> {
    if seqs == 0 || ids.is_empty() || !ids.len().is_multiple_of(seqs) {
        return Err(Error::Cache(CacheProblem::Uneven {
            ids: ids.len(),
            caches: seqs,
        }));
    }
    Ok(ids.len() / seqs)
}

/// Rows `s*t..(s+1)*t` of a `[rows, a, b]` tensor.
fn seq_rows<B: Backend>(b: &B, x: &B::Tensor, s: usize, t: usize) -> Result<B::Tensor> {
    let shape = b.shape(x);
    let flat = b.reshape(x, &[shape[0], shape[1] * shape[2]])?;
    let part = b.rows(&flat, s * t, t)?;
    Ok(b.reshape(&part, &[t, shape[1], shape[2]])?)
}

impl<B: Backend> Model<B> {
    /// Feeds `t = ids.len() / caches.len()` new tokens to each of `caches.len()` sequences:
    /// `ids` is sequence-major (sequence `s` owns `ids[s*t..(s+1)*t]`), and sequence `s`'s new
    /// tokens sit at positions `caches[s].len()..caches[s].len() + t` (caches may differ in
    /// length). Returns the hidden states after the last block, `[caches.len() * t, hidden]`,
    /// in the same row order, and appends the new keys and values to the caches. `rope` must
    /// cover every new position. `hook` sees the linear inputs of the whole batch.
    ///
    /// On error the caches are left inconsistent and must be discarded.
    pub fn hidden_states_cached(
        &self,
        ids: &[u32],
        caches: &mut [KvCache<B>],
        rope: &RopeTables<B>,
        hook: &mut dyn LinearHook<B>,
    ) -> Result<B::Tensor> {
        let mut refs: Vec<&mut KvCache<B>> = caches.iter_mut().collect();
        self.hidden_states_batch(ids, &mut refs, rope, hook)
    }

    /// [`Model::hidden_states_cached`] over caches held anywhere (a server's sequences each
    /// own theirs).
    pub fn hidden_states_batch(
        &self,
        ids: &[u32],
        caches: &mut [&mut KvCache<B>],
        rope: &RopeTables<B>,
        hook: &mut dyn LinearHook<B>,
    ) -> Result<B::Tensor> {
        let b = &self.backend;
        let n = caches.len();
        let t = tokens_each(ids, n)?;
        if let Some(c) = caches.iter().find(|c| c.layers.len() != self.blocks.len()) {
            return Err(Error::Cache(CacheProblem::Blocks {
                cache: c.layers.len(),
                model: self.blocks.len(),
            }));
        }
        if let Some(c) = caches.iter().find(|c| c.len + t > c.capacity) {
            return Err(Error::Cache(CacheProblem::Full {
                adding: t,
                capacity: c.capacity,
                holding: c.len,
            }));
        }
        let positions: Vec<u32> = caches
            .iter()
            .flat_map(|c| (c.len..c.len + t).map(|p| p as u32))
            .collect();
        let x = self.cached_step(ids, &positions, rope, hook, |r| {
            let mut outs = Vec::with_capacity(n);
            for (s, cache) in caches.iter_mut().enumerate() {
                let (qs, ks, vs) = if n == 1 {
                    (r.q.clone(), r.k.clone(), r.v.clone())
                } else {
                    (
                        seq_rows(b, r.q, s, t)?,
                        seq_rows(b, r.k, s, t)?,
                        seq_rows(b, r.v, s, t)?,
                    )
                };
                let mask = AttentionMask {
                    window: r.blk.window,
                    query_offset: cache.len,
                };
                let capacity = cache.capacity;
                let store = cache.store(b, &self.config, r.layer, || {
                    self.rope_inverse_frequencies(capacity, r.blk.rope_set)
                })?;
                b.kv_append(store, &ks, &vs)?;
                outs.push(b.kv_attention(&qs, store, mask, r.scale)?);
            }
            Ok(if n == 1 {
                outs.pop().expect("one sequence")
            } else {
                b.concat_rows(&outs.iter().collect::<Vec<_>>())?
            })
        })?;
        for c in caches.iter_mut() {
            c.len += t;
        }
        Ok(x)
    }

    /// The block loop of a cached step, written once for every kind of cache (per-sequence
    /// stores here, pages in `paged.rs`): embeds `ids`, and in each block hands the new rows'
    /// queries and keys (rotated to `positions`, one per id) and values to `attend`, which
    /// stores the keys and values where its cache keeps them and returns the attention output
    /// of the queries. Returns the hidden states after the last block. `attend` is a generic
    /// parameter, so each cache gets its own monomorphised loop (no indirect call per block).
    pub(crate) fn cached_step(
        &self,
        ids: &[u32],
        positions: &[u32],
        rope: &RopeTables<B>,
        hook: &mut dyn LinearHook<B>,
        mut attend: impl FnMut(NewRows<'_, B>) -> Result<B::Tensor>,
    ) -> Result<B::Tensor> {
        let b = &self.backend;
        let rope_rows = rope.at(b, positions)?;
        let scale = attention_scale(&self.config);
        let mut x = self.embed(ids)?;
        for (layer, blk) in self.blocks.iter().enumerate() {
            let (cos, sin) = rope_rows.set(blk.rope_set);
            let pass = BlockPass {
                b,
                cfg: &self.config,
                blk,
                layer,
            };
            let (q, k, v) = pass.attention_inputs(&x, cos, sin, hook)?;
            let a = attend(NewRows {
                layer,
                blk,
                q: &q,
                k: &k,
                v: &v,
                scale,
            })?;
            x = pass.output(&x, &a, hook)?;
        }
        Ok(x)
    }

    /// [`Model::hidden_states_cached`] followed by the final norm and output projection:
    /// logits `[caches.len() * t, vocab]`.
    pub fn forward_cached(
        &self,
        ids: &[u32],
        caches: &mut [KvCache<B>],
        rope: &RopeTables<B>,
    ) -> Result<B::Tensor> {
        let x = self.hidden_states_cached(ids, caches, rope, &mut ())?;
        self.logits(&x, &mut ())
    }

    /// An empty cache for this model, for up to its maximum position count (backends that
    /// allocate up front should be given [`Model::kv_cache_for`] the context they need).
    pub fn kv_cache(&self) -> KvCache<B> {
        KvCache::new(self.blocks.len(), self.config.max_position)
    }

    /// An empty cache with room for `capacity` positions.
    pub fn kv_cache_for(&self, capacity: usize) -> KvCache<B> {
        KvCache::new(self.blocks.len(), capacity)
    }

    /// An empty cache with room for `capacity` positions, stored as `mode` says.
    pub fn kv_cache_with(&self, capacity: usize, mode: KvMode) -> KvCache<B> {
        KvCache::with_mode(self.blocks.len(), capacity, mode)
    }

    /// Bytes a cache in `mode` holds for `positions` positions of this model (every block's
    /// keys and values), and the part that does not grow with the context (KIVI's
    /// full-precision rows awaiting a group).
    pub fn kv_cache_bytes(&self, mode: KvMode, positions: usize) -> (f64, usize) {
        let c = &self.config;
        let n = self.blocks.len();
        (
            n as f64 * mode.bytes_per_position(c.kv_heads, c.head_dim) * positions as f64,
            n * mode.fixed_bytes(c.kv_heads, c.head_dim),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::tokens_each;
    use crate::{CacheProblem, Error};

    #[test]
    fn a_step_shares_its_ids_evenly_or_is_refused() {
        assert_eq!(tokens_each(&[1, 2, 3, 4], 2).unwrap(), 2);
        assert_eq!(tokens_each(&[7], 1).unwrap(), 1);
        for (ids, seqs) in [(&[1u32, 2, 3][..], 2), (&[][..], 1), (&[1, 2][..], 0)] {
            match tokens_each(ids, seqs) {
                Err(Error::Cache(CacheProblem::Uneven { ids: i, caches })) => {
                    assert_eq!((i, caches), (ids.len(), seqs))
                }
                other => panic!("{ids:?} over {seqs}: {other:?}"),
            }
        }
    }
}
