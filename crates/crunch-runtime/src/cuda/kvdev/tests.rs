//! A host transcription of `kvdev.cu` (same layout, same indexing, same chunks, splits and
//! online softmax), fed by the same [`plan`] the device store uploads with, against the host's
//! attention over the host store (`kvq::attend`): the device path must agree to 1e-5
//! relative (to the bound of each channel's values) for every mode and option, so a GPU run
//! only confirms it.

use super::*;
use crate::kvq::attend;
use half::f16;

/// Host copies of one store's device buffers, filled by [`plan`] exactly as the device's.
struct Mirror {
    q: QuantKv,
    bufs: [[Vec<u8>; 5]; 2],
    lay: [Layout; 2],
    slots: usize,
    spec_cap: usize,
}

impl Mirror {
    fn new(spec: KvSpec) -> Mirror {
        let q = QuantKv::staged(spec).unwrap();
        let (group, residual) = q.kivi_params();
        let slots = if group == 0 {
            0
        } else {
            (group + residual).next_power_of_two()
        };
        let lay = [q.layout(Side::K), q.layout(Side::V)];
        let bufs = lay.map(|l| {
            let mut sz = sizes(&l, &spec, q.sink());
            sz[3] *= slots;
            sz.map(|n| vec![0u8; n])
        });
        Mirror {
            q,
            bufs,
            lay,
            slots,
            spec_cap: spec.capacity,
        }
    }

    fn append(&mut self, k: &[f32], v: &[f32], t: usize) {
        let old = self.q.len();
        self.q.append(k, v, t).unwrap();
        let (puts, grown) = plan(&self.q, old, self.slots);
        if let Some(s) = grown {
            let row = 2 * self.q.kv_heads() * self.q.head_dim();
            for b in &mut self.bufs {
                b[3] = vec![0u8; s * row];
            }
            self.slots = s;
        }
        for p in puts {
            let b = &mut self.bufs[(p.side == Side::V) as usize][index(p.buf)];
            b[p.at..p.at + p.bytes.len()].copy_from_slice(&p.bytes);
        }
    }

    fn u16_at(b: &[u8], i: usize) -> f32 {
        f16::from_bits(u16::from_le_bytes([b[2 * i], b[2 * i + 1]])).to_f32()
    }

    fn stored(&self, j: usize) -> bool {
        let (g, _) = self.q.kivi_params();
        g == 0 || (j / g + 1) * g <= self.q.quantized_len()
    }

    fn seen_coded(&self, j: usize, p: usize) -> bool {
        let (g, r) = self.q.kivi_params();
        if g == 0 {
            return true;
        }
        let end = (j / g + 1) * g;
        end <= self.q.quantized_len() && end + r <= p + 1
    }

    /// `dequant` of `kvdev.cu`.
    fn dequant(&self, s: usize, g: usize, j: usize, c: usize) -> f32 {
        let (lay, b) = (&self.lay[s], &self.bufs[s]);
        let (kvh, d) = (self.q.kv_heads(), self.q.head_dim());
        if lay.bits == 16 {
            return Self::u16_at(&b[0], (j * kvh + g) * d + c);
        }
        let row = &b[0][(j * kvh + g) * lay.row_bytes..];
        let per = 8 / lay.bits;
        let code = (row[c / per] >> ((c % per) * lay.bits)) & ((1u16 << lay.bits) - 1) as u8;
        let at = match lay.tokens {
            0 => (j * kvh + g) * (d / lay.channels) + c / lay.channels,
            t => ((j / t) * kvh + g) * d + c,
        };
        let sc = Self::u16_at(&b[1], at);
        let z = if lay.absmax {
            -128.0 * sc
        } else {
            Self::u16_at(&b[2], at)
        };
        let level = match lay.lloyd {
            false => code as f32,
            true => crate::kvq::codec::LLOYD_MAX2[code as usize],
        };
        z + sc * level
    }

