//! The compressed caches against a direct reading of KIVI's Algorithm 1, and attention over
//! them against plain attention over what they decode to.

use super::store::Side;
use super::*;
use crate::AttentionMask;
use half::f16;

/// Pseudo-random values in ±2, every 16th channel ±16 (real keys have a few large
/// channels); a multiplicative hash of the index and seed, mixed once more, high bits kept.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let h = |i: u64| {
        let z = (i ^ (seed << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        ((z ^ (z >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 11) as f64
    };
    let big = |i: usize| if i % 16 == 3 { 8.0 } else { 1.0 };
    (0..n)
        .map(|i| ((h(i as u64 + 1) / (1u64 << 53) as f64 - 0.5) * 4.0 * big(i)) as f32)
        .collect()
}

/// KIVI's quantizer as the paper writes it (§3.1, Algorithm 1's GroupQuant), in f64:
/// `z = min X`, `s = (max X − min X) / (2^B − 1)`, `Q = ⌊(X − z)/s⌉`, `X' = Q·s + z`; `s`
/// and `z` rounded to f16 as the cache stores them (the paper's own fp16). Returns the
/// dequantized group and whether any value sat within 1e-5 of a rounding tie (f32 computes `(x − z)/s` to about 2e-6 here).
fn reference_group(x: &[f64], bits: u32) -> (Vec<f64>, bool) {
    let lo = x.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let levels = ((1u32 << bits) - 1) as f64;
    let z = f16::from_f64(lo).to_f64();
    let s = f16::from_f64((hi - lo) / levels).to_f64();
    let mut tie = false;
    let out = x
        .iter()
        .map(|&v| {
            if s == 0.0 {
                return z;
            }
            let r = (v - z) / s;
            tie |= ((r - r.floor()) - 0.5).abs() < 1e-5;
            r.round().clamp(0.0, levels) * s + z
        })
        .collect();
    (out, tie)
}

/// Decision 142's Lloyd–Max group, read directly in f64: levels `±0.4527800, ±1.5104176`
/// around `z` scaled by `s`; first `z` = mean, `s` = RMS about the f16 `z`; then, up to four
/// times, the least-squares `(s, z)` of the chosen levels, kept while the squared error
/// (through f16 `s` and `z`) falls. Returns the dequantized group and whether a value sat
/// within 1e-5·s of the midpoint of two decoded levels.
fn reference_lloyd(x: &[f64], unshrunk: bool) -> (Vec<f64>, bool) {
    let lv = [
        -1.5104176f32 as f64,
        -0.45278f32 as f64,
        0.45278f32 as f64,
        1.5104176f32 as f64,
    ];
    let h = |v: f64| f16::from_f64(v).to_f64();
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let nearest = |z: f64, s: f64| -> (Vec<usize>, f64, bool) {
        let mut tie = false;
        let mut err = 0.0;
        let c = x
            .iter()
            .map(|&v| {
                let d: Vec<f64> = lv.iter().map(|l| (v - (z + s * l)).abs()).collect();
                let i = (0..4).fold(0, |b, i| if d[i] < d[b] { i } else { b });
                tie |= (0..4).any(|j| j != i && (d[j] - d[i]).abs() < 1e-5 * s.abs().max(1e-3));
                err += d[i] * d[i];
                i
            })
            .collect();
        (c, err, tie)
    };
    let z0 = h(mean);
    let s0 = h((x.iter().map(|v| (v - z0).powi(2)).sum::<f64>() / n).sqrt());
    let (mut codes, mut err, mut tie) = nearest(z0, s0);
    let (mut s, mut z) = (s0, z0);
    for _ in 0..4 {
        let ml = codes.iter().map(|&c| lv[c]).sum::<f64>() / n;
        let var: f64 = codes.iter().map(|&c| (lv[c] - ml).powi(2)).sum();
        if var == 0.0 {
            break;
        }
        let cov: f64 = codes
            .iter()
            .zip(x)
            .map(|(&c, v)| (lv[c] - ml) * (v - mean))
            .sum();
        let (s1, z1) = (h(cov / var), h(mean - cov / var * ml));
        let (c1, e1, t1) = nearest(z1, s1);
        if e1 >= err {
            break;
        }
        (codes, err, s, z) = (c1, e1, s1, z1);
        tie |= t1;
    }
    if unshrunk {
        // The decoded group's regression on the group with slope 1, the codes kept.
        let ml = codes.iter().map(|&c| lv[c]).sum::<f64>() / n;
        let var_x: f64 = x.iter().map(|v| (v - mean).powi(2)).sum();
        let cov: f64 = codes
            .iter()
            .zip(x)
            .map(|(&c, v)| (lv[c] - ml) * (v - mean))
            .sum();
        if cov > 0.0 {
            (s, z) = (h(var_x / cov), h(mean - var_x / cov * ml));
        }
    }
    (codes.iter().map(|&c| z + s * lv[c]).collect(), tie)
}

/// A group of `bits` as `spec` codes it: Lloyd–Max at 2 bits with `lm`, else min–max.
fn reference_any(x: &[f64], bits: u32, lloyd: bool, unshrunk: bool) -> (Vec<f64>, bool) {
    match lloyd && bits == 2 {
        true => reference_lloyd(x, unshrunk),
        false => reference_group(x, bits),
    }
}

/// Keys and values `[p + 1, d]` of one head as the cache holds them after token `p`.
type Seen = (Vec<f64>, Vec<f64>);

/// Rotates `rows [n, d]` of positions `p0..` by `sign ·` their rotary angles (`p·θᵢ`, the
/// "half" layout), directly in f64.
fn rotate_direct(rows: &mut [f64], p0: usize, d: usize, inv_freq: &[f64], sign: f64) {
    for (r, row) in rows.chunks_mut(d).enumerate() {
        for (i, &f) in inv_freq.iter().enumerate() {
            let (s, c) = ((p0 + r) as f64 * f).sin_cos();
            let (a, b) = (row[i], row[i + d / 2]);
            row[i] = a * c - sign * s * b;
            row[i + d / 2] = b * c + sign * s * a;
        }
    }
}

/// `rows [n, d]` times the orthonormal Hadamard matrix `H[i][j] = (−1)^popcount(i & j) / √d`
/// (Sylvester's, symmetric), directly in f64.
fn hadamard_direct(rows: &mut [f64], d: usize) {
    for row in rows.chunks_mut(d) {
        let x = row.to_vec();
        for (i, o) in row.iter_mut().enumerate() {
            *o = (0..d)
                .map(|j| {
                    if (i & j).count_ones() % 2 == 0 {
                        x[j]
                    } else {
                        -x[j]
                    }
                })
                .sum::<f64>()
                / (d as f64).sqrt();
        }
    }
}

/// Algorithm 1 of KIVI with residual length R = G for keys and values alike (crunch's
/// variant: values are flushed with the keys' group; the residual in f16, the cache's
/// full precision): tokens arrive one at a time; the residual `X_Kr` grows until it holds G
/// tokens, then `KeyQuant` quantizes it per channel (groups along the token axis) and the
/// values of those tokens per token (groups of the spec's value channels). With a sink, the
/// first `sink` positions stay as they arrived and group 0's ranges are over the others; with
/// `pre_rope`, each key group is rotated back by its positions' angles (`inv_freq`) before it
/// is quantized and forward after. Decision 131: with a residual window R the residual holds
/// G + R tokens before its oldest G are quantized; keys per token in groups of `kg` channels
/// instead of per channel; rows multiplied by the Hadamard matrix before quantizing and
/// after decoding. Returns, after each token `p`, the keys and values the
/// cache holds for one head, dequantized, `[p + 1, d]`, and the number of ties met.
fn reference_kivi(
    k: &[f32],
    v: &[f32],
    len: usize,
    d: usize,
    spec: Kivi,
    inv_freq: &[f64],
) -> (Vec<Seen>, usize) {
    let (g, cg) = (spec.group, spec.value_group(d));
    let mut qk: Vec<f64> = Vec::new();
    let mut qv: Vec<f64> = Vec::new();
    let mut rk: Vec<f64> = Vec::new();
    let mut rv: Vec<f64> = Vec::new();
    let mut ties = 0;
    let mut seen = Vec::new();
    for p in 0..len {
        // The store keeps arriving rows in f16 (and quantizes its groups from them).
        let half = |x: &f32| f16::from_f32(*x).to_f64();
        rk.extend(k[p * d..(p + 1) * d].iter().map(half));
        rv.extend(v[p * d..(p + 1) * d].iter().map(half));
        if rk.len() == (g + spec.residual) * d {
            let p0 = p + 1 - g - spec.residual;
            let skip = spec.sink.saturating_sub(p0);
            let mut keys = rk[..g * d].to_vec();
            if spec.pre_rope {
                rotate_direct(&mut keys, p0, d, inv_freq, -1.0);
            }
            if spec.hadamard_k {
                hadamard_direct(&mut keys, d);
            }
            let mut block = keys.clone();
            if spec.key_channels == 0 {
                // KeyQuant: per channel c, the G tokens of the residual (less a sink) are
                // one group.
                for c in 0..d {
                    let col: Vec<f64> = (skip..g).map(|t| keys[t * d + c]).collect();
                    let (deq, tie) =
                        reference_any(&col, spec.key_bits as u32, spec.lloyd_k, spec.unshrunk);
                    ties += tie as usize;
                    for t in skip..g {
                        block[t * d + c] = deq[t - skip];
                    }
                }
            } else {
                block.clear();
                for grp in keys.chunks(spec.key_group(d)) {
                    let (deq, tie) =
                        reference_any(grp, spec.key_bits as u32, spec.lloyd_k, spec.unshrunk);
                    ties += tie as usize;
                    block.extend(deq);
                }
            }
            if spec.hadamard_k {
                hadamard_direct(&mut block, d);
            }
            if spec.pre_rope {
                rotate_direct(&mut block[skip * d..], p0 + skip, d, inv_freq, 1.0);
            }
            block[..skip * d].copy_from_slice(&rk[..skip * d]);
            qk.extend(block);
            // Values: per token, groups of `cg` channels; sink rows as they are.
            for (t, row) in rv[..g * d].chunks(d).enumerate() {
                if t < skip {
                    qv.extend(row);
                    continue;
                }
                let mut row = row.to_vec();
                if spec.hadamard_v {
                    hadamard_direct(&mut row, d);
                }
                let mut deq_row = Vec::new();
                for grp in row.chunks(cg) {
                    let (deq, tie) =
                        reference_any(grp, spec.value_bits as u32, spec.lloyd_v, spec.unshrunk);
                    ties += tie as usize;
                    deq_row.extend(deq);
                }
                if spec.hadamard_v {
                    hadamard_direct(&mut deq_row, d);
                }
                qv.extend(deq_row);
            }
            rk.drain(..g * d);
            rv.drain(..g * d);
        }
        let kk: Vec<f64> = qk.iter().chain(&rk).cloned().collect();
        let vv: Vec<f64> = qv.iter().chain(&rv).cloned().collect();
        seen.push((kk, vv));
    }
    (seen, ties)
}

/// `[t, kv_heads, d]` rows of head `g`.
fn head_rows(x: &[f32], t: usize, kvh: usize, d: usize, g: usize) -> Vec<f32> {
    (0..t)
        .flat_map(|i| x[(i * kvh + g) * d..(i * kvh + g + 1) * d].iter().cloned())
        .collect()
}

/// SmolLM2's rotary frequencies for heads of `d` (base 100000).
fn inv_freq(d: usize) -> Vec<f64> {
    (0..d / 2)
        .map(|i| 100000f64.powf(-((2 * i) as f64) / d as f64))
        .collect()
}

#[test]
fn kivi_matches_the_papers_algorithm() {
    let (kvh, d, len) = (2, 64, 100);
    // Written as `--kv-cache` options (their parse is tested beside `KvMode::parse`):
    // plain, token groups, then the variants (sinks, keys before rotation, other value groups
    // and widths) and decision 131's residual windows, Hadamard rotations and keys per token.
    let specs = [
        "kivi2",
        "kivi4",
        "kivi2:16",
        "kivi4:64",
        "kivi2:s3",
        "kivi2:pre",
        "kivi2:k4:vg16:s1:pre",
        "kivi2:r20",
        "kivi2:h",
        "kivi2:kg32:hk:r8:16",
        "kivi2:hv:s2:pre:r32",
        // Decision 142: Lloyd–Max levels (2-bit sides only).
        "kivi2:lm",
        "kivi2:vg64:s1:pre:h:lm",
        "kivi4:v2:kg32:lm",
        "kivi2:s1:pre:h:lmv",
        "kivi2:kg32:lmk",
        "kivi2:vg64:s1:pre:h:lm:u",
    ];
    let freqs = inv_freq(d);
    for text in specs {
        let mode = KvMode::parse(text).unwrap();
        let KvMode::Kivi(spec) = mode else {
            panic!("{text} is not a KIVI mode")
        };
        let k = values(len * kvh * d, 1);
        let v = values(len * kvh * d, 2);
        let refs: Vec<_> = (0..kvh)
            .map(|g| {
                reference_kivi(
                    &head_rows(&k, len, kvh, d, g),
                    &head_rows(&v, len, kvh, d, g),
                    len,
                    d,
                    spec,
                    &freqs,
                )
            })
            .collect();
        // Ties round either way in f32 and f64; they are rare with random data (the f16
        // rows sit on a coarser grid than f32 ones, so a few more than with f32 inputs).
        let ties: usize = refs.iter().map(|r| r.1).sum();
        assert!(ties <= 10, "{mode}: {ties} ties");
        // One token at a time, as decoding appends them; after each, what the newest query
        // sees is the reference's cache at that step.
        let mut one = QuantKv::new(mode, len, kvh, d)
            .unwrap()
            .with_rope(Some(&freqs))
            .unwrap();
        for p in 0..len {
            let at = |x: &[f32]| x[p * kvh * d..(p + 1) * kvh * d].to_vec();
            one.append(&at(&k), &at(&v), 1).unwrap();
            for (g, (r, _)) in refs.iter().enumerate() {
                let (rk, rv) = &r[p];
                let what = format!("{mode} at {p}, head {g}");
                check_close(&one.visible(Side::K, g, p), rk, ties, &what);
                check_close(&one.visible(Side::V, g, p), rv, ties, &what);
            }
        }
    }
}

/// Equal to f32 rounding of the dequantized value (1e-6 of its magnitude plus 4e-6: a key
/// rotated after decoding mixes in the rounding of its partner channel, up to 16 in these
/// data), except at most `ties` values, which may differ by one quantization step.
fn check_close(ours: &[f32], reference: &[f64], ties: usize, what: &str) {
    assert_eq!(ours.len(), reference.len(), "{what}");
    let off = ours
        .iter()
        .zip(reference)
        .filter(|(&a, &b)| (a as f64 - b).abs() > 1e-6 * b.abs() + 4e-6)
        .count();
    assert!(off <= ties, "{what}: {off} values differ (ties {ties})");
}

/// Attention of one query in f64 over `k`/`v` `[p + 1, d]` (keys from `lo` on), and the
/// largest |score|.
fn naive(q: &[f32], k: &[f32], v: &[f32], lo: usize, scale: f32) -> (Vec<f64>, f64) {
    let d = q.len();
    let n = k.len() / d;
    let s: Vec<f64> = (lo..n)
        .map(|j| {
            (0..d)
                .map(|c| q[c] as f64 * k[j * d + c] as f64)
                .sum::<f64>()
                * scale as f64
        })
        .collect();
    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
    let z: f64 = e.iter().sum();
    let out = (0..d)
        .map(|c| {
            (lo..n)
                .zip(&e)
                .map(|(j, w)| w / z * v[j * d + c] as f64)
                .sum()
        })
        .collect();
    (out, s.iter().fold(0f64, |a, x| a.max(x.abs())))
}

const MODES: [KvMode; 9] = [
    KvMode::F16,
    KvMode::Q8,
    KvMode::Q4,
    KvMode::Kivi(Kivi::plain(4)),
    KvMode::Kivi(Kivi::plain(2)),
    KvMode::Kivi(Kivi {
        group: 8,
        ..Kivi::plain(2)
    }),
    KvMode::Kivi(Kivi {
        group: 16,
        sink: 4,
        pre_rope: true,
        value_channels: 16,
        ..Kivi::plain(2)
    }),
    KvMode::Kivi(Kivi {
        group: 8,
        residual: 12,
        hadamard_k: true,
        hadamard_v: true,
        key_channels: 64,
        mse: true,
        ..Kivi::plain(2)
    }),
    KvMode::Kivi(Kivi {
        sink: 1,
        pre_rope: true,
        hadamard_k: true,
        hadamard_v: true,
        value_channels: 64,
        lloyd_k: true,
        lloyd_v: true,
        ..Kivi::plain(2)
    }),
];

/// Attention over each compressed store, appended in uneven chunks, equals plain f64
/// attention over the rows the store decodes for each query (`visible`), within f32
/// rounding: a score `s` is off by about |s|·2⁻²³·√d, which moves the weights by as much
/// relatively, times values up to 16: 1e-6·(1 + max |s|)·16.
#[test]
fn attention_over_a_compressed_cache_equals_attention_over_its_decoded_rows() {
    let (kvh, heads, d) = (2, 6, 64);
    let scale = 1.0 / (d as f32).sqrt();
    for mode in MODES {
        for window in [None, Some(40)] {
            let mut kv = QuantKv::new(mode, 150, kvh, d)
                .unwrap()
                .with_rope(Some(&inv_freq(d)))
                .unwrap();
            let mut pos = 0;
            for (c, &t) in [5usize, 37, 1, 1, 60, 3, 1].iter().enumerate() {
                let k = values(t * kvh * d, 10 + c as u64);
                let v = values(t * kvh * d, 20 + c as u64);
                let q = values(t * heads * d, 30 + c as u64);
                kv.append(&k, &v, t).unwrap();
                let mask = AttentionMask {
                    window,
                    query_offset: pos,
                };
                let out = attend(&q, t, heads, &kv, mask, scale).unwrap();
                for i in 0..t {
                    let p = pos + i;
                    let lo = window.map_or(0, |w| (p + 1).saturating_sub(w));
                    for h in 0..heads {
                        let g = h / (heads / kvh);
                        let qr = &q[(i * heads + h) * d..(i * heads + h + 1) * d];
                        let (want, smax) = naive(
                            qr,
                            &kv.visible(Side::K, g, p),
                            &kv.visible(Side::V, g, p),
                            lo,
                            scale,
                        );
                        let got = &out[(i * heads + h) * d..(i * heads + h + 1) * d];
                        let tol = 1e-6 * (1.0 + smax) * 16.0;
                        for (a, b) in got.iter().zip(&want) {
                            assert!(
                                (*a as f64 - b).abs() < tol,
                                "{mode} {window:?}: position {p} head {h}: {a} vs {b}"
                            );
                        }
                    }
                }
                pos += t;
            }
        }
    }
}

/// A whole window appended at once is attended exactly as if decoded one token at a time
/// (what evaluation relies on): same outputs for every query, within f32 summation order.
#[test]
fn one_chunk_is_attended_as_token_by_token_decoding() {
    let (kvh, heads, d, len) = (1, 3, 32, 70);
    let scale = 0.2;
    let k = values(len * kvh * d, 5);
    let v = values(len * kvh * d, 6);
    let q = values(len * heads * d, 7);
    for mode in MODES {
        let mut whole = QuantKv::new(mode, len, kvh, d)
            .unwrap()
            .with_rope(Some(&inv_freq(d)))
            .unwrap();
        whole.append(&k, &v, len).unwrap();
        let all = attend(&q, len, heads, &whole, AttentionMask::default(), scale).unwrap();
        let mut step = QuantKv::new(mode, len, kvh, d)
            .unwrap()
            .with_rope(Some(&inv_freq(d)))
            .unwrap();
        for p in 0..len {
            let row = |x: &[f32], w: usize| x[p * w * d..(p + 1) * w * d].to_vec();
            step.append(&row(&k, kvh), &row(&v, kvh), 1).unwrap();
            let mask = AttentionMask {
                window: None,
                query_offset: p,
            };
            let one = attend(&row(&q, heads), 1, heads, &step, mask, scale).unwrap();
            let want = &all[p * heads * d..(p + 1) * heads * d];
            for (a, b) in one.iter().zip(want) {
                assert!((a - b).abs() < 1e-5, "{mode} at {p}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn modes_parse_print_and_count_bytes() {
    for (name, _) in KV_MODES {
        assert_eq!(KvMode::parse(name).unwrap().to_string(), name);
    }
    assert_eq!(
        KvMode::parse("kivi2:64").unwrap(),
        KvMode::Kivi(Kivi {
            group: 64,
            ..Kivi::plain(2)
        })
    );
    assert!(KvMode::parse("kivi2:48")
        .unwrap_err()
        .contains("power of two"));
    assert!(KvMode::parse("q8:32")
        .unwrap_err()
        .contains("only the KIVI"));
    // The variants' options print back to what parses to them.
    for name in [
        "kivi2:64:v4:vg16:s4:pre",
        "kivi4:k2",
        "kivi2:s1",
        "kivi8:v2:128",
        "kivi2:s1:pre:r64:kg32:h:mse",
        "kivi2:hk:r8",
        "kivi2:hv",
        "kivi2:vg64:s1:pre:h:lm",
        "kivi2:lmk",
        "kivi2:s1:lmv",
        "kivi2:h:lmv:u",
    ] {
        let m = KvMode::parse(name).unwrap();
        assert_eq!(KvMode::parse(&m.to_string()).unwrap(), m, "{name} -> {m}");
    }
    assert_eq!(
        KvMode::parse("kivi4:k2:s2:pre").unwrap(),
        KvMode::Kivi(Kivi {
            key_bits: 2,
            value_bits: 4,
            sink: 2,
            pre_rope: true,
            ..Kivi::plain(4)
        })
    );
    assert_eq!(
        KvMode::parse("kivi2:r96:kg64:hv:mse").unwrap(),
        KvMode::Kivi(Kivi {
            residual: 96,
            key_channels: 64,
            hadamard_v: true,
            mse: true,
            ..Kivi::plain(2)
        })
    );
    for bad in [
        "kivi2:k3",
        "kivi2:s64",
        "kivi2:vg0",
        "kivi2:x",
        "kivi2:kg0",
        "kivi2:kg48",
        "kivi2:r",
        "kivi2:r5000",
        "kivi2:hx",
        "kivi2:u",
    ] {
        assert!(KvMode::parse(bad).is_err(), "{bad}");
    }
    assert!(KvMode::parse("int3").unwrap_err().contains("f32, f16, q8"));
    // SmolLM2's blocks: 3 kv heads of 64.
    let b = |m: &str| KvMode::parse(m).unwrap().bytes_per_position(3, 64);
    assert_eq!(b("f32"), 1536.0);
    assert_eq!(b("f16"), 768.0);
    assert_eq!(b("q8"), 2.0 * 3.0 * (64.0 + 4.0));
    assert_eq!(b("q4"), 2.0 * 3.0 * (32.0 + 8.0));
    assert_eq!(b("kivi2") / b("f16"), 0.1875);
    // Keys per token in groups of 64: one scale and minimum per head per position (4 bytes
    // for 64 channels, as KIVI's per-channel keys over G = 64 positions); rotations and
    // clipping cost nothing; the residual window is fixed bytes, f16 (4 bytes per channel of
    // a position's key and value).
    assert_eq!(b("kivi2:kg64"), b("kivi2:64"));
    assert_eq!(b("kivi2:h:mse"), b("kivi2"));
    // Lloyd–Max levels keep an f16 scale and offset per group, as min–max does.
    assert_eq!(b("kivi2:lm"), b("kivi2"));
    let fixed = |m: &str| KvMode::parse(m).unwrap().fixed_bytes(3, 64);
    assert_eq!(fixed("kivi2:r64:s1") - fixed("kivi2"), 4 * 65 * 3 * 64);
    // What the store allocates matches the count.
    for mode in MODES {
        let kv = QuantKv::new(mode, 4096, 3, 64).unwrap();
        let per = mode.bytes_per_position(3, 64);
        assert_eq!(kv.bytes() as f64, per * 4096.0, "{mode}");
    }
    // Decoding a token at a time, a store never holds more than the count plus its fixed
    // bytes (KIVI: the sink and at most G − 1 positions in f16 between appends).
    for mode in MODES {
        let (kvh, d, cap) = (3, 64, 320);
        let mut kv = QuantKv::new(mode, cap, kvh, d)
            .unwrap()
            .with_rope(Some(&inv_freq(d)))
            .unwrap();
        let limit = mode.bytes_per_position(kvh, d) * cap as f64 + mode.fixed_bytes(kvh, d) as f64;
        for p in 0..cap {
            let x = values(kvh * d, p as u64);
            kv.append(&x, &x, 1).unwrap();
            assert!(kv.bytes() as f64 <= limit, "{mode} at {p}: {}", kv.bytes());
        }
    }
}

/// A store quantizing keys before rotation gets its frequencies when it is made: without them,
/// or with a count that does not fit the heads, it is refused there; the other modes ignore
/// them. The same on both kinds of store (the host's, and the other backends' `BackendKv`).
#[test]
fn a_pre_rope_store_is_made_with_its_frequencies() {
    fn check<B: crate::Backend>(b: &B) {
        let pre = KvMode::Kivi(Kivi {
            pre_rope: true,
            ..Kivi::plain(2)
        });
        let alloc = |mode, f: Option<Vec<f64>>| {
            b.kv_alloc(KvSpec {
                inv_freq: f.as_deref(),
                ..KvSpec::new(64, 1, 64, mode)
            })
        };
        let e = alloc(pre, None).err().unwrap().0;
        assert!(e.contains("no rotary frequencies"), "{e}");
        let e = alloc(pre, Some(inv_freq(32))).err().unwrap().0;
        assert!(e.contains("16 rotary frequencies for heads of 64"), "{e}");
        assert!(alloc(pre, Some(inv_freq(64))).is_ok());
        assert!(alloc(KvMode::Kivi(Kivi::plain(2)), None).is_ok());
        assert!(alloc(KvMode::Q8, Some(inv_freq(32))).is_ok());
        assert!(alloc(KvMode::F32, None).is_ok());
    }
    check(&crate::Host);
    check(&crate::Cpu);
}
