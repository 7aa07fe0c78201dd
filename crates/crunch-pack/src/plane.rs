//! Coding one byte plane of one chunk: pick the smallest of the candidate codings, never more
//! than the raw bytes.
//!
//! Candidates: raw (stored), constant (one byte repeated), static order-0 rANS, and zstd (which
//! wins where values repeat, e.g. duplicated rows or JSON/tokenizer metadata). The rANS size is
//! known exactly from the histogram before coding, so only a winning rANS is ever run. zstd is
//! costly to try, so on tensor planes it is first tried on a sample (see `ZstdTrial`).

use crate::error::{CodecError, CodecResult};
use crate::freq::{coded_bits, entropy_bits, histogram, normalize, read_table, write_table};
use crate::rans;
use std::cell::RefCell;

/// How a plane is stored. The numbers are part of the format (docs/pack-format.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Method {
    Raw = 0,
    Const = 1,
    Rans = 2,
    Zstd = 3,
}

impl Method {
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Method::Raw,
            1 => Method::Const,
            2 => Method::Rans,
            3 => Method::Zstd,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Method::Raw => "raw",
            Method::Const => "const",
            Method::Rans => "rans",
            Method::Zstd => "zstd",
        }
    }
}

/// When to try zstd on a plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZstdTrial {
    Never,
    /// Compress the first `SAMPLE` bytes first and try the whole plane only if zstd beats the
    /// order-0 cost of that sample by 1%: LZ only pays where values repeat, which a sample shows.
    Sampled,
    Always,
}

const SAMPLE: usize = 8 << 10;

#[derive(Clone, Copy, Debug)]
pub struct PlaneOptions {
    /// A coded candidate must save at least this fraction of the raw size, else the plane is
    /// stored raw. 0 picks the strictly smallest. The default (1/128) keeps near-incompressible
    /// sign-mantissa planes raw, which roughly halves their decode time for a <0.4% size cost.
    pub min_gain: f64,
    pub zstd: ZstdTrial,
    pub zstd_level: i32,
    /// Compute every plane's exact entropy for the report, even where a sample already showed
    /// the plane will be stored raw (costs a histogram pass over those planes).
    pub exact_stats: bool,
}

impl Default for PlaneOptions {
    fn default() -> Self {
        PlaneOptions {
            min_gain: 1.0 / 128.0,
            zstd: ZstdTrial::Sampled,
            zstd_level: 3,
            exact_stats: false,
        }
    }
}

/// What coding one plane produced, for the statistics in the pack report.
#[derive(Clone, Copy, Debug)]
pub struct PlaneStats {
    pub method: Method,
    pub raw_bytes: usize,
    pub coded_bytes: usize,
    /// Order-0 empirical entropy of the plane, in bytes (the bound a static order-0 coder of
    /// this plane cannot beat, ignoring its table).
    pub entropy_bytes: f64,
    /// False when `entropy_bytes` was estimated from a sample (see `PlaneOptions::exact_stats`).
    pub exact: bool,
}

