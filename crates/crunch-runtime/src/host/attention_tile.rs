//! Attention of a tile of up to 16 consecutive queries of one head at once (prefill).
//!
//! One query at a time (`attention.rs`), every key costs a 64-wide dot product ending in a
//! horizontal sum, and every value row a read-modify-write of the output row: a 512-token
//! prefill spent a fifth of its time there (`perf`, SmolLM2 Q4_0, 2026-11-29). Here the
//! tile's queries are transposed once (`d × 16`), so a key's 16 scores are `d` vector
//! multiply-adds with the key's elements broadcast, 4 keys at a time; the softmax runs across
//! the 16 queries in vector lanes; and the weighted sum of values keeps 4 queries × 16 output
//! elements in registers while the value rows stream past. Same arithmetic as the
//! per-query path (scores `q·k · scale`, softmax after subtracting the maximum with
//! [`exp_nonpositive`], values weighted by `p / Σp`), summed in a different order.

use super::attention::KvView;
use crunch_kernels::exp_nonpositive;

/// Queries per tile (one vector of 16 lanes).
pub(super) const QB: usize = 16;

/// Buffers reused from one tile to the next on a thread.
#[derive(Default)]
pub(super) struct Scratch {
    qt: Vec<f32>,
    s: Vec<f32>,
    o: Vec<f32>,
}

/// The tile's query rows: query `t` (0..n) of the tile is `q[t * stride..][..d]`, at
/// absolute position `p0 + t`; it sees keys `j` of kv head `g` with `p - window < j <= p`.
/// Output row `t` goes to `put(t, row)`.
pub(super) struct Tile<'a> {
    pub q: &'a [f32],
    pub stride: usize,
    pub n: usize,
    pub g: usize,
    pub p0: usize,
    pub window: Option<usize>,
    pub scale: f32,
}

pub(super) fn attend_tile(
    tile: &Tile,
    kv: &KvView,
    scratch: &mut Scratch,
    put: &mut dyn FnMut(usize, &[f32]),
) {
    // AVX2 vectors also on AVX-512 machines: the loops are FMA-bound, and the CPUs here
    // (AMD Zen 4) execute a 512-bit FMA as two 256-bit halves.
    #[cfg(target_arch = "x86_64")]
    if crunch_kernels::Isa::detect() >= crunch_kernels::Isa::Avx2 {
        // SAFETY: the CPU has AVX2 and FMA (detected).
        return unsafe { attend_tile_avx2(tile, kv, scratch, put) };
    }
    attend_tile_generic(tile, kv, scratch, put)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_tile_avx2(
    tile: &Tile,
    kv: &KvView,
    scratch: &mut Scratch,
    put: &mut dyn FnMut(usize, &[f32]),
) {
    attend_tile_generic(tile, kv, scratch, put)
}

#[inline(always)]
fn attend_tile_generic(
    tile: &Tile,
    kv: &KvView,
    scratch: &mut Scratch,
    put: &mut dyn FnMut(usize, &[f32]),
) {
    let (d, n, p0) = (kv.head_dim, tile.n, tile.p0);
    debug_assert!((1..=QB).contains(&n));
    let hi = p0 + n - 1;
    let lo = tile.window.map_or(0, |w| (p0 + 1).saturating_sub(w));
    let nk = hi + 1 - lo;
    let Scratch { qt, s, o } = scratch;
    // Queries transposed: qt[i * QB + t] = q_t[i] (zero for t >= n).
    qt.clear();
    qt.resize(d * QB, 0.0);
    for t in 0..n {
        let qr = &tile.q[t * tile.stride..t * tile.stride + d];
        for (i, &v) in qr.iter().enumerate() {
            qt[i * QB + t] = v;
        }
    }
    // Scores, key-major: s[jj * QB + t] for key lo + jj.
    s.clear();
    s.resize(nk * QB, 0.0);
    let key = |jj: usize| {
        let at = kv.at(tile.g, lo + jj);
        &kv.k[at..at + d]
    };
    let mut jj = 0;
    while jj + 4 <= nk {
        let ks = [key(jj), key(jj + 1), key(jj + 2), key(jj + 3)];
        let mut acc = [[0f32; QB]; 4];
        for i in 0..d {
            let qv: &[f32; QB] = qt[i * QB..(i + 1) * QB].try_into().expect("QB");
            for (a, k) in acc.iter_mut().zip(&ks) {
                let kv = k[i];
                for l in 0..QB {
                    a[l] += kv * qv[l];
                }
            }
        }
        for (u, a) in acc.iter().enumerate() {
            s[(jj + u) * QB..(jj + u + 1) * QB].copy_from_slice(a);
        }
        jj += 4;
    }
    while jj < nk {
        let k = key(jj);
        let mut acc = [0f32; QB];
        for i in 0..d {
            let kv = k[i];
            for l in 0..QB {
                acc[l] += kv * qt[i * QB + l];
            }
        }
        s[jj * QB..(jj + 1) * QB].copy_from_slice(&acc);
        jj += 1;
    }
    // Scale, mask (causal, window, padding lanes) and the maximum per query.
    let mut m = [f32::NEG_INFINITY; QB];
    for (jj, row) in s.chunks_exact_mut(QB).enumerate() {
        let j = lo + jj;
        for l in 0..QB {
            let p = p0 + l;
            let seen = l < n && j <= p && tile.window.is_none_or(|w| j + w > p);
            row[l] = if seen {
                row[l] * tile.scale
            } else {
                f32::NEG_INFINITY
            };
            m[l] = m[l].max(row[l]);
        }
    }
    // Unnormalised probabilities and their sums.
    let mut z = [0f32; QB];
    for row in s.chunks_exact_mut(QB) {
        for l in 0..QB {
            let e = exp_nonpositive(row[l] - m[l]);
            row[l] = if row[l] == f32::NEG_INFINITY { 0.0 } else { e };
            z[l] += row[l];
        }
    }
    // Weighted sum of the values.
    o.clear();
    o.resize(QB * d, 0.0);
    let value = |jj: usize| {
        let at = kv.at(tile.g, lo + jj);
        &kv.v[at..at + d]
    };
    if d.is_multiple_of(16) {
        for t0 in (0..n).step_by(4) {
            for dc in (0..d).step_by(16) {
                let mut acc = [[0f32; 16]; 4];
                for jj in 0..nk {
                    let v: &[f32; 16] = value(jj)[dc..dc + 16].try_into().expect("16");
                    let pr = &s[jj * QB + t0..jj * QB + t0 + 4];
                    for (a, &p) in acc.iter_mut().zip(pr) {
                        for x in 0..16 {
                            a[x] += p * v[x];
                        }
                    }
                }
                for (u, a) in acc.iter().enumerate() {
                    o[(t0 + u) * d + dc..(t0 + u) * d + dc + 16].copy_from_slice(a);
                }
            }
        }
    } else {
        for jj in 0..nk {
            let v = value(jj);
            for t in 0..n {
                let p = s[jj * QB + t];
                for (o, &v) in o[t * d..(t + 1) * d].iter_mut().zip(v) {
                    *o += p * v;
                }
            }
        }
    }
    for t in 0..n {
        let inv = 1.0 / z[t];
        let row = &mut o[t * d..(t + 1) * d];
        for v in row.iter_mut() {
            *v *= inv;
        }
        put(t, row);
    }
}