    /// `load_chunk` of `kvdev.cu`: (A, B), rows of `d + 1`. (The kernel reads the codes a
    /// 32-bit word at a time, decision 163; every element's value is the one computed here.)
    fn load_chunk(&self, s: usize, g: usize, j0: usize) -> (Vec<f32>, Vec<f32>) {
        let (kvh, d, len) = (self.q.kv_heads(), self.q.head_dim(), self.q.len());
        let w = d + 1;
        let (mut a, mut b) = (vec![0f32; CHUNK * w], vec![0f32; CHUNK * w]);
        let (group, _) = self.q.kivi_params();
        let live = |j: usize| j < len && j >= self.q.sink() && self.stored(j);
        for jj in 0..CHUNK {
            let j = j0 + jj;
            if j >= len {
                continue;
            }
            for c in 0..d {
                if j < self.q.sink() {
                    a[jj * w + c] = Self::u16_at(&self.bufs[s][4], (j * kvh + g) * d + c);
                } else if self.stored(j) {
                    a[jj * w + c] = self.dequant(s, g, j, c);
                }
                if group != 0 && j >= self.q.full_start() {
                    b[jj * w + c] =
                        Self::u16_at(&self.bufs[s][3], ((j % self.slots) * kvh + g) * d + c);
                }
            }
        }
        if self.lay[s].bits != 16 && self.lay[s].rotate {
            let half = d / 2;
            let mut h = 1;
            while h < d {
                for jj in (0..CHUNK).filter(|&jj| live(j0 + jj)) {
                    for k in 0..half {
                        let i = (k / h) * 2 * h + k % h;
                        let (x, y) = (a[jj * w + i], a[jj * w + i + h]);
                        a[jj * w + i] = x + y;
                        a[jj * w + i + h] = x - y;
                    }
                }
                h *= 2;
            }
            let norm = 1.0 / (d as f32).sqrt();
            for jj in (0..CHUNK).filter(|&jj| live(j0 + jj)) {
                a[jj * w..jj * w + d].iter_mut().for_each(|x| *x *= norm);
            }
        }
        if s == 0 {
            if let Some(f) = self.q.inv_freq() {
                let half = d / 2;
                for jj in (0..CHUNK).filter(|&jj| live(j0 + jj)) {
                    let j = j0 + jj;
                    for (i, &fi) in f.iter().enumerate() {
                        let (sn, cs) = (j as f64 * fi).sin_cos();
                        let (x, y) = (a[jj * w + i] as f64, a[jj * w + i + half] as f64);
                        a[jj * w + i] = (x * cs - y * sn) as f32;
                        a[jj * w + i + half] = (y * cs + x * sn) as f32;
                    }
                }
            }
        }
        (a, b)
    }

