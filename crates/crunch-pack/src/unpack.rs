//! Reading a packed container: check header, footer and index, then restore files (or one
//! tensor) by decoding batches of chunks in parallel and writing them in order.
//!
//! Every chunk is checked against its XXH3 before it is written, and every restored file
//! against the XXH3 of the whole original, so damage anywhere is reported, naming the packed
//! file and the tensor or byte range, and never passed on silently.

use crate::chunk;
use crate::error::{PackError, Result};
use crate::format::{self, ChunkEntry, Footer, Index, SegmentEntry};
use crate::hash::{hash64, StreamHasher};
use crate::io::{Sink, Source};
use crate::report::UnpackReport;
use crate::transform::Layout;
use crate::workers::Workers;
use std::path::{Path, PathBuf};

/// Raw bytes decoded per batch (bounds memory at about twice this).
const BATCH_BYTES: u64 = 32 << 20;

/// An opened, validated packed container.
pub struct Packed<S: Source> {
    src: S,
    path: PathBuf,
    pub index: Index,
}

impl<S: Source> Packed<S> {
    /// Checks header and footer, reads and validates the index. `path` names the packed file
    /// in error messages.
    pub fn open(src: S, path: &Path) -> Result<Self> {
        let corrupt = |m: String| PackError::corrupt(path, m);
        let len = src.len();
        if len < format::HEADER_LEN + format::FOOTER_LEN {
            return Err(corrupt(format!(
                "too short to be a packed file ({len} bytes)"
            )));
        }
        let mut h = [0u8; format::HEADER_LEN as usize];
        src.read_exact_at(0, &mut h)
            .map_err(|e| PackError::io(path, e))?;
        format::check_header(&h).map_err(|e| corrupt(e.0))?;
        let mut f = [0u8; format::FOOTER_LEN as usize];
        src.read_exact_at(len - format::FOOTER_LEN, &mut f)
            .map_err(|e| PackError::io(path, e))?;
        let footer = Footer::parse(&f, len).map_err(|e| corrupt(e.0))?;
        let mut buf = vec![0u8; footer.index_len as usize];
        src.read_exact_at(footer.index_offset, &mut buf)
            .map_err(|e| PackError::io(path, e))?;
        if hash64(&buf) != footer.index_hash {
            return Err(corrupt("index checksum mismatch (file damaged)".into()));
        }
        let index = Index::parse(&buf, footer.index_offset).map_err(|e| corrupt(e.0))?;
        Ok(Packed {
            src,
            path: path.to_path_buf(),
            index,
        })
    }

