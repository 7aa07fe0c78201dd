//! Static order-0 rANS over bytes with `LANES` interleaved states.
//!
//! Why interleave: one rANS state is a chain of dependent multiply/shift steps, which caps a
//! single stream at a few hundred million symbols per second. Symbol `i` belongs to lane
//! `i % LANES`; the lanes share one word stream. Within a group of `LANES` symbols the lanes
//! needing a word take consecutive words in lane order, which is exactly what an AVX-512
//! "expand" load does, so `rans_avx512` decodes 64 lanes as four 16-lane vectors
//! (~1.8 G symbols/s on the reference machine against ~0.3 G for the scalar loop; see
//! docs/decisions/031-pack-entropy-coder.md). The scalar decoder here is the reference and the
//! fallback for other CPUs; both are tested to agree.
//!
//! Parameters (fixed by format version 1, see docs/pack-format.md):
//! - probabilities scaled to 2^12 (`freq::PROB_BITS`),
//! - 32-bit states kept in [2^16, 2^32), renormalised 16 bits at a time,
//! - payload = `LANES` final encoder states (u32 LE), then the 16-bit words (LE) in the order
//!   the decoder reads them.
//!
//! The decoder never trusts its input: reads past the end yield zeros, and the stream is only
//! accepted if every word was consumed and every lane ends in the encoder's initial state.

use crate::error::{CodecError, CodecResult};
use crate::freq::{PROB_BITS, PROB_SCALE};

pub const LANES: usize = 64;
pub(crate) const STATE_LOW: u32 = 1 << 16;
pub(crate) const MASK: u32 = PROB_SCALE - 1;
/// Shift of the fixed-point reciprocal: `q = x * ceil(2^44 / f) >> 44` equals `x / f` exactly
/// for every `x < 2^32` and `f <= 2^12` (the rounding error stays below `x / 2^44 < 1 / f`).
const RCP_SHIFT: u32 = 32 + PROB_BITS;

#[derive(Clone, Copy, Default)]
struct EncSym {
    freq: u32,
    cum: u32,
    /// States at or above this must shed 16 bits before the symbol is pushed.
    x_max: u32,
    rcp: u64,
}

/// Per-symbol encoder parameters, shared by the scalar and vector encoders.
pub(crate) struct EncTables {
    syms: [EncSym; 256],
    /// `freq | cum << 12`, and `1 / freq` as f32, indexed by symbol (for vector gathers).
    pub(crate) info: [u32; 256],
    pub(crate) rcp: [f32; 256],
}

fn enc_tables(freq: &[u32; 256]) -> CodecResult<EncTables> {
    let mut t = EncTables {
        syms: [EncSym::default(); 256],
        info: [0; 256],
        rcp: [0.0; 256],
    };
    let mut cum = 0u32;
    for (s, &f) in freq.iter().enumerate() {
        if f >= PROB_SCALE {
            return Err(CodecError::new("rANS frequency out of range"));
        }
        if f > 0 {
            t.syms[s] = EncSym {
                freq: f,
                cum,
                x_max: (STATE_LOW >> PROB_BITS << 16) * f,
                rcp: (1u64 << RCP_SHIFT).div_ceil(f as u64),
            };
            t.info[s] = f | cum << 12;
            t.rcp[s] = 1.0 / f as f32;
        }
        cum += f;
    }
    if cum != PROB_SCALE {
        return Err(CodecError::new("rANS table does not sum to the scale"));
    }
    Ok(t)
}

/// One encoding step of one lane: shed 16 bits if the state is too large for the symbol (the
/// word goes just below `top` in `buf`), then push the symbol.
#[inline(always)]
fn put(x: &mut u32, s: &EncSym, buf: &mut [u16], top: &mut usize) {
    // Branch-free: whether a lane sheds a word is data-dependent.
    let shed = *x >= s.x_max;
    buf[*top - 1] = *x as u16;
    *top -= shed as usize;
    *x = if shed { *x >> 16 } else { *x };
    let q = ((*x as u128 * s.rcp as u128) >> RCP_SHIFT) as u32;
    *x = (q << PROB_BITS) + (*x - q * s.freq) + s.cum;
}

/// Encodes whole groups of `LANES` symbols, last group first: `(states, groups, tables, buf,
/// top)`; words are written downwards from `top`.
pub(crate) type GroupEncoder = fn(&mut [u32; LANES], &[u8], &EncTables, &mut [u16], &mut usize);

