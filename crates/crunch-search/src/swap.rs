//! Swapping variants into the candidate model quickly (the fitness's `apply`, decision 129).
//!
//! At Llama-3-8B's shapes a variant of an MLP projection is 58.7 M weights: made dense on one
//! thread, into a fresh 235 MB buffer, then uploaded into a fresh device buffer, it costs far
//! more than the candidate's forward on a GPU. Three things remove most of that, none of which
//! changes a value the model computes with (the weights are bit for bit the ones
//! `CompressedLayer::dense` makes, so a search's choices and its written file are unchanged):
//! - [`dense_into`]: quantized variants are made dense row by row on the rayon pool, into a
//!   buffer the fitness keeps between swaps;
//! - [`SwapCache`]: a weight swapped out of the model stays on the device (bounded in bytes) and
//!   comes back without a dequantization or an upload when a later candidate wants it: most
//!   swaps of a generation go back to the parent's level, since every offspring is a few level
//!   steps from the same parent;
//! - a weight evicted from the cache (or, once the cache is full, its oldest weight of the
//!   needed shape) is written over in place (`Backend::write_weight`, where the backend can)
//!   rather than a new device buffer allocated for the next swap, and the
//!   dense buffer stays with the fitness (a fresh 235 MB buffer costs its page faults: most of
//!   the host's time at these shapes: BENCHMARKS, "The search's layer swap on the host").

use crunch_repr::{Compressed, CompressedLayer, QuantizedWeight};
use crunch_runtime::QuantCodes;
use rayon::prelude::*;
use std::collections::HashMap;

/// `v` as the model runs it (what [`CompressedLayer::dense`] returns, to the bit), into `out`:
/// quantized variants without a correction in parallel over rows, anything else through
/// `dense`. `out` is reused when it has the right length (every value is written).
pub fn dense_into(v: &CompressedLayer, out: &mut Vec<f32>) {
    match (&v.main, &v.correction) {
        (Compressed::Quantized(q), None) => dequantize_into(q, out),
        (Compressed::Lut(q), None) => {
            rows_into(q.rows, q.cols, out, |r, row| q.dequantize_row(r, row))
        }
        _ => *out = v.dense(),
    }
}

/// `v` as codes a backend can keep and expand itself (`Backend::upload_codes`), where `v` is
/// a quantized weight with static groups and no correction: the same values as
/// [`dense_into`] makes (`QuantCodes` is `QuantizedWeight::dequantize`'s arithmetic without
/// `g_idx`). Anything else (sparse, factored, a correction, `g_idx`): `None`.
pub fn codes_of(v: &CompressedLayer) -> Option<QuantCodes<'_>> {
    match (&v.main, &v.correction) {
        (Compressed::Quantized(q), None) if q.g_idx.is_none() => Some(quant_codes(q)),
        _ => None,
    }
}

/// The codes, scales and zero points of `q` as [`QuantCodes`] (which assumes static groups:
/// the caller checks `g_idx` is `None`).
pub fn quant_codes(q: &QuantizedWeight) -> QuantCodes<'_> {
    QuantCodes {
        rows: q.rows,
        cols: q.cols,
        bits: q.spec.bits,
        // As `dequantize_row`: one group per row without a group size.
        group: q.spec.group_size.unwrap_or(q.cols).max(1),
        codes: &q.codes,
        scales: &q.scales,
        zeros: &q.zeros,
    }
}

/// [`QuantizedWeight::dequantize`] on the rayon pool: `(code − zero) · f32(scale)` in f32, the
/// same operations on the same values, so the same bits.
pub fn dequantize_into(q: &QuantizedWeight, out: &mut Vec<f32>) {
    rows_into(q.rows, q.cols, out, |r, row| q.dequantize_row(r, row));
}