/// Codes `data`, appending the payload to `out`; returns the method and statistics.
pub fn encode(data: &[u8], opts: &PlaneOptions, out: &mut Vec<u8>) -> CodecResult<PlaneStats> {
    let n = data.len();
    let start = out.len();
    if n == 0 {
        return Ok(PlaneStats {
            method: Method::Raw,
            raw_bytes: 0,
            coded_bytes: 0,
            entropy_bytes: 0.0,
            exact: true,
        });
    }
    let try_zstd = match opts.zstd {
        ZstdTrial::Never => false,
        ZstdTrial::Always => true,
        ZstdTrial::Sampled => n <= 2 * SAMPLE || zstd_sample_wins(data, opts.zstd_level)?,
    };
    // Planes that a sample shows to be nearly incompressible (sign-mantissa and low mantissa
    // planes: half of a float file) are stored raw without a full histogram, unless exact
    // statistics were asked for. The sample's entropy is then reported, marked as estimated.
    if !opts.exact_stats && opts.min_gain > 0.0 && !try_zstd && n >= 8 * SAMPLE {
        let estimate = sampled_entropy_bytes(data);
        if estimate > n as f64 * (1.0 - 2.0 * opts.min_gain) {
            out.extend_from_slice(data);
            return Ok(PlaneStats {
                method: Method::Raw,
                raw_bytes: n,
                coded_bytes: n,
                entropy_bytes: estimate,
                exact: false,
            });
        }
    }
    let counts = histogram(data);
    let stats = |method, coded_bytes| PlaneStats {
        method,
        raw_bytes: n,
        coded_bytes,
        entropy_bytes: entropy_bits(&counts) / 8.0,
        exact: true,
    };
    if counts.iter().filter(|&&c| c > 0).count() == 1 {
        out.push(data[0]);
        return Ok(stats(Method::Const, 1));
    }
    let limit = n as f64 * (1.0 - opts.min_gain);
    let mut best = (Method::Raw, n);

    // rANS: its size is known from the histogram (table, lane states, one word per 16 bits),
    // so it only runs when it would win; it writes straight into `out`.
    let table = normalize(&counts)?;
    write_table(&table, out);
    let words = (coded_bits(&counts, &table) / 16.0).ceil() as usize;
    let estimate = out.len() - start + rans::LANES * 4 + words * 2;
    if (estimate as f64) >= limit {
        out.truncate(start);
    } else {
        rans::encode(data, &table, out)?;
        let len = out.len() - start;
        if (len as f64) < limit {
            best = (Method::Rans, len);
        } else {
            out.truncate(start);
        }
    }
    if try_zstd {
        let z = zstd_compress(data, opts.zstd_level)?;
        if z.len() < best.1 && (z.len() as f64) < limit {
            out.truncate(start);
            out.extend_from_slice(&z);
            best = (Method::Zstd, z.len());
        }
    }
    if best.0 == Method::Raw {
        out.extend_from_slice(data);
    }
    debug_assert_eq!(out.len() - start, best.1);
    Ok(stats(best.0, best.1))
}

/// Whether zstd beats the order-0 cost of the plane's first `SAMPLE` bytes by 1%: LZ only
/// pays where byte strings repeat, which a sample shows.
fn zstd_sample_wins(data: &[u8], level: i32) -> CodecResult<bool> {
    let sample = &data[..SAMPLE.min(data.len())];
    let z = zstd_compress(sample, level.min(1))?;
    Ok((z.len() as f64) < entropy_bits(&histogram(sample)) / 8.0 * 0.99)
}

/// Order-0 entropy of the plane, in bytes, estimated from 16 evenly spaced 2 KiB blocks.
fn sampled_entropy_bytes(data: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    let step = data.len() / 16;
    for k in 0..16 {
        let block = &data[k * step..k * step + 2048.min(step)];
        for (c, h) in counts.iter_mut().zip(histogram(block)) {
            *c += h;
        }
    }
    let sampled: u32 = counts.iter().sum();
    entropy_bits(&counts) / 8.0 * data.len() as f64 / sampled as f64
}

thread_local! {
    /// zstd contexts per thread and level: creating one costs about as much as compressing a
    /// small plane.
    static ZSTD_C: RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(Vec::new()) };
    static ZSTD_D: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

fn zstd_compress(data: &[u8], level: i32) -> CodecResult<Vec<u8>> {
    let err = |e: std::io::Error| CodecError::new(format!("zstd: {e}"));
    ZSTD_C.with_borrow_mut(|cs| {
        let i = match cs.iter().position(|(l, _)| *l == level) {
            Some(i) => i,
            None => {
                cs.push((level, zstd::bulk::Compressor::new(level).map_err(err)?));
                cs.len() - 1
            }
        };
        cs[i].1.compress(data).map_err(err)
    })
}

