//! Scaled dot-product attention over a compressed store, decoding one block of positions at a
//! time: the cache is never expanded beyond one block of keys (or values) per task.
//!
//! A task is one kv head and up to 16 consecutive queries of every query head that shares it
//! (grouped-query attention), so each decoded block serves `16 × group` query rows. Scores of
//! a task's rows are kept (`rows × keys` floats), then a softmax per row, then the values are
//! decoded block by block and accumulated. KIVI's positions not yet quantized for a query (its
//! own group, while unfilled) are read from the store's f32 rows
//! ([`QuantKv::visible_quantized`]).

use super::store::{QuantKv, Side};
use crate::host::dot;
use crate::{AttentionMask, Error, Result};
use crunch_kernels::exp_nonpositive;
use std::cell::RefCell;
use std::sync::Mutex;

/// Queries per task.
const QUERY_BLOCK: usize = 16;

struct Scratch {
    scores: Vec<f32>,
    /// One block decoded, and its rows the store keeps in f16 (KIVI's tail).
    block: Vec<f32>,
    tail: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch { scores: Vec::new(), block: Vec::new(), tail: Vec::new() })
    };
}

/// `q [t, heads, d]` at positions `mask.query_offset..+t` against `kv`: `[t, heads · d]`.
pub fn attend(
    q: &[f32],
    t: usize,
    heads: usize,
    kv: &QuantKv,
    mask: AttentionMask,
    scale: f32,
) -> Result<Vec<f32>> {
    let (d, kvh) = (kv.head_dim(), kv.kv_heads());
    let offset = mask.query_offset;
    if kv.is_staged() {
        return Err(Error(
            "attention: this compressed cache keeps its codes on the device".into(),
        ));
    }
    if offset + t > kv.len() || offset < kv.first_query() {
        return Err(Error(format!(
            "attention: queries at positions {offset}..{} against a compressed cache of {} \
             positions (queries from {} on)",
            offset + t,
            kv.len(),
            kv.first_query()
        )));
    }
    if q.len() != t * heads * d || kvh == 0 || !heads.is_multiple_of(kvh) {
        return Err(Error(format!(
            "attention: {} query values for {t} positions of {heads} heads against {kvh} kv \
             heads of {d}",
            q.len()
        )));
    }
    let group = heads / kvh;
    let blocks = t.div_ceil(QUERY_BLOCK);
    // [kv_heads, t, group, d]: each task's rows are contiguous.
    let mut tmp = vec![0f32; t * heads * d];
    let parts: Vec<Mutex<&mut [f32]>> = tmp
        .chunks_mut(t * group * d)
        .flat_map(|head| head.chunks_mut(QUERY_BLOCK * group * d))
        .map(Mutex::new)
        .collect();
    let task = |job: usize| {
        let (g, b) = (job / blocks, job % blocks);
        let (i0, i1) = (b * QUERY_BLOCK, ((b + 1) * QUERY_BLOCK).min(t));
        let mut out = parts[job].lock().unwrap_or_else(|e| e.into_inner());
        SCRATCH.with(|s| {
            let task = Task {
                q,
                kv,
                heads,
                group,
                g,
                first: offset + i0,
                n: i1 - i0,
                qrow0: i0,
                window: mask.window,
                scale,
            };
            task.run(&mut s.borrow_mut(), &mut out);
        })
    };
    let jobs = kvh * blocks;
    if jobs > 1 && t * kv.len() * heads * d >= 1 << 16 {
        crunch_kernels::pool::run(jobs, &task);
    } else {
        (0..jobs).for_each(task);
    }
    drop(parts);
    let mut out = vec![0f32; t * heads * d];
    for g in 0..kvh {
        for i in 0..t {
            let src = ((g * t + i) * group) * d;
            let dst = (i * heads + g * group) * d;
            out[dst..dst + group * d].copy_from_slice(&tmp[src..src + group * d]);
        }
    }
    Ok(out)
}

