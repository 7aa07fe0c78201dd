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

/// Most raw bytes decoded per batch (bounds memory at about three times this: the batch being
/// decoded, the one being written, and the packed chunks read).
const BATCH_BYTES: u64 = 32 << 20;
/// Raw bytes per thread a batch aims for (eight default chunks). Every batch ends in a
/// barrier where the workers wait for the slowest chunk and go to sleep; measured on the BF16
/// MiniLM file with 2 threads and a reused buffer: 1.9 GB/s at 256 KiB per thread, 3.1 at
/// 1 MiB, 3.5-3.7 at 4 MiB, no better above (the memory bound is BATCH_BYTES).
const PER_THREAD: u64 = 4 << 20;

thread_local! {
    /// Chunk records read from a file, one buffer per thread reused from chunk to chunk (a
    /// fresh one would be zeroed and faulted in for every chunk).
    static RECORD: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

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
        let mut hasher = StreamHasher::default();
        let mut finish = |part: &[u8]| {
            hasher.update(part);
            progress(part.len() as u64);
            sink.put(part)
        };
        // Two buffers: batch k is hashed and written while batch k + 1 is decoded.
        let mut bufs = [Vec::new(), Vec::new()];
        let (mut prev_len, mut chunks) = (0, 0);
        for batch in batches(self.file_jobs(fi), pool.threads()) {
            let len = batch_len(&batch);
            let [next, prev] = &mut bufs;
            // Only grows: every byte of `next[..len]` is decoded over before it is read.
            if next.len() < len {
                next.resize(len, 0);
            }
            let part = &mut next[..len];
            let (decoded, written) = pool.overlap(
                || self.decode_batch(fi, &batch, pool, part),
                || finish(&prev[..prev_len]),
            );
            written?;
            decoded?;
            bufs.swap(0, 1);
            prev_len = len;
            chunks += batch.len() as u64;
        }
        finish(&bufs[1][..prev_len])?;
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
        let (mut rest, mut prev): (&mut [u8], &[u8]) = (out, &[]);
        for batch in batches(self.file_jobs(fi), pool.threads()) {
            let (part, tail) = std::mem::take(&mut rest).split_at_mut(batch_len(&batch));
            rest = tail;
            // The previous batch is hashed while this one is decoded.
            let (decoded, ()) = pool.overlap(
                || self.decode_batch(fi, &batch, pool, part),
                || hasher.update(prev),
            );
            decoded?;
            prev = part;
            chunks += batch.len() as u64;
        }
        hasher.update(prev);
        self.check_file_hash(fi, hasher.digest())?;
        Ok(chunks)
    }

    /// Restores file `fi` into a new buffer of its size (the in-memory API).
    pub fn restore_file_vec(&self, fi: usize, pool: &Workers) -> Result<Vec<u8>> {
        let mut out = crate::alloc::output_buffer(self.index.files[fi].size as usize, pool);
        self.restore_file_into(fi, pool, &mut out)?;
        Ok(out)
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
        let jobs = seg
            .chunks
            .iter()
            .enumerate()
            .map(|(k, chunk)| Job { si, k, chunk });
        let mut buf = Vec::new();
        for batch in batches(jobs, pool.threads()) {
            let len = batch_len(&batch);
            if buf.len() < len {
                buf.resize(len, 0);
            }
            self.decode_batch(fi, &batch, pool, &mut buf[..len])?;
            sink.put(&buf[..len])?;
        }
        Ok(seg.chunks.len() as u64)
    }

    /// Every chunk of file `fi` in file order (segments tile the file, chunks their segment).
    fn file_jobs(&self, fi: usize) -> impl Iterator<Item = Job<'_>> {
        self.index.files[fi]
            .segments
            .iter()
            .enumerate()
            .flat_map(|(si, seg)| {
                seg.chunks
                    .iter()
                    .enumerate()
                    .map(move |(k, chunk)| Job { si, k, chunk })
            })
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

    /// Decodes consecutive chunks of file `fi` (possibly of several segments) in parallel
    /// into `out` (their raw lengths end to end).
    fn decode_batch(&self, fi: usize, jobs: &[Job], pool: &Workers, out: &mut [u8]) -> Result<()> {
        let mut items = Vec::with_capacity(jobs.len());
        let mut rest = out;
        for job in jobs {
            let (head, tail) = rest.split_at_mut(job.chunk.raw_len as usize);
            items.push((*job, head));
            rest = tail;
        }
        let segs = &self.index.files[fi].segments;
        pool.try_for_each(items, |(job, part)| {
            let seg = &segs[job.si];
            // The tensor or byte range is only spelled out when there is an error to report.
            let fail = |m: String| {
                let what = self.describe(fi, seg);
                PackError::corrupt(&self.path, format!("{what}, chunk {}: {m}", job.k))
            };
            self.decode_chunk(&seg.layout, job.chunk, part, fail)
        })
    }

    fn decode_chunk(
        &self,
        layout: &Layout,
        c: &ChunkEntry,
        out: &mut [u8],
        fail: impl Fn(String) -> PackError,
    ) -> Result<()> {
        let len = c.packed_len as usize;
        match self.src.as_slice() {
            Some(all) => {
                let record = &all[c.offset as usize..c.offset as usize + len];
                chunk::decode(layout, record, out).map_err(|e| fail(e.to_string()))?;
            }
            None => RECORD.with_borrow_mut(|buf| {
                // Only grows: the read overwrites every byte that is then used.
                if buf.len() < len {
                    buf.resize(len, 0);
                }
                let record = &mut buf[..len];
                self.src
                    .read_exact_at(c.offset, record)
                    .map_err(|e| PackError::io(&self.path, e))?;
                chunk::decode(layout, record, out).map_err(|e| fail(e.to_string()))
            })?,
        }
        if hash64(out) != c.hash {
            return Err(fail("checksum mismatch (file damaged)".into()));
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

/// One chunk to restore: its segment, its number in the segment (for messages), its entry.
#[derive(Clone, Copy)]
struct Job<'a> {
    si: usize,
    k: usize,
    chunk: &'a ChunkEntry,
}

fn batch_len(jobs: &[Job]) -> usize {
    jobs.iter().map(|j| j.chunk.raw_len as usize).sum()
}

/// Groups chunks (in file order, across segment boundaries) into batches decoded in parallel
/// and then written in order. A batch closes once it holds `PER_THREAD` raw bytes per thread,
/// so that many small tensors still give every thread work, and never exceeds `BATCH_BYTES`
/// (unless one chunk alone does), which bounds memory.
fn batches<'a>(
    jobs: impl Iterator<Item = Job<'a>>,
    threads: usize,
) -> impl Iterator<Item = Vec<Job<'a>>> {
    let target = batch_target(threads);
    let mut jobs = jobs.peekable();
    std::iter::from_fn(move || {
        let mut batch = Vec::new();
        let mut bytes = 0u64;
        while let Some(next) = jobs.peek() {
            let len = next.chunk.raw_len as u64;
            if !batch.is_empty() && (bytes >= target || bytes + len > BATCH_BYTES) {
                break;
            }
            bytes += len;
            batch.push(jobs.next().expect("peeked"));
        }
        (!batch.is_empty()).then_some(batch)
    })
}

