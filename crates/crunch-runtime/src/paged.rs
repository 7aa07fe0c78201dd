//! A paged key/value cache's bookkeeping (decision 141): a pool of `pages` pages of
//! `page_size` positions, a free list, and per sequence a [`BlockTable`] (its page ids in
//! position order). The keys and values themselves live in one store per decoder block made
//! by [`crate::Backend::kv_pool_alloc`] with room for `pages × page_size` slots; a page id
//! means the same slots in every block's store, so one table serves the whole model and one
//! page reserves `page_size` positions of every block's keys and values.
//!
//! Position `p` of a sequence lives in slot `table.pages[p / page_size] · page_size +
//! p % page_size` ([`BlockTable::slot`]); the backends' attention over pages
//! ([`crate::Backend::kv_pool_attention`]) reads keys through the same arithmetic.
//!
//! Limits: f32 keys and values only (the compressed `--kv-cache` modes keep per-sequence
//! stores); page ids are `u32`; a sequence grows one page at a time and frees all its pages
//! at once (no sharing of prefixes between sequences).

use crate::{Error, Result};

/// Positions per page when the caller does not say (vLLM's default too: small enough that a
/// sequence wastes under a page, large enough that a table stays short).
pub const DEFAULT_PAGE_SIZE: usize = 16;

/// One sequence's pages, in position order, and how many positions hold keys and values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockTable {
    pub pages: Vec<u32>,
    /// Positions written so far (`0..len`).
    pub len: usize,
}

impl BlockTable {
    /// The slot (index into a block's pool store) of position `p`; `None` when no page of
    /// this table covers it.
    pub fn slot(&self, p: usize, page_size: usize) -> Option<usize> {
        let page = *self.pages.get(p / page_size)?;
        Some(page as usize * page_size + p % page_size)
    }

    /// Positions the table's pages cover.
    pub fn room(&self, page_size: usize) -> usize {
        self.pages.len() * page_size
    }
}

/// One sequence's part of a paged attention call: its pages, the positions holding keys
/// after this step's append (`len`), and how many of those are this step's query rows
/// (`rows`: the queries sit at positions `len - rows..len`, in the order of `q`'s rows).
#[derive(Clone, Copy, Debug)]
pub struct PagedSeq<'a> {
    pub pages: &'a [u32],
    pub len: usize,
    pub rows: usize,
}

/// The pool was asked for more pages than it has free.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("key/value page pool exhausted: {wanted} more pages wanted, {free} of {total} free")]
pub struct OutOfPages {
    pub wanted: usize,
    pub free: usize,
    pub total: usize,
}

/// The free list of a pool of `pages` pages of `page_size` positions.
#[derive(Clone, Debug)]
pub struct PagePool {
    page_size: usize,
    total: usize,
    /// Free page ids, handed out from the end: the lowest ids first in a fresh pool, then the
    /// most recently freed (whose memory is likelier to be in a cache).
    free: Vec<u32>,
}

impl PagePool {
    pub fn new(pages: usize, page_size: usize) -> Result<PagePool> {
        if page_size == 0 || pages == 0 {
            return Err(Error(format!(
                "a page pool needs at least one page of at least one position (asked for \
                 {pages} pages of {page_size})"
            )));
        }
        if pages > u32::MAX as usize || pages.checked_mul(page_size).is_none() {
            return Err(Error(format!("a page pool of {pages} pages is too large")));
        }
        Ok(PagePool {
            page_size,
            total: pages,
            free: (0..pages as u32).rev().collect(),
        })
    }

    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// Pages in the pool.
    pub fn pages(&self) -> usize {
        self.total
    }

    /// Slots every block's store needs: `pages × page_size`.
    pub fn slots(&self) -> usize {
        self.total * self.page_size
    }

    pub fn free_pages(&self) -> usize {
        self.free.len()
    }

    pub fn used_pages(&self) -> usize {
        self.total - self.free.len()
    }

    /// Pages that hold `positions` positions.
    pub fn pages_for(&self, positions: usize) -> usize {
        positions.div_ceil(self.page_size)
    }

    /// Grows `table` until its pages cover `positions` positions; all or nothing (on
    /// [`OutOfPages`] the table and the pool are unchanged).
    pub fn reserve(&mut self, table: &mut BlockTable, positions: usize) -> Result<(), OutOfPages> {
        let wanted = self.pages_for(positions).saturating_sub(table.pages.len());
        if wanted > self.free.len() {
            return Err(OutOfPages {
                wanted,
                free: self.free.len(),
                total: self.total,
            });
        }
        let at = self.free.len() - wanted;
        table.pages.extend(self.free.drain(at..).rev());
        Ok(())
    }

    /// Returns every page of `table` to the pool and empties it.
    pub fn release(&mut self, table: &mut BlockTable) {
        // Pushed back in reverse so that a table reserved next gets them in the same order.
        for p in table.pages.drain(..).rev() {
            debug_assert!(
                (p as usize) < self.total && !self.free.contains(&p),
                "page {p} freed twice"
            );
            self.free.push(p);
        }
        table.len = 0;
    }
}

#[cfg(test)]
mod tests;
