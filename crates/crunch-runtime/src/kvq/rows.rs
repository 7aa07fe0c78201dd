//! One side's (keys' or values') rows of a [`super::QuantKv`]: f16, or codes with a scale (and
//! minimum) per group along the axis the mode groups by, Hadamard-rotated first where the mode
//! asks; and which rows each `--kv-cache` mode makes ([`make_rows`]).

use super::codec::{code_at, hadamard, pack, packed_len, Codec};
use super::{channel_group, KvMode};
use crate::{Error, Result};
use half::f16;

/// Which positions share a scale.
#[derive(Clone, Copy, Debug)]
pub(super) enum Axis {
    /// Per position, in groups of `channels` along the head dimension.
    Token { channels: usize },
    /// Per channel, in groups of `tokens` consecutive positions (KIVI's keys).
    Channel { tokens: usize },
}

/// Quantized rows of one side, for positions `base..base + cap`.
pub(super) struct Coded {
    pub(super) codec: Codec,
    pub(super) base: usize,
    pub(super) cap: usize,
    pub(super) axis: Axis,
    /// Rows are Hadamard-rotated before they are quantized and after they are decoded.
    pub(super) rotate: bool,
    pub(super) row_bytes: usize,
    pub(super) codes: Vec<u8>,
    pub(super) scales: Vec<f16>,
    /// Per-group minima (min–max codecs only).
    pub(super) offsets: Vec<f16>,
}

pub(super) enum Rows {
    /// f16 rows `[kv_heads, cap, head_dim]` of positions `base..base + cap`.
    F16 {
        data: Vec<f16>,
        base: usize,
        cap: usize,
    },
    Coded(Coded),
}

impl Coded {
    pub(super) fn new(
        codec: Codec,
        axis: Axis,
        rotate: bool,
        (base, capacity): (usize, usize),
        kv_heads: usize,
        d: usize,
    ) -> Result<Coded> {
        if rotate && !d.is_power_of_two() {
            return Err(Error(format!(
                "a Hadamard rotation needs heads of a power of two channels, not {d}"
            )));
        }
        let groups = match axis {
            Axis::Token { channels } => capacity * (d / channels),
            Axis::Channel { tokens } => capacity.div_ceil(tokens) * d,
        } * kv_heads;
        let row_bytes = packed_len(d, codec.bits());
        let n = capacity
            .checked_mul(kv_heads)
            .and_then(|x| x.checked_mul(row_bytes))
            .ok_or_else(|| Error(format!("key/value cache of {capacity} positions overflows")))?;
        Ok(Coded {
            codec,
            base,
            cap: capacity,
            axis,
            rotate,
            row_bytes,
            codes: vec![0; n],
            scales: vec![f16::ZERO; groups],
            offsets: match codec {
                Codec::MinMax { .. } | Codec::MinMaxMse { .. } | Codec::LloydMax2 { .. } => {
                    vec![f16::ZERO; groups]
                }
                Codec::AbsMax8 => Vec::new(),
            },
        })
    }

    pub(super) fn bytes(&self) -> usize {
        self.codes.len() + 2 * (self.scales.len() + self.offsets.len())
    }

    pub(super) fn set_group(&mut self, at: usize, (s, z): (f16, f16)) {
        self.scales[at] = s;
        if !self.offsets.is_empty() {
            self.offsets[at] = z;
        }
    }

    pub(super) fn affine(&self, at: usize) -> (f32, f32) {
        let z = self.offsets.get(at).copied().unwrap_or(f16::ZERO);
        self.codec.affine(self.scales[at], z)
    }

    /// Encodes position `j` of head `g` from `x [d]` (token axis).
    pub(super) fn encode_row(&mut self, g: usize, j: usize, x: &[f32], tmp: &mut [u8]) {
        let (cap, j) = (self.cap, j - self.base);
        let Axis::Token { channels } = self.axis else {
            unreachable!("rows are encoded one by one only along the token axis")
        };
        let rotated;
        let x = if self.rotate {
            rotated = rotate(x);
            &rotated[..]
        } else {
            x
        };
        let d = x.len();
        let per_row = d / channels;
        for (cg, (xc, tc)) in x.chunks(channels).zip(tmp.chunks_mut(channels)).enumerate() {
            let sz = self.codec.encode(xc, tc);
            self.set_group((g * cap + j) * per_row + cg, sz);
        }
        let at = (g * cap + j) * self.row_bytes;
        pack(
            tmp,
            self.codec.bits(),
            &mut self.codes[at..at + self.row_bytes],
        );
    }

