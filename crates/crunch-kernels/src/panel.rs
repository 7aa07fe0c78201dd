//! The prefill product on AVX-512 VNNI with 16 weight rows per vector ("panels").
//!
//! `body.rs` keeps one weight row per vector: each `vpdpbusd` sums 4 products per lane for
//! 16 lanes that belong to the same row, so every 64 weights of every (weight row,
//! activation row) pair need their own conversion, scale product and FMA — four float
//! operations per integer one, which bound that loop.
//!
//! Here a tile's rows are regrouped by 16 so that lane `r` of a vector is weight row `r`:
//! a vector holds 4 consecutive weights of 16 rows, and `vpdpbusd` with 4 activation bytes
//! broadcast to every lane adds one 4-weight step to 16 outputs at once. The lanes' integer
//! sums run over a whole scale group (32 weights when both halves of every pair of per-16
//! scales are equal — Q4_0, Q4_1, Q5_x, Q8_0, Q4_K, Q5_K — else 16) before one conversion,
//! one product of the 16 rows' scales by the activation chunk's scale and one FMA. Per 32
//! weights and activation row that is 8 `vpdpbusd` (16 for 15-bit activations, plus a shift
//! and an add) and 3 float operations for 16 rows, where `body.rs` needs 4 float operations
//! per 64 weights and row. The 16 results of a panel and activation row are contiguous in
//! the output (`y` is activation-row major), so they are stored with one masked store.
//!
//! Layout of a panel over `kp` weights (`kp` a multiple of 64): codes, 16 bytes per weight
//! position (for each 4-weight step, 16 rows × 4 bytes), then per 16-weight group the 16
//! rows' scales, then per group the 16 rows' offsets. Rows past the tile's end are zero.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::aligned::Aligned;
use crate::body::XRow;
use crate::tile::Tile;

/// Weight rows per panel (the lanes of a 512-bit vector of 32-bit sums).
pub(crate) const LANES: usize = 16;

/// The panels of one tile.
#[derive(Default)]
pub(crate) struct Panels {
    buf: Aligned,
    kp: usize,
    count: usize,
    /// Per panel: whether its scales are equal in pairs (one scale per 32 weights).
    g32: Vec<bool>,
}

impl Panels {
    /// Bytes per panel: codes (16 per position), scales and offsets (16 floats per group).
    fn stride(kp: usize) -> usize {
        LANES * kp + 2 * 4 * LANES * (kp / 16)
    }

