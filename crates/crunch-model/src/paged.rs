//! Incremental decoding over a paged key/value cache (decision 141), written once against
//! [`Backend`]: one pool of pages for the whole model (`crunch_runtime::paged`), one store
//! per decoder block made by `Backend::kv_pool_alloc`, and per sequence a [`BlockTable`]. A
//! step's new keys and values are written to their slots in one call per block, and
//! attention of every sequence over its pages is one call per block
//! (`Backend::kv_pool_attention`: on CUDA one kernel launch), where [`crate::KvCache`] makes
//! one per sequence.
//!
//! The caller grows each table before the step ([`PagedCache::reserve`]: all or nothing, so
//! running out of pages is found before any work and the caches stay consistent) and frees a
//! finished sequence's pages ([`PagedCache::release`]). Limits: f32 keys and values only.

use crate::decode::tokens_each;
use crate::model::{Model, RopeTables};
use crate::{CacheProblem, Error, LinearHook, Result};
use crunch_runtime::{Backend, BlockTable, OutOfPages, PagePool, PagedSeq};

/// The pages of every sequence a model decodes, and every block's store of them.
pub struct PagedCache<B: Backend> {
    pool: PagePool,
    stores: Vec<B::KvStore>,
}

impl<B: Backend> PagedCache<B> {
    /// The free list (pages in use, free, page size).
    pub fn pool(&self) -> &PagePool {
        &self.pool
    }

    /// Grows `table` until it covers `positions` positions (see [`PagePool::reserve`]).
    pub fn reserve(&mut self, table: &mut BlockTable, positions: usize) -> Result<(), OutOfPages> {
        self.pool.reserve(table, positions)
    }

    /// Frees every page of `table` (a finished or preempted sequence).
    pub fn release(&mut self, table: &mut BlockTable) {
        self.pool.release(table)
    }
}

impl<B: Backend> Model<B> {
    /// Bytes one page of `page_size` positions holds: every block's f32 keys and values.
    pub fn page_bytes(&self, page_size: usize) -> usize {
        let c = &self.config;
        self.blocks.len() * 2 * c.kv_heads * c.head_dim * 4 * page_size
    }

    /// A pool of `pages` pages of `page_size` positions, every block's store allocated now;
    /// `Ok(None)` when the backend has no paged cache (`Backend::kv_pool_alloc`).
    pub fn paged_cache(&self, pages: usize, page_size: usize) -> Result<Option<PagedCache<B>>> {
        let pool = PagePool::new(pages, page_size)?;
        let c = &self.config;
        let mut stores = Vec::with_capacity(self.blocks.len());
        for _ in &self.blocks {
            match self
                .backend
                .kv_pool_alloc(pool.slots(), c.kv_heads, c.head_dim)?
            {
                Some(s) => stores.push(s),
                None => return Ok(None),
            }
        }
        Ok(Some(PagedCache { pool, stores }))
    }

    /// [`Model::hidden_states_batch`] over a paged cache: `t = ids.len() / tables.len()` new
    /// tokens for each sequence (sequence-major), at positions `tables[s].len..+t`, whose
    /// tables must already cover them ([`PagedCache::reserve`]). Returns the hidden states
    /// after the last block, `[tables.len() * t, hidden]`, writes the new keys and values
    /// and advances each table's `len`.
    ///
    /// On an error after the checks the new positions may be partly written; `len` is not
    /// advanced, so the tables stay as they were.
    pub fn hidden_states_paged(
        &self,
        ids: &[u32],
        cache: &mut PagedCache<B>,
        tables: &mut [&mut BlockTable],
        rope: &RopeTables<B>,
        hook: &mut dyn LinearHook<B>,
    ) -> Result<B::Tensor> {
        let b = &self.backend;
        let t = tokens_each(ids, tables.len())?;
        let ps = cache.pool.page_size();
        if let Some(tb) = tables.iter().find(|tb| tb.len + t > tb.room(ps)) {
            return Err(Error::Cache(CacheProblem::Full {
                adding: t,
                capacity: tb.room(ps),
                holding: tb.len,
            }));
        }
        let positions: Vec<u32> = tables
            .iter()
            .flat_map(|tb| (tb.len..tb.len + t).map(|p| p as u32))
            .collect();
        let slots: Vec<u32> = tables
            .iter()
            .flat_map(|tb| {
                (tb.len..tb.len + t).map(|p| tb.slot(p, ps).expect("reserved above") as u32)
            })
            .collect();
        let stores = &mut cache.stores;
        let x = self.cached_step(ids, &positions, rope, hook, |r| {
            let store = &mut stores[r.layer];
            b.kv_pool_write(store, &slots, r.k, r.v)?;
            let seqs: Vec<PagedSeq> = tables
                .iter()
                .map(|tb| PagedSeq {
                    pages: &tb.pages,
                    len: tb.len + t,
                    rows: t,
                })
                .collect();
            Ok(b.kv_pool_attention(r.q, store, &seqs, ps, r.blk.window, r.scale)?)
        })?;
        for tb in tables.iter_mut() {
            tb.len += t;
        }
        Ok(x)
    }
}
