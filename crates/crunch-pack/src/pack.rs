//! Packing: detect segments, cut them into chunks, code batches of chunks in parallel, write
//! them in order, then the index and footer.
//!
//! Memory stays bounded whatever the file size: inputs are read with positioned reads one
//! batch at a time (`BATCH_BYTES` of raw input plus its coded form), so a file larger than RAM
//! packs like any other. Output bytes do not depend on the thread count: chunking is fixed and
//! results are written in input order.

use crate::chunk;
use crate::detect;
use crate::error::{PackError, Result};
use crate::format::{self, ChunkEntry, FileEntry, Footer, Index, SegmentEntry};
use crate::hash::{hash64, StreamHasher};
use crate::io::{Sink, Source};
use crate::plane::{PlaneOptions, ZstdTrial};
use crate::report::PackReport;
use crate::workers::Workers;
use std::path::Path;
use std::time::Instant;

/// Raw bytes coded per batch: large enough to keep every thread busy, small enough to bound
/// memory (about twice this is held at once).
pub const BATCH_BYTES: usize = 32 << 20;

#[derive(Clone, Debug)]
pub struct PackOptions {
    /// Worker threads; 0 uses every core.
    pub threads: usize,
    /// Target raw bytes per chunk (rounded down to whole records).
    pub chunk_size: usize,
    pub plane: PlaneOptions,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            threads: 0,
            // Measured on the benchmark files (decision 032): 512 KiB chunks adapt to local
            // statistics and still amortise each plane's table and lane states.
            chunk_size: 512 << 10,
            plane: PlaneOptions::default(),
        }
    }
}

/// Reports progress as (bytes done, bytes total) over all input files.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// Writes a packed container to a sink, one input file at a time.
pub struct Packer<'a> {
    opts: &'a PackOptions,
    pool: &'a Workers,
    pos: u64,
    files: Vec<FileEntry>,
    pub report: PackReport,
    total_input: u64,
    done_input: u64,
}

/// A chunk's input: borrowed from an in-memory source, or read from a file.
enum Raw<'s> {
    Borrowed(&'s [u8]),
    Owned(Vec<u8>),
}

impl Raw<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Raw::Borrowed(b) => b,
            Raw::Owned(v) => v,
        }
    }
}

struct Job {
    seg: usize,
    offset: u64,
    len: usize,
}

impl<'a> Packer<'a> {
    /// Starts a pack whose inputs add up to `total_input` bytes (for progress only).
    pub fn start(
        opts: &'a PackOptions,
        pool: &'a Workers,
        total_input: u64,
        out: &mut dyn Sink,
    ) -> Result<Self> {
        out.put(&format::header())?;
        Ok(Packer {
            opts,
            pool,
            pos: format::HEADER_LEN,
            files: Vec::new(),
            report: PackReport::default(),
            total_input,
            done_input: 0,
        })
    }

