//! The group codecs of the compressed key/value caches.
//!
//! - **min–max** (asymmetric, `bits` = 2, 4 or 8): a group `x` is stored as `z = min x`,
//!   `s = (max x − min x) / (2^bits − 1)` (both f16) and codes `c = round((x − z) / s)`
//!   clamped to `0..2^bits`; it decodes to `z + s·c`. KIVI's quantizer (arXiv 2402.02750, §3.1,
//!   `Q(X) = ⌊(X − z)/s⌉`), used for q4 and both KIVI modes.
//! - **min–max, clipped** (decision 131): the same grid over a range `[lo', hi']` inside the
//!   group's `[min, max]`, chosen among `lo' = min + i·r/24`, `hi' = max − j·r/24`
//!   (`r = max − min`, `i, j ∈ 0..=6`) as the one whose decoded group (f16 `s`, `z` and
//!   clamped codes, exactly what decoding gives) has the least squared error; min–max itself
//!   is a candidate, so the error is never larger than min–max's.
//! - **absmax** (symmetric, 8 bits): `s = max |x| / 127` (f16) and codes `round(x / s)` in
//!   `−127..=127`, stored offset by 128; it decodes to `s·(c − 128)`. Used for q8.
//!
//! The codes are computed against the f16-rounded `s` and `z`, so that decoding reproduces
//! exactly what the encoder assumed. Error of one value: at most `s/2` plus the f16 rounding of
//! `z` and of `s` (≤ 2⁻¹¹ relative each, times the code). Limits: values beyond f16's range
//! (±65504) saturate; keys and values of real models stay far below it.

use half::f16;

/// How a group is quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// Asymmetric: scale and minimum, `bits` ∈ {2, 4, 8}.
    MinMax { bits: u8 },
    /// Asymmetric over the clipped range of least squared error.
    MinMaxMse { bits: u8 },
    /// Symmetric 8-bit: one scale.
    AbsMax8,
    /// Decision 142: 2-bit, the four Lloyd–Max levels of a Gaussian ([`LLOYD_MAX2`]) around
    /// an f16 offset with an f16 scale, fitted per group by least squares.
    /// `unshrunk`: the scale then widened so that the decoded group regresses on the group
    /// with slope 1 (`s' = var x / cov(x, L[c])`, codes kept): Lloyd–Max's centroids shrink a
    /// group towards its mean (`var Q = var x − MSE`), which flattens attention scores.
    LloydMax2 { unshrunk: bool },
}

/// The 4-level Lloyd–Max quantizer of the standard normal: levels `±a, ±b` with thresholds
/// `0, ±(a + b)/2` (each level the centroid of its interval, each threshold the midpoint of
/// its levels; solved numerically in `lloyd_max_levels_are_the_gaussians_fixed_point`).
/// A code `c` decodes to `z + s·LLOYD_MAX2[c]`.
pub const LLOYD_MAX2: [f32; 4] = [-1.510_417_6, -0.452_78, 0.452_78, 1.510_417_6];

/// Least-squares refinements of a [`Codec::LloydMax2`] group after its moment fit.
const LLOYD_ROUNDS: usize = 4;

impl Codec {
    pub fn bits(self) -> usize {
        match self {
            Codec::MinMax { bits } | Codec::MinMaxMse { bits } => bits as usize,
            Codec::AbsMax8 => 8,
            Codec::LloydMax2 { .. } => 2,
        }
    }

    /// What code `c` stands for before the affine map: `c` itself on a uniform grid, the
    /// Lloyd–Max level otherwise (decoding is `offset + scale·level(c)`, in f32 without
    /// contraction, on the host and in `kvdev.cu`).
    #[inline(always)]
    pub fn level(self, c: u8) -> f32 {
        match self {
            Codec::LloydMax2 { .. } => LLOYD_MAX2[c as usize & 3],
            _ => c as f32,
        }
    }

    /// Metadata bytes of one group (f16 scale, and f16 minimum for min–max).
    pub fn meta_bytes(self) -> usize {
        match self {
            Codec::MinMax { .. } | Codec::MinMaxMse { .. } | Codec::LloydMax2 { .. } => 4,
            Codec::AbsMax8 => 2,
        }
    }

