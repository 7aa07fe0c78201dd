//! The CUDA backend's key/value stores (decision 138): f32 keys and values in device buffers
//! grown by doubling (no copy of the whole cache per append), and every compressed mode held
//! **on the device** — codes, f16 scales/minima, KIVI's f16 tail and sink — attended by
//! `kvdev.cu` without expanding the cache.
//!
//! One quantizer: the host's [`QuantKv`] in its staged form keeps the encoder state (KIVI's
//! f16 tail and sink, the lengths) and encodes each append's new positions exactly as the
//! host store would; [`plan`] turns what it encoded into byte ranges of the device layout
//! (position-major, `kvdev.cu`'s header), which are copied up. So the CPU and the GPU hold
//! identical codes for identical keys and values.
//!
//! Limits: heads of 32, 64, 96 or 128 channels (the kernel keeps a chunk of 32 decoded rows
//! in shared memory, `head_dim / 32` accumulators per lane); other head sizes keep the
//! host-memory store with attention on the host (`kv_memory: "host"`).

use super::{err, Cuda, CudaTensor};
use crate::kvq::{Encoded, Layout, QuantKv, Side};
use crate::{AttentionMask, Error, KvMode, KvSpec, Result};
use cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg,
    SyncOnDrop,
};
use std::sync::Arc;

pub(super) const SOURCE: &str = include_str!("kvdev.cu");
/// Positions decoded per step of the kernel (`CHUNK` in `kvdev.cu`).
const CHUNK: usize = 32;
/// Warps per block and the most query rows one warp keeps (`WARPS`, `MAX_RPW`).
const WARPS: usize = 16;
const MAX_RPW: usize = 2;
/// Blocks to aim for when splitting the positions of a decode step across blocks (about
/// two per SM of an H100/H200).
const TARGET_BLOCKS: usize = 264;
/// Fewest chunks one split covers (`Cuda::with_kv_split_chunks` sets another, for the
/// comparison in `gpu_packed bench`, "Decode attention over compressed caches"). One: a decode
/// step at 512 positions of Llama-3-8B's 8 kv heads is 128 blocks of one chunk, not 16 of
/// eight, 4.8–7.1× faster on the H200 (decision 163).
pub(super) const MIN_SPLIT_CHUNKS: usize = 1;

pub(super) struct Kernels {
    attend: CudaFunction,
    combine: CudaFunction,
}

impl Kernels {
    pub(super) fn new(stream: &CudaStream) -> Result<Self> {
        let m = super::compile(stream, SOURCE)?;
        let f = |n: &str| m.load_function(n).map_err(err("loading a kernel"));
        Ok(Kernels {
            attend: f("kv_attend")?,
            combine: f("kv_combine")?,
        })
    }
}

/// Whether a cache of heads of `head_dim` can live on the device.
pub fn device_head_dim(head_dim: usize) -> bool {
    head_dim.is_multiple_of(32) && (32..=32 * 4).contains(&head_dim)
}

/// Query rows one block takes: 32 for heads up to 64 channels, 16 for 128 (the queries' share
/// of shared memory stays 8 KiB).
fn rows_per_block(d: usize) -> usize {
    (2048 / d).clamp(1, WARPS * MAX_RPW)
}

/// Dynamic shared memory of `kv_attend`: the block's queries and two chunks of rows.
fn shared_bytes(d: usize) -> usize {
    4 * (rows_per_block(d) * d + 2 * CHUNK * (d + 1))
}

/// Splits of the positions: enough blocks to fill the GPU, each at least `min_chunks` chunks
/// ([`MIN_SPLIT_CHUNKS`] unless the backend says otherwise, `Cuda::with_kv_split_chunks`).
fn splits(blocks: usize, chunks: usize, min_chunks: usize) -> usize {
    TARGET_BLOCKS
        .div_ceil(blocks.max(1))
        .min(chunks.div_ceil(min_chunks.max(1)))
        .max(1)
}

/// Which buffer of a side a byte range goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Buf {
    Codes,
    Scales,
    Offsets,
    Tail,
    Sink,
}

/// Bytes to copy into buffer `buf` of `side` at byte offset `at`.
pub(crate) struct Put {
    pub side: Side,
    pub buf: Buf,
    pub at: usize,
    pub bytes: Vec<u8>,
}