    /// Packs one file. `path` is used in error messages only.
    pub fn add_file(
        &mut self,
        name: &str,
        src: &dyn Source,
        path: &Path,
        out: &mut dyn Sink,
        progress: Progress,
    ) -> Result<()> {
        let (kind, segs) = detect::segments(src);
        let mut jobs = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let rec = s.layout.record as usize;
            let step = (self.opts.chunk_size / rec * rec).max(rec) as u64;
            let mut at = 0;
            while at < s.len {
                let len = step.min(s.len - at) as usize;
                jobs.push(Job {
                    seg: i,
                    offset: s.offset + at,
                    len,
                });
                at += len as u64;
            }
        }
        let mut entries: Vec<SegmentEntry> = segs
            .iter()
            .map(|s| SegmentEntry {
                offset: s.offset,
                len: s.len,
                tensor: s.tensor.clone(),
                layout: s.layout.clone(),
                chunks: Vec::new(),
            })
            .collect();
        let opaque_opts = PlaneOptions {
            zstd: ZstdTrial::Always,
            ..self.opts.plane
        };
        let mut file_hash = StreamHasher::default();
        let per_batch = 2 * self.pool.threads();
        // One thread, input and output in memory: code each chunk straight into the output
        // buffer (no record copy, no hand-off).
        if let (Workers::Current, Some(all)) = (self.pool, src.as_slice()) {
            if let Some(vec) = out.as_vec() {
                for job in &jobs {
                    let seg = &segs[job.seg];
                    let raw = &all[job.offset as usize..job.offset as usize + job.len];
                    let popts = if seg.tensor.is_some() {
                        &self.opts.plane
                    } else {
                        &opaque_opts
                    };
                    let before = vec.len();
                    let stats = chunk::encode_into(&seg.layout, raw, popts, vec).map_err(|e| {
                        PackError::invalid(path, format!("coding bytes {}..: {e}", job.offset))
                    })?;
                    let len = vec.len() - before;
                    file_hash.update(raw);
                    entries[job.seg].chunks.push(ChunkEntry {
                        offset: self.pos,
                        packed_len: len as u32,
                        raw_len: job.len as u32,
                        hash: hash64(raw),
                    });
                    self.pos += len as u64;
                    self.report.add_chunk(seg, &stats, len);
                    self.done_input += job.len as u64;
                }
                progress(self.done_input, self.total_input);
                return self.finish_file(name, src.len(), file_hash.digest(), kind, &segs, entries);
            }
        }
        let mut start = 0;
        while start < jobs.len() {
            let mut end = start;
            let mut bytes = 0;
            // Two chunks per thread: enough to balance the threads, few enough that the
            // whole-file checksum below reads them from cache.
            while end < jobs.len()
                && (end == start
                    || (end - start < per_batch && bytes + jobs[end].len <= BATCH_BYTES))
            {
                bytes += jobs[end].len;
                end += 1;
            }
            let batch = &jobs[start..end];
            let coded: Vec<Result<_>> = self.pool.map(batch, |job| {
                let seg = &segs[job.seg];
                // In-memory sources are coded in place; files are read chunk by chunk.
                let raw = match src.as_slice() {
                    Some(all) => {
                        let at = job.offset as usize;
                        Raw::Borrowed(&all[at..at + job.len])
                    }
                    None => {
                        let mut buf = vec![0u8; job.len];
                        src.read_exact_at(job.offset, &mut buf)
                            .map_err(|e| PackError::io(path, e))?;
                        Raw::Owned(buf)
                    }
                };
                let popts = if seg.tensor.is_some() {
                    &self.opts.plane
                } else {
                    &opaque_opts
                };
                let (record, stats) =
                    chunk::encode(&seg.layout, raw.bytes(), popts).map_err(|e| {
                        PackError::invalid(path, format!("coding bytes {}..: {e}", job.offset))
                    })?;
                let hash = hash64(raw.bytes());
                Ok((raw, record, stats, hash))
            });
            for (job, res) in batch.iter().zip(coded) {
                let (raw, record, stats, hash) = res?;
                file_hash.update(raw.bytes());
                out.put(&record)?;
                entries[job.seg].chunks.push(ChunkEntry {
                    offset: self.pos,
                    packed_len: record.len() as u32,
                    raw_len: job.len as u32,
                    hash,
                });
                self.pos += record.len() as u64;
                self.report.add_chunk(&segs[job.seg], &stats, record.len());
                self.done_input += job.len as u64;
            }
            progress(self.done_input, self.total_input);
            start = end;
        }
        self.finish_file(name, src.len(), file_hash.digest(), kind, &segs, entries)
    }

    fn finish_file(
        &mut self,
        name: &str,
        size: u64,
        hash: u64,
        kind: detect::Kind,
        segs: &[detect::Segment],
        segments: Vec<SegmentEntry>,
    ) -> Result<()> {
        self.report.add_file(kind, segs, size);
        self.files.push(FileEntry {
            path: name.to_string(),
            size,
            hash,
            segments,
        });
        Ok(())
    }

    /// Writes the index and footer; returns the packed size.
    pub fn finish(mut self, is_dir: bool, out: &mut dyn Sink) -> Result<PackReport> {
        let index = Index {
            is_dir,
            files: self.files,
        }
        .to_bytes();
        let footer = Footer {
            index_offset: self.pos,
            index_len: index.len() as u64,
            index_hash: hash64(&index),
        };
        out.put(&index)?;
        out.put(&footer.to_bytes())?;
        self.pos += index.len() as u64 + format::FOOTER_LEN;
        self.report.output_bytes = self.pos;
        self.report.index_bytes = index.len() as u64;
        Ok(self.report)
    }
}

/// Packs one in-memory buffer as a single-file pack (tests, fuzzing, the benchmark).
pub fn pack_bytes(name: &str, data: &[u8], opts: &PackOptions) -> Result<(Vec<u8>, PackReport)> {
    let pool = Workers::new(opts.threads)?;
    // Room for the worst case (everything stored raw) so the buffer never moves.
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + (1 << 16));
    let t = Instant::now();
    let mut p = Packer::start(opts, &pool, data.len() as u64, &mut out)?;
    p.add_file(name, &data, Path::new(name), &mut out, &|_, _| {})?;
    let mut report = p.finish(false, &mut out)?;
    report.seconds = t.elapsed().as_secs_f64();
    report.threads = pool.threads();
    Ok((out, report))
}