    /// Quantizes `x` into `codes` (one unpacked code per value); returns the group's
    /// `(scale, offset)` such that `x ≈ offset + scale·code`.
    pub fn encode(self, x: &[f32], codes: &mut [u8]) -> (f16, f16) {
        debug_assert_eq!(x.len(), codes.len());
        match self {
            Codec::MinMax { bits } => {
                let (lo, hi) = range(x);
                min_max(x, lo, hi, bits, codes)
            }
            Codec::MinMaxMse { bits } => {
                let (lo, hi) = range(x);
                let r = hi - lo;
                let mut best = (f32::INFINITY, lo, hi);
                for i in 0..=CLIP_STEPS {
                    for j in 0..=CLIP_STEPS {
                        let (a, b) = (lo + r * i as f32 / 24.0, hi - r * j as f32 / 24.0);
                        let (s, z) = min_max(x, a, b, bits, codes);
                        let (sf, zf) = (s.to_f32(), z.to_f32());
                        let err: f32 = x
                            .iter()
                            .zip(codes.iter())
                            .map(|(&v, &c)| (v - (zf + sf * c as f32)).powi(2))
                            .sum();
                        // Strictly smaller: ties keep the wider range (min–max first).
                        if err < best.0 {
                            best = (err, a, b);
                        }
                    }
                }
                min_max(x, best.1, best.2, bits, codes)
            }
            Codec::AbsMax8 => {
                let amax = x.iter().fold(0f32, |m, &v| m.max(v.abs()));
                let s = saturate(amax / 127.0);
                let sf = s.to_f32();
                let inv = if sf > 0.0 { 1.0 / sf } else { 0.0 };
                for (c, &v) in codes.iter_mut().zip(x) {
                    *c = ((v * inv).round().clamp(-127.0, 127.0) + 128.0) as u8;
                }
                (s, f16::from_f32(-128.0 * sf))
            }
            Codec::LloydMax2 { unshrunk } => lloyd_max2(x, codes, unshrunk),
        }
    }

    /// `(scale, offset)` as f32 for decoding `offset + scale·code`.
    pub fn affine(self, scale: f16, offset: f16) -> (f32, f32) {
        match self {
            Codec::MinMax { .. } | Codec::MinMaxMse { .. } | Codec::LloydMax2 { .. } => {
                (scale.to_f32(), offset.to_f32())
            }
            // −128·s in f32, not through the stored f16 (which only the encoder's return
            // value carries).
            Codec::AbsMax8 => {
                let s = scale.to_f32();
                (s, -128.0 * s)
            }
        }
    }
}

/// Clipping candidates per side for [`Codec::MinMaxMse`] (steps of 1/24 of the range).
const CLIP_STEPS: usize = 6;

fn range(x: &[f32]) -> (f32, f32) {
    x.iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// Codes of `x` on the grid from `lo` to `hi` (values outside clamp to the ends).
fn min_max(x: &[f32], lo: f32, hi: f32, bits: u8, codes: &mut [u8]) -> (f16, f16) {
    let levels = ((1u32 << bits) - 1) as f32;
    let z = saturate(lo);
    let s = saturate((hi - lo) / levels);
    let (zf, sf) = (z.to_f32(), s.to_f32());
    let inv = if sf > 0.0 { 1.0 / sf } else { 0.0 };
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = ((v - zf) * inv).round().clamp(0.0, levels) as u8;
    }
    (s, z)
}

/// Nearest Lloyd–Max level of each value for offset `z` and scale `s` (f32, as decoded), and
/// the group's squared error decoded exactly as decoding will.
fn lloyd_codes(x: &[f32], z: f16, s: f16, codes: &mut [u8]) -> f64 {
    let (zf, sf) = (z.to_f32(), s.to_f32());
    let mut err = 0f64;
    for (c, &v) in codes.iter_mut().zip(x) {
        // Nearest of the four decoded values (the thresholds are their midpoints; comparing
        // the decoded values themselves keeps the choice exact for any f16 s and z).
        let mut best = (f32::INFINITY, 0u8);
        for (i, &l) in LLOYD_MAX2.iter().enumerate() {
            let e = (v - (zf + sf * l)).abs();
            if e < best.0 {
                best = (e, i as u8);
            }
        }
        *c = best.1;
        err += (best.0 as f64).powi(2);
    }
    err
}

