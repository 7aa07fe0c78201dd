//! Order-0 statistics of a byte plane: the histogram, its empirical entropy, and the
//! quantised frequency table the rANS coder uses.
//!
//! The table is scaled to a power of two (`PROB_SCALE`). Quantising loses a little against the
//! true entropy; the greedy correction below moves the rounding error onto the symbols where a
//! one-step change costs the fewest bits, which keeps that loss to a few hundredths of a percent
//! on weight planes (measured in the tests and in BENCHMARKS.md).

use crate::error::{CodecError, CodecResult};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Bits of probability precision. 12 keeps the decode table at 4096 entries (16 KiB, inside
/// L1 data cache), which is what makes decoding fast; the cost against 14 bits was measured
/// at under 0.1% on real exponent planes.
pub const PROB_BITS: u32 = 12;
pub const PROB_SCALE: u32 = 1 << PROB_BITS;

/// Counts of each byte value.
pub fn histogram(data: &[u8]) -> [u32; 256] {
    // Four sub-histograms break the store-to-load dependency when neighbouring bytes repeat,
    // which is the common case in exponent planes.
    let mut h = [[0u32; 256]; 4];
    let mut quads = data.chunks_exact(4);
    for q in &mut quads {
        h[0][q[0] as usize] += 1;
        h[1][q[1] as usize] += 1;
        h[2][q[2] as usize] += 1;
        h[3][q[3] as usize] += 1;
    }
    for &b in quads.remainder() {
        h[0][b as usize] += 1;
    }
    let mut out = [0u32; 256];
    for (i, o) in out.iter_mut().enumerate() {
        *o = h[0][i] + h[1][i] + h[2][i] + h[3][i];
    }
    out
}

/// Empirical order-0 entropy of the histogram, in bits for all symbols together.
pub fn entropy_bits(counts: &[u32; 256]) -> f64 {
    let n: f64 = counts.iter().map(|&c| c as f64).sum();
    if n == 0.0 {
        return 0.0;
    }
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let c = c as f64;
            -c * (c / n).log2()
        })
        .sum()
}

/// Scales `counts` to frequencies summing to `PROB_SCALE`, every present symbol getting at
/// least 1. Needs at least two distinct symbols (a single-symbol plane is coded as a constant).
pub fn normalize(counts: &[u32; 256]) -> CodecResult<[u32; 256]> {
    let total: u64 = counts.iter().map(|&c| c as u64).sum();
    let present = counts.iter().filter(|&&c| c > 0).count();
    if present < 2 || present > PROB_SCALE as usize {
        return Err(CodecError::new("rANS needs at least two distinct symbols"));
    }
    let mut freq = [0u32; 256];
    let mut sum: i64 = 0;
    for (f, &c) in freq.iter_mut().zip(counts) {
        if c > 0 {
            let scaled = (c as u64 * PROB_SCALE as u64 + total / 2) / total;
            *f = scaled.clamp(1, PROB_SCALE as u64 - 1) as u32;
            sum += *f as i64;
        }
    }
    // Fix the rounding surplus or deficit one unit at a time, each time on the symbol where the
    // change costs the fewest bits: `c * ln(f / (f - 1))` to take a unit away, or the largest
    // gain `c * ln((f + 1) / f)` to give one. A heap keeps this O(d log n) for a difference d.
    // Costs are positive, so their IEEE bit patterns order like the numbers.
    let cost_down = |c: u32, f: u32| (c as f64 * (f as f64 / (f - 1) as f64).ln()).to_bits();
    let gain_up = |c: u32, f: u32| (c as f64 * ((f + 1) as f64 / f as f64).ln()).to_bits();
    if sum > PROB_SCALE as i64 {
        let mut heap: BinaryHeap<(Reverse<u64>, usize)> = (0..256)
            .filter(|&s| freq[s] > 1)
            .map(|s| (Reverse(cost_down(counts[s], freq[s])), s))
            .collect();
        while sum > PROB_SCALE as i64 {
            let (_, s) = heap
                .pop()
                .ok_or_else(|| CodecError::new("frequency table cannot be normalised"))?;
            freq[s] -= 1;
            sum -= 1;
            if freq[s] > 1 {
                heap.push((Reverse(cost_down(counts[s], freq[s])), s));
            }
        }
    } else if sum < PROB_SCALE as i64 {
        let mut heap: BinaryHeap<(u64, usize)> = (0..256)
            .filter(|&s| counts[s] > 0)
            .map(|s| (gain_up(counts[s], freq[s]), s))
            .collect();
        while sum < PROB_SCALE as i64 {
            let (_, s) = heap
                .pop()
                .ok_or_else(|| CodecError::new("frequency table cannot be normalised"))?;
            freq[s] += 1;
            sum += 1;
            if freq[s] < PROB_SCALE - 1 {
                heap.push((gain_up(counts[s], freq[s]), s));
            }
        }
    }
    Ok(freq)
}