/// Fills `out` ([rows, cols]) row by row on the rayon pool with `row_fn(r, row)`.
fn rows_into(
    rows: usize,
    cols: usize,
    out: &mut Vec<f32>,
    row_fn: impl Fn(usize, &mut [f32]) + Sync,
) {
    if out.len() != rows * cols {
        // A fresh zeroed allocation is mapped lazily: its pages are touched by the parallel
        // writes below rather than by one thread here.
        *out = vec![0.0; rows * cols];
    }
    if cols == 0 {
        return;
    }
    out.par_chunks_mut(cols)
        .with_min_len(4)
        .enumerate()
        .for_each(|(r, row)| row_fn(r, row));
}

/// Weights recently swapped out of the candidate model, kept on the device by (unit, level)
/// up to a byte budget (counted as f32: an upper bound where the backend stores bf16), the
/// least recently stored evicted first.
pub struct SwapCache<T> {
    budget: u64,
    used: u64,
    clock: u64,
    entries: HashMap<(usize, u8), Entry<T>>,
}

struct Entry<T> {
    tensor: T,
    bytes: u64,
    stored: u64,
    shape: (usize, usize),
}

impl<T> SwapCache<T> {
    pub fn new(budget: u64) -> Self {
        Self {
            budget,
            used: 0,
            clock: 0,
            entries: HashMap::new(),
        }
    }

    /// The budget in bytes (counted as f32).
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// The weight of `unit` at `level`, taken out of the cache, if it is there.
    pub fn take(&mut self, unit: usize, level: u8) -> Option<T> {
        let e = self.entries.remove(&(unit, level))?;
        self.used -= e.bytes;
        Some(e.tensor)
    }

    /// When a weight of `shape` would not fit without evictions: the least recently stored
    /// weight of that shape, taken out (its buffer can take the new weight's values, and its
    /// place the weight that makes way). `None` while there is room, or no weight of the shape.
    pub fn evict_for(&mut self, shape: (usize, usize)) -> Option<T> {
        let bytes = 4 * (shape.0 * shape.1) as u64;
        if self.used + bytes <= self.budget {
            return None;
        }
        let key = *self
            .entries
            .iter()
            .filter(|(_, e)| e.shape == shape)
            .min_by_key(|(_, e)| e.stored)?
            .0;
        let e = self.entries.remove(&key).expect("just found");
        self.used -= e.bytes;
        Some(e.tensor)
    }