/// [`Codec::LloydMax2`]'s encoder: the moment fit (`z` = the group's mean, `s` = its RMS
/// about `z`, the scale the Gaussian levels assume), then up to [`LLOYD_ROUNDS`] rounds of
/// the least-squares affine fit `min Σ (x − z − s·L[c])²` of the chosen codes, each kept only
/// if its decoded error (f16 `s`, `z`) is smaller. Sums in f64 in index order, so the result
/// is a function of `x` alone.
fn lloyd_max2(x: &[f32], codes: &mut [u8], unshrunk: bool) -> (f16, f16) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let z = saturate(mean as f32);
    let zf = z.to_f64();
    let rms = (x.iter().map(|&v| (v as f64 - zf).powi(2)).sum::<f64>() / n).sqrt();
    let s = saturate(rms as f32);
    let mut best = (lloyd_codes(x, z, s, codes), s, z);
    let mut trial = vec![0u8; x.len()];
    trial.copy_from_slice(codes);
    for _ in 0..LLOYD_ROUNDS {
        let l = |c: u8| LLOYD_MAX2[c as usize] as f64;
        let ml = trial.iter().map(|&c| l(c)).sum::<f64>() / n;
        let var = trial.iter().map(|&c| (l(c) - ml).powi(2)).sum::<f64>();
        if var == 0.0 {
            break;
        }
        let cov = trial
            .iter()
            .zip(x)
            .map(|(&c, &v)| (l(c) - ml) * (v as f64 - mean))
            .sum::<f64>();
        let s1 = cov / var;
        let (s, z) = (saturate(s1 as f32), saturate((mean - s1 * ml) as f32));
        let err = lloyd_codes(x, z, s, &mut trial);
        if err >= best.0 {
            break;
        }
        best = (err, s, z);
        codes.copy_from_slice(&trial);
    }
    if unshrunk {
        // Slope 1 of the decoded group on the group: s' = var x / cov(x, L[c]), the offset
        // keeping the means equal; the codes stay.
        let l = |c: u8| LLOYD_MAX2[c as usize] as f64;
        let ml = codes.iter().map(|&c| l(c)).sum::<f64>() / n;
        let var_x = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>();
        let cov = codes
            .iter()
            .zip(x)
            .map(|(&c, &v)| (l(c) - ml) * (v as f64 - mean))
            .sum::<f64>();
        if cov > 0.0 {
            let s1 = var_x / cov;
            return (saturate(s1 as f32), saturate((mean - s1 * ml) as f32));
        }
    }
    (best.1, best.2)
}

/// The orthonormal Walsh–Hadamard transform of `x` in place (`x.len()` a power of two):
/// `H/√n` with `H` Sylvester's ±1 matrix, which is symmetric, so applying it twice returns
/// `x` (decision 131: a key or value row is rotated before it is quantized and after it is
/// decoded). Spreads an outlier channel's magnitude over all channels, so a group's range
/// follows the row's norm rather than its largest entry.
pub fn hadamard(x: &mut [f32]) {
    let n = x.len();
    debug_assert!(n.is_power_of_two());
    let mut h = 1;
    while h < n {
        for i in (0..n).step_by(2 * h) {
            for j in i..i + h {
                let (a, b) = (x[j], x[j + h]);
                x[j] = a + b;
                x[j + h] = a - b;
            }
        }
        h *= 2;
    }
    let norm = 1.0 / (n as f32).sqrt();
    x.iter_mut().for_each(|v| *v *= norm);
}

/// f16 of `v`, saturated at f16's largest finite value.
fn saturate(v: f32) -> f16 {
    f16::from_f32(v.clamp(-65504.0, 65504.0))
}

/// Bytes of `n` codes of `bits` bits packed.
pub fn packed_len(n: usize, bits: usize) -> usize {
    (n * bits).div_ceil(8)
}

/// Packs codes of `bits` ∈ {2, 4, 8} bits, first code in the lowest bits.
pub fn pack(codes: &[u8], bits: usize, out: &mut [u8]) {
    let per = 8 / bits;
    for (o, chunk) in out.iter_mut().zip(codes.chunks(per)) {
        *o = chunk
            .iter()
            .enumerate()
            .fold(0u8, |acc, (i, &c)| acc | (c << (i * bits)));
    }
}