    /// Encodes positions `j0..j0 + tokens` of head `g` from `rows [tokens, d]` (channel axis,
    /// one group); the first `skip` rows (a sink) are left out of the ranges and coded 0.
    pub(super) fn encode_group(
        &mut self,
        g: usize,
        j0: usize,
        rows: &[f32],
        d: usize,
        skip: usize,
    ) {
        let Axis::Channel { tokens } = self.axis else {
            unreachable!("groups of positions are encoded only along the channel axis")
        };
        let (cap, j0) = (self.cap, j0 - self.base);
        let rotated;
        let rows = if self.rotate {
            rotated = rows.chunks(d).flat_map(rotate).collect::<Vec<_>>();
            &rotated[..]
        } else {
            rows
        };
        let mut column = vec![0f32; tokens - skip];
        let mut codes = vec![0u8; tokens - skip];
        let mut all = vec![0u8; tokens * d];
        let blocks = cap.div_ceil(tokens);
        for c in 0..d {
            for (t, x) in column.iter_mut().enumerate() {
                *x = rows[(skip + t) * d + c];
            }
            let sz = self.codec.encode(&column, &mut codes);
            self.set_group((g * blocks + j0 / tokens) * d + c, sz);
            for (t, &q) in codes.iter().enumerate() {
                all[(skip + t) * d + c] = q;
            }
        }
        for t in 0..tokens {
            let at = (g * cap + j0 + t) * self.row_bytes;
            pack(
                &all[t * d..(t + 1) * d],
                self.codec.bits(),
                &mut self.codes[at..at + self.row_bytes],
            );
        }
    }

    /// Decodes positions `j0..j1` of head `g` into `out [(j1 - j0) * d]`.
    pub(super) fn decode(&self, g: usize, j0: usize, j1: usize, d: usize, out: &mut [f32]) {
        // One specialised loop per code width (the unpacking's divisions become shifts) and
        // the codec's levels looked up in a table, not matched per element: the values are
        // the same expression, `z + s·level(c)` in f32 (Rust does not contract it).
        match self.codec.bits() {
            2 => self.decode_bits::<2>(g, j0, j1, d, out),
            4 => self.decode_bits::<4>(g, j0, j1, d, out),
            8 => self.decode_bits::<8>(g, j0, j1, d, out),
            _ => self.decode_any(g, j0, j1, d, out),
        }
    }

    /// `decode` for codes of BITS bits: the unpacking by shifts, the levels from a table.
    fn decode_bits<const BITS: usize>(
        &self,
        g: usize,
        j0: usize,
        j1: usize,
        d: usize,
        out: &mut [f32],
    ) {
        let per = 8 / BITS;
        let mask = ((1u16 << BITS) - 1) as u8;
        let levels: Vec<f32> = (0..1usize << BITS)
            .map(|c| self.codec.level(c as u8))
            .collect();
        self.decode_rows(g, j0, j1, d, out, |row, i| {
            levels[((row[i / per] >> ((i % per) * BITS)) & mask) as usize]
        });
    }

    /// `decode` for codes of any width, element by element (`code_at`, then the codec's
    /// level): the reference the specialised widths are tested against.
    pub(super) fn decode_any(&self, g: usize, j0: usize, j1: usize, d: usize, out: &mut [f32]) {
        let (codec, bits) = (self.codec, self.codec.bits());
        self.decode_rows(g, j0, j1, d, out, |row, i| {
            codec.level(code_at(row, bits, i))
        });
    }

    /// Positions `j0..j1` of head `g` as `z + s·level` with `level(row, i)` the level of code
    /// `i` of a packed row; on the channel axis the (scale, minimum) of every channel is
    /// converted once per group of positions.
    fn decode_rows(
        &self,
        g: usize,
        j0: usize,
        j1: usize,
        d: usize,
        out: &mut [f32],
        level: impl Fn(&[u8], usize) -> f32,
    ) {
        let (cap, j0, j1) = (self.cap, j0 - self.base, j1 - self.base);
        let (mut sz, mut sz_base) = (Vec::new(), usize::MAX);
        for (j, o) in (j0..j1).zip(out.chunks_mut(d)) {
            let at = (g * cap + j) * self.row_bytes;
            let row = &self.codes[at..at + self.row_bytes];
            match self.axis {
                Axis::Token { channels } => {
                    let per_row = d / channels;
                    for (cg, oc) in o.chunks_mut(channels).enumerate() {
                        let (s, z) = self.affine((g * cap + j) * per_row + cg);
                        for (i, x) in oc.iter_mut().enumerate() {
                            *x = z + s * level(row, cg * channels + i);
                        }
                    }
                }
                Axis::Channel { tokens } => {
                    let base = (g * cap.div_ceil(tokens) + j / tokens) * d;
                    if base != sz_base {
                        sz.clear();
                        sz.extend((0..d).map(|c| self.affine(base + c)));
                        sz_base = base;
                    }
                    for (c, (x, &(s, z))) in o.iter_mut().zip(&sz).enumerate() {
                        *x = z + s * level(row, c);
                    }
                }
            }
            if self.rotate {
                hadamard(o);
            }
        }
    }
}

/// `x` Hadamard-rotated (a copy).
fn rotate(x: &[f32]) -> Vec<f32> {
    let mut r = x.to_vec();
    hadamard(&mut r);
    r
}