fn encode_groups_scalar(
    x: &mut [u32; LANES],
    groups: &[u8],
    t: &EncTables,
    buf: &mut [u16],
    top: &mut usize,
) {
    for group in groups.chunks_exact(LANES).rev() {
        for lane in (0..LANES).rev() {
            put(&mut x[lane], &t.syms[group[lane] as usize], buf, top);
        }
    }
}

thread_local! {
    /// The encoder's word buffer, reused across calls (a fresh one per chunk costs page faults
    /// and zeroing). The decoder reads words in place.
    static ENC_WORDS: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Encodes `data` with the normalised table `freq`, appending the payload to `out`. Every byte
/// of `data` must have a non-zero frequency (the table is built from `data`'s histogram).
pub fn encode(data: &[u8], freq: &[u32; 256], out: &mut Vec<u8>) -> CodecResult<()> {
    #[cfg(target_arch = "x86_64")]
    if crate::rans_avx512::available() {
        return encode_with(data, freq, out, crate::rans_avx512::encode_groups);
    }
    encode_with(data, freq, out, encode_groups_scalar)
}

/// Encodes with the portable loop only (tests compare it with the vector path).
pub fn encode_scalar(data: &[u8], freq: &[u32; 256], out: &mut Vec<u8>) -> CodecResult<()> {
    encode_with(data, freq, out, encode_groups_scalar)
}

fn encode_with(
    data: &[u8],
    freq: &[u32; 256],
    out: &mut Vec<u8>,
    groups: GroupEncoder,
) -> CodecResult<()> {
    let t = enc_tables(freq)?;
    ENC_WORDS.with_borrow_mut(|buf| {
        // Words are written backwards from the end of `buf`, which leaves them in the order
        // the decoder reads them. Each symbol sheds at most one word, so `len + 1` slots do.
        // Only grows: slots are always written before they are read.
        if buf.len() < data.len() + 1 {
            buf.resize(data.len() + 1, 0);
        }
        let buf = &mut buf[..data.len() + 1];
        let mut top = buf.len();
        let mut x = [STATE_LOW; LANES];
        // rANS is last-in first-out: encode from the end so the decoder runs forwards. The
        // partial group at the end comes first.
        let full = data.len() / LANES * LANES;
        for i in (full..data.len()).rev() {
            put(&mut x[i - full], &t.syms[data[i] as usize], buf, &mut top);
        }
        groups(&mut x, &data[..full], &t, buf, &mut top);
        let words = &buf[top..];
        let start = out.len();
        out.resize(start + LANES * 4 + words.len() * 2, 0);
        let (states, rest) = out[start..].split_at_mut(LANES * 4);
        for (d, s) in states.chunks_exact_mut(4).zip(x) {
            d.copy_from_slice(&s.to_le_bytes());
        }
        for (d, w) in rest.chunks_exact_mut(2).zip(words) {
            d.copy_from_slice(&w.to_le_bytes());
        }
    });
    Ok(())
}

/// Decoding table: for each of the 2^12 slots, `symbol | freq << 8 | (slot - cum) << 20`.
pub struct DecodeTable(Box<[u32; PROB_SCALE as usize]>);

impl DecodeTable {
    pub fn new(freq: &[u32; 256]) -> CodecResult<Self> {
        let mut t = Box::new([0u32; PROB_SCALE as usize]);
        let mut slot = 0usize;
        for (s, &f) in freq.iter().enumerate() {
            if f >= PROB_SCALE || slot + f as usize > PROB_SCALE as usize {
                return Err(CodecError::new("rANS table out of range"));
            }
            for k in 0..f as usize {
                t[slot + k] = s as u32 | f << 8 | (k as u32) << 20;
            }
            slot += f as usize;
        }
        if slot != PROB_SCALE as usize {
            return Err(CodecError::new("rANS table does not sum to the scale"));
        }
        Ok(DecodeTable(t))
    }
}

/// Decodes exactly `out.len()` symbols from `payload`.
pub fn decode(payload: &[u8], table: &DecodeTable, out: &mut [u8]) -> CodecResult<()> {
    #[cfg(target_arch = "x86_64")]
    if crate::rans_avx512::available() {
        return decode_with(payload, table, out, crate::rans_avx512::decode_groups);
    }
    decode_with(payload, table, out, decode_groups_scalar)
}

/// Decodes with the portable loop only (tests compare it with the vector path).
pub fn decode_scalar(payload: &[u8], table: &DecodeTable, out: &mut [u8]) -> CodecResult<()> {
    decode_with(payload, table, out, decode_groups_scalar)
}

/// Decodes whole groups of `LANES` symbols from `words` (16-bit little-endian words, read in
/// place): `(states, words, table, out) -> (symbols decoded, words consumed)`. It stops
/// before a group that might read past `words` (fewer than `LANES` words left at its start,
/// a group consuming at most one word per lane), so the caller finishes the stream's last
/// groups from a padded copy of its last words.
pub(crate) type GroupDecoder =
    fn(&mut [u32; LANES], &[u8], &[u32; PROB_SCALE as usize], &mut [u8]) -> (usize, usize);

fn decode_with(
    payload: &[u8],
    table: &DecodeTable,
    out: &mut [u8],
    groups: GroupDecoder,
) -> CodecResult<()> {
    let corrupt = |m: &str| CodecError::new(format!("corrupt rANS stream: {m}"));
    if payload.len() < LANES * 4 || !(payload.len() - LANES * 4).is_multiple_of(2) {
        return Err(corrupt("bad payload length"));
    }
    let mut x = [0u32; LANES];
    for (lane, b) in x.iter_mut().zip(payload.chunks_exact(4)) {
        *lane = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if *lane < STATE_LOW {
            return Err(corrupt("initial state out of range"));
        }
    }
    let t = &*table.0;
    let words = &payload[LANES * 4..];
    let nwords = words.len() / 2;
    let full = out.len() / LANES * LANES;
    let (head, tail) = out.split_at_mut(full);
    // Most groups decode straight from the payload (no copy of the stream).
    let (done, pos) = groups(&mut x, words, t, head);
    // The rest reads a zero-padded copy of the words left: for a valid stream fewer than
    // `LANES` (more means a stream too long, reported below). With 3 × `LANES` slots, the
    // remaining groups can read a whole group past any position up to 2 × `LANES`, and the
    // partial group `LANES - 1` words past it.
    let mut last = [0u8; 2 * 3 * LANES];
    let left = (nwords - pos).min(2 * LANES);
    last[..2 * left].copy_from_slice(&words[2 * pos..2 * (pos + left)]);
    let (more, mut at) = groups(&mut x, &last, t, &mut head[done..]);
    if done + more != full || at > 2 * LANES {
        return Err(corrupt("stream too short"));
    }
    for (lane, o) in tail.iter_mut().enumerate() {
        let (sym, need) = step(&mut x[lane], t, word(&last, at));
        *o = sym;
        at += need as usize;
    }
    if pos + at != nwords {
        return Err(corrupt("stream length does not match its symbols"));
    }
    if x.iter().any(|&s| s != STATE_LOW) {
        return Err(corrupt("final state mismatch"));
    }
    Ok(())
}

/// Word `i` of a little-endian word stream.
#[inline(always)]
fn word(words: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([words[2 * i], words[2 * i + 1]])
}

/// One decoding step of one lane given the next unread word; returns the symbol and whether
/// the word was consumed. The word is loaded whether or not it is needed: which lanes need one
/// is data-dependent, and a branch would mispredict.
#[inline(always)]
fn step(x: &mut u32, t: &[u32; PROB_SCALE as usize], word: u16) -> (u8, bool) {
    let e = t[(*x & MASK) as usize];
    let nx = ((e >> 8) & MASK) * (*x >> PROB_BITS) + (e >> 20);
    let need = nx < STATE_LOW;
    *x = if need { (nx << 16) | word as u32 } else { nx };
    (e as u8, need)
}

fn decode_groups_scalar(
    x: &mut [u32; LANES],
    words: &[u8],
    t: &[u32; PROB_SCALE as usize],
    out: &mut [u8],
) -> (usize, usize) {
    let nwords = words.len() / 2;
    let (mut done, mut pos) = (0, 0);
    for group in out.chunks_exact_mut(LANES) {
        if pos + LANES > nwords {
            break;
        }
        let window: &[u8; 2 * LANES] = words[2 * pos..2 * (pos + LANES)]
            .try_into()
            .expect("a group's words");
        let mut k = 0usize;
        for lane in 0..LANES {
            // `k` is at most `lane` here; the mask cannot change it and lets the compiler
            // drop the bounds check.
            let (sym, need) = step(&mut x[lane], t, word(window, k & (LANES - 1)));
            group[lane] = sym;
            k += need as usize;
        }
        pos += k;
        done += LANES;
    }
    (done, pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::freq::{histogram, normalize};
    use proptest::prelude::*;

    fn round_trip(data: &[u8]) -> Vec<u8> {
        let freq = normalize(&histogram(data)).unwrap();
        let mut enc = Vec::new();
        encode(data, &freq, &mut enc).unwrap();
        let mut enc_scalar = Vec::new();
        encode_scalar(data, &freq, &mut enc_scalar).unwrap();
        assert_eq!(enc, enc_scalar, "vector and scalar encoders differ");
        let table = DecodeTable::new(&freq).unwrap();
        let mut out = vec![0u8; data.len()];
        decode(&enc, &table, &mut out).unwrap();
        assert_eq!(out, data);
        let mut out = vec![0u8; data.len()];
        decode_scalar(&enc, &table, &mut out).unwrap();
        assert_eq!(out, data);
        enc
    }

    #[test]
    fn skewed_data_compresses_near_entropy() {
        // Deterministic pseudo-random geometric symbols.
        let mut rng = crunch_rng::SplitMix64(0x1234_5678);
        let data: Vec<u8> = (0..200_000)
            .map(|_| ((rng.next_u64() >> 32) as u32).trailing_zeros().min(30) as u8 + 100)
            .collect();
        let enc = round_trip(&data);
        let bound = crate::freq::entropy_bits(&histogram(&data)) / 8.0;
        let ratio = enc.len() as f64 / bound;
        assert!(
            ratio < 1.005,
            "rANS {} bytes vs entropy {bound:.0}",
            enc.len()
        );
    }

    #[test]
    fn streams_whose_last_groups_read_few_words_round_trip() {
        // Nearly constant data: most groups read no word at all, so many groups are left for
        // the padded copy of the last words, at every length around a whole group.
        for n in [63, 64, 65, 127, 128, 129, 4096 + 17, 100_000] {
            let data: Vec<u8> = (0..n).map(|i| if i % 997 == 5 { 9 } else { 1 }).collect();
            round_trip(&data);
        }
        // And the opposite: near-uniform bytes read a word every other symbol.
        let data: Vec<u8> = (0..70_001u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
            .collect();
        let enc = round_trip(&data);
        let freq = normalize(&histogram(&data)).unwrap();
        let table = DecodeTable::new(&freq).unwrap();
        let mut out = vec![0u8; data.len()];
        for cut in [2, 4, 64, 128, 130, 256] {
            assert!(
                decode(&enc[..enc.len() - cut], &table, &mut out).is_err(),
                "cut {cut}"
            );
            let mut longer = enc.clone();
            longer.extend(std::iter::repeat_n(0, cut));
            assert!(
                decode(&longer, &table, &mut out).is_err(),
                "longer by {cut}"
            );
        }
    }

    #[test]
    fn rejects_truncated_and_flipped_streams() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * i % 7) as u8).collect();
        let freq = normalize(&histogram(&data)).unwrap();
        let mut enc = Vec::new();
        encode(&data, &freq, &mut enc).unwrap();
        let table = DecodeTable::new(&freq).unwrap();
        let mut out = vec![0u8; data.len()];
        assert!(decode(&enc[..enc.len() - 2], &table, &mut out).is_err());
        let mut bad = enc.clone();
        bad[40] ^= 0x10;
        let r = decode(&bad, &table, &mut out);
        assert!(r.is_err() || out != data);
    }

    proptest! {
        #[test]
        fn any_bytes_round_trip(data in proptest::collection::vec(any::<u8>(), 0..3000), skew in 0u8..8) {
            // Skew some inputs so that tables range from near-uniform to very peaked.
            let data: Vec<u8> = data.iter().map(|&b| b >> skew).collect();
            prop_assume!(histogram(&data).iter().filter(|&&c| c > 0).count() >= 2);
            round_trip(&data);
        }

        #[test]
        fn decoder_survives_garbage(payload in proptest::collection::vec(any::<u8>(), 0..1200), n in 0usize..700) {
            let mut freq = [0u32; 256];
            freq[0] = 1000;
            freq[7] = 3000;
            freq[200] = 96;
            let table = DecodeTable::new(&freq).unwrap();
            let mut out = vec![0u8; n];
            let a = decode(&payload, &table, &mut out).map(|_| out.clone());
            let b = decode_scalar(&payload, &table, &mut out).map(|_| out.clone());
            prop_assert_eq!(a, b);
        }
    }
}