/// Byte sizes of one side's device buffers for `spec` (codes, scales, offsets, sink), and the
/// tail's bytes per slot.
pub(crate) fn sizes(lay: &Layout, spec: &KvSpec, sink: usize) -> [usize; 5] {
    let (cap, kvh, d) = (spec.capacity, spec.kv_heads, spec.head_dim);
    let row = 2 * kvh * d;
    if lay.bits == 16 {
        return [cap * row, 0, 0, row, sink * row];
    }
    let groups = match lay.tokens {
        0 => cap * kvh * (d / lay.channels),
        n => cap.div_ceil(n) * kvh * d,
    };
    let offsets = if lay.absmax { 0 } else { 2 * groups };
    [
        cap * kvh * lay.row_bytes,
        2 * groups,
        offsets,
        row,
        sink * row,
    ]
}

/// `[heads, n, x]` elements of `size` bytes, position-major: `[n, heads, x]`.
fn transpose(src: &[u8], heads: usize, n: usize, x: usize) -> Vec<u8> {
    let mut out = vec![0u8; src.len()];
    for g in 0..heads {
        for j in 0..n {
            let s = (g * n + j) * x;
            let o = (j * heads + g) * x;
            out[o..o + x].copy_from_slice(&src[s..s + x]);
        }
    }
    out
}

fn f16_bytes(h: &[half::f16]) -> Vec<u8> {
    h.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect()
}

/// What to copy up after `q` (staged) appended positions `old_len..q.len()`, with a tail ring
/// of `slots` positions: the byte ranges, and the new slot count if the ring must grow (the
/// ranges then assume the grown ring, every held row written again).
pub(crate) fn plan(q: &QuantKv, old_len: usize, slots: usize) -> (Vec<Put>, Option<usize>) {
    let (kvh, d) = (q.kv_heads(), q.head_dim());
    let mut puts = Vec::new();
    for side in [Side::K, Side::V] {
        let lay = q.layout(side);
        let (first, n, enc) = q.encoded(side);
        if n == 0 {
            continue;
        }
        match enc {
            Encoded::F16(rows) => puts.push(Put {
                side,
                buf: Buf::Codes,
                at: first * kvh * 2 * d,
                bytes: transpose(&f16_bytes(rows), kvh, n, 2 * d),
            }),
            Encoded::Coded {
                codes,
                scales,
                offsets,
            } => {
                puts.push(Put {
                    side,
                    buf: Buf::Codes,
                    at: first * kvh * lay.row_bytes,
                    bytes: transpose(codes, kvh, n, lay.row_bytes),
                });
                // Scales and minima: per token [kvh, n, d / channels], per channel
                // [kvh, n / tokens, d]; `first` is a multiple of `tokens` (a KIVI group).
                let (rows, x, at_row) = match lay.tokens {
                    0 => (n, d / lay.channels, first),
                    t => (n / t, d, first / t),
                };
                for (buf, v) in [(Buf::Scales, scales), (Buf::Offsets, offsets)] {
                    if !v.is_empty() {
                        puts.push(Put {
                            side,
                            buf,
                            at: at_row * kvh * 2 * x,
                            bytes: transpose(&f16_bytes(v), kvh, rows, 2 * x),
                        });
                    }
                }
            }
        }
    }
    let (group, _) = q.kivi_params();
    if group == 0 {
        return (puts, None);
    }
    let len = q.len();
    // The sink: positions old_len..min(len, sink), position-major.
    for side in [Side::K, Side::V] {
        let (a, b) = (old_len.min(q.sink()), len.min(q.sink()));
        if a < b {
            let mut bytes = Vec::with_capacity((b - a) * kvh * 2 * d);
            for p in a..b {
                for g in 0..kvh {
                    bytes.extend(f16_bytes(&q.sink_rows(side, g)[p * d..(p + 1) * d]));
                }
            }
            puts.push(Put {
                side,
                buf: Buf::Sink,
                at: a * kvh * 2 * d,
                bytes,
            });
        }
    }
    // The tail ring: rows of positions full_start..len, position p in slot p % slots.
    let start = q.full_start();
    let held = len - start;
    let grown = (held > slots).then(|| held.max(2 * slots).next_power_of_two());
    let slots = grown.unwrap_or(slots);
    let from = if grown.is_some() {
        start
    } else {
        start.max(old_len)
    };
    for side in [Side::K, Side::V] {
        let mut p = from;
        while p < len {
            // A run of consecutive slots, up to the ring's end.
            let end = len.min(p + (slots - p % slots));
            let mut bytes = Vec::with_capacity((end - p) * kvh * 2 * d);
            for pos in p..end {
                for g in 0..kvh {
                    let r = &q.tail_rows(side, g)[(pos - start) * d..(pos - start + 1) * d];
                    bytes.extend(f16_bytes(r));
                }
            }
            puts.push(Put {
                side,
                buf: Buf::Tail,
                at: (p % slots) * kvh * 2 * d,
                bytes,
            });
            p = end;
        }
    }
    (puts, grown)
}