impl Rows {
    pub(super) fn bytes(&self) -> usize {
        match self {
            Rows::F16 { data, .. } => 2 * data.len(),
            Rows::Coded(c) => c.bytes(),
        }
    }
}

/// Key and value rows of `mode` for positions `base..base + cap` (not [`KvMode::F32`]).
pub(super) fn make_rows(
    mode: KvMode,
    (base, cap): (usize, usize),
    kv_heads: usize,
    d: usize,
) -> Result<(Rows, Rows)> {
    let n = cap
        .checked_mul(kv_heads)
        .and_then(|x| x.checked_mul(d))
        .ok_or_else(|| Error(format!("key/value cache of {cap} positions overflows")))?;
    let token = |codec| {
        Coded::new(
            codec,
            Axis::Token {
                channels: channel_group(d),
            },
            false,
            (base, cap),
            kv_heads,
            d,
        )
        .map(Rows::Coded)
    };
    let f16_rows = || Rows::F16 {
        data: vec![f16::ZERO; n],
        base,
        cap,
    };
    Ok(match mode {
        KvMode::F32 => {
            return Err(Error(
                "an f32 key/value cache is the backend's own store, not a compressed one".into(),
            ))
        }
        KvMode::F16 => (f16_rows(), f16_rows()),
        KvMode::Q8 => (token(Codec::AbsMax8)?, token(Codec::AbsMax8)?),
        KvMode::Q4 => (
            token(Codec::MinMax { bits: 4 })?,
            token(Codec::MinMax { bits: 4 })?,
        ),
        KvMode::Kivi(kivi) => {
            // Decision 142: `lm` codes the 2-bit sides on Lloyd–Max levels (other widths keep
            // their min–max grid).
            let codec = |bits, lloyd| match (lloyd && bits == 2, kivi.mse) {
                (true, _) => Codec::LloydMax2 {
                    unshrunk: kivi.unshrunk,
                },
                (false, false) => Codec::MinMax { bits },
                (false, true) => Codec::MinMaxMse { bits },
            };
            let keys = Coded::new(
                codec(kivi.key_bits, kivi.lloyd_k),
                match kivi.key_channels {
                    0 => Axis::Channel { tokens: kivi.group },
                    _ => Axis::Token {
                        channels: kivi.key_group(d),
                    },
                },
                kivi.hadamard_k,
                (base, cap),
                kv_heads,
                d,
            )?;
            let values = Coded::new(
                codec(kivi.value_bits, kivi.lloyd_v),
                Axis::Token {
                    channels: kivi.value_group(d),
                },
                kivi.hadamard_v,
                (base, cap),
                kv_heads,
                d,
            )?;
            (Rows::Coded(keys), Rows::Coded(values))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `decode`'s unpacking specialised per code width (shifts, a level table) gives
    /// `decode_any`'s element-by-element values bit for bit, for every codec, both axes, with
    /// and without the rotation, over rows of several groups of positions (random codes,
    /// scales and minima, not an encoder's).
    #[test]
    fn specialised_decoding_equals_the_element_by_element_one() {
        let (kvh, d, cap) = (2, 64, 70);
        let codecs = [
            Codec::MinMax { bits: 2 },
            Codec::MinMax { bits: 4 },
            Codec::MinMax { bits: 8 },
            Codec::MinMaxMse { bits: 4 },
            Codec::AbsMax8,
            Codec::LloydMax2 { unshrunk: true },
        ];
        let axes = [
            Axis::Token { channels: 32 },
            Axis::Token { channels: 64 },
            Axis::Channel { tokens: 32 },
            Axis::Channel { tokens: 16 },
        ];
        let mut rng = crunch_rng::SplitMix64(7);
        for codec in codecs {
            for axis in axes {
                for rotate in [false, true] {
                    let mut c = Coded::new(codec, axis, rotate, (3, cap), kvh, d).unwrap();
                    c.codes.iter_mut().for_each(|b| *b = rng.next_u64() as u8);
                    for i in 0..c.scales.len() {
                        let s = f16::from_f32((rng.unit() * 0.1 + 0.001) as f32);
                        let z = f16::from_f32((rng.unit() - 0.5) as f32);
                        c.set_group(i, (s, z));
                    }
                    for g in 0..kvh {
                        for (j0, j1) in [(3, 3 + cap), (10, 47), (40, 41)] {
                            let mut fast = vec![0f32; (j1 - j0) * d];
                            let mut slow = vec![1f32; (j1 - j0) * d];
                            c.decode(g, j0, j1, d, &mut fast);
                            c.decode_any(g, j0, j1, d, &mut slow);
                            let same = fast
                                .iter()
                                .zip(&slow)
                                .all(|(a, b)| a.to_bits() == b.to_bits());
                            assert!(same, "{codec:?} {axis:?} rotate {rotate} rows {j0}..{j1}");
                        }
                    }
                }
            }
        }
    }
}