/// Code `i` of a packed row.
#[inline(always)]
pub fn code_at(packed: &[u8], bits: usize, i: usize) -> u8 {
    let per = 8 / bits;
    let byte = packed[i / per];
    (byte >> ((i % per) * bits)) & ((1u16 << bits) - 1) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The stated bound: half a step, plus f16 rounding of the offset and of the scale times
    /// the largest code.
    fn bound(codec: Codec, x: &[f32]) -> f32 {
        let (lo, hi) = x
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let amax = lo.abs().max(hi.abs());
        let step = match codec {
            Codec::MinMax { bits } | Codec::MinMaxMse { bits } => {
                (hi - lo) / ((1u32 << bits) - 1) as f32
            }
            Codec::AbsMax8 => amax / 127.0,
            Codec::LloydMax2 { .. } => unreachable!("the bound is a uniform grid's"),
        };
        let levels = ((1u32 << codec.bits()) - 1) as f32;
        0.5 * step * (1.0 + 1e-3) + amax * 2f32.powi(-11) + levels * step * 2f32.powi(-11) + 1e-7
    }

    fn round_trip(codec: Codec, x: &[f32]) -> Vec<f32> {
        let mut codes = vec![0u8; x.len()];
        let (s, z) = codec.encode(x, &mut codes);
        let mut packed = vec![0u8; packed_len(x.len(), codec.bits())];
        pack(&codes, codec.bits(), &mut packed);
        let (sf, zf) = codec.affine(s, z);
        (0..x.len())
            .map(|i| {
                let c = code_at(&packed, codec.bits(), i);
                assert_eq!(c, codes[i], "packing changed code {i}");
                zf + sf * codec.level(c)
            })
            .collect()
    }

    const CODECS: [Codec; 4] = [
        Codec::MinMax { bits: 2 },
        Codec::MinMax { bits: 4 },
        Codec::MinMax { bits: 8 },
        Codec::AbsMax8,
    ];

    proptest! {
        #[test]
        fn round_trip_within_the_stated_bound(
            x in prop::collection::vec(-300f32..300.0, 1..130),
            shift in -50f32..50.0,
            which in 0usize..4,
        ) {
            let x: Vec<f32> = x.iter().map(|v| v + shift).collect();
            let codec = CODECS[which];
            let y = round_trip(codec, &x);
            let b = bound(codec, &x);
            for (a, r) in x.iter().zip(&y) {
                prop_assert!((a - r).abs() <= b, "{codec:?}: {a} -> {r}, bound {b}");
            }
        }
    }

    #[test]
    fn constant_and_zero_groups_are_exact() {
        for codec in CODECS {
            assert_eq!(round_trip(codec, &[0.0; 32]), vec![0.0; 32]);
        }
        let y = round_trip(Codec::MinMax { bits: 2 }, &[0.5; 8]);
        assert_eq!(y, vec![0.5; 8]);
    }

    #[test]
    fn extremes_are_hit() {
        let x: Vec<f32> = (0..32).map(|i| i as f32 / 31.0 * 3.0 - 1.0).collect();
        let y = round_trip(Codec::MinMax { bits: 4 }, &x);
        assert!(
            (y[0] + 1.0).abs() < 1e-3 && (y[31] - 2.0).abs() < 2e-3,
            "{y:?}"
        );
    }

    fn squared_error(codec: Codec, x: &[f32]) -> f64 {
        round_trip(codec, x)
            .iter()
            .zip(x)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum()
    }

    proptest! {
        #[test]
        fn clipped_ranges_never_cost_more_than_min_max(
            x in prop::collection::vec(-30f32..30.0, 2..65),
            outlier in -200f32..200.0,
            bits in prop::sample::select(vec![2u8, 4, 8]),
        ) {
            let mut x = x;
            x[0] = outlier;
            let plain = squared_error(Codec::MinMax { bits }, &x);
            let clipped = squared_error(Codec::MinMaxMse { bits }, &x);
            prop_assert!(clipped <= plain * (1.0 + 1e-5) + 1e-9, "{clipped} > {plain}");
        }
    }

    /// A direct reading of the clipped quantizer: every candidate range in f64, decoded
    /// through f16 scale and minimum; the codec's choice must reach the least error within f32
    /// rounding.
    #[test]
    fn clipped_ranges_reach_the_grid_searchs_least_error() {
        for seed in 0..50u32 {
            let x: Vec<f32> = (0..32u32)
                .map(|i| {
                    let h = (i.wrapping_mul(2654435761u32)).wrapping_add(seed * 40503) % 1000;
                    let v = h as f32 / 100.0 - 5.0;
                    if i == seed % 32 {
                        v * 6.0
                    } else {
                        v
                    }
                })
                .collect();
            for bits in [2u8, 4] {
                let levels = ((1u32 << bits) - 1) as f64;
                let lo = x.iter().cloned().fold(f32::INFINITY, f32::min) as f64;
                let hi = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
                let mut best = f64::INFINITY;
                for i in 0..=6 {
                    for j in 0..=6 {
                        let (a, b) = (
                            lo + (hi - lo) * i as f64 / 24.0,
                            hi - (hi - lo) * j as f64 / 24.0,
                        );
                        let z = f16::from_f64(a).to_f64();
                        let s = f16::from_f64((b - a) / levels).to_f64();
                        let e: f64 = x
                            .iter()
                            .map(|&v| {
                                let c = if s > 0.0 {
                                    ((v as f64 - z) / s).round().clamp(0.0, levels)
                                } else {
                                    0.0
                                };
                                (v as f64 - (z + s * c)).powi(2)
                            })
                            .sum();
                        best = best.min(e);
                    }
                }
                let ours = squared_error(Codec::MinMaxMse { bits }, &x);
                assert!(
                    ours <= best * (1.0 + 1e-3) + 1e-6,
                    "seed {seed}, {bits} bits: {ours} vs {best}"
                );
                assert!(ours < squared_error(Codec::MinMax { bits }, &x) + 1e-9);
            }
        }
    }

    /// Lloyd–Max for N(0, 1) with 4 levels, solved here: thresholds at the midpoints of the
    /// levels, levels at the centroids of their intervals (`E[X | a < X < b]`, by Simpson's
    /// rule on the density over ±12), iterated from a uniform start to a fixed point.
    /// [`LLOYD_MAX2`] must be it to 1e-6.
    #[test]
    fn lloyd_max_levels_are_the_gaussians_fixed_point() {
        let pdf = |x: f64| (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let integrate = |a: f64, b: f64, f: &dyn Fn(f64) -> f64| {
            let n = 20_000;
            let h = (b - a) / n as f64;
            (0..=n)
                .map(|i| {
                    let w = if i == 0 || i == n {
                        1.0
                    } else if i % 2 == 1 {
                        4.0
                    } else {
                        2.0
                    };
                    w * f(a + i as f64 * h)
                })
                .sum::<f64>()
                * h
                / 3.0
        };
        let mut lv = [-1.5f64, -0.5, 0.5, 1.5];
        for _ in 0..200 {
            let t = [
                -12.0,
                (lv[0] + lv[1]) / 2.0,
                (lv[1] + lv[2]) / 2.0,
                (lv[2] + lv[3]) / 2.0,
                12.0,
            ];
            for i in 0..4 {
                let mass = integrate(t[i], t[i + 1], &pdf);
                lv[i] = integrate(t[i], t[i + 1], &|x| x * pdf(x)) / mass;
            }
        }
        for (a, b) in lv.iter().zip(LLOYD_MAX2) {
            assert!((a - b as f64).abs() < 1e-6, "{lv:?} vs {LLOYD_MAX2:?}");
        }
        // The thresholds the brief quotes: 0 and ±0.9816.
        assert!(((lv[2] + lv[3]) / 2.0 - 0.9816).abs() < 1e-4);
    }

    /// Gaussian samples (Box–Muller over a fixed hash): the Lloyd–Max codec's squared error
    /// against 2-bit min–max, per group of 32 and of 64. Theory for large groups: Lloyd–Max
    /// 0.1175·σ², min–max over n samples a step of (range/3)² / 12 with the range ≈ 4.1σ (n =
    /// 32) to 4.6σ (n = 64), i.e. ≈ 0.16–0.20·σ². The test requires ≤ 0.80× min–max's error
    /// and ≤ 0.14·σ² (small groups fit their own scale, so a little below the asymptote is
    /// possible; above it by 20% would mean a bad fit).
    #[test]
    fn lloyd_max_beats_min_max_on_gaussian_groups() {
        let u = |i: u64| {
            let z = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            (((z ^ (z >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 11) as f64 + 0.5)
                / (1u64 << 53) as f64
        };
        let gauss: Vec<f32> = (0..64 * 400u64)
            .map(|i| {
                let (a, b) = (u(2 * i), u(2 * i + 1));
                ((-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos() * 3.0 + 1.0) as f32
            })
            .collect();
        for n in [32, 64] {
            let (mut lm, mut mm) = (0f64, 0f64);
            for g in gauss.chunks(n) {
                lm += squared_error(Codec::LloydMax2 { unshrunk: false }, g);
                mm += squared_error(Codec::MinMax { bits: 2 }, g);
            }
            let per = |e: f64| e / gauss.len() as f64 / 9.0; // in units of σ² = 9
            assert!(
                lm <= 0.80 * mm,
                "n {n}: Lloyd–Max {} vs min–max {}",
                per(lm),
                per(mm)
            );
            assert!(per(lm) <= 0.14, "n {n}: {}", per(lm));
            eprintln!(
                "groups of {n}: Lloyd–Max {:.4} σ², min–max {:.4} σ²",
                per(lm),
                per(mm)
            );
        }
        // `unshrunk`: the decoded group regresses on the group with slope 1 (within the f16
        // rounding of the scale, 2⁻¹¹), where plain Lloyd–Max's slope is below 1 (its
        // centroids shrink: about 1 − 0.1175 for a Gaussian).
        let slope = |codec: Codec, g: &[f32]| {
            let q = round_trip(codec, g);
            let n = g.len() as f64;
            let (mx, mq) = (
                g.iter().map(|&v| v as f64).sum::<f64>() / n,
                q.iter().map(|&v| v as f64).sum::<f64>() / n,
            );
            let cov: f64 = g
                .iter()
                .zip(&q)
                .map(|(&a, &b)| (a as f64 - mx) * (b as f64 - mq))
                .sum();
            cov / g.iter().map(|&a| (a as f64 - mx).powi(2)).sum::<f64>()
        };
        for g in gauss.chunks(64).take(50) {
            let u = slope(Codec::LloydMax2 { unshrunk: true }, g);
            assert!((u - 1.0).abs() < 1e-3, "unshrunk slope {u}");
            assert!(slope(Codec::LloydMax2 { unshrunk: false }, g) < 0.97);
        }
        // Degenerate groups decode exactly.
        assert_eq!(
            round_trip(Codec::LloydMax2 { unshrunk: false }, &[0.5; 16]),
            vec![0.5; 16]
        );
        assert_eq!(
            round_trip(Codec::LloydMax2 { unshrunk: false }, &[0.0; 16]),
            vec![0.0; 16]
        );
    }

    #[test]
    fn hadamard_is_orthonormal_and_its_own_inverse() {
        for n in [1usize, 2, 8, 64, 128] {
            let x: Vec<f32> = (0..n)
                .map(|i| (i as f32 * 0.37).sin() * 3.0 + 1.0)
                .collect();
            let mut y = x.clone();
            hadamard(&mut y);
            let norm = |v: &[f32]| v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>();
            assert!((norm(&x) - norm(&y)).abs() <= 1e-5 * norm(&x));
            // Row 0 of H/√n is the mean times √n.
            let mean = x.iter().map(|&a| a as f64).sum::<f64>() / n as f64;
            assert!((y[0] as f64 - mean * (n as f64).sqrt()).abs() < 1e-4);
            hadamard(&mut y);
            for (a, b) in x.iter().zip(&y) {
                assert!((a - b).abs() < 1e-5, "{n}: {a} vs {b}");
            }
        }
        // One outlier channel spreads evenly: every output has magnitude 10/√64.
        let mut e = vec![0f32; 64];
        e[5] = 10.0;
        hadamard(&mut e);
        assert!(e.iter().all(|v| (v.abs() - 1.25).abs() < 1e-6));
    }
}