/// One side's device buffers (bytes; an absent buffer is empty).
struct DevSide {
    lay: Layout,
    bufs: [Option<CudaSlice<u8>>; 5],
}

/// A compressed cache on the device.
pub struct DeviceKv {
    q: QuantKv,
    k: DevSide,
    v: DevSide,
    slots: usize,
    inv_freq: Option<CudaSlice<f64>>,
}

/// The kernel's view of one side (`KvSide` in `kvdev.cu`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct KvSideArg {
    codes: u64,
    scales: u64,
    offsets: u64,
    tail: u64,
    sink: u64,
    bits: i32,
    absmax: i32,
    channels: i32,
    tokens: i32,
    rotate: i32,
    row_bytes: i32,
    lloyd: i32,
}
unsafe impl DeviceRepr for KvSideArg {}

/// `KvState` in `kvdev.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct KvStateArg {
    inv_freq: u64,
    kvh: i32,
    d: i32,
    cap: i32,
    len: i32,
    qlen: i32,
    full_start: i32,
    sink: i32,
    group: i32,
    residual: i32,
    slots: i32,
}
unsafe impl DeviceRepr for KvStateArg {}

/// The device pointer of an optional buffer, and the guard that keeps it valid.
fn device_ptr<'a>(
    b: &'a Option<CudaSlice<u8>>,
    stream: &'a Arc<CudaStream>,
) -> Option<(u64, SyncOnDrop<'a>)> {
    b.as_ref().map(|b| b.device_ptr(stream))
}

fn index(b: Buf) -> usize {
    match b {
        Buf::Codes => 0,
        Buf::Scales => 1,
        Buf::Offsets => 2,
        Buf::Tail => 3,
        Buf::Sink => 4,
    }
}

fn to_i32(x: usize, what: &str) -> Result<i32> {
    i32::try_from(x).map_err(|_| Error(format!("cuda key/value cache: {what} {x} exceeds i32")))
}

impl DeviceKv {
    pub(super) fn new(c: &Cuda, spec: KvSpec) -> Result<Self> {
        let q = QuantKv::staged(spec)?;
        let (group, residual) = q.kivi_params();
        // Decoding a token at a time holds at most group − 1 + residual tail rows (plus the
        // one appended); prefill chunks grow the ring as needed.
        let slots = if group == 0 {
            0
        } else {
            (group + residual).next_power_of_two()
        };
        let side = |s: Side| -> Result<DevSide> {
            let lay = q.layout(s);
            let mut sz = sizes(&lay, &spec, q.sink());
            sz[3] *= slots;
            let mut bufs: [Option<CudaSlice<u8>>; 5] = Default::default();
            for (b, &n) in bufs.iter_mut().zip(&sz) {
                if n > 0 {
                    *b = Some(c.stream.alloc_zeros::<u8>(n).map_err(err("allocating"))?);
                }
            }
            Ok(DevSide { lay, bufs })
        };
        let (k, v) = (side(Side::K)?, side(Side::V)?);
        let inv_freq = match q.inv_freq() {
            Some(f) => Some(c.stream.clone_htod(f).map_err(err("upload"))?),
            None => None,
        };
        Ok(DeviceKv {
            q,
            k,
            v,
            slots,
            inv_freq,
        })
    }

