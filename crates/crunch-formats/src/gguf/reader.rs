//! Parsing and validation of the GGUF header, metadata and tensor descriptions.
//!
//! Every count and length read from the file is checked against the bytes that remain before
//! anything is allocated: each element of a claimed count needs at least
//! [`min_encoded_size`] bytes, so a count the rest of the file could not hold is refused at
//! once, and memory use stays proportional to the file's real size.

use super::value::{min_encoded_size, GgufValue};
use super::{dtype_from_ggml, Entry, DEFAULT_ALIGNMENT};
use crate::{FormatError, Result, TensorInfo};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// Magic, version, tensor count and metadata count.
pub(super) const MIN_HEADER_BYTES: usize = 4 + 4 + 8 + 8;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;
/// Real files nest arrays at most once; the cap keeps a hostile file from overflowing the
/// stack through recursion.
const MAX_ARRAY_DEPTH: usize = 8;
/// Metadata values (array elements included) allowed in one file. Each costs ~32 bytes in
/// memory but can take 1 byte on disk, so the file-size bound alone would let a hostile
/// file ask for 32x its size; real files hold about a million (vocabulary, types, merges).
const MAX_METADATA_VALUES: u64 = 1 << 24;
/// Fewest bytes of one metadata entry: key length, value type, a one-byte value.
const MIN_KV_BYTES: usize = 8 + 4 + 1;
/// Fewest bytes of one tensor description: name length, n_dims, type, offset.
const MIN_TENSOR_INFO_BYTES: usize = 8 + 4 + 4 + 8;

pub(super) struct Parsed {
    pub version: u32,
    pub alignment: u64,
    pub data_start: usize,
    pub metadata: BTreeMap<String, GgufValue>,
    pub entries: Vec<Entry>,
}

pub(super) fn parse(path: &Path, bytes: &[u8]) -> Result<Parsed> {
    parse_bytes(bytes).map_err(|msg| FormatError::invalid(path, msg))
}

type Res<T> = std::result::Result<T, String>;

fn parse_bytes(bytes: &[u8]) -> Res<Parsed> {
    let mut c = Cursor {
        bytes,
        pos: 0,
        values: 0,
    };
    if bytes.len() < 4 || &bytes[..4] != b"GGUF" {
        let head = &bytes[..bytes.len().min(4)];
        return Err(format!(
            "not a GGUF file: magic is {head:02x?}, expected \"GGUF\" (47 47 55 46)"
        ));
    }
    if bytes.len() < MIN_HEADER_BYTES {
        return Err(format!(
            "file is {} bytes, too short for a GGUF header",
            bytes.len()
        ));
    }
    c.pos = 4;
    let version = c.u32("version")?;
    if version != 2 && version != 3 {
        let hint = if matches!(version.swap_bytes(), 2 | 3) {
            " (this looks like a big-endian GGUF file, which crunch does not read)"
        } else if version == 1 {
            " (GGUF v1 used 32-bit counts and is obsolete; re-convert the model)"
        } else {
            ""
        };
        return Err(format!(
            "unsupported GGUF version {version}: only versions 2 and 3 are supported{hint}"
        ));
    }
    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.u64("metadata count")?;
    c.check_count(n_kv, MIN_KV_BYTES, "metadata entries")?;
    c.check_count(n_tensors, MIN_TENSOR_INFO_BYTES, "tensors")?;

    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = c.string(&format!("key of metadata entry {i}"))?;
        let ty = c.u32("metadata value type")?;
        let value = c
            .value(ty, 0)
            .map_err(|e| format!("metadata key `{key}`: {e}"))?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(format!("metadata key `{key}` appears twice"));
        }
    }
    let alignment = alignment(&metadata)?;

    c.check_count(n_tensors, MIN_TENSOR_INFO_BYTES, "tensors")?;
    let mut raw_infos = Vec::with_capacity(n_tensors as usize);
    let mut names = HashSet::new();
    for i in 0..n_tensors {
        let info = c.tensor_info(i, alignment)?;
        if !names.insert(info.info.name.clone()) {
            return Err(format!("tensor `{}` appears twice", info.info.name));
        }
        raw_infos.push(info);
    }

    // The data section starts at the next multiple of the alignment.
    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    let file_len = bytes.len() as u64;
    let mut entries = Vec::with_capacity(raw_infos.len());
    for t in raw_infos {
        let start = data_start.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.nbytes));
        match (start, end) {
            (Some(start), Some(end)) if end <= file_len => entries.push(Entry {
                info: t.info,
                start: start as usize,
                end: end as usize,
            }),
            _ => {
                return Err(format!(
                    "tensor `{}`: its {} bytes at data offset {} (file offset {}) lie beyond \
                     the end of the {file_len}-byte file (truncated, or the offset lies)",
                    t.info.name,
                    t.nbytes,
                    t.offset,
                    data_start as u128 + t.offset as u128
                ))
            }
        }
    }
    check_no_overlap(&mut entries)?;
    Ok(Parsed {
        version,
        alignment,
        data_start: data_start.min(file_len) as usize,
        metadata,
        entries,
    })
}

fn alignment(metadata: &BTreeMap<String, GgufValue>) -> Res<u64> {
    let Some(v) = metadata.get("general.alignment") else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match v.as_u64() {
        Some(a) if a.is_power_of_two() && a <= 1 << 30 => Ok(a),
        _ => Err(format!(
            "general.alignment is {v:?}; it must be a power of two no larger than 2^30"
        )),
    }
}

fn check_no_overlap(entries: &mut [Entry]) -> Res<()> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| (entries[i].start, entries[i].end));
    for pair in order.windows(2) {
        let (a, b) = (&entries[pair[0]], &entries[pair[1]]);
        if a.end > b.start && a.end > a.start && b.end > b.start {
            return Err(format!(
                "tensors `{}` and `{}` overlap in the data section",
                a.info.name, b.info.name
            ));
        }
    }
    Ok(())
}

