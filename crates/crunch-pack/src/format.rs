//! The container: header, chunk records, index, footer (docs/pack-format.md is the spec).
//!
//! The index is written last so packing can stream; a reader finds it from the fixed-size
//! footer. Everything read from a file is checked before use: counts against the bytes that
//! remain (so a lying count cannot make us allocate), offsets against the file, segments and
//! chunks against each other, layouts against their record.

use crate::error::{CodecError, CodecResult};
use crate::transform::{Field, Layout};

pub const MAGIC: [u8; 8] = *b"CRUNCHPK";
pub const FOOTER_MAGIC: [u8; 8] = *b"CRPKEND\x01";
pub const VERSION_MAJOR: u16 = 1;
pub const VERSION_MINOR: u16 = 0;
pub const HEADER_LEN: u64 = 16;
pub const FOOTER_LEN: u64 = 32;
/// Largest raw chunk a reader accepts (bounds memory per chunk; the packer writes 1 MiB).
pub const MAX_CHUNK_RAW: u32 = 64 << 20;
/// Largest index a reader accepts.
pub const MAX_INDEX: u64 = 1 << 30;

pub fn header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION_MAJOR.to_le_bytes());
    h[10..12].copy_from_slice(&VERSION_MINOR.to_le_bytes());
    h
}