struct Task<'a> {
    q: &'a [f32],
    kv: &'a QuantKv,
    heads: usize,
    group: usize,
    /// kv head.
    g: usize,
    /// Position of the first query, and how many.
    first: usize,
    n: usize,
    /// Row of the first query in `q`.
    qrow0: usize,
    window: Option<usize>,
    scale: f32,
}

impl Task<'_> {
    /// Lowest key position the query at `p` sees.
    fn lo(&self, p: usize) -> usize {
        self.window.map_or(0, |w| (p + 1).saturating_sub(w))
    }

    /// Calls `f(row, query position, key position, key row)` for every key each query row
    /// sees, a block of positions decoded at a time.
    fn each_key(
        &self,
        side: Side,
        (block, tail): (&mut Vec<f32>, &mut Vec<f32>),
        mut f: impl FnMut(usize, usize, &[f32]),
    ) {
        let (kv, d) = (self.kv, self.kv.head_dim());
        let blk = kv.block();
        let last = self.first + self.n - 1;
        let base = self.lo(self.first);
        block.resize(blk * d, 0.0);
        tail.resize(blk * d, 0.0);
        for b in base / blk..=last / blk {
            let (j0, j1) = (b * blk, ((b + 1) * blk).min(kv.len()));
            let stored = kv.block_quantized(b);
            if stored {
                kv.decode(side, self.g, j0, j1, &mut block[..(j1 - j0) * d]);
            }
            // Rows some query may see unquantized: those still kept in f16.
            let t0 = j0.max(kv.full_start());
            if kv.kivi() && t0 < j1 {
                kv.full_rows(
                    side,
                    self.g,
                    t0,
                    j1,
                    &mut tail[(t0 - j0) * d..(j1 - j0) * d],
                );
            }
            for i in 0..self.n {
                let p = self.first + i;
                let (a, z) = (j0.max(self.lo(p)), (j1 - 1).min(p));
                if a > z {
                    continue;
                }
                let quant = stored && kv.visible_quantized(b, p);
                let rows: &[f32] = if quant { block } else { tail };
                for j in a..=z {
                    f(i, j - base, &rows[(j - j0) * d..(j - j0 + 1) * d]);
                }
            }
        }
    }

    /// Writes the task's output rows `[n, group, d]` into `out`.
    fn run(&self, s: &mut Scratch, out: &mut [f32]) {
        let (d, group) = (self.kv.head_dim(), self.group);
        let base = self.lo(self.first);
        let span = self.first + self.n - base;
        let rows = self.n * group;
        let Scratch {
            scores,
            block,
            tail,
        } = s;
        scores.clear();
        scores.resize(rows * span, f32::NEG_INFINITY);
        let qrow = |i: usize, hh: usize| {
            let at = ((self.qrow0 + i) * self.heads + self.g * group + hh) * d;
            &self.q[at..at + d]
        };
        self.each_key(Side::K, (block, tail), |i, j, k| {
            for hh in 0..group {
                scores[(i * group + hh) * span + j] = dot(qrow(i, hh), k) * self.scale;
            }
        });
        for i in 0..self.n {
            let p = self.first + i;
            let (a, z) = (self.lo(p) - base, p - base);
            for hh in 0..group {
                let s = &mut scores[(i * group + hh) * span..][a..=z];
                let max = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                let mut sum = 0f32;
                for x in s.iter_mut() {
                    *x = exp_nonpositive(*x - max);
                    sum += *x;
                }
                let inv = 1.0 / sum;
                s.iter_mut().for_each(|x| *x *= inv);
            }
        }
        out.fill(0.0);
        self.each_key(Side::V, (block, tail), |i, j, v| {
            for hh in 0..group {
                let r = i * group + hh;
                let w = scores[r * span + j];
                for (o, &x) in out[r * d..(r + 1) * d].iter_mut().zip(v) {
                    *o += w * x;
                }
            }
        });
    }
}
