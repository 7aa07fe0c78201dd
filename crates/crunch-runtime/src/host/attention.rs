//! Scaled dot-product attention in f32 over keys and values laid out with arbitrary head and
//! position strides (a `[len, kv_heads, d]` tensor, or the cache's `[kv_heads, capacity, d]`).
//!
//! Each (head, block of queries) is a task on the pool; each query computes its scores
//! against the keys it may see, a softmax with a vectorisable `exp`, and the weighted sum of
//! values. No score matrix is materialised beyond one row.

use crate::{AttentionMask, Error, Result};
use crunch_kernels::{exp_nonpositive, Isa, SharedOut};
use std::cell::RefCell;

/// Keys and values of one sequence.
pub struct KvView<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
    /// Positions `0..len` are valid.
    pub len: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Offset between heads and between positions, in floats.
    pub head_stride: usize,
    pub pos_stride: usize,
    /// A paged pool's block table and page size (decision 141): position `j` is read from
    /// slot `pages[j / page_size] · page_size + j % page_size`. `None`: position `j` is slot
    /// `j`. Only addresses change, so attention through pages gives the same values bit for
    /// bit as over the same keys stored contiguously.
    pub pages: Option<(&'a [u32], usize)>,
}

impl KvView<'_> {
    #[inline(always)]
    pub(super) fn at(&self, g: usize, j: usize) -> usize {
        let slot = match self.pages {
            Some((table, size)) => table[j / size] as usize * size + j % size,
            None => j,
        };
        g * self.head_stride + slot * self.pos_stride
    }
}

/// Queries per task (a whole tile of `attention_tile`).
const QUERY_BLOCK: usize = super::attention_tile::QB;

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static TILE: RefCell<super::attention_tile::Scratch> = RefCell::new(Default::default());
}

/// `q [t, heads, d]` at positions `mask.query_offset..+t` against `kv`: `[t, heads · d]`.
pub fn attend(
    q: &[f32],
    t: usize,
    heads: usize,
    kv: &KvView,
    mask: AttentionMask,
    scale: f32,
) -> Result<Vec<f32>> {
    let d = kv.head_dim;
    let offset = mask.query_offset;
    if offset + t > kv.len {
        return Err(Error(format!(
            "attention: queries at positions {offset}..{} need keys up to there, but there \
             are {}",
            offset + t,
            kv.len
        )));
    }
    let group = heads / kv.kv_heads;
    let mut out = vec![0f32; t * heads * d];
    let o = SharedOut::new(&mut out);
    let blocks = t.div_ceil(QUERY_BLOCK);
    let task = |job: usize| {
        let (h, b) = (job / blocks, job % blocks);
        let (i0, i1) = (b * QUERY_BLOCK, ((b + 1) * QUERY_BLOCK).min(t));
        if i1 - i0 >= 4 {
            // Prefill: the block's queries together (`attention_tile`).
            let tile = super::attention_tile::Tile {
                q: &q[(i0 * heads + h) * d..],
                stride: heads * d,
                n: i1 - i0,
                g: h / group,
                p0: offset + i0,
                window: mask.window,
                scale,
            };
            // SAFETY: rows (i0..i1, h) of the output belong to this task.
            let mut put = |i: usize, row: &[f32]| unsafe {
                std::ptr::copy_nonoverlapping(row.as_ptr(), o.at(((i0 + i) * heads + h) * d), d)
            };
            return TILE.with(|s| {
                super::attention_tile::attend_tile(&tile, kv, &mut s.borrow_mut(), &mut put)
            });
        }
        SCORES.with(|s| {
            let mut s = s.borrow_mut();
            s.resize(offset + i1, 0.0);
            for i in i0..i1 {
                let qr = &q[(i * heads + h) * d..(i * heads + h + 1) * d];
                // SAFETY: row (i, h) of the output belongs to this task.
                let orow = unsafe { std::slice::from_raw_parts_mut(o.at((i * heads + h) * d), d) };
                let query = Query {
                    q: qr,
                    g: h / group,
                    p: offset + i,
                    window: mask.window,
                    scale,
                };
                one_query(&query, kv, &mut s, orow);
            }
        })
    };
    let jobs = heads * blocks;
    // Work per job: about (keys × d) multiply-adds per query.
    if jobs > 1 && t * kv.len * heads * d >= 1 << 16 {
        crunch_kernels::pool::run(jobs, &task);
    } else {
        (0..jobs).for_each(task);
    }
    Ok(out)
}

/// One query row of attention: the query, its kv head `g`, its absolute position `p`, the
/// sliding window (if any) and the score scale.
struct Query<'q> {
    q: &'q [f32],
    g: usize,
    p: usize,
    window: Option<usize>,
    scale: f32,
}

fn one_query(query: &Query, kv: &KvView, scores: &mut [f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if Isa::detect() >= Isa::Avx2 {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { one_query_avx2(query, kv, scores, out) };
    }
    one_query_generic(query, kv, scores, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn one_query_avx2(query: &Query, kv: &KvView, scores: &mut [f32], out: &mut [f32]) {
    one_query_generic(query, kv, scores, out)
}

/// The query at absolute position `p` of kv head `g`: keys `j` with `p - window < j <= p`.
#[inline(always)]
fn one_query_generic(query: &Query, kv: &KvView, scores: &mut [f32], out: &mut [f32]) {
    let Query {
        q,
        g,
        p,
        window,
        scale,
    } = *query;
    let d = kv.head_dim;
    let lo = window.map_or(0, |w| (p + 1).saturating_sub(w));
    let s = &mut scores[lo..=p];
    let mut max = f32::NEG_INFINITY;
    for (j, sj) in (lo..=p).zip(s.iter_mut()) {
        let at = kv.at(g, j);
        // The cache rows come from memory (a decode step's weights have pushed them out
        // of every cache): the keys a few rows ahead, and this row's values for the loop
        // below.
        prefetch_row(kv.k, kv.at(g, (j + KEYS_AHEAD).min(p)), d);
        prefetch_row(kv.v, at, d);
        *sj = dot(q, &kv.k[at..at + d]) * scale;
        max = max.max(*sj);
    }
    let mut z = 0f32;
    for sj in s.iter_mut() {
        *sj = exp_nonpositive(*sj - max);
        z += *sj;
    }
    out.fill(0.0);
    let inv = 1.0 / z;
    for (j, &w) in (lo..=p).zip(s.iter()) {
        let at = kv.at(g, j);
        let w = w * inv;
        for (o, &v) in out.iter_mut().zip(&kv.v[at..at + d]) {
            *o += w * v;
        }
    }
}

/// How many key rows ahead of the one being read are requested from memory.
const KEYS_AHEAD: usize = 8;

/// Requests `xs[at..at + d]` from memory (a hint: no effect on results).
#[inline(always)]
fn prefetch_row(xs: &[f32], at: usize, d: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let end = (at + d).min(xs.len());
        let mut i = at;
        while i < end {
            // SAFETY: a prefetch of an address inside `xs`; it never faults or writes.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    xs.as_ptr().add(i).cast(),
                )
            };
            i += 16;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (xs, at, d);
}

/// `Σ a·b` in 16 partial sums, in the packed kernels' order.
pub(crate) use crunch_kernels::dot16 as dot;