pub fn check_header(h: &[u8]) -> CodecResult<()> {
    if h.len() < HEADER_LEN as usize || h[..8] != MAGIC {
        return Err(CodecError::new("not a crunch packed file (bad magic)"));
    }
    let major = u16::from_le_bytes([h[8], h[9]]);
    if major != VERSION_MAJOR {
        return Err(CodecError::new(format!(
            "packed with format version {major}, this build reads version {VERSION_MAJOR}"
        )));
    }
    if h[12..16] != [0; 4] {
        return Err(CodecError::new("unknown header flags"));
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    pub index_offset: u64,
    pub index_len: u64,
    pub index_hash: u64,
}

impl Footer {
    pub fn to_bytes(self) -> [u8; FOOTER_LEN as usize] {
        let mut f = [0u8; FOOTER_LEN as usize];
        f[..8].copy_from_slice(&self.index_offset.to_le_bytes());
        f[8..16].copy_from_slice(&self.index_len.to_le_bytes());
        f[16..24].copy_from_slice(&self.index_hash.to_le_bytes());
        f[24..].copy_from_slice(&FOOTER_MAGIC);
        f
    }

    /// Parses the footer of a file of `file_len` bytes and checks the index lies between the
    /// header and the footer.
    pub fn parse(f: &[u8], file_len: u64) -> CodecResult<Self> {
        if f.len() != FOOTER_LEN as usize || f[24..] != FOOTER_MAGIC {
            return Err(CodecError::new(
                "truncated or not a crunch packed file (bad footer)",
            ));
        }
        let u = |i: usize| u64::from_le_bytes(f[i..i + 8].try_into().expect("8 bytes"));
        let footer = Footer {
            index_offset: u(0),
            index_len: u(8),
            index_hash: u(16),
        };
        let end = footer.index_offset.checked_add(footer.index_len);
        if footer.index_offset < HEADER_LEN
            || footer.index_len > MAX_INDEX
            || end != file_len.checked_sub(FOOTER_LEN)
        {
            return Err(CodecError::new(
                "index location out of range (file truncated?)",
            ));
        }
        Ok(footer)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorMeta {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkEntry {
    /// Offset of the chunk record in the packed file.
    pub offset: u64,
    pub packed_len: u32,
    pub raw_len: u32,
    /// XXH3-64 of the chunk's original bytes.
    pub hash: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentEntry {
    /// Byte range in the original file.
    pub offset: u64,
    pub len: u64,
    pub tensor: Option<TensorMeta>,
    pub layout: Layout,
    pub chunks: Vec<ChunkEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// For a directory pack, the path relative to the directory ('/'-separated); for a
    /// single-file pack, the file's name.
    pub path: String,
    pub size: u64,
    /// XXH3-64 of the whole original file.
    pub hash: u64,
    pub segments: Vec<SegmentEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Index {
    pub is_dir: bool,
    pub files: Vec<FileEntry>,
}

// ---------------------------------------------------------------- writing

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl Index {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut o = Vec::new();
        o.push(self.is_dir as u8);
        o.extend_from_slice(&(self.files.len() as u32).to_le_bytes());
        for f in &self.files {
            put_str(&mut o, &f.path);
            o.extend_from_slice(&f.size.to_le_bytes());
            o.extend_from_slice(&f.hash.to_le_bytes());
            o.extend_from_slice(&(f.segments.len() as u32).to_le_bytes());
            for s in &f.segments {
                o.extend_from_slice(&s.offset.to_le_bytes());
                o.extend_from_slice(&s.len.to_le_bytes());
                match &s.tensor {
                    None => o.push(0),
                    Some(t) => {
                        o.push(1);
                        put_str(&mut o, &t.name);
                        put_str(&mut o, &t.dtype);
                        o.push(t.shape.len() as u8);
                        for d in &t.shape {
                            o.extend_from_slice(&d.to_le_bytes());
                        }
                    }
                }
                o.extend_from_slice(&s.layout.record.to_le_bytes());
                o.push(s.layout.fields.len() as u8);
                for field in &s.layout.fields {
                    let (tag, a, b) = match *field {
                        Field::Bytes { start, len } => (0u8, start, len),
                        Field::Float16 { at } => (1, at, 0),
                        Field::Float32 { at } => (2, at, 0),
                    };
                    o.push(tag);
                    o.extend_from_slice(&a.to_le_bytes());
                    o.extend_from_slice(&b.to_le_bytes());
                }
                o.extend_from_slice(&(s.chunks.len() as u32).to_le_bytes());
                for c in &s.chunks {
                    o.extend_from_slice(&c.offset.to_le_bytes());
                    o.extend_from_slice(&c.packed_len.to_le_bytes());
                    o.extend_from_slice(&c.raw_len.to_le_bytes());
                    o.extend_from_slice(&c.hash.to_le_bytes());
                }
            }
        }
        o
    }

    // ------------------------------------------------------------ reading

    /// Parses and validates an index. `data_end` is where chunk records must end (the index
    /// offset).
    pub fn parse(buf: &[u8], data_end: u64) -> CodecResult<Self> {
        let mut c = Cursor { buf, pos: 0 };
        let is_dir = match c.u8()? {
            0 => false,
            1 => true,
            _ => return Err(bad("unknown pack kind")),
        };
        let nfiles = c.count(4 + 8 + 8 + 4)?;
        let mut files = Vec::with_capacity(nfiles);
        for _ in 0..nfiles {
            let path = c.string()?;
            let size = c.u64()?;
            let hash = c.u64()?;
            let nseg = c.count(8 + 8 + 1 + 2 + 1 + 4)?;
            let mut segments = Vec::with_capacity(nseg);
            for _ in 0..nseg {
                segments.push(c.segment()?);
            }
            files.push(FileEntry {
                path,
                size,
                hash,
                segments,
            });
        }
        if c.pos != buf.len() {
            return Err(bad("trailing bytes after the index"));
        }
        let index = Index { is_dir, files };
        index.validate(data_end)?;
        Ok(index)
    }

    fn validate(&self, data_end: u64) -> CodecResult<()> {
        if !self.is_dir && self.files.len() != 1 {
            return Err(bad("a single-file pack must hold exactly one file"));
        }
        let mut seen = std::collections::HashSet::new();
        for f in &self.files {
            check_path(&f.path)?;
            if !seen.insert(f.path.as_str()) {
                return Err(bad(&format!("file `{}` listed twice", f.path)));
            }
            let mut at = 0u64;
            for s in &f.segments {
                s.layout.validate()?;
                let r = s.layout.record as u64;
                if s.offset != at || s.len % r != 0 {
                    return Err(bad(&format!(
                        "segments of `{}` do not tile the file",
                        f.path
                    )));
                }
                at = at
                    .checked_add(s.len)
                    .ok_or_else(|| bad("segment length overflows"))?;
                let mut raw = 0u64;
                let max_packed = |c: &ChunkEntry| {
                    c.raw_len as u64 + crate::chunk::header_len(s.layout.planes()) as u64
                };
                for ch in &s.chunks {
                    let end = ch.offset.checked_add(ch.packed_len as u64);
                    if ch.raw_len == 0
                        || ch.raw_len > MAX_CHUNK_RAW
                        || !(ch.raw_len as u64).is_multiple_of(r)
                        || ch.packed_len as u64 > max_packed(ch)
                        || ch.offset < HEADER_LEN
                        || end.is_none_or(|e| e > data_end)
                    {
                        return Err(bad(&format!("chunk entry out of range in `{}`", f.path)));
                    }
                    raw += ch.raw_len as u64;
                }
                if raw != s.len {
                    return Err(bad(&format!(
                        "chunks of `{}` do not cover their segment",
                        f.path
                    )));
                }
            }
            if at != f.size {
                return Err(bad(&format!(
                    "segments of `{}` do not add up to its size",
                    f.path
                )));
            }
        }
        Ok(())
    }

    /// Every tensor as (file index, segment index).
    pub fn tensors(&self) -> impl Iterator<Item = (usize, usize, &TensorMeta)> {
        self.files.iter().enumerate().flat_map(|(fi, f)| {
            f.segments
                .iter()
                .enumerate()
                .filter_map(move |(si, s)| s.tensor.as_ref().map(|t| (fi, si, t)))
        })
    }
}

/// A stored path must stay inside the output directory: relative, no `..`, no empty parts.
fn check_path(p: &str) -> CodecResult<()> {
    let ok = !p.is_empty()
        && p.len() <= 4096
        && !p.contains('\0')
        && !p.contains('\\')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(bad(&format!("unsafe file name {p:?} in the index")))
    }
}

fn bad(msg: &str) -> CodecError {
    CodecError::new(format!("corrupt index: {msg}"))
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> CodecResult<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| bad("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> CodecResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> CodecResult<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> CodecResult<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> CodecResult<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    /// A u32 count of items of at least `min_size` bytes each, checked against what is left.
    fn count(&mut self, min_size: usize) -> CodecResult<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_size) > self.buf.len() - self.pos {
            return Err(bad("count larger than the index"));
        }
        Ok(n)
    }
    fn string(&mut self) -> CodecResult<String> {
        let n = self.count(1)?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| bad("name is not UTF-8"))
    }
    fn segment(&mut self) -> CodecResult<SegmentEntry> {
        let offset = self.u64()?;
        let len = self.u64()?;
        let tensor = match self.u8()? {
            0 => None,
            1 => {
                let name = self.string()?;
                let dtype = self.string()?;
                let nd = self.u8()? as usize;
                let shape = (0..nd).map(|_| self.u64()).collect::<CodecResult<_>>()?;
                Some(TensorMeta { name, dtype, shape })
            }
            _ => return Err(bad("bad segment kind")),
        };
        let record = self.u16()?;
        let nfields = self.u8()? as usize;
        let mut fields = Vec::with_capacity(nfields);
        for _ in 0..nfields {
            let (tag, a, b) = (self.u8()?, self.u16()?, self.u16()?);
            fields.push(match (tag, b) {
                (0, _) => Field::Bytes { start: a, len: b },
                (1, 0) => Field::Float16 { at: a },
                (2, 0) => Field::Float32 { at: a },
                _ => return Err(bad("unknown record field")),
            });
        }
        let nchunks = self.count(24)?;
        let mut chunks = Vec::with_capacity(nchunks);
        for _ in 0..nchunks {
            chunks.push(ChunkEntry {
                offset: self.u64()?,
                packed_len: self.u32()?,
                raw_len: self.u32()?,
                hash: self.u64()?,
            });
        }
        Ok(SegmentEntry {
            offset,
            len,
            tensor,
            layout: Layout { record, fields },
            chunks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Index {
        Index {
            is_dir: true,
            files: vec![FileEntry {
                path: "sub/model.safetensors".into(),
                size: 10,
                hash: 7,
                segments: vec![
                    SegmentEntry {
                        offset: 0,
                        len: 2,
                        tensor: None,
                        layout: Layout::identity(),
                        chunks: vec![ChunkEntry {
                            offset: 16,
                            packed_len: 3,
                            raw_len: 2,
                            hash: 1,
                        }],
                    },
                    SegmentEntry {
                        offset: 2,
                        len: 8,
                        tensor: Some(TensorMeta {
                            name: "w".into(),
                            dtype: "BF16".into(),
                            shape: vec![2, 2],
                        }),
                        layout: Layout::float16(),
                        chunks: vec![ChunkEntry {
                            offset: 19,
                            packed_len: 12,
                            raw_len: 8,
                            hash: 2,
                        }],
                    },
                ],
            }],
        }
    }

    #[test]
    fn index_round_trips() {
        let idx = sample();
        assert_eq!(Index::parse(&idx.to_bytes(), 100).unwrap(), idx);
    }

    #[test]
    fn rejects_escaping_paths_and_bad_tiling() {
        for p in ["../x", "/etc/passwd", "a//b", "a/./b", ""] {
            let mut idx = sample();
            idx.files[0].path = p.into();
            assert!(Index::parse(&idx.to_bytes(), 100).is_err(), "{p}");
        }
        let mut idx = sample();
        idx.files[0].segments[1].offset = 3;
        assert!(Index::parse(&idx.to_bytes(), 100).is_err());
        let idx = sample();
        assert!(
            Index::parse(&idx.to_bytes(), 20).is_err(),
            "chunk past the data end"
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Index::parse(&bytes, u64::MAX);
        }

        #[test]
        fn mutated_index_never_panics(pos in 0usize..200, val in any::<u8>()) {
            let mut b = sample().to_bytes();
            let p = pos % b.len();
            b[p] = val;
            let _ = Index::parse(&b, 100);
        }
    }
}
