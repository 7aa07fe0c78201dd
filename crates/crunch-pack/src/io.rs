//! Positioned reads from files or memory, and outputs that appear under their final name only
//! once complete.

use crate::error::{PackError, Result};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Something to read at arbitrary offsets from several threads (a file or a byte buffer).
pub trait Source: Sync {
    fn len(&self) -> u64;
    /// Fills `buf` from `offset`; fails if the source ends first.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The bytes themselves, for sources already in memory (saves a copy per chunk).
    fn as_slice(&self) -> Option<&[u8]> {
        None
    }
}

/// A file with its length fixed at open (a file that changes while packed gives an error, not
/// a wrong pack: every read must return what was asked for).
pub struct FileSource {
    pub file: File,
    len: u64,
}

impl FileSource {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| PackError::io(path, e))?;
        let meta = file.metadata().map_err(|e| PackError::io(path, e))?;
        if !meta.is_file() {
            return Err(PackError::invalid(path, "not a regular file"));
        }
        Ok(FileSource {
            file,
            len: meta.len(),
        })
    }
}

impl Source for FileSource {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(buf, offset)
    }
}

impl Source for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn as_slice(&self) -> Option<&[u8]> {
        Some(self)
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).ok();
        let end = start.and_then(|s| s.checked_add(buf.len()));
        match (start, end) {
            (Some(s), Some(e)) if e <= <[u8]>::len(self) => {
                buf.copy_from_slice(&self[s..e]);
                Ok(())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end",
            )),
        }
    }
}

/// Where restored bytes go, in order.
pub trait Sink {
    fn put(&mut self, data: &[u8]) -> Result<()>;
    /// The sink's buffer, when it is one, so a single-threaded packer can code into it directly.
    fn as_vec(&mut self) -> Option<&mut Vec<u8>> {
        None
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, data: &[u8]) -> Result<()> {
        self.extend_from_slice(data);
        Ok(())
    }
    fn as_vec(&mut self) -> Option<&mut Vec<u8>> {
        Some(self)
    }
}

/// A sink that writes to a temporary file beside the destination; `finish` renames it into
/// place. Dropped unfinished, the temporary file is removed.
pub struct AtomicFile {
    tmp: io::BufWriter<tempfile::NamedTempFile>,
    dest: PathBuf,
}

impl AtomicFile {
    pub fn create(dest: &Path, force: bool) -> Result<Self> {
        check_free(dest, force)?;
        let tmp = temp_beside(dest, 0o666, |b, dir| b.tempfile_in(dir))?;
        Ok(AtomicFile {
            tmp: io::BufWriter::with_capacity(1 << 20, tmp),
            dest: dest.to_path_buf(),
        })
    }

    /// The temporary file's path (to read back for `--verify` before renaming).
    pub fn temp_path(&self) -> &Path {
        self.tmp.get_ref().path()
    }

    pub fn flush(&mut self) -> Result<()> {
        self.tmp.flush().map_err(|e| PackError::io(&self.dest, e))
    }

    pub fn finish(self, force: bool) -> Result<()> {
        let dest = self.dest;
        let tmp = self
            .tmp
            .into_inner()
            .map_err(|e| PackError::io(&dest, e.into_error()))?;
        // Durable before it is visible: a crash must not leave a short file under the name.
        tmp.as_file()
            .sync_all()
            .map_err(|e| PackError::io(&dest, e))?;
        let res = if force {
            tmp.persist(&dest)
        } else {
            tmp.persist_noclobber(&dest)
        };
        res.map_err(|e| PackError::io(&dest, e.error))?;
        Ok(())
    }
}

impl Sink for AtomicFile {
    fn put(&mut self, data: &[u8]) -> Result<()> {
        self.tmp
            .write_all(data)
            .map_err(|e| PackError::io(&self.dest, e))
    }
}

/// Refuses an existing destination unless `force`.
pub fn check_free(dest: &Path, force: bool) -> Result<()> {
    if !force && dest.symlink_metadata().is_ok() {
        return Err(PackError::invalid(
            dest,
            "already exists (use --force to overwrite)",
        ));
    }
    Ok(())
}

/// Prefix of the temporary names for output `name`: `.NAME.tmp-PID.`.
fn temp_prefix(name: &str) -> String {
    format!(".{name}.tmp-{}.", std::process::id())
}

/// `dest`'s file name, as its temporaries and leftovers are named after it.
pub fn out_name(dest: &Path) -> String {
    dest.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Makes (by `make`: a file or a directory) the temporary that `dest` is written to first:
/// beside it, named `.NAME.tmp-PID.XXXXXX.crunch-tmp` (the process id lets a later run tell a
/// dead run's leftover from a live one's, crunch_export::output), created with `mode` less the
/// umask like any new file or directory (tempfile's own default is owner-only).
pub fn temp_beside<T>(
    dest: &Path,
    mode: u32,
    make: impl FnOnce(&tempfile::Builder, &Path) -> io::Result<T>,
) -> Result<T> {
    let dir = parent_dir(dest);
    let prefix = temp_prefix(&out_name(dest));
    let mut b = tempfile::Builder::new();
    b.prefix(&prefix)
        .suffix(".crunch-tmp")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(mode));
    make(&b, &dir).map_err(|e| PackError::io(&dir, e))
}

pub fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_file_appears_only_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        {
            let mut f = AtomicFile::create(&dest, false).unwrap();
            f.put(b"partial").unwrap();
            // dropped unfinished
        }
        assert!(!dest.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temp file left behind"
        );
        let mut f = AtomicFile::create(&dest, false).unwrap();
        f.put(b"done").unwrap();
        f.finish(false).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"done");
        assert!(AtomicFile::create(&dest, false).is_err());
        let mut f = AtomicFile::create(&dest, true).unwrap();
        f.put(b"again").unwrap();
        f.finish(true).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"again");
    }

    #[test]
    fn slice_source_checks_bounds() {
        let s: &[u8] = b"hello";
        let mut b = [0u8; 3];
        s.read_exact_at(2, &mut b).unwrap();
        assert_eq!(&b, b"llo");
        assert!(s.read_exact_at(3, &mut b).is_err());
        assert!(s.read_exact_at(u64::MAX, &mut b).is_err());
    }
}
