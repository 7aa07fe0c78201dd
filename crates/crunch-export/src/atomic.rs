use crate::output::{
    parent_of, prepare_output, replace_with, temp_path, OutputKind, MARKER, MARKER_TEXT,
};
use crate::{Error, Result};
use std::path::Path;

/// Builds a directory at `out` by calling `fill` on a fresh temporary directory beside it
/// (`.NAME.tmp-PID`), adds crunch's marker file, then renames it into place. `out` is checked
/// against `inputs` and `overwrite` first ([`crate::output::check_output`]: never an input,
/// never a directory crunch did not write); on error the temporary is removed.
pub fn atomic_dir(
    out: &Path,
    inputs: &[&Path],
    overwrite: bool,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    prepare_output(out, inputs, OutputKind::Dir, overwrite)?;
    let parent = parent_of(out);
    std::fs::create_dir_all(&parent).map_err(Error::io(&parent))?;
    let tmp = temp_path(out)?;
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(Error::io(&tmp))?;
    let result = fill(&tmp).and_then(|()| {
        let marker = tmp.join(MARKER);
        std::fs::write(&marker, MARKER_TEXT).map_err(Error::io(&marker))?;
        replace_with(&tmp, out)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Writes a single file at `out` the same way: `fill` writes the temporary file
/// (`.NAME.tmp-PID`), which is synced and renamed into place when complete.
pub fn atomic_file(
    out: &Path,
    inputs: &[&Path],
    overwrite: bool,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    prepare_output(out, inputs, OutputKind::File, overwrite)?;
    let tmp = temp_path(out)?;
    let result = fill(&tmp).and_then(|()| {
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(Error::io(&tmp))?;
        std::fs::rename(&tmp, out).map_err(Error::io(out))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boom() -> Error {
        Error::io(Path::new("x"))(std::io::Error::other("boom"))
    }

    #[test]
    fn failure_leaves_nothing_and_existing_output_is_kept() {
        let _temps = crate::output::tests::making_temps();
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("model");
        let r = atomic_dir(&out, &[], false, |tmp| {
            std::fs::write(tmp.join("a"), b"x").unwrap();
            Err(boom())
        });
        assert!(r.is_err() && !out.exists());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        atomic_dir(&out, &[], false, |tmp| {
            std::fs::write(tmp.join("a"), b"1").map_err(Error::io(tmp))
        })
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join(MARKER)).unwrap(),
            MARKER_TEXT
        );
        let again = atomic_dir(&out, &[], false, |_| Ok(()));
        assert!(again.unwrap_err().to_string().contains("already exists"));
        assert_eq!(std::fs::read(out.join("a")).unwrap(), b"1");
        // With overwrite, crunch's own output is replaced, and nothing else is left around.
        atomic_dir(&out, &[], true, |tmp| {
            std::fs::write(tmp.join("b"), b"2").map_err(Error::io(tmp))
        })
        .unwrap();
        assert!(!out.join("a").exists() && out.join("b").exists());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_users_directory_is_never_replaced() {
        let _temps = crate::output::tests::making_temps();
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("mine");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("notes.txt"), b"keep").unwrap();
        let e = atomic_dir(&out, &[], true, |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("did not write"), "{e}");
        assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"keep");
    }

    #[test]
    fn single_files_appear_whole_or_not_at_all() {
        let _temps = crate::output::tests::making_temps();
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("m.gguf");
        let r = atomic_file(&out, &[], false, |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err(boom())
        });
        assert!(r.is_err() && !out.exists());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        let fill = |tmp: &Path| std::fs::write(tmp, b"all").map_err(Error::io(tmp));
        atomic_file(&out, &[], false, fill).unwrap();
        assert!(atomic_file(&out, &[], false, fill).is_err());
        atomic_file(&out, &[], true, fill).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"all");
    }
}
