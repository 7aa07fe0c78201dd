//! [`QuantKv`]: one sequence's keys and values for one decoder block, stored compressed in
//! host memory, allocated once for the context asked for.
//!
//! Codes are kept per position row (`[kv_heads, capacity, row_bytes]`), whatever the axis
//! the group runs along, so that a block of positions decodes row by row: per-token codecs
//! keep a scale (and minimum) per row per channel group; KIVI's keys keep one per channel per
//! group of G positions.
//!
//! KIVI keeps the rows of positions `full_start..len` in f16: those after the last full group
//! (not yet quantized) and those of groups the last append quantized that one of its own
//! earlier positions saw unquantized. The latter let a chunk of
//! several new positions (a prefill chunk, or an evaluation window) be attended exactly as if
//! they had been decoded one at a time: the query at position `p` sees a group quantized only
//! if the group was full once `p` was appended ([`QuantKv::visible_quantized`]). With a sink,
//! the first positions stay in f16 for good and group 0's ranges are taken over the others;
//! with `pre_rope`, keys are rotated back before they are quantized and forward again when
//! decoded ([`super::rope`]).

use super::codec::Codec;
use super::rope::Rotation;
use super::rows::{make_rows, Axis, Rows};
use super::{KvMode, KvSpec};
use crate::{Error, Result};
use half::f16;

/// How one side's rows are coded ([`QuantKv::layout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// 2, 4 or 8 (codes), 16 (f16 rows).
    pub bits: usize,
    /// Symmetric 8-bit (`s·(c − 128)`) rather than min–max (`z + s·c`).
    pub absmax: bool,
    /// Per token, a scale (and minimum) per this many channels; 0: per channel.
    pub channels: usize,
    /// Per channel, a scale (and minimum) per this many positions; 0: per token.
    pub tokens: usize,
    /// Rows are Hadamard-rotated before they are quantized.
    pub rotate: bool,
    /// Decision 142: 2-bit codes stand for the Lloyd–Max levels
    /// ([`super::codec::LLOYD_MAX2`]), not `0..4`.
    pub lloyd: bool,
    pub row_bytes: usize,
}

/// Rows a staged append encoded ([`QuantKv::encoded`]).
pub enum Encoded<'a> {
    F16(&'a [f16]),
    Coded {
        codes: &'a [u8],
        scales: &'a [f16],
        offsets: &'a [f16],
    },
}

/// Keys or values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    K,
    V,
}

pub struct QuantKv {
    mode: KvMode,
    capacity: usize,
    kv_heads: usize,
    head_dim: usize,
    len: usize,
    k: Rows,
    v: Rows,
    /// Positions `0..qlen` are stored in `k`/`v` (all of them but KIVI's tail).
    qlen: usize,
    /// KIVI: f16 rows of positions `full_start..len`, per kv head.
    full_k: Vec<Vec<f16>>,
    full_v: Vec<Vec<f16>>,
    full_start: usize,
    /// KIVI: the first position of the last append, the lowest a query may sit at.
    first_query: usize,
    /// KIVI: f16 rows of positions `0..min(len, sink)`, per kv head, kept for good.
    sink: usize,
    sink_k: Vec<Vec<f16>>,
    sink_v: Vec<Vec<f16>>,
    /// KIVI with `pre_rope`: the rotation the keys were given ([`QuantKv::with_rope`]).
    rope: Option<Rotation>,
    inv_freq: Option<Vec<f64>>,
    /// Decision 138: `k`/`v` hold only what the last append encoded (positions
    /// [`QuantKv::encoded`]), for a backend that keeps the codes elsewhere (the GPU).
    staged: bool,
}