    /// `kv_attend` then `kv_combine`: `[t, heads · d]`.
    fn attend(
        &self,
        q: &[f32],
        t: usize,
        heads: usize,
        mask: AttentionMask,
        scale: f32,
    ) -> Vec<f32> {
        let (kvh, d) = (self.q.kv_heads(), self.q.head_dim());
        let (w, group) = (d + 1, heads / kvh);
        let rows = t * group;
        let rpb = rows_per_block(d);
        assert!(rpb <= WARPS * MAX_RPW && d <= 128);
        let tiles = rows.div_ceil(rpb);
        let offset = mask.query_offset;
        let z = splits(kvh * tiles, (offset + t).div_ceil(CHUNK), MIN_SPLIT_CHUNKS);
        let mut part = vec![0f32; z * kvh * rows * (d + 2)];
        for g in 0..kvh {
            for y in 0..tiles {
                for zi in 0..z {
                    let r0 = y * rpb;
                    let nr = rpb.min(rows - r0);
                    let (p_first, p_last) = (offset + r0 / group, offset + (r0 + nr - 1) / group);
                    let lo_of = |p: usize| mask.window.map_or(0, |wi| (p + 1).saturating_sub(wi));
                    let c_lo = lo_of(p_first) / CHUNK;
                    let chunks = p_last / CHUNK - c_lo + 1;
                    let per = chunks.div_ceil(z);
                    let c_begin = c_lo + zi * per;
                    let c_end = (c_lo + chunks).min(c_begin + per);
                    let mut st = vec![(f32::NEG_INFINITY, 0f32, vec![0f32; d]); nr];
                    for ch in c_begin..c_end {
                        let j0 = ch * CHUNK;
                        let (ka, kb) = self.load_chunk(0, g, j0);
                        let (va, vb) = self.load_chunk(1, g, j0);
                        for (rr, (m, l, acc)) in st.iter_mut().enumerate() {
                            let r = r0 + rr;
                            let (i, hh) = (r / group, r % group);
                            let p = offset + i;
                            let qr = &q[(i * heads + g * group + hh) * d..][..d];
                            let s: Vec<f32> = (0..CHUNK)
                                .map(|jj| {
                                    let j = j0 + jj;
                                    if j < lo_of(p) || j > p {
                                        return f32::NEG_INFINITY;
                                    }
                                    let row = if self.seen_coded(j, p) { &ka } else { &kb };
                                    let dot: f32 = (0..d).map(|c| qr[c] * row[jj * w + c]).sum();
                                    dot * scale
                                })
                                .collect();
                            let mx = s.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                            let mn = m.max(mx);
                            if mn == f32::NEG_INFINITY {
                                continue;
                            }
                            let corr = if *m == f32::NEG_INFINITY {
                                0.0
                            } else {
                                (*m - mn).exp()
                            };
                            let e: Vec<f32> = s
                                .iter()
                                .map(|&x| {
                                    if x == f32::NEG_INFINITY {
                                        0.0
                                    } else {
                                        (x - mn).exp()
                                    }
                                })
                                .collect();
                            *l = *l * corr + e.iter().sum::<f32>();
                            *m = mn;
                            acc.iter_mut().for_each(|a| *a *= corr);
                            for (jj, &pj) in e.iter().enumerate() {
                                if pj == 0.0 {
                                    continue;
                                }
                                let row = if self.seen_coded(j0 + jj, p) {
                                    &va
                                } else {
                                    &vb
                                };
                                for (c, a) in acc.iter_mut().enumerate() {
                                    *a += pj * row[jj * w + c];
                                }
                            }
                        }
                    }
                    for (rr, (m, l, acc)) in st.into_iter().enumerate() {
                        let o = &mut part[((zi * kvh + g) * rows + r0 + rr) * (d + 2)..][..d + 2];
                        o[..d].copy_from_slice(&acc);
                        (o[d], o[d + 1]) = (m, l);
                    }
                }
            }
        }
        let mut out = vec![0f32; t * heads * d];
        for g in 0..kvh {
            for r in 0..rows {
                let (i, hh) = (r / group, r % group);
                let p = |zi: usize| &part[((zi * kvh + g) * rows + r) * (d + 2)..][..d + 2];
                let mm = (0..z).fold(f32::NEG_INFINITY, |a, zi| a.max(p(zi)[d]));
                let live = |zi: usize| p(zi)[d] != f32::NEG_INFINITY;
                let ll: f32 = (0..z)
                    .filter(|&zi| live(zi))
                    .map(|zi| (p(zi)[d] - mm).exp() * p(zi)[d + 1])
                    .sum();
                for c in 0..d {
                    let a: f32 = (0..z)
                        .filter(|&zi| live(zi))
                        .map(|zi| (p(zi)[d] - mm).exp() * p(zi)[c])
                        .sum();
                    out[(i * heads + g * group + hh) * d + c] = a / ll;
                }
            }
        }
        let _ = self.spec_cap;
        out
    }
}

/// Pseudo-random values in ±2, every 16th channel ×8 (keys have a few large channels).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = crunch_rng::SplitMix64(seed);
    (0..n)
        .map(|i| {
            let big = if i % 16 == 3 { 8.0 } else { 1.0 };
            ((s.unit() - 0.5) * 4.0 * big) as f32
        })
        .collect()
}

fn inv_freq(d: usize) -> Vec<f64> {
    (0..d / 2)
        .map(|i| 10000f64.powf(-((2 * i) as f64) / d as f64))
        .collect()
}

/// Appends `chunks` to a host store and to the mirror, attending after each append with the
/// chunk's queries (and once more with a sliding window); the transcription must match.
fn check(mode: &str, d: usize, chunks: &[usize], window: Option<usize>) {
    let (kvh, heads) = (2, 6);
    let mode = KvMode::parse(mode).unwrap();
    let freqs = inv_freq(d);
    let cap: usize = chunks.iter().sum();
    let spec = KvSpec {
        capacity: cap,
        kv_heads: kvh,
        head_dim: d,
        mode,
        inv_freq: Some(&freqs),
    };
    let mut host = QuantKv::from_spec(spec).unwrap();
    let mut dev = Mirror::new(spec);
    let scale = (d as f32).powf(-0.5);
    let mut worst = 0f32;
    for (n, &t) in chunks.iter().enumerate() {
        let seed = 100 * n as u64;
        let (k, v) = (values(t * kvh * d, seed + 1), values(t * kvh * d, seed + 2));
        let offset = host.len();
        host.append(&k, &v, t).unwrap();
        dev.append(&k, &v, t);
        // Queries without the large channels: scores of a few units, as a model's are, so
        // that the comparison tests the kernel rather than the conditioning of softmax(q·k)
        // (with 8× channels on both sides scores reach ±60 and the summation order alone
        // moves outputs by 1e-4).
        let q: Vec<f32> = values(t * heads * d, seed + 3)
            .iter()
            .enumerate()
            .map(|(i, &x)| if i % 16 == 3 { x / 8.0 } else { x })
            .collect();
        for w in [None, window] {
            let mask = AttentionMask {
                window: w,
                query_offset: offset,
            };
            let want = attend(&q, t, heads, &host, mask, scale).unwrap();
            let got = dev.attend(&q, t, heads, mask, scale);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                // Relative to the bound of the channel's values (2, or 16 for the large
                // channels): an output is a convex combination of them, and rounding moves
                // it by a share of their scale, not of its own (outputs can cancel to ~0).
                let big = if i % d % 16 == 3 { 16.0 } else { 2.0 };
                let e = (a - b).abs() / big;
                worst = worst.max(e);
                assert!(
                    e <= 1e-5,
                    "{mode}, d {d}, chunk {n} ({t} at {offset}), {w:?}: output {i}: {a} vs {b}"
                );
            }
        }
    }
    assert!(worst.is_finite(), "{mode}");
    eprintln!("{mode}, d {d}: worst {worst:.2e}");
}