    /// Regroups the first `rows` rows of `tile` (padded to `kp`) by 16.
    pub fn fill(&mut self, tile: &Tile, rows: usize, kp: usize) {
        let count = rows.div_ceil(LANES);
        let stride = Self::stride(kp);
        self.kp = kp;
        self.count = count;
        // `reset` zeroes: rows past the tile's end stay zero.
        self.buf.reset(count * stride);
        self.g32.clear();
        let groups = kp / 16;
        let buf = self.buf.bytes_mut();
        for p in 0..count {
            let panel = &mut buf[p * stride..(p + 1) * stride];
            let (codes, rest) = panel.split_at_mut(LANES * kp);
            let (d, m) = rest.split_at_mut(4 * LANES * groups);
            let mut d16 = vec![0f32; LANES * groups];
            let mut m16 = vec![0f32; LANES * groups];
            for r in 0..LANES.min(rows - p * LANES) {
                let w = tile.row(p * LANES + r);
                // SAFETY: a tile row holds `kp` codes, `kp / 4` lane scales and `kp / 16`
                // offsets (`Tile::row`).
                let (u, dl, ml) = unsafe {
                    (
                        std::slice::from_raw_parts(w.u, kp),
                        std::slice::from_raw_parts(w.dl, kp / 4),
                        std::slice::from_raw_parts(w.m16, groups),
                    )
                };
                for (s, quad) in u.chunks_exact(4).enumerate() {
                    let at = s * 4 * LANES + 4 * r;
                    codes[at..at + 4].copy_from_slice(quad);
                }
                for g in 0..groups {
                    d16[g * LANES + r] = dl[4 * g];
                    m16[g * LANES + r] = ml[g];
                }
            }
            for (o, v) in d.chunks_exact_mut(4).zip(&d16) {
                o.copy_from_slice(&v.to_ne_bytes());
            }
            for (o, v) in m.chunks_exact_mut(4).zip(&m16) {
                o.copy_from_slice(&v.to_ne_bytes());
            }
            let g32 = d16
                .chunks_exact(2 * LANES)
                .all(|pair| pair[..LANES] == pair[LANES..]);
            self.g32.push(g32);
        }
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Panel `p`'s codes, scales and offsets, and whether it has one scale per 32 weights.
    fn panel(&self, p: usize) -> (*const u8, *const f32, *const f32, bool) {
        let kp = self.kp;
        let base = self.buf.bytes()[p * Self::stride(kp)..].as_ptr();
        // SAFETY: inside panel `p` (see `stride`); 64-byte aligned (the stride is a multiple
        // of 64 bytes, `kp` being a multiple of 64).
        unsafe {
            let d = base.add(LANES * kp);
            let m = d.add(4 * LANES * (kp / 16));
            (base, d.cast(), m.cast(), self.g32[p])
        }
    }

    /// Every product of panel `p`'s rows by the activation rows `x`: row `c`'s 16 results
    /// go to `out(c)` (`valid` of them are stored).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F/BW/VL/VNNI; the rows must hold `kp` values as `Acts`
    /// lays them out; `out(c)` must be valid for `valid` floats.
    #[cfg(target_arch = "x86_64")]
    pub unsafe fn products(
        &self,
        p: usize,
        wide: bool,
        x: &[XRow],
        valid: usize,
        out: &mut dyn FnMut(usize) -> *mut f32,
    ) {
        let (u, d, m, g32) = self.panel(p);
        match (wide, g32) {
            (false, true) => rows_avx512::<false, true>(u, d, m, self.kp, x, valid, out),
            (false, false) => rows_avx512::<false, false>(u, d, m, self.kp, x, valid, out),
            (true, true) => rows_avx512::<true, true>(u, d, m, self.kp, x, valid, out),
            (true, false) => rows_avx512::<true, false>(u, d, m, self.kp, x, valid, out),
        }
    }
}

/// One panel against every activation row, `C` rows at a time (8 with 8-bit activations: 16
/// accumulators; 6 with 15-bit ones, which need two integer sums per row), the remainder by
/// 4, 2 and 1.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows_avx512<const WIDE: bool, const G32: bool>(
    u: *const u8,
    d: *const f32,
    m: *const f32,
    kp: usize,
    x: &[XRow],
    valid: usize,
    out: &mut dyn FnMut(usize) -> *mut f32,
) {
    let mask: __mmask16 = if valid >= LANES {
        0xFFFF
    } else {
        (1u16 << valid) - 1
    };
    let big = if WIDE { 6 } else { 8 };
    let mut c = 0;
    while c < x.len() {
        let left = x.len() - c;
        let step = if left >= big {
            big
        } else if left >= 4 {
            4
        } else if left >= 2 {
            2
        } else {
            1
        };
        let mut res = [_mm512_setzero_ps(); 8];
        match step {
            8 => block::<8, WIDE, G32>(u, d, m, kp, &x[c..c + 8], &mut res),
            6 => block::<6, WIDE, G32>(u, d, m, kp, &x[c..c + 6], &mut res),
            4 => block::<4, WIDE, G32>(u, d, m, kp, &x[c..c + 4], &mut res),
            2 => block::<2, WIDE, G32>(u, d, m, kp, &x[c..c + 2], &mut res),
            _ => block::<1, WIDE, G32>(u, d, m, kp, &x[c..c + 1], &mut res),
        }
        for (i, r) in res.iter().enumerate().take(step) {
            _mm512_mask_storeu_ps(out(c + i), mask, *r);
        }
        c += step;
    }
}

/// 16 weight rows × `C` activation rows into `res[..C]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn block<const C: usize, const WIDE: bool, const G32: bool>(
    u: *const u8,
    d: *const f32,
    m: *const f32,
    kp: usize,
    x: &[XRow],
    res: &mut [__m512; 8],
) {
    let xs: [XRow; C] = std::array::from_fn(|i| x[i]);
    let group = if G32 { 32 } else { 16 };
    let mut acc = [_mm512_setzero_ps(); C];
    let mut q = 0;
    while q < kp {
        let mut hi = [_mm512_setzero_si512(); C];
        let mut lo = [_mm512_setzero_si512(); C];
        let mut s = 0;
        while s < group {
            let w = _mm512_load_si512(u.add(LANES * (q + s)).cast());
            for c in 0..C {
                let a = _mm512_set1_epi32(xs[c].a.add(q + s).cast::<i32>().read_unaligned());
                hi[c] = _mm512_dpbusd_epi32(hi[c], w, a);
                if WIDE {
                    let b = _mm512_set1_epi32(xs[c].b.add(q + s).cast::<i32>().read_unaligned());
                    lo[c] = _mm512_dpbusd_epi32(lo[c], w, b);
                }
            }
            s += 4;
        }
        // The 16 rows' scales of this group (group `q / 16`; with G32 the next group's
        // are the same).
        let dw = _mm512_load_ps(d.add(q));
        for c in 0..C {
            let i = if WIDE {
                _mm512_add_epi32(_mm512_slli_epi32(hi[c], 7), lo[c])
            } else {
                hi[c]
            };
            let scale = _mm512_mul_ps(dw, _mm512_set1_ps(*xs[c].xc.add(q / 32)));
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), scale, acc[c]);
        }
        let mut h = 0;
        while h < group {
            let mw = _mm512_load_ps(m.add(q + h));
            for c in 0..C {
                let e = _mm512_set1_ps(*xs[c].e16.add((q + h) / 16));
                acc[c] = _mm512_fmadd_ps(mw, e, acc[c]);
            }
            h += 16;
        }
        q += group;
    }
    res[..C].copy_from_slice(&acc);
}