/// Exact size in bits of coding `counts` with the quantised table `freq` (ignoring the few
/// bytes of final state), used to compare candidates without running the coder.
pub fn coded_bits(counts: &[u32; 256], freq: &[u32; 256]) -> f64 {
    counts
        .iter()
        .zip(freq)
        .filter(|(&c, _)| c > 0)
        .map(|(&c, &f)| c as f64 * (PROB_BITS as f64 - (f as f64).log2()))
        .sum()
}

/// Serialises a normalised table: the present symbols as runs, then each frequency minus one
/// as a little-endian base-128 varint (at most two bytes since frequencies are below 4096).
pub fn write_table(freq: &[u32; 256], out: &mut Vec<u8>) {
    let mut runs: Vec<(u8, u8)> = Vec::new(); // (first symbol, length - 1)
    let mut s = 0usize;
    while s < 256 {
        if freq[s] == 0 {
            s += 1;
            continue;
        }
        let start = s;
        while s < 256 && freq[s] > 0 {
            s += 1;
        }
        runs.push((start as u8, (s - start - 1) as u8));
    }
    out.push((runs.len() - 1) as u8);
    for &(a, l) in &runs {
        out.push(a);
        out.push(l);
    }
    for &f in freq.iter().filter(|&&f| f > 0) {
        let v = f - 1;
        if v < 0x80 {
            out.push(v as u8);
        } else {
            out.push((v & 0x7f) as u8 | 0x80);
            out.push((v >> 7) as u8);
        }
    }
}

/// Parses a table written by [`write_table`], checking every field. Returns the table and the
/// number of bytes read.
pub fn read_table(buf: &[u8]) -> CodecResult<([u32; 256], usize)> {
    let bad = |m: &str| CodecError::new(format!("bad frequency table: {m}"));
    let mut pos = 0usize;
    let next = |pos: &mut usize| -> CodecResult<u8> {
        let b = *buf.get(*pos).ok_or_else(|| bad("truncated"))?;
        *pos += 1;
        Ok(b)
    };
    let nruns = next(&mut pos)? as usize + 1;
    let mut present = [false; 256];
    let mut last_end = 0usize;
    for i in 0..nruns {
        let start = next(&mut pos)? as usize;
        let len = next(&mut pos)? as usize + 1;
        // Runs are sorted and separated by at least one absent symbol, so each table has
        // exactly one encoding (no two packed files differ only in how a table is spelled).
        if (i > 0 && start <= last_end) || start + len > 256 {
            return Err(bad("symbol runs overlap or leave the alphabet"));
        }
        present[start..start + len]
            .iter_mut()
            .for_each(|p| *p = true);
        last_end = start + len;
    }
    let mut freq = [0u32; 256];
    let mut sum = 0u32;
    for (s, f) in freq.iter_mut().enumerate() {
        if !present[s] {
            continue;
        }
        let b0 = next(&mut pos)? as u32;
        let v = if b0 & 0x80 != 0 {
            let b1 = next(&mut pos)? as u32;
            if b1 == 0 || b1 >= 0x20 {
                return Err(bad("frequency out of range"));
            }
            (b0 & 0x7f) | (b1 << 7)
        } else {
            b0
        };
        *f = v + 1;
        sum += *f;
    }
    if sum != PROB_SCALE || present.iter().filter(|&&p| p).count() < 2 {
        return Err(bad("frequencies do not sum to the scale"));
    }
    Ok((freq, pos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn entropy_of_uniform_bytes_is_eight_bits() {
        let data: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let h = histogram(&data);
        assert!((entropy_bits(&h) / 4096.0 - 8.0).abs() < 1e-9);
    }

    #[test]
    fn skewed_table_costs_close_to_entropy() {
        // A geometric-like distribution with rare tails, as in exponent planes.
        let mut counts = [0u32; 256];
        for (i, c) in counts.iter_mut().enumerate().take(40) {
            *c = (1_000_000.0 * 0.6f64.powi(i as i32)).ceil() as u32;
        }
        let freq = normalize(&counts).unwrap();
        assert_eq!(freq.iter().sum::<u32>(), PROB_SCALE);
        let ratio = coded_bits(&counts, &freq) / entropy_bits(&counts);
        assert!(ratio < 1.01, "quantisation loss {ratio}");
    }

    proptest! {
        #[test]
        fn tables_round_trip(counts in proptest::collection::vec(0u32..100_000, 256)) {
            let mut c = [0u32; 256];
            c.copy_from_slice(&counts);
            prop_assume!(c.iter().filter(|&&x| x > 0).count() >= 2);
            let freq = normalize(&c).unwrap();
            prop_assert_eq!(freq.iter().sum::<u32>(), PROB_SCALE);
            for s in 0..256 {
                prop_assert_eq!(freq[s] > 0, c[s] > 0);
            }
            let mut buf = Vec::new();
            write_table(&freq, &mut buf);
            let (back, used) = read_table(&buf).unwrap();
            prop_assert_eq!(used, buf.len());
            prop_assert_eq!(back, freq);
        }

        #[test]
        fn read_table_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = read_table(&bytes);
        }
    }
}