    /// Keeps `tensor` (`unit` at `level`, of `shape`), evicting the least recently stored
    /// weights until it fits; returns the evicted weights with their shapes (their buffers can
    /// take later swaps' values). A weight larger than the whole budget is returned itself.
    pub fn put(
        &mut self,
        unit: usize,
        level: u8,
        shape: (usize, usize),
        tensor: T,
    ) -> Vec<((usize, usize), T)> {
        let bytes = 4 * (shape.0 * shape.1) as u64;
        if bytes > self.budget {
            return vec![(shape, tensor)];
        }
        let mut evicted = Vec::new();
        while self.used + bytes > self.budget {
            let key = *self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.stored)
                .expect("used > 0 means an entry")
                .0;
            let e = self.entries.remove(&key).expect("just found");
            self.used -= e.bytes;
            evicted.push((e.shape, e.tensor));
        }
        self.clock += 1;
        self.used += bytes;
        let old = self.entries.insert(
            (unit, level),
            Entry {
                tensor,
                bytes,
                stored: self.clock,
                shape,
            },
        );
        if let Some(o) = old {
            self.used -= o.bytes;
            evicted.push((o.shape, o.tensor));
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crunch_repr::QuantSpec;
    use half::f16;

    fn quantized(
        rows: usize,
        cols: usize,
        spec: QuantSpec,
        g_idx: Option<Vec<u32>>,
    ) -> QuantizedWeight {
        let groups = spec.n_groups(cols);
        let maxq = spec.maxq() as usize;
        QuantizedWeight {
            spec,
            rows,
            cols,
            codes: (0..rows * cols)
                .map(|i| ((i * 7 + i / 3) % (maxq + 1)) as u8)
                .collect(),
            scales: (0..rows * groups)
                .map(|i| f16::from_f32(0.01 + 0.003 * (i % 11) as f32))
                .collect(),
            zeros: (0..rows * groups).map(|i| (i % (maxq + 1)) as u8).collect(),
            g_idx,
        }
    }

    #[test]
    fn parallel_dequantization_gives_the_same_bits() {
        let cases = [
            quantized(33, 256, QuantSpec::new(4, Some(128), false), None),
            quantized(17, 96, QuantSpec::new(3, Some(32), true), None),
            quantized(9, 64, QuantSpec::new(2, None, false), None),
            quantized(
                5,
                64,
                QuantSpec::new(8, Some(32), false),
                Some((0..64).map(|c| (c * 5 % 2) as u32).collect()),
            ),
        ];
        let mut out = Vec::new();
        for q in cases {
            q.validate().unwrap();
            let want = q.dequantize();
            // A stale buffer of another length, then one of the same length.
            dequantize_into(&q, &mut out);
            assert_eq!(
                out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
            out.iter_mut().for_each(|v| *v = f32::NAN);
            let v = CompressedLayer::new("rtn", Compressed::Quantized(q));
            dense_into(&v, &mut out);
            assert_eq!(
                out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                v.dense().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    /// What the device expands (the kernel's reading, transcribed in `QuantCodes::value`) is
    /// the dense variant to the bit, at every width, for whole and short last groups and one
    /// group per row; what it cannot hold stays on the host.
    #[test]
    fn codes_expand_to_the_dense_variant() {
        for bits in crunch_repr::SUPPORTED_BITS {
            for group in [Some(32), Some(128), None] {
                let q = quantized(5, 200, QuantSpec::new(bits, group, bits % 2 == 0), None);
                let v = CompressedLayer::new("rtn", Compressed::Quantized(q));
                let c = codes_of(&v).expect("static groups, no correction");
                c.check().unwrap();
                let words = c.pack_words();
                let want = v.dense();
                for r in 0..5 {
                    for col in 0..200 {
                        assert_eq!(
                            c.value(&words, r, col).to_bits(),
                            want[r * 200 + col].to_bits(),
                            "{bits} bits, group {group:?}, ({r}, {col})"
                        );
                    }
                }
            }
        }
        let g_idx = quantized(
            2,
            64,
            QuantSpec::new(4, Some(32), false),
            Some((0..64).map(|c| (c % 2) as u32).collect()),
        );
        assert!(codes_of(&CompressedLayer::new("gptq", Compressed::Quantized(g_idx))).is_none());
    }

    #[test]
    fn the_cache_keeps_recent_weights_within_its_budget() {
        // Budget: three 2×2 f32 weights (48 bytes).
        let mut c = SwapCache::new(48);
        assert!(c.put(0, 1, (2, 2), "a").is_empty());
        assert!(c.put(1, 1, (2, 2), "b").is_empty());
        assert!(c.put(2, 1, (1, 4), "c").is_empty());
        // Full: the oldest (unit 0) goes, and is handed back for reuse.
        assert_eq!(c.put(3, 1, (2, 2), "d"), vec![((2, 2), "a")]);
        assert_eq!(c.take(0, 1), None);
        assert_eq!(c.take(1, 1), Some("b"));
        assert_eq!(c.take(1, 1), None);
        assert!(c.put(4, 0, (2, 2), "e").is_empty());
        assert_eq!(c.put(5, 0, (2, 2), "f"), vec![((1, 4), "c")]);
        assert_eq!(c.take(2, 1), None);
        // Larger than the budget: not kept.
        assert_eq!(c.put(6, 0, (4, 4), "g"), vec![((4, 4), "g")]);
        // Full (d, e, f; the 4×4 was refused): room is made from the oldest of the same shape.
        assert_eq!(c.evict_for((1, 4)), None);
        assert_eq!(c.evict_for((2, 2)), Some("d"));
        assert_eq!(c.evict_for((2, 2)), None);
        let mut none = SwapCache::new(0);
        assert_eq!(none.put(0, 0, (1, 1), 1), vec![((1, 1), 1)]);
    }
}
