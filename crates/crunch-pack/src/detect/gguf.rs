//! GGUF (versions 2 and 3): header, metadata key/values, tensor infos, aligned tensor data.
//! Metadata values are skipped, not stored; only `general.alignment` is read. Each tensor gets
//! the record layout of its ggml type, so block-quantised weights are split into their scale
//! fields (coded as f16 planes) and their packed codes (coded as bytes).

use super::{plain_layout, Segment};
use crate::format::TensorMeta;
use crate::io::Source;
use crate::transform::{Field, Layout};

const MAX_DIMS: u32 = 8;
const MAX_NAME: u64 = 1 << 16;
const MAX_DEPTH: u32 = 3;

pub fn tensors(src: &dyn Source) -> Option<Vec<Segment>> {
    let size = src.len();
    let mut r = Reader {
        src,
        buf: Vec::new(),
        buf_at: 0,
        pos: 0,
        size,
    };
    r.skip(4)?; // magic, checked by the caller
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return None;
    }
    let n_tensors = r.u64()?;
    let n_kv = r.u64()?;
    // Every tensor info and key/value takes at least 8 bytes of file.
    if n_tensors > size / 8 || n_kv > size / 8 {
        return None;
    }
    let mut alignment = 32u64;
    for _ in 0..n_kv {
        let key = r.string(MAX_NAME)?;
        let ty = r.u32()?;
        if key == "general.alignment" && ty == 4 {
            alignment = r.u32()? as u64;
        } else {
            r.skip_value(ty, 0)?;
        }
    }
    if alignment == 0 || !alignment.is_power_of_two() {
        return None;
    }
    let mut infos = Vec::with_capacity(n_tensors.min(1 << 16) as usize);
    for _ in 0..n_tensors {
        let name = r.string(MAX_NAME)?;
        let nd = r.u32()?;
        if nd > MAX_DIMS {
            return None;
        }
        // GGUF lists the fastest axis first; report row-major like safetensors.
        let mut shape: Vec<u64> = (0..nd).map(|_| r.u64()).collect::<Option<_>>()?;
        shape.reverse();
        let ty = r.u32()?;
        let offset = r.u64()?;
        infos.push((name, shape, ty, offset));
    }
    let data_start = r.pos.checked_add(alignment - 1)? / alignment * alignment;
    let mut out = Vec::with_capacity(infos.len());
    for (name, shape, ty, offset) in infos {
        let Some((dtype, layout, per_block)) = ggml_type(ty) else {
            continue;
        };
        let numel = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let Some(numel) = numel.filter(|n| n % per_block == 0) else {
            continue;
        };
        let Some(len) = (numel / per_block).checked_mul(layout.record as u64) else {
            continue;
        };
        let Some(start) = data_start.checked_add(offset) else {
            continue;
        };
        out.push(Segment {
            offset: start,
            len,
            tensor: Some(TensorMeta {
                name,
                dtype: dtype.to_string(),
                shape,
            }),
            layout,
        });
    }
    Some(out)
}