impl QuantKv {
    /// An empty store for `capacity` positions; `mode` must not be [`KvMode::F32`] (the
    /// backends' own stores hold those). A `pre_rope` store is usable once given its
    /// frequencies ([`QuantKv::with_rope`]).
    pub fn new(mode: KvMode, capacity: usize, kv_heads: usize, head_dim: usize) -> Result<Self> {
        if mode.is_full() {
            return Err(Error(
                "an f32 key/value cache is the backend's own store, not a compressed one".into(),
            ));
        }
        let (k, v) = make_rows(mode, (0, capacity), kv_heads, head_dim)?;
        let sink = match mode {
            KvMode::Kivi(k) => k.sink.min(capacity),
            _ => 0,
        };
        Ok(QuantKv {
            mode,
            capacity,
            kv_heads,
            head_dim,
            len: 0,
            k,
            v,
            qlen: 0,
            full_k: vec![Vec::new(); kv_heads],
            full_v: vec![Vec::new(); kv_heads],
            full_start: 0,
            first_query: 0,
            sink,
            sink_k: vec![Vec::new(); kv_heads],
            sink_v: vec![Vec::new(); kv_heads],
            rope: None,
            inv_freq: None,
            staged: false,
        })
    }

    /// A store that keeps its encoder's state (KIVI's f16 tail and sink, lengths) but not the
    /// codes: each append encodes into buffers of just the positions it quantizes, which
    /// [`QuantKv::encoded`] hands to the caller (decision 138: the CUDA backend uploads them
    /// into device buffers laid out as [`QuantKv::layout`] says). Host attention over it is
    /// refused.
    pub fn staged(spec: KvSpec) -> Result<Self> {
        let mut s = Self::new(spec.mode, 0, spec.kv_heads, spec.head_dim)?;
        s.capacity = spec.capacity;
        s.sink = match spec.mode {
            KvMode::Kivi(k) => k.sink.min(spec.capacity),
            _ => 0,
        };
        s.staged = true;
        s.with_rope(spec.inv_freq)
    }

    /// Whether this is a [`QuantKv::staged`] store.
    pub fn is_staged(&self) -> bool {
        self.staged
    }

    /// The store `spec` describes ([`crate::Backend::kv_alloc`]; not [`KvMode::F32`]).
    pub fn from_spec(spec: KvSpec) -> Result<Self> {
        Self::new(spec.mode, spec.capacity, spec.kv_heads, spec.head_dim)?.with_rope(spec.inv_freq)
    }

    /// The store given the inverse frequencies of the rotary embedding its keys carry (per
    /// pair of the "half" layout, `head_dim / 2` of them), which a `pre_rope` store needs (an
    /// error without them) and every other store ignores.
    pub fn with_rope(mut self, inv_freq: Option<&[f64]>) -> Result<Self> {
        if !self.mode.needs_rope() {
            return Ok(self);
        }
        let Some(f) = inv_freq else {
            return Err(Error(
                "a key/value cache quantizing keys before rotation was given no rotary \
                 frequencies"
                    .into(),
            ));
        };
        if f.len() * 2 != self.head_dim {
            return Err(Error(format!(
                "{} rotary frequencies for heads of {}",
                f.len(),
                self.head_dim
            )));
        }
        self.rope = Some(Rotation::new(f));
        self.inv_freq = Some(f.to_vec());
        Ok(self)
    }