#[test]
fn the_kernels_transcription_matches_host_attention_for_every_mode() {
    // A prefill chunk, single tokens across group boundaries, a second chunk, a long run of
    // decoding (splits > 1 from 8 chunks of 32 positions on).
    let chunks: Vec<usize> = [37, 1, 1, 26, 1, 70]
        .into_iter()
        .chain(std::iter::repeat_n(1, 40))
        .chain([200, 1, 1])
        .collect();
    for mode in [
        "q8",
        "q4",
        "f16",
        "kivi2",
        "kivi4",
        "kivi2:s1",
        "kivi2:vg64:s1:pre:h",
        "kivi2:s1:pre",
        "kivi2:r20",
        "kivi4:16:kg32:hk:mse",
        "kivi2:64:s4:hv",
        "kivi2:vg64:s1:pre:h:lm",
        "kivi4:v2:lm",
    ] {
        check(mode, 64, &chunks, Some(50));
    }
    for mode in ["q8", "kivi2:s1:pre:h"] {
        check(mode, 128, &chunks[..12], Some(40));
    }
    check("kivi2:s1", 32, &chunks[..10], None);
}

#[test]
fn splits_fill_the_gpu_and_stay_long() {
    assert_eq!(splits(8, 1, MIN_SPLIT_CHUNKS), 1);
    assert_eq!(splits(8, 10_000, MIN_SPLIT_CHUNKS), 33);
    assert_eq!(splits(1000, 10_000, MIN_SPLIT_CHUNKS), 1);
    // The default allows one chunk per split (decision 163): 512 positions of 8 kv heads are
    // 16 splits, 128 blocks; at least 8 chunks (the comparison's other side) gives 2.
    assert_eq!(splits(8, 16, MIN_SPLIT_CHUNKS), 16);
    assert_eq!(splits(8, 16, 8), 2);
    assert_eq!(splits(8, 64, 8), 8);
    assert!(shared_bytes(128) <= 48 * 1024 && shared_bytes(64) <= 48 * 1024);
    assert!(device_head_dim(64) && device_head_dim(128) && !device_head_dim(256));
    assert!(!device_head_dim(80));
}

#[test]
fn the_tail_ring_grows_for_long_chunks_and_keeps_every_held_row() {
    // A 300-position chunk on a kivi2 store: the ring (32 slots) grows to hold it.
    let freqs = inv_freq(64);
    let spec = KvSpec {
        capacity: 400,
        kv_heads: 2,
        head_dim: 64,
        mode: KvMode::parse("kivi2:s1").unwrap(),
        inv_freq: Some(&freqs),
    };
    let mut m = Mirror::new(spec);
    assert_eq!(m.slots, 32);
    m.append(&values(300 * 128, 1), &values(300 * 128, 2), 300);
    assert!(m.slots >= 300 - m.q.full_start());
    // Every held tail row is where the kernel reads it.
    for p in m.q.full_start()..m.q.len() {
        for g in 0..2 {
            for c in 0..64 {
                let want = m.q.tail_rows(Side::V, g)[(p - m.q.full_start()) * 64 + c].to_f32();
                let got = Mirror::u16_at(&m.bufs[1][3], ((p % m.slots) * 2 + g) * 64 + c);
                assert_eq!(got, want);
            }
        }
    }
}