/// ggml type id -> (name, record layout, elements per record).
fn ggml_type(ty: u32) -> Option<(&'static str, Layout, u64)> {
    let plain = |name: &'static str, st: &str| plain_layout(st).map(|(l, _)| (name, l, 1));
    let h = |at| Field::Float16 { at };
    let b = |start, len| Field::Bytes { start, len };
    let block = |name, record, fields: Vec<Field>, n| Some((name, Layout { record, fields }, n));
    match ty {
        0 => plain("F32", "F32"),
        1 => plain("F16", "F16"),
        30 => plain("BF16", "BF16"),
        24 => plain("I8", "I8"),
        25 => plain("I16", "I16"),
        26 => plain("I32", "I32"),
        27 => plain("I64", "I64"),
        28 => plain("F64", "F64"),
        2 => block("Q4_0", 18, vec![h(0), b(2, 16)], 32),
        3 => block("Q4_1", 20, vec![h(0), h(2), b(4, 16)], 32),
        6 => block("Q5_0", 22, vec![h(0), b(2, 4), b(6, 16)], 32),
        7 => block("Q5_1", 24, vec![h(0), h(2), b(4, 4), b(8, 16)], 32),
        8 => block("Q8_0", 34, vec![h(0), b(2, 32)], 32),
        9 => block("Q8_1", 36, vec![h(0), h(2), b(4, 32)], 32),
        10 => block("Q2_K", 84, vec![b(0, 16), b(16, 64), h(80), h(82)], 256),
        11 => block(
            "Q3_K",
            110,
            vec![b(0, 32), b(32, 64), b(96, 12), h(108)],
            256,
        ),
        12 => block("Q4_K", 144, vec![h(0), h(2), b(4, 12), b(16, 128)], 256),
        13 => block(
            "Q5_K",
            176,
            vec![h(0), h(2), b(4, 12), b(16, 32), b(48, 128)],
            256,
        ),
        14 => block(
            "Q6_K",
            210,
            vec![b(0, 128), b(128, 64), b(192, 16), h(208)],
            256,
        ),
        15 => block(
            "Q8_K",
            292,
            vec![Field::Float32 { at: 0 }, b(4, 256), b(260, 32)],
            256,
        ),
        20 => block("IQ4_NL", 18, vec![h(0), b(2, 16)], 32),
        23 => block("IQ4_XS", 136, vec![h(0), b(2, 2), b(4, 4), b(8, 128)], 256),
        _ => None,
    }
}

/// A forward reader over a `Source` with a 64 KiB window (metadata can run to megabytes of
/// tokenizer strings, which are skipped without being read).
struct Reader<'a> {
    src: &'a dyn Source,
    buf: Vec<u8>,
    buf_at: u64,
    pos: u64,
    size: u64,
}

impl Reader<'_> {
    fn read(&mut self, out: &mut [u8]) -> Option<()> {
        let end = self
            .pos
            .checked_add(out.len() as u64)
            .filter(|&e| e <= self.size)?;
        let in_window = self.pos >= self.buf_at && end <= self.buf_at + self.buf.len() as u64;
        if !in_window {
            let want = (out.len() as u64).max(1 << 16).min(self.size - self.pos);
            self.buf.resize(want as usize, 0);
            self.src.read_exact_at(self.pos, &mut self.buf).ok()?;
            self.buf_at = self.pos;
        }
        let s = (self.pos - self.buf_at) as usize;
        out.copy_from_slice(&self.buf[s..s + out.len()]);
        self.pos = end;
        Some(())
    }
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut b = [0u8; N];
        self.read(&mut b)?;
        Some(b)
    }
    fn u32(&mut self) -> Option<u32> {
        self.bytes::<4>().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.bytes::<8>().map(u64::from_le_bytes)
    }
    fn skip(&mut self, n: u64) -> Option<()> {
        self.pos = self.pos.checked_add(n).filter(|&e| e <= self.size)?;
        Some(())
    }
    fn string(&mut self, max: u64) -> Option<String> {
        let n = self.u64()?;
        if n > max {
            return None;
        }
        let mut s = vec![0u8; n as usize];
        self.read(&mut s)?;
        String::from_utf8(s).ok()
    }
    fn skip_value(&mut self, ty: u32, depth: u32) -> Option<()> {
        match ty {
            0 | 1 | 7 => self.skip(1),
            2 | 3 => self.skip(2),
            4..=6 => self.skip(4),
            10..=12 => self.skip(8),
            8 => {
                let n = self.u64()?;
                self.skip(n)
            }
            9 if depth < MAX_DEPTH => {
                let inner = self.u32()?;
                let n = self.u64()?;
                let fixed = match inner {
                    0 | 1 | 7 => Some(1),
                    2 | 3 => Some(2),
                    4..=6 => Some(4),
                    10..=12 => Some(8),
                    _ => None,
                };
                match fixed {
                    Some(w) => self.skip(n.checked_mul(w)?),
                    None => {
                        // Strings or nested arrays: each takes at least 8 bytes.
                        if n > (self.size - self.pos) / 8 {
                            return None;
                        }
                        (0..n).try_for_each(|_| self.skip_value(inner, depth + 1))
                    }
                }
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_layouts_are_valid() {
        for ty in 0..64 {
            if let Some((name, layout, _)) = ggml_type(ty) {
                layout.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
    }
}
