//! The file-level operations behind `crunch pack` and `crunch unpack`: single files or whole
//! directories in, temporary outputs renamed into place only when complete and checked.

use crate::error::{PackError, Result};
use crate::io::{
    check_free, out_name, parent_dir, temp_beside, AtomicFile, FileSource, Sink, Source,
};
use crate::pack::{PackOptions, Packer, Progress};
use crate::report::{PackReport, UnpackReport};
use crate::unpack::Packed;
use crate::workers::Workers;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The files to pack: (name stored in the pack, path on disk).
pub struct Inputs {
    pub is_dir: bool,
    pub files: Vec<(String, PathBuf)>,
}

pub fn collect_inputs(input: &Path) -> Result<Inputs> {
    let meta = std::fs::metadata(input).map_err(|e| PackError::io(input, e))?;
    if meta.is_file() {
        let name = input
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| PackError::invalid(input, "file name is not UTF-8"))?;
        return Ok(Inputs {
            is_dir: false,
            files: vec![(name.to_string(), input.to_path_buf())],
        });
    }
    if !meta.is_dir() {
        return Err(PackError::invalid(input, "neither a file nor a directory"));
    }
    let mut files = Vec::new();
    walk(input, "", &mut files)?;
    // Sorted so the same directory always packs to the same bytes.
    files.sort();
    Ok(Inputs {
        is_dir: true,
        files,
    })
}

/// The marker file of a directory crunch wrote (the same name as
/// `crunch_export::output::MARKER`; crunch-pack stands alone). It is crunch's bookkeeping,
/// not content: packing leaves it out, unpacking a directory writes it.
pub const OUTPUT_MARKER: &str = ".crunch-output";
const OUTPUT_MARKER_TEXT: &str = "This directory was written by crunch. `crunch ... --force` may \
replace it; crunch never replaces a non-empty directory without this file.\n";

fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| PackError::io(dir, e))? {
        let entry = entry.map_err(|e| PackError::io(dir, e))?;
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| PackError::invalid(&path, "file name is not UTF-8"))?;
        if prefix.is_empty() && name == OUTPUT_MARKER {
            continue;
        }
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let ft = entry.file_type().map_err(|e| PackError::io(&path, e))?;
        if ft.is_dir() {
            walk(&path, &rel, out)?;
            continue;
        }
        // Links to files are followed (model caches link weights into snapshots); links to
        // directories could loop and are refused.
        let meta = std::fs::metadata(&path).map_err(|e| PackError::io(&path, e))?;
        if meta.is_file() {
            out.push((rel, path));
        } else {
            return Err(PackError::invalid(
                &path,
                "not a regular file (links to directories, devices and sockets are not packed)",
            ));
        }
    }
    Ok(())
}

/// Refuses outputs that would overwrite or land inside the input.
fn check_not_inside(input: &Path, output: &Path) -> Result<()> {
    let inp = input.canonicalize().map_err(|e| PackError::io(input, e))?;
    let out_parent = parent_dir(output)
        .canonicalize()
        .map_err(|e| PackError::io(output, e))?;
    let out = out_parent.join(output.file_name().unwrap_or_default());
    if out == inp || out.starts_with(&inp) {
        return Err(PackError::invalid(
            output,
            "output would overwrite or sit inside the input",
        ));
    }
    Ok(())
}

/// Packs a file or directory to `output`. With `verify`, the written pack is decoded and
/// compared byte for byte with the input before it is renamed into place.
pub fn pack_path(
    input: &Path,
    output: &Path,
    opts: &PackOptions,
    verify: bool,
    force: bool,
    progress: Progress,
) -> Result<PackReport> {
    let t = Instant::now();
    let inputs = collect_inputs(input)?;
    check_free(output, force)?;
    check_not_inside(input, output)?;
    let pool = Workers::new(opts.threads)?;
    let sources = inputs
        .files
        .iter()
        .map(|(_, p)| FileSource::open(p))
        .collect::<Result<Vec<_>>>()?;
    let total = sources.iter().map(|s| s.len()).sum();
    let mut out = AtomicFile::create(output, force)?;
    let mut packer = Packer::start(opts, &pool, total, &mut out)?;
    for ((name, path), src) in inputs.files.iter().zip(&sources) {
        packer.add_file(name, src, path, &mut out, progress)?;
    }
    let mut report = packer.finish(inputs.is_dir, &mut out)?;
    out.flush()?;
    report.threads = pool.threads();
    report.seconds = t.elapsed().as_secs_f64();
    if verify {
        let packed = Packed::open(FileSource::open(out.temp_path())?, output)?;
        for (fi, ((_, path), src)) in inputs.files.iter().zip(&sources).enumerate() {
            let mut cmp = CompareSink { src, path, at: 0 };
            packed.restore_file(fi, &pool, &mut cmp, &mut |_| {})?;
            if cmp.at != src.len() {
                return Err(PackError::corrupt(
                    output,
                    format!("verify: `{}` restored short", path.display()),
                ));
            }
        }
        report.verify_seconds = Some(t.elapsed().as_secs_f64() - report.seconds);
    }
    out.finish(force)?;
    Ok(report)
}