    /// Restores file `fi` into `sink`, checking every chunk and the whole file.
    pub fn restore_file(
        &self,
        fi: usize,
        pool: &Workers,
        sink: &mut dyn Sink,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64> {
        let f = &self.index.files[fi];
        let mut hasher = StreamHasher::default();
        let mut buf = Vec::new();
        let mut chunks = 0;
        for seg in &f.segments {
            let what = self.describe(fi, seg);
            for (first, batch) in batches(&seg.chunks, pool.threads()) {
                let len: usize = batch.iter().map(|c| c.raw_len as usize).sum();
                buf.resize(len, 0);
                self.decode_batch(&seg.layout, batch, first, &what, pool, &mut buf)?;
                hasher.update(&buf);
                progress(len as u64);
                sink.put(&buf)?;
                chunks += batch.len() as u64;
            }
        }
        self.check_file_hash(fi, hasher.digest())?;
        Ok(chunks)
    }

    /// Restores file `fi` into `out` (exactly its size), decoding straight into place.
    pub fn restore_file_into(&self, fi: usize, pool: &Workers, out: &mut [u8]) -> Result<u64> {
        let f = &self.index.files[fi];
        if out.len() as u64 != f.size {
            return Err(PackError::invalid(
                &self.path,
                "output buffer does not match the file size",
            ));
        }
        let mut hasher = StreamHasher::default();
        let mut chunks = 0;
        for seg in &f.segments {
            let what = self.describe(fi, seg);
            let mut at = seg.offset as usize;
            for (first, batch) in batches(&seg.chunks, pool.threads()) {
                let len: usize = batch.iter().map(|c| c.raw_len as usize).sum();
                let part = &mut out[at..at + len];
                self.decode_batch(&seg.layout, batch, first, &what, pool, part)?;
                hasher.update(part);
                at += len;
                chunks += batch.len() as u64;
            }
        }
        self.check_file_hash(fi, hasher.digest())?;
        Ok(chunks)
    }

    /// Restores one segment (a tensor's bytes) of file `fi`, checking its chunks.
    pub fn restore_segment(
        &self,
        fi: usize,
        si: usize,
        pool: &Workers,
        sink: &mut dyn Sink,
    ) -> Result<u64> {
        let seg = &self.index.files[fi].segments[si];
        let what = self.describe(fi, seg);
        let mut buf = Vec::new();
        for (first, batch) in batches(&seg.chunks, pool.threads()) {
            buf.resize(batch.iter().map(|c| c.raw_len as usize).sum(), 0);
            self.decode_batch(&seg.layout, batch, first, &what, pool, &mut buf)?;
            sink.put(&buf)?;
        }
        Ok(seg.chunks.len() as u64)
    }

    fn describe(&self, fi: usize, seg: &SegmentEntry) -> String {
        let f = &self.index.files[fi];
        match &seg.tensor {
            Some(t) => format!("tensor `{}` of `{}`", t.name, f.path),
            None => format!(
                "bytes {}..{} of `{}`",
                seg.offset,
                seg.offset + seg.len,
                f.path
            ),
        }
    }

    fn check_file_hash(&self, fi: usize, digest: u64) -> Result<()> {
        let f = &self.index.files[fi];
        if digest != f.hash {
            return Err(PackError::corrupt(
                &self.path,
                format!(
                    "`{}` does not match the checksum of the original file",
                    f.path
                ),
            ));
        }
        Ok(())
    }

    /// Decodes consecutive chunks in parallel into `out` (their raw lengths end to end).
    fn decode_batch(
        &self,
        layout: &Layout,
        chunks: &[ChunkEntry],
        first: usize,
        what: &str,
        pool: &Workers,
        out: &mut [u8],
    ) -> Result<()> {
        let mut parts = Vec::with_capacity(chunks.len());
        let mut rest = out;
        for c in chunks {
            let (head, tail) = rest.split_at_mut(c.raw_len as usize);
            parts.push(head);
            rest = tail;
        }
        let items: Vec<_> = parts.into_iter().zip(chunks).enumerate().collect();
        pool.try_for_each(items, |(k, (part, c))| {
            self.decode_chunk(layout, c, what, first + k, part)
        })
    }

    fn decode_chunk(
        &self,
        layout: &Layout,
        c: &ChunkEntry,
        what: &str,
        k: usize,
        out: &mut [u8],
    ) -> Result<()> {
        let owned;
        let record = match self.src.as_slice() {
            Some(all) => &all[c.offset as usize..(c.offset + c.packed_len as u64) as usize],
            None => {
                let mut buf = vec![0u8; c.packed_len as usize];
                self.src
                    .read_exact_at(c.offset, &mut buf)
                    .map_err(|e| PackError::io(&self.path, e))?;
                owned = buf;
                &owned[..]
            }
        };
        chunk::decode(layout, record, out)
            .map_err(|e| PackError::corrupt(&self.path, format!("{what}, chunk {k}: {e}")))?;
        if hash64(out) != c.hash {
            return Err(PackError::corrupt(
                &self.path,
                format!("{what}, chunk {k}: checksum mismatch (file damaged)"),
            ));
        }
        Ok(())
    }

    /// Finds a tensor by `NAME` or `FILE::NAME`; errors if absent or ambiguous.
    pub fn find_tensor(&self, query: &str) -> Result<(usize, usize)> {
        let (file, name) = match query.rsplit_once("::") {
            Some((f, n)) => (Some(f), n),
            None => (None, query),
        };
        let hits: Vec<(usize, usize)> = self
            .index
            .tensors()
            .filter(|(fi, _, t)| {
                t.name == name && file.is_none_or(|f| self.index.files[*fi].path == f)
            })
            .map(|(fi, si, _)| (fi, si))
            .collect();
        match hits[..] {
            [one] => Ok(one),
            [] => Err(PackError::invalid(
                &self.path,
                format!("no tensor named `{query}`"),
            )),
            _ => Err(PackError::invalid(
                &self.path,
                format!("tensor `{name}` is in several files; name one as `FILE::{name}`"),
            )),
        }
    }
}

/// Splits a segment's chunks into batches of at most `per_batch` chunks and about
/// `BATCH_BYTES` raw bytes: (index of the first chunk, chunks). One chunk per thread keeps a
/// batch in cache for the whole-file checksum that follows it.
fn batches(
    chunks: &[ChunkEntry],
    per_batch: usize,
) -> impl Iterator<Item = (usize, &[ChunkEntry])> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= chunks.len() {
            return None;
        }
        let mut end = start;
        let mut bytes = 0u64;
        while end < chunks.len()
            && (end == start
                || (end - start < per_batch && bytes + chunks[end].raw_len as u64 <= BATCH_BYTES))
        {
            bytes += chunks[end].raw_len as u64;
            end += 1;
        }
        let batch = (start, &chunks[start..end]);
        start = end;
        Some(batch)
    })
}

/// Restores every file of an in-memory pack, refusing packs that claim more than
/// `max_output` bytes (used by tests and the fuzz target).
pub fn unpack_bytes(packed: &[u8], max_output: u64) -> Result<Vec<(String, Vec<u8>)>> {
    let p = Packed::open(packed, Path::new("<memory>"))?;
    let total: u64 = p.index.files.iter().map(|f| f.size).sum();
    if total > max_output {
        return Err(PackError::invalid(
            "<memory>",
            "pack claims more output than allowed",
        ));
    }
    let pool = Workers::new(1)?;
    let mut out = Vec::with_capacity(p.index.files.len());
    for (fi, f) in p.index.files.iter().enumerate() {
        let mut buf = vec![0u8; f.size as usize];
        p.restore_file_into(fi, &pool, &mut buf)?;
        out.push((f.path.clone(), buf));
    }
    Ok(out)
}

/// Report for a restore (filled in by the caller that times it).
pub fn report_for<S: Source>(p: &Packed<S>) -> UnpackReport {
    UnpackReport {
        packed_bytes: p.src.len(),
        ..UnpackReport::default()
    }
}
