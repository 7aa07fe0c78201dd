use crate::{Error, Result};
use std::path::Path;

/// Builds a directory at `out` by calling `fill` on a fresh temporary directory beside it, then
/// renaming. Refuses an existing `out` unless `overwrite`; on error the temporary is removed.
pub fn atomic_dir(
    out: &Path,
    overwrite: bool,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    if out.exists() && !overwrite {
        return Err(Error::Other(format!(
            "{}: already exists (pass --force to replace it)",
            out.display()
        )));
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| Error::Other(format!("{}: {e}", parent.display())))?;
    let name = out
        .file_name()
        .ok_or_else(|| Error::Other(format!("{}: not a directory name", out.display())))?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(|e| Error::Other(format!("{}: {e}", tmp.display())))?;
    let result = fill(&tmp).and_then(|()| {
        if out.exists() {
            std::fs::remove_dir_all(out)
                .map_err(|e| Error::Other(format!("{}: {e}", out.display())))?;
        }
        std::fs::rename(&tmp, out).map_err(|e| Error::Other(format!("{}: {e}", out.display())))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Writes a file at `out` by calling `fill` on a fresh temporary file beside it, then syncing
/// and renaming. Refuses an existing `out` unless `overwrite`; on error the temporary is
/// removed and `out` is untouched.
pub fn atomic_file(
    out: &Path,
    overwrite: bool,
    fill: impl FnOnce(&mut std::fs::File) -> Result<()>,
) -> Result<()> {
    if out.exists() && !overwrite {
        return Err(Error::Other(format!(
            "{}: already exists (pass --force to replace it)",
            out.display()
        )));
    }
    if out.is_dir() {
        return Err(Error::Other(format!(
            "{}: is a directory, not a file name",
            out.display()
        )));
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| Error::Other(format!("{}: {e}", parent.display())))?;
    let name = out
        .file_name()
        .ok_or_else(|| Error::Other(format!("{}: not a file name", out.display())))?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let io = |p: &Path, e: std::io::Error| Error::Other(format!("{}: {e}", p.display()));
    let result = std::fs::File::create(&tmp)
        .map_err(|e| io(&tmp, e))
        .and_then(|mut f| {
            fill(&mut f)?;
            f.sync_all().map_err(|e| io(&tmp, e))
        })
        .and_then(|()| std::fs::rename(&tmp, out).map_err(|e| io(out, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_leaves_nothing_and_existing_output_is_kept() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("model");
        let r = atomic_dir(&out, false, |tmp| {
            std::fs::write(tmp.join("a"), b"x").unwrap();
            Err(Error::Other("boom".into()))
        });
        assert!(r.is_err() && !out.exists());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        atomic_dir(&out, false, |tmp| {
            std::fs::write(tmp.join("a"), b"1").map_err(|e| Error::Other(e.to_string()))
        })
        .unwrap();
        let again = atomic_dir(&out, false, |_| Ok(()));
        assert!(again.unwrap_err().to_string().contains("already exists"));
        assert_eq!(std::fs::read(out.join("a")).unwrap(), b"1");
    }

    #[test]
    fn file_failure_leaves_nothing_and_existing_file_is_kept() {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("m.gguf");
        let r = atomic_file(&out, false, |f| {
            f.write_all(b"partial").unwrap();
            Err(Error::Other("boom".into()))
        });
        assert!(r.is_err() && !out.exists());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        atomic_file(&out, false, |f| {
            f.write_all(b"1").map_err(|e| Error::Other(e.to_string()))
        })
        .unwrap();
        let again = atomic_file(&out, false, |_| Ok(()));
        assert!(again.unwrap_err().to_string().contains("already exists"));
        assert_eq!(std::fs::read(&out).unwrap(), b"1");
        atomic_file(&out, true, |f| {
            f.write_all(b"2").map_err(|e| Error::Other(e.to_string()))
        })
        .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"2");
    }
}