    pub fn mode(&self) -> KvMode {
        self.mode
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn kv_heads(&self) -> usize {
        self.kv_heads
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Bytes held now: the compressed store (allocated for the whole capacity) and the f32
    /// rows KIVI keeps.
    pub fn bytes(&self) -> usize {
        let full: usize = self
            .full_k
            .iter()
            .chain(&self.full_v)
            .chain(&self.sink_k)
            .chain(&self.sink_v)
            .map(|r| 2 * r.len())
            .sum();
        self.k.bytes() + self.v.bytes() + full
    }

    /// Whether this is a KIVI store (with f16 rows awaiting their group).
    pub(crate) fn kivi(&self) -> bool {
        self.kivi_group() != 0
    }

    /// KIVI's token group; 0 for per-token modes.
    fn kivi_group(&self) -> usize {
        match self.mode {
            KvMode::Kivi(k) => k.group,
            _ => 0,
        }
    }

    /// KIVI's residual window (positions kept in f16 besides the unfilled group).
    fn residual(&self) -> usize {
        match self.mode {
            KvMode::Kivi(k) => k.residual,
            _ => 0,
        }
    }

    /// Positions attention decodes at once: KIVI's group, else 32.
    pub(crate) fn block(&self) -> usize {
        match self.kivi_group() {
            0 => 32,
            g => g,
        }
    }

    /// Whether block `b` (positions `b·block()..`) is stored compressed.
    pub(crate) fn block_quantized(&self, b: usize) -> bool {
        match self.kivi_group() {
            0 => true,
            g => (b + 1) * g <= self.qlen,
        }
    }

    /// Whether the query at position `p` sees block `b` compressed: per-token modes always
    /// (each position is stored compressed as it is appended); KIVI once the block was full,
    /// and out of the residual window, when `p` was appended.
    pub(crate) fn visible_quantized(&self, b: usize, p: usize) -> bool {
        match self.kivi_group() {
            0 => true,
            g => (b + 1) * g + self.residual() <= p + 1 && (b + 1) * g <= self.qlen,
        }
    }

    /// The lowest query position [`QuantKv::visible_quantized`] answers for (earlier queries
    /// would need f32 rows no longer kept).
    pub fn first_query(&self) -> usize {
        match self.kivi_group() {
            0 => 0,
            _ => self.first_query,
        }
    }

    /// Decodes positions `j0..j1` of kv head `g` into `out [(j1 - j0) * head_dim]`.
    pub(crate) fn decode(&self, side: Side, g: usize, j0: usize, j1: usize, out: &mut [f32]) {
        let d = self.head_dim;
        match self.rows(side) {
            Rows::F16 { data, base, cap } => {
                let (cap, a, b) = (*cap, j0 - base, j1 - base);
                let src = &data[(g * cap + a) * d..(g * cap + b) * d];
                for (o, &h) in out.iter_mut().zip(src) {
                    *o = h.to_f32();
                }
            }
            Rows::Coded(c) => c.decode(g, j0, j1, d, out),
        }
        // Sink rows are kept apart; keys quantized before rotation are rotated again.
        let s = self.sink.clamp(j0, j1);
        if side == Side::K {
            if let Some(rot) = &self.rope {
                rot.rotate(s, &mut out[(s - j0) * d..(j1 - j0) * d], d, false);
            }
        }
        if s > j0 {
            let src = match side {
                Side::K => &self.sink_k[g],
                Side::V => &self.sink_v[g],
            };
            for (o, h) in out[..(s - j0) * d].iter_mut().zip(&src[j0 * d..s * d]) {
                *o = h.to_f32();
            }
        }
    }

    /// The f16 rows KIVI keeps of positions `j0..j1` of kv head `g` (`j0 >= full_start()`),
    /// into `out [(j1 - j0) * head_dim]`.
    pub(crate) fn full_rows(&self, side: Side, g: usize, j0: usize, j1: usize, out: &mut [f32]) {
        let d = self.head_dim;
        let rows = match side {
            Side::K => &self.full_k[g],
            Side::V => &self.full_v[g],
        };
        let src = &rows[(j0 - self.full_start) * d..(j1 - self.full_start) * d];
        for (o, h) in out.iter_mut().zip(src) {
            *o = h.to_f32();
        }
    }

    /// First position of the f16 rows [`QuantKv::full_rows`] reads.
    pub fn full_start(&self) -> usize {
        self.full_start
    }

    fn rows(&self, side: Side) -> &Rows {
        match side {
            Side::K => &self.k,
            Side::V => &self.v,
        }
    }

    /// Appends `t` positions of keys and values laid out `[t, kv_heads, head_dim]` (keys
    /// already rotated).
    pub fn append(&mut self, k: &[f32], v: &[f32], t: usize) -> Result<()> {
        let (kvh, d, cap) = (self.kv_heads, self.head_dim, self.capacity);
        if k.len() != t * kvh * d || v.len() != k.len() {
            return Err(Error(format!(
                "kv_append: {} keys / {} values for {t} positions of {kvh} heads of {d}",
                k.len(),
                v.len()
            )));
        }
        if self.len + t > cap {
            return Err(Error(format!(
                "key/value cache full: {} positions stored, {t} more do not fit in {cap}",
                self.len
            )));
        }
        // Decision 142's measurement hook (`CRUNCH_KV_PERTURB`; unset: the rows as given).
        let (pk, pv) = (
            super::perturb::perturbed(k, 0, self.len, kvh, d)?,
            super::perturb::perturbed(v, 1, self.len, kvh, d)?,
        );
        let (k, v) = (pk.as_deref().unwrap_or(k), pv.as_deref().unwrap_or(v));
        let row = |i: usize, g: usize| (i * kvh + g) * d..(i * kvh + g + 1) * d;
        let group = self.kivi_group();
        if self.staged {
            // Only the positions this append encodes: all new ones (per token), or the KIVI
            // groups it fills.
            let (first, n) = match group {
                0 => (self.len, t),
                g => {
                    let new_q = (self.len + t).saturating_sub(self.residual()) / g * g;
                    (self.qlen, new_q.max(self.qlen) - self.qlen)
                }
            };
            (self.k, self.v) = make_rows(self.mode, (first, n), kvh, d)?;
        }
        if group == 0 {
            let mut tmp = vec![0u8; d];
            for g in 0..kvh {
                for i in 0..t {
                    let j = self.len + i;
                    for (rows, x) in [(&mut self.k, k), (&mut self.v, v)] {
                        let src = &x[row(i, g)];
                        match rows {
                            Rows::F16 { data, base, cap } => {
                                let at = (g * *cap + j - *base) * d;
                                for (o, &s) in data[at..].iter_mut().zip(src) {
                                    *o = f16::from_f32(s);
                                }
                            }
                            Rows::Coded(c) => c.encode_row(g, j, src, &mut tmp),
                        }
                    }
                }
            }
            self.len += t;
            self.qlen = self.len;
            return Ok(());
        }
        // KIVI: keep f16 rows from the current quantized length on, add the new ones, then
        // quantize every group that is now full.
        let half = |x: &[f32]| x.iter().map(|&y| f16::from_f32(y)).collect::<Vec<_>>();
        let stale = (self.qlen - self.full_start) * d;
        for g in 0..kvh {
            self.full_k[g].drain(..stale);
            self.full_v[g].drain(..stale);
            for i in 0..t {
                self.full_k[g].extend(half(&k[row(i, g)]));
                self.full_v[g].extend(half(&v[row(i, g)]));
                if self.len + i < self.sink {
                    self.sink_k[g].extend(half(&k[row(i, g)]));
                    self.sink_v[g].extend(half(&v[row(i, g)]));
                }
            }
        }
        self.full_start = self.qlen;
        self.len += t;
        let residual = self.residual();
        let new_q = self.len.saturating_sub(residual) / group * group;
        let mut tmp = vec![0u8; d];
        let mut rows = vec![0f32; group * d];
        for j0 in (self.qlen..new_q).step_by(group) {
            let at = (j0 - self.full_start) * d;
            let skip = self.sink.saturating_sub(j0).min(group);
            for g in 0..kvh {
                for (o, h) in rows.iter_mut().zip(&self.full_k[g][at..at + group * d]) {
                    *o = h.to_f32();
                }
                if let Some(rot) = &self.rope {
                    rot.rotate(j0, &mut rows, d, true);
                }
                if let Rows::Coded(c) = &mut self.k {
                    match c.axis {
                        Axis::Channel { .. } => c.encode_group(g, j0, &rows, d, skip),
                        Axis::Token { .. } => {
                            for (i, x) in rows.chunks(d).enumerate() {
                                c.encode_row(g, j0 + i, x, &mut tmp);
                            }
                        }
                    }
                }
                for (o, h) in rows.iter_mut().zip(&self.full_v[g][at..at + group * d]) {
                    *o = h.to_f32();
                }
                if let Rows::Coded(c) = &mut self.v {
                    for (i, x) in rows.chunks(d).enumerate() {
                        c.encode_row(g, j0 + i, x, &mut tmp);
                    }
                }
            }
        }
        // Rows of groups quantized now that no query of this chunk sees unquantized (those
        // that were full once its first position was appended) are dropped at once: decoding
        // a token at a time, the tail never holds more than G − 1 positions between appends.
        let keep =
            ((self.len - t + 1).saturating_sub(residual) / group * group).clamp(self.qlen, new_q);
        for rows in self.full_k.iter_mut().chain(self.full_v.iter_mut()) {
            rows.drain(..(keep - self.full_start) * d);
        }
        self.full_start = keep;
        self.first_query = self.len - t;
        self.qlen = new_q;
        Ok(())
    }

    /// How side `side` is stored ([`QuantKv::encoded`] and a device copy use this layout).
    pub fn layout(&self, side: Side) -> Layout {
        match self.rows(side) {
            Rows::F16 { .. } => Layout {
                bits: 16,
                absmax: false,
                channels: 0,
                tokens: 0,
                rotate: false,
                lloyd: false,
                row_bytes: 2 * self.head_dim,
            },
            Rows::Coded(c) => Layout {
                bits: c.codec.bits(),
                absmax: c.codec == Codec::AbsMax8,
                channels: match c.axis {
                    Axis::Token { channels } => channels,
                    Axis::Channel { .. } => 0,
                },
                tokens: match c.axis {
                    Axis::Token { .. } => 0,
                    Axis::Channel { tokens } => tokens,
                },
                rotate: c.rotate,
                lloyd: matches!(c.codec, Codec::LloydMax2 { .. }),
                row_bytes: c.row_bytes,
            },
        }
    }

    /// What the last append of a [`QuantKv::staged`] store encoded: its first position, how
    /// many, and the rows `[kv_heads, n, …]` (codes `[kv_heads, n, row_bytes]`; scales and
    /// minima per token `[kv_heads, n, head_dim / channels]`, per channel
    /// `[kv_heads, n / tokens, head_dim]`; f16 rows `[kv_heads, n, head_dim]`).
    pub fn encoded(&self, side: Side) -> (usize, usize, Encoded<'_>) {
        match self.rows(side) {
            Rows::F16 { data, base, cap } => (*base, *cap, Encoded::F16(data)),
            Rows::Coded(c) => (
                c.base,
                c.cap,
                Encoded::Coded {
                    codes: &c.codes,
                    scales: &c.scales,
                    offsets: &c.offsets,
                },
            ),
        }
    }

    /// KIVI's f16 rows of positions [`QuantKv::full_start`]`..len` of kv head `g`.
    pub fn tail_rows(&self, side: Side, g: usize) -> &[f16] {
        match side {
            Side::K => &self.full_k[g],
            Side::V => &self.full_v[g],
        }
    }

    /// KIVI's f16 rows of the sink positions stored so far, kv head `g`.
    pub fn sink_rows(&self, side: Side, g: usize) -> &[f16] {
        match side {
            Side::K => &self.sink_k[g],
            Side::V => &self.sink_v[g],
        }
    }

    /// Positions kept in f16 for good (KIVI's sink; 0 otherwise).
    pub fn sink(&self) -> usize {
        self.sink
    }

    /// Positions `0..quantized_len()` are stored coded (all but KIVI's tail).
    pub fn quantized_len(&self) -> usize {
        self.qlen
    }

    /// KIVI's token group, and its residual window; `(0, 0)` for the per-token modes.
    pub fn kivi_params(&self) -> (usize, usize) {
        (self.kivi_group(), self.residual())
    }

    /// The rotary inverse frequencies of a `pre_rope` store.
    pub fn inv_freq(&self) -> Option<&[f64]> {
        self.inv_freq.as_deref()
    }

    /// Positions the store was made for.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// What attention sees for the query at position `p`: keys and values of positions
    /// `0..=p` of kv head `g`, decoded (tests and references).
    pub fn visible(&self, side: Side, g: usize, p: usize) -> Vec<f32> {
        let (d, blk) = (self.head_dim, self.block());
        let mut out = vec![0f32; (p + 1) * d];
        for j0 in (0..=p).step_by(blk) {
            let j1 = (j0 + blk).min(p + 1);
            let b = j0 / blk;
            if self.block_quantized(b) && self.visible_quantized(b, p) {
                let mut tmp = vec![0f32; blk.min(self.len - j0) * d];
                self.decode(side, g, j0, j0 + tmp.len() / d, &mut tmp);
                out[j0 * d..j1 * d].copy_from_slice(&tmp[..(j1 - j0) * d]);
            } else {
                self.full_rows(side, g, j0, j1, &mut out[j0 * d..j1 * d]);
            }
        }
        out
    }
}