fn zstd_decompress(payload: &[u8], out: &mut [u8]) -> CodecResult<usize> {
    let err = |e: std::io::Error| CodecError::new(format!("corrupt zstd plane: {e}"));
    ZSTD_D.with_borrow_mut(|d| {
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new().map_err(err)?);
        }
        let d = d.as_mut().expect("just created");
        d.decompress_to_buffer(payload, out).map_err(err)
    })
}

/// Decodes a plane of exactly `out.len()` bytes.
pub fn decode(method: Method, payload: &[u8], out: &mut [u8]) -> CodecResult<()> {
    match method {
        Method::Raw => {
            if payload.len() != out.len() {
                return Err(CodecError::new("raw plane has the wrong length"));
            }
            out.copy_from_slice(payload);
        }
        Method::Const => {
            let [b] = payload else {
                return Err(CodecError::new("constant plane must be one byte"));
            };
            out.fill(*b);
        }
        Method::Rans => {
            let (table, used) = read_table(payload)?;
            let table = rans::DecodeTable::new(&table)?;
            rans::decode(&payload[used..], &table, out)?;
        }
        Method::Zstd => {
            // Decompressing into the caller's exact-size buffer bounds memory whatever the
            // frame header claims; a frame that does not fill it exactly is rejected.
            let n = zstd_decompress(payload, out)?;
            if n != out.len() {
                return Err(CodecError::new("zstd plane has the wrong length"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Well-mixed pseudo-random bytes (no structure for zstd to find).
    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut r = crunch_rng::SplitMix64(seed);
        (0..n).map(|_| r.next_u64() as u8).collect()
    }

    fn round_trip(data: &[u8], opts: &PlaneOptions) -> PlaneStats {
        let mut buf = Vec::new();
        let st = encode(data, opts, &mut buf).unwrap();
        assert_eq!(buf.len(), st.coded_bytes);
        assert!(st.coded_bytes <= data.len().max(1));
        let mut out = vec![0xAAu8; data.len()];
        decode(st.method, &buf, &mut out).unwrap();
        assert_eq!(out, data);
        st
    }

    #[test]
    fn picks_const_raw_rans_and_zstd() {
        let o = PlaneOptions::default();
        assert_eq!(round_trip(&[7u8; 1000], &o).method, Method::Const);
        let noise = noise(100_000, 1);
        assert_eq!(round_trip(&noise, &o).method, Method::Raw);
        let skew: Vec<u8> = noise.iter().map(|&b| b.leading_zeros() as u8).collect();
        assert_eq!(round_trip(&skew, &o).method, Method::Rans);
        let text: Vec<u8> = b"{\"dtype\":\"BF16\",\"shape\":[384,384]},"
            .iter()
            .copied()
            .cycle()
            .take(200_000)
            .collect();
        assert_eq!(round_trip(&text, &o).method, Method::Zstd);
    }

    #[test]
    fn min_gain_zero_picks_strictly_smallest() {
        // Nearly uniform bytes: rANS saves a fraction of a percent.
        let data: Vec<u8> = noise(200_000, 2).iter().map(|&b| b.min(250)).collect();
        let strict = PlaneOptions {
            min_gain: 0.0,
            ..PlaneOptions::default()
        };
        assert_eq!(round_trip(&data, &strict).method, Method::Rans);
        assert_eq!(
            round_trip(&data, &PlaneOptions::default()).method,
            Method::Raw
        );
    }

    proptest! {
        #[test]
        fn planes_round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000), shift in 0u8..8, zstd in 0u8..3) {
            let data: Vec<u8> = data.iter().map(|&b| b >> shift).collect();
            let opts = PlaneOptions {
                min_gain: 0.0,
                zstd: [ZstdTrial::Never, ZstdTrial::Sampled, ZstdTrial::Always][zstd as usize],
                zstd_level: 1,
                exact_stats: false,
            };
            round_trip(&data, &opts);
        }

        #[test]
        fn decode_never_panics(m in 0u8..4, payload in proptest::collection::vec(any::<u8>(), 0..700), n in 0usize..900) {
            let mut out = vec![0u8; n];
            let _ = decode(Method::from_u8(m).unwrap(), &payload, &mut out);
        }
    }
}