    pub fn len(&self) -> usize {
        self.q.len()
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    pub fn mode(&self) -> KvMode {
        self.q.mode()
    }

    /// Device bytes the store holds (codes, scales, minima, tail ring, sink, frequencies).
    pub fn bytes(&self) -> usize {
        let side = |s: &DevSide| s.bufs.iter().flatten().map(|b| b.len()).sum::<usize>();
        side(&self.k) + side(&self.v) + self.inv_freq.as_ref().map_or(0, |f| 8 * f.len())
    }

    pub(super) fn append(&mut self, c: &Cuda, k: &CudaTensor, v: &CudaTensor) -> Result<()> {
        let t = k.shape.first().copied().unwrap_or(0);
        let old = self.q.len();
        self.q.append(
            &crate::Backend::to_f32(c, k)?,
            &crate::Backend::to_f32(c, v)?,
            t,
        )?;
        let (puts, grown) = plan(&self.q, old, self.slots);
        if let Some(slots) = grown {
            for s in [&mut self.k, &mut self.v] {
                let row = 2 * self.q.kv_heads() * self.q.head_dim();
                s.bufs[3] = Some(
                    c.stream
                        .alloc_zeros::<u8>(slots * row)
                        .map_err(err("allocating"))?,
                );
            }
            self.slots = slots;
        }
        for p in puts {
            let side = match p.side {
                Side::K => &mut self.k,
                Side::V => &mut self.v,
            };
            let buf = side.bufs[index(p.buf)]
                .as_mut()
                .ok_or_else(|| Error(format!("cuda key/value cache: no {:?} buffer", p.buf)))?;
            let mut dst = buf.slice_mut(p.at..p.at + p.bytes.len());
            c.stream
                .memcpy_htod(&p.bytes, &mut dst)
                .map_err(err("key/value upload"))?;
        }
        Ok(())
    }

    pub(super) fn attention(
        &self,
        c: &Cuda,
        q: &CudaTensor,
        mask: AttentionMask,
        scale: f32,
    ) -> Result<CudaTensor> {
        let (t, heads, d) = super::dims3(q, "attention q")?;
        let (kvh, len) = (self.q.kv_heads(), self.q.len());
        if d != self.q.head_dim() || kvh == 0 || heads % kvh != 0 {
            return Err(Error(format!(
                "cuda attention: q {:?} against a cache of {kvh} heads of {}",
                q.shape,
                self.q.head_dim()
            )));
        }
        let offset = mask.query_offset;
        if offset + t > len || offset < self.q.first_query() {
            return Err(Error(format!(
                "cuda attention: queries at positions {offset}..{} against a compressed cache \
                 of {len} positions (queries from {} on)",
                offset + t,
                self.q.first_query()
            )));
        }
        let kern = &c.kvk;
        let group = heads / kvh;
        let rows = t * group;
        let rpb = rows_per_block(d);
        let tiles = rows.div_ceil(rpb);
        let chunks = (offset + t).div_ceil(CHUNK);
        let z = splits(kvh * tiles, chunks, c.kv_split_chunks);
        let mut part = c.alloc(z * kvh * rows * (d + 2))?;
        let mut out = c.alloc(t * heads * d)?;
        let qv = q.view("attention q")?;
        let stream = &c.stream;
        // Device pointers (and the guards that keep them valid until the launch is queued).
        let (kp, vp) = (
            self.k.bufs.each_ref().map(|b| device_ptr(b, stream)),
            self.v.bufs.each_ref().map(|b| device_ptr(b, stream)),
        );
        let fp = self.inv_freq.as_ref().map(|f| f.device_ptr(stream));
        let arg = |s: &DevSide, p: &[Option<(u64, _)>; 5]| -> Result<KvSideArg> {
            let a = |i: usize| p[i].as_ref().map_or(0, |x| x.0);
            Ok(KvSideArg {
                codes: a(0),
                scales: a(1),
                offsets: a(2),
                tail: a(3),
                sink: a(4),
                bits: s.lay.bits as i32,
                absmax: s.lay.absmax as i32,
                channels: s.lay.channels as i32,
                tokens: s.lay.tokens as i32,
                rotate: s.lay.rotate as i32,
                row_bytes: to_i32(s.lay.row_bytes, "row bytes")?,
                lloyd: s.lay.lloyd as i32,
            })
        };
        let (ka, va) = (arg(&self.k, &kp)?, arg(&self.v, &vp)?);
        let (group_g, residual) = self.q.kivi_params();
        let st = KvStateArg {
            inv_freq: fp.as_ref().map_or(0, |x| x.0),
            kvh: to_i32(kvh, "kv heads")?,
            d: d as i32,
            cap: to_i32(self.q.capacity(), "capacity")?,
            len: to_i32(len, "length")?,
            qlen: to_i32(self.q.quantized_len(), "length")?,
            full_start: to_i32(self.q.full_start(), "length")?,
            sink: self.q.sink() as i32,
            group: group_g as i32,
            residual: to_i32(residual, "residual")?,
            slots: to_i32(self.slots.max(1), "tail")?,
        };
        let (t_i, heads_i, off_i, rpb_i) = (
            t as i32,
            heads as i32,
            to_i32(offset, "offset")?,
            rpb as i32,
        );
        let window = mask.window.map_or(0, |w| w.min(i32::MAX as usize) as i32);
        let mut l = stream.launch_builder(&kern.attend);
        l.arg(&qv)
            .arg(&ka)
            .arg(&va)
            .arg(&st)
            .arg(&t_i)
            .arg(&heads_i)
            .arg(&off_i)
            .arg(&window)
            .arg(&scale)
            .arg(&rpb_i)
            .arg(&mut part);
        let cfg = LaunchConfig {
            grid_dim: (kvh as u32, tiles as u32, z as u32),
            block_dim: ((WARPS * 32) as u32, 1, 1),
            shared_mem_bytes: shared_bytes(d) as u32,
        };
        unsafe { l.launch(cfg) }.map_err(err("kv attention"))?;
        let (z_i, kvh_i, d_i) = (z as i32, kvh as i32, d as i32);
        let mut l = stream.launch_builder(&kern.combine);
        l.arg(&part)
            .arg(&mut out)
            .arg(&z_i)
            .arg(&kvh_i)
            .arg(&t_i)
            .arg(&heads_i)
            .arg(&d_i);
        let cfg = LaunchConfig {
            grid_dim: ((kvh * rows) as u32, 1, 1),
            block_dim: (d.min(128) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { l.launch(cfg) }.map_err(err("kv combine"))?;
        Ok(CudaTensor::owned(out, &[t, heads * d]))
    }
}

/// One sequence's keys and values for one block on the CUDA backend.
pub enum CudaKv {
    /// f32 rows `[rows, kv_heads, head_dim]` in device buffers of room for `rows` positions,
    /// doubled (up to the capacity) when full.
    F32 {
        kv: Option<(CudaSlice<f32>, CudaSlice<f32>)>,
        rows: usize,
        len: usize,
        capacity: usize,
        width: usize,
    },
    /// A compressed cache on the device.
    Device(Box<DeviceKv>),
    /// A compressed cache in host memory, attended on the host (heads the kernel does not
    /// take, [`device_head_dim`]).
    Host(Box<QuantKv>),
    /// One block's store of a paged pool (`kvpaged.rs`, decision 141): read and written
    /// through block tables only.
    Pool(Box<super::kvpaged::PoolKv>),
}

impl CudaKv {
    pub(super) fn new(c: &Cuda, spec: KvSpec) -> Result<Self> {
        if spec.mode.is_full() {
            return Ok(CudaKv::F32 {
                kv: None,
                rows: 0,
                len: 0,
                capacity: spec.capacity,
                width: spec.kv_heads * spec.head_dim,
            });
        }
        if device_head_dim(spec.head_dim) {
            Ok(CudaKv::Device(Box::new(DeviceKv::new(c, spec)?)))
        } else {
            Ok(CudaKv::Host(Box::new(QuantKv::from_spec(spec)?)))
        }
    }

    pub fn len(&self) -> usize {
        match self {
            CudaKv::F32 { len, .. } => *len,
            CudaKv::Device(d) => d.len(),
            CudaKv::Host(q) => q.len(),
            CudaKv::Pool(_) => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the store holds: device buffers (f32 and device modes) or host memory.
    pub fn bytes(&self) -> usize {
        match self {
            CudaKv::F32 { kv, .. } => kv.as_ref().map_or(0, |(k, v)| 4 * (k.len() + v.len())),
            CudaKv::Device(d) => d.bytes(),
            CudaKv::Host(q) => q.bytes(),
            CudaKv::Pool(p) => p.bytes(),
        }
    }

    /// Whether the store lives in device memory.
    pub fn on_device(&self) -> bool {
        !matches!(self, CudaKv::Host(_))
    }

    pub(super) fn append(&mut self, c: &Cuda, k: &CudaTensor, v: &CudaTensor) -> Result<()> {
        match self {
            CudaKv::F32 {
                kv,
                rows,
                len,
                capacity,
                width,
            } => {
                let t = k.shape.first().copied().unwrap_or(0);
                if *len + t > *capacity {
                    return Err(Error(format!(
                        "key/value cache full: {len} positions stored, {t} more do not fit in \
                         {capacity}"
                    )));
                }
                if k.len() != t * *width || v.len() != k.len() {
                    return Err(Error(format!(
                        "kv_append: keys {:?} / values {:?} for rows of {width}",
                        k.shape, v.shape
                    )));
                }
                if *len + t > *rows || kv.is_none() {
                    let n = (*len + t).max((2 * *rows).min(*capacity)).max(1);
                    let (mut nk, mut nv) = (c.alloc(n * *width)?, c.alloc(n * *width)?);
                    if let Some((ok, ov)) = kv.as_ref() {
                        let m = *len * *width;
                        if m > 0 {
                            c.stream
                                .memcpy_dtod(&ok.slice(..m), &mut nk.slice_mut(..m))
                                .map_err(err("kv grow"))?;
                            c.stream
                                .memcpy_dtod(&ov.slice(..m), &mut nv.slice_mut(..m))
                                .map_err(err("kv grow"))?;
                        }
                    }
                    *kv = Some((nk, nv));
                    *rows = n;
                }
                let (kb, vb) = kv.as_mut().expect("allocated above");
                let (a, b) = (*len * *width, (*len + t) * *width);
                if b > a {
                    c.stream
                        .memcpy_dtod(&k.view("kv_append")?, &mut kb.slice_mut(a..b))
                        .map_err(err("kv_append"))?;
                    c.stream
                        .memcpy_dtod(&v.view("kv_append")?, &mut vb.slice_mut(a..b))
                        .map_err(err("kv_append"))?;
                }
                *len += t;
                Ok(())
            }
            CudaKv::Device(d) => d.append(c, k, v),
            CudaKv::Host(q) => {
                let t = k.shape.first().copied().unwrap_or(0);
                q.append(
                    &crate::Backend::to_f32(c, k)?,
                    &crate::Backend::to_f32(c, v)?,
                    t,
                )
            }
            CudaKv::Pool(_) => Err(Error(
                "kv_append: a paged pool's store is written through block tables only".into(),
            )),
        }
    }

    pub(super) fn attention(
        &self,
        c: &Cuda,
        q: &CudaTensor,
        mask: AttentionMask,
        scale: f32,
    ) -> Result<CudaTensor> {
        match self {
            CudaKv::F32 { kv, len, width, .. } => {
                let (k, v) = kv
                    .as_ref()
                    .ok_or_else(|| Error("attention over an empty key/value cache".into()))?;
                let (_, _, d) = super::dims3(q, "attention q")?;
                let n = *len * *width;
                let shape = [*len, *width / d.max(1), d];
                super::attention::attention_views(
                    c,
                    q,
                    (&k.slice(..n), &v.slice(..n), &shape),
                    mask,
                    scale,
                )
            }
            CudaKv::Device(d) => d.attention(c, q, mask, scale),
            CudaKv::Host(kv) => {
                let (t, heads, d) = super::dims3(q, "attention q")?;
                let out =
                    crate::kvq::attend(&crate::Backend::to_f32(c, q)?, t, heads, kv, mask, scale)?;
                crate::Backend::upload(c, out, &[t, heads * d])
            }
            CudaKv::Pool(_) => Err(Error(
                "kv_attention: a paged pool's store is read through block tables only".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests;
