//! Read-only memory maps of input files, and what happens when such a file shrinks.
//!
//! A memory-mapped file that another process truncates makes every read past its new end
//! raise SIGBUS, which by default kills the process with no message. Two defences:
//!
//! - [`MappedFile::check_whole`] compares the file's current length with the mapped length
//!   before a tensor is handed out, so a file truncated before the read gives an ordinary
//!   error naming it;
//! - every live map is listed in a process-wide registry ([`file_at`]), so a SIGBUS handler
//!   (installed by the CLI, see `crunch_export::interrupt`) can name the file whose bytes
//!   vanished mid-read, the one case the check cannot catch (truncated during the copy).

use crate::{FormatError, Result};
use memmap2::Mmap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// (start address, length, path) of every live map.
static MAPS: Mutex<Vec<(usize, usize, PathBuf)>> = Mutex::new(Vec::new());

/// The input file whose map holds address `addr`, if any. Never blocks (it is called from a
/// signal handler): `None` when the registry is busy.
pub fn file_at(addr: usize) -> Option<PathBuf> {
    let maps = MAPS.try_lock().ok()?;
    maps.iter()
        .find(|(start, len, _)| addr >= *start && addr < start + len)
        .map(|(_, _, p)| p.clone())
}

/// Every mapped input file, for a message when the faulting address is not known.
pub fn mapped_files() -> Vec<PathBuf> {
    MAPS.try_lock()
        .map(|m| m.iter().map(|(_, _, p)| p.clone()).collect())
        .unwrap_or_default()
}

/// A file mapped read-only, its open handle kept to notice truncation.
pub struct MappedFile {
    path: PathBuf,
    file: File,
    mmap: Mmap,
}

impl MappedFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| FormatError::io(path, e))?;
        // SAFETY: a read-only map; crunch never writes to its inputs. Another process could
        // change or truncate the file under us: changed bytes give wrong values (never unsafe
        // for the copying reads done here); truncation is caught by `check_whole` before a
        // read, and during one by the SIGBUS handler, which names the file and exits.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| FormatError::io(path, e))?;
        if !mmap.is_empty() {
            let mut maps = MAPS.lock().unwrap_or_else(|e| e.into_inner());
            maps.push((mmap.as_ptr() as usize, mmap.len(), path.to_path_buf()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            mmap,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.mmap
    }

    /// An error if the file is now shorter than when it was mapped (reading the lost bytes
    /// would raise SIGBUS).
    pub fn check_whole(&self) -> Result<()> {
        let now = self
            .file
            .metadata()
            .map_err(|e| FormatError::io(&self.path, e))?
            .len();
        if now < self.mmap.len() as u64 {
            return Err(FormatError::invalid(
                &self.path,
                format!(
                    "the file shrank from {} to {now} bytes while crunch was reading it \
                     (truncated or rewritten by another program); nothing was written",
                    self.mmap.len()
                ),
            ));
        }
        Ok(())
    }
}

impl std::ops::Deref for MappedFile {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.mmap
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        let start = self.mmap.as_ptr() as usize;
        let mut maps = MAPS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = maps.iter().position(|(s, _, _)| *s == start) {
            maps.swap_remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinking_is_noticed_and_maps_are_registered() {
        let f = tempfile::Builder::new().suffix("x.bin").tempfile().unwrap();
        f.as_file().set_len(4096).unwrap();
        let m = MappedFile::open(f.path()).unwrap();
        assert!(m.check_whole().is_ok());
        let addr = m.bytes().as_ptr() as usize + 100;
        assert_eq!(file_at(addr).as_deref(), Some(f.path()));
        f.as_file().set_len(10).unwrap();
        let e = m.check_whole().unwrap_err().to_string();
        assert!(e.contains("x.bin") && e.contains("shrank"), "{e}");
        drop(m);
        assert_eq!(file_at(addr), None);
    }
}