/// A tensor description before its offset is resolved against the data section.
struct RawInfo {
    info: TensorInfo,
    offset: u64,
    nbytes: u64,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Metadata values parsed so far, against [`MAX_METADATA_VALUES`].
    values: u64,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Res<&'a [u8]> {
        if n > self.remaining() {
            return Err(format!(
                "truncated: {what} needs {n} bytes at offset {} but only {} remain",
                self.pos,
                self.remaining()
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Res<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("took N bytes"))
    }

    fn u32(&mut self, what: &str) -> Res<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Res<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Refuses `count` items of at least `min_bytes` each when the rest of the file is
    /// smaller than that.
    fn check_count(&self, count: u64, min_bytes: usize, what: &str) -> Res<()> {
        let fits = (self.remaining() / min_bytes) as u64;
        if count > fits {
            return Err(format!(
                "header claims {count} {what} at offset {} but the {} remaining bytes can hold \
                 at most {fits} (truncated, or the count lies)",
                self.pos,
                self.remaining()
            ));
        }
        Ok(())
    }

    fn string(&mut self, what: &str) -> Res<String> {
        let len = self.u64(what)?;
        if len > self.remaining() as u64 {
            return Err(format!(
                "{what}: string length {len} at offset {} exceeds the {} remaining bytes",
                self.pos - 8,
                self.remaining()
            ));
        }
        let raw = self.take(len as usize, what)?;
        String::from_utf8(raw.to_vec())
            .map_err(|e| format!("{what}: string is not valid UTF-8 ({e})"))
    }

    /// One value of type `ty`; errors carry no key (the caller adds it).
    fn value(&mut self, ty: u32, depth: usize) -> Res<GgufValue> {
        use GgufValue as V;
        Ok(match ty {
            0 => V::U8(self.array::<1>("u8 value")?[0]),
            1 => V::I8(self.array::<1>("i8 value")?[0] as i8),
            2 => V::U16(u16::from_le_bytes(self.array("u16 value")?)),
            3 => V::I16(i16::from_le_bytes(self.array("i16 value")?)),
            4 => V::U32(u32::from_le_bytes(self.array("u32 value")?)),
            5 => V::I32(i32::from_le_bytes(self.array("i32 value")?)),
            6 => V::F32(f32::from_le_bytes(self.array("f32 value")?)),
            7 => match self.array::<1>("bool value")?[0] {
                0 => V::Bool(false),
                1 => V::Bool(true),
                b => return Err(format!("bool value is {b}, not 0 or 1")),
            },
            8 => V::String(self.string("string value")?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(format!("arrays nested more than {MAX_ARRAY_DEPTH} deep"));
                }
                let elem_ty = self.u32("array element type")?;
                let min = min_encoded_size(elem_ty)
                    .ok_or_else(|| format!("array has unknown element type {elem_ty}"))?;
                let count = self.u64("array length")?;
                self.check_count(count, min, "array elements")?;
                self.values += count;
                if self.values > MAX_METADATA_VALUES {
                    return Err(format!(
                        "metadata holds more than {MAX_METADATA_VALUES} values in all \
                         (real files hold about a million); refusing to load it"
                    ));
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem_ty, depth + 1)?);
                }
                V::Array(items)
            }
            10 => V::U64(u64::from_le_bytes(self.array("u64 value")?)),
            11 => V::I64(i64::from_le_bytes(self.array("i64 value")?)),
            12 => V::F64(f64::from_le_bytes(self.array("f64 value")?)),
            _ => return Err(format!("unknown value type {ty}")),
        })
    }

    fn tensor_info(&mut self, i: u64, alignment: u64) -> Res<RawInfo> {
        let name = self.string(&format!("name of tensor {i}"))?;
        let bad = |msg: String| format!("tensor `{name}`: {msg}");
        let n_dims = self.u32("tensor n_dims")?;
        if n_dims > MAX_DIMS {
            return Err(bad(format!(
                "has {n_dims} dimensions, more than {MAX_DIMS}"
            )));
        }
        // `ne` is fastest-varying first; crunch's shapes are row-major, so reverse it.
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            ne.push(self.u64("tensor dimension")?);
        }
        let type_id = self.u32("tensor type")?;
        let offset = self.u64("tensor offset")?;
        let dtype = dtype_from_ggml(type_id).map_err(&bad)?;
        let numel = ne
            .iter()
            .try_fold(1u64, |acc, &d| {
                // ggml stores dims as int64: anything above i64::MAX is corrupt.
                i64::try_from(d).ok()?;
                usize::try_from(d).ok()?;
                acc.checked_mul(d)
            })
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| bad(format!("dimensions {ne:?} overflow")))?;
        let (block, _) = dtype.block();
        let row = ne.first().copied().unwrap_or(1);
        // Blocks never straddle rows, so the row length (and with it the element count)
        // must be a whole number of blocks.
        if !row.is_multiple_of(block as u64) {
            return Err(bad(format!(
                "row length {row} (dimensions {ne:?}) is not a multiple of the {dtype:?} \
                     block size {block}"
            )));
        }
        let nbytes = dtype
            .bytes_for(numel)
            .ok_or_else(|| bad(format!("dimensions {ne:?} overflow")))?;
        if !offset.is_multiple_of(alignment) {
            return Err(bad(format!(
                "data offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        let shape = ne.iter().rev().map(|&d| d as usize).collect();
        Ok(RawInfo {
            info: TensorInfo { name, dtype, shape },
            offset,
            nbytes: nbytes as u64,
        })
    }
}