/// Compares restored bytes with the original file (for `--verify`).
struct CompareSink<'a> {
    src: &'a FileSource,
    path: &'a Path,
    at: u64,
}

impl Sink for CompareSink<'_> {
    fn put(&mut self, data: &[u8]) -> Result<()> {
        let mut orig = vec![0u8; data.len()];
        self.src
            .read_exact_at(self.at, &mut orig)
            .map_err(|e| PackError::io(self.path, e))?;
        if orig != data {
            return Err(PackError::corrupt(
                self.path,
                format!("verify: restored bytes differ near offset {}", self.at),
            ));
        }
        self.at += data.len() as u64;
        Ok(())
    }
}

#[derive(Clone, Debug, Default)]
pub struct UnpackOptions {
    pub threads: usize,
    pub force: bool,
    /// Restore only this tensor (`NAME` or `FILE::NAME`), as raw little-endian bytes.
    pub tensor: Option<String>,
}

/// Restores a pack to `output`: a file, a directory (for directory packs), or one tensor.
pub fn unpack_path(
    packed_path: &Path,
    output: &Path,
    opts: &UnpackOptions,
    progress: Progress,
) -> Result<UnpackReport> {
    let t = Instant::now();
    let packed = Packed::open(FileSource::open(packed_path)?, packed_path)?;
    check_free(output, opts.force)?;
    if output.canonicalize().ok()
        == Some(
            packed_path
                .canonicalize()
                .map_err(|e| PackError::io(packed_path, e))?,
        )
    {
        return Err(PackError::invalid(
            output,
            "output would overwrite the packed file",
        ));
    }
    let pool = Workers::new(opts.threads)?;
    let mut report = crate::unpack::report_for(&packed);
    let total: u64 = packed.index.files.iter().map(|f| f.size).sum();
    let mut done = 0u64;
    let mut tick = |n: u64| {
        done += n;
        progress(done, total);
    };
    if let Some(q) = &opts.tensor {
        let (fi, si) = packed.find_tensor(q)?;
        let mut out = AtomicFile::create(output, opts.force)?;
        report.chunks = packed.restore_segment(fi, si, &pool, &mut out)?;
        report.output_bytes = packed.index.files[fi].segments[si].len;
        out.finish(opts.force)?;
    } else if !packed.index.is_dir {
        let mut out = AtomicFile::create(output, opts.force)?;
        report.chunks = packed.restore_file(0, &pool, &mut out, &mut tick)?;
        report.output_bytes = packed.index.files[0].size;
        out.finish(opts.force)?;
    } else {
        unpack_dir(&packed, output, opts.force, &pool, &mut report, &mut tick)?;
    }
    report.files = if opts.tensor.is_some() {
        1
    } else {
        packed.index.files.len() as u64
    };
    report.threads = pool.threads();
    report.seconds = t.elapsed().as_secs_f64();
    Ok(report)
}

/// Restores every file into a temporary directory beside `output`, then renames it.
fn unpack_dir(
    packed: &Packed<FileSource>,
    output: &Path,
    force: bool,
    pool: &Workers,
    report: &mut UnpackReport,
    tick: &mut dyn FnMut(u64),
) -> Result<()> {
    let tmp = temp_beside(output, 0o777, |b, dir| b.tempdir_in(dir))?;
    for (fi, f) in packed.index.files.iter().enumerate() {
        let dest = tmp.path().join(&f.path);
        let dir = parent_dir(&dest);
        std::fs::create_dir_all(&dir).map_err(|e| PackError::io(&dir, e))?;
        let mut out = AtomicFile::create(&dest, false)?;
        report.chunks += packed.restore_file(fi, pool, &mut out, tick)?;
        out.finish(false)?;
        report.output_bytes += f.size;
    }
    // The marker that lets a later `--force` replace this directory (crunch_export::output).
    let marker = tmp.path().join(OUTPUT_MARKER);
    if !marker.exists() {
        std::fs::write(&marker, OUTPUT_MARKER_TEXT).map_err(|e| PackError::io(&marker, e))?;
    }
    if force && output.symlink_metadata().is_ok() {
        let old =
            output.with_file_name(format!(".{}.old-{}", out_name(output), std::process::id()));
        std::fs::rename(output, &old).map_err(|e| PackError::io(output, e))?;
        std::fs::rename(tmp.path(), output).map_err(|e| PackError::io(output, e))?;
        let removed = if old.is_dir() {
            std::fs::remove_dir_all(&old)
        } else {
            std::fs::remove_file(&old)
        };
        removed.map_err(|e| PackError::io(&old, e))?;
    } else {
        std::fs::rename(tmp.path(), output).map_err(|e| PackError::io(output, e))?;
    }
    let _ = tmp.keep();
    Ok(())
}