/// Raw bytes after which a batch closes. One thread has nothing to balance: a chunk per batch
/// keeps it in cache for the whole-file hash that follows.
fn batch_target(threads: usize) -> u64 {
    match threads {
        1 => 1,
        n => (n as u64 * PER_THREAD).min(BATCH_BYTES),
    }
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
        out.push((f.path.clone(), p.restore_file_vec(fi, &pool)?));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(sizes: &[(usize, u32)]) -> Vec<ChunkEntry> {
        sizes
            .iter()
            .map(|&(_, raw_len)| ChunkEntry {
                offset: 0,
                packed_len: 0,
                raw_len,
                hash: 0,
            })
            .collect()
    }

    #[test]
    fn batches_cross_segments_in_order_and_stay_bounded() {
        // (segment, raw length): tiny tensors, empty gaps, chunk-sized and huge chunks.
        let mut sizes = vec![];
        for si in 0..200 {
            sizes.push((si, [10, 300_000, 4, 512 << 10, 40 << 20][si % 5]));
        }
        let chunks = jobs(&sizes);
        for threads in [1, 2, 7] {
            let all = sizes
                .iter()
                .zip(&chunks)
                .map(|(&(si, _), chunk)| Job { si, k: 0, chunk });
            let got: Vec<Vec<Job>> = batches(all, threads).collect();
            let flat: Vec<usize> = got.iter().flatten().map(|j| j.si).collect();
            assert_eq!(flat, (0..200).collect::<Vec<_>>(), "order");
            let target = batch_target(threads);
            for (i, b) in got.iter().enumerate() {
                let len = batch_len(b) as u64;
                assert!(len <= BATCH_BYTES || b.len() == 1, "batch over the bound");
                let last = i + 1 == got.len();
                let next = got.get(i + 1).map_or(0, |n| n[0].chunk.raw_len as u64);
                // A batch only closes early when the next chunk would break the bound.
                assert!(last || len >= target || len + next > BATCH_BYTES);
            }
            let crossing = got.iter().any(|b| b[0].si != b.last().unwrap().si);
            assert_eq!(crossing, threads > 1);
        }
    }
}
