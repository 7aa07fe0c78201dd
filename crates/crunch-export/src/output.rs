//! Where crunch may write, and what `--force` may replace.
//!
//! Every command that writes calls [`check_output`] before doing any work, and every
//! directory crunch writes carries a marker file ([`MARKER`]). The rules:
//!
//! - an output that is an input or contains an input is refused, `--force` or not (a new
//!   output inside an input directory is allowed: it replaces nothing of the input; `crunch
//!   pack`, whose input would then contain its output, refuses that itself);
//! - an existing output is refused without `--force`;
//! - with `--force`, crunch replaces only a directory that it wrote itself (it holds the
//!   marker) or that is empty, or a single regular file where the command writes a file —
//!   never a directory of the user's, never an input.
//!
//! Outputs are built under a temporary name beside the destination, `.NAME.tmp-PID` (with a
//! suffix for files), and renamed into place when complete. A run that is killed leaves that
//! temporary behind; the next run to the same destination removes every such temporary whose
//! process is gone ([`remove_stale_temps`]), and an interrupt (SIGINT, SIGTERM) removes the
//! current run's own (`crate::interrupt`).

use crate::{Error, Result};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

/// The file that marks a directory as written by crunch.
pub const MARKER: &str = ".crunch-output";

/// Its contents (fixed, so outputs stay byte-identical run to run).
pub const MARKER_TEXT: &str = "This directory was written by crunch. `crunch ... --force` may \
replace it; crunch never replaces a non-empty directory without this file.\n";

/// What a command writes at its output path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    Dir,
    File,
    /// A file or a directory, depending on the input (`crunch unpack`).
    Either,
}

/// Why a path cannot be an output.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutputProblem {
    #[error("not a usable output path")]
    NotUsable,
    #[error("is the input; crunch never writes over its input")]
    IsInput,
    #[error("contains the input {}; replacing it would delete the input", .0.display())]
    ContainsInput(PathBuf),
    #[error("already exists (pass --force to replace it)")]
    Exists,
    #[error("is a directory; --force replaces a single output file here, never a directory")]
    IsDirectory,
    #[error(
        "is a symbolic link; --force does not replace links (remove it, or pick another --out)"
    )]
    IsLink,
    #[error(
        "is a file; --force replaces only a directory crunch wrote (remove the file yourself, or \
         pick another --out)"
    )]
    IsFile,
    #[error(
        "is a directory crunch did not write (it has files and no {MARKER} marker); --force \
         replaces only crunch's own outputs, so remove it yourself or pick another --out"
    )]
    NotCrunchOutput,
}

fn refuse(out: &Path, problem: OutputProblem) -> Error {
    Error::Output {
        path: out.to_path_buf(),
        problem,
    }
}

/// `p` made absolute with every existing part resolved (links, `..`), the rest appended.
fn resolve(p: &Path) -> Result<PathBuf> {
    if p.symlink_metadata().is_ok() {
        return p.canonicalize().map_err(Error::io(p));
    }
    let name = match p.components().next_back() {
        Some(Component::Normal(n)) => n.to_owned(),
        _ => return Err(refuse(p, OutputProblem::NotUsable)),
    };
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(resolve(&parent)?.join(name))
}

/// Checks that a command reading `inputs` may write `kind` at `out` (see the module
/// comment). Call it before any long work, so a refused output costs nothing.
pub fn check_output(out: &Path, inputs: &[&Path], kind: OutputKind, force: bool) -> Result<()> {
    let out_abs = resolve(out)?;
    for input in inputs {
        let Ok(inp) = input.canonicalize() else {
            continue; // a missing input is its reader's error to report
        };
        if out_abs == inp {
            return Err(refuse(out, OutputProblem::IsInput));
        }
        if inp.starts_with(&out_abs) {
            let input = input.to_path_buf();
            return Err(refuse(out, OutputProblem::ContainsInput(input)));
        }
    }
    let Ok(meta) = out.symlink_metadata() else {
        return Ok(());
    };
    if !force {
        return Err(refuse(out, OutputProblem::Exists));
    }
    let is_link = meta.file_type().is_symlink();
    match kind {
        OutputKind::File | OutputKind::Either if !meta.is_dir() => Ok(()),
        OutputKind::File => Err(refuse(out, OutputProblem::IsDirectory)),
        OutputKind::Dir | OutputKind::Either => {
            if is_link {
                return Err(refuse(out, OutputProblem::IsLink));
            }
            if !meta.is_dir() {
                return Err(refuse(out, OutputProblem::IsFile));
            }
            if out.join(MARKER).is_file() || is_empty_dir(out) {
                return Ok(());
            }
            Err(refuse(out, OutputProblem::NotCrunchOutput))
        }
    }
}

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p).is_ok_and(|mut it| it.next().is_none())
}

/// The temporary name this process builds `out` under (`.NAME.tmp-PID`).
pub fn temp_path(out: &Path) -> Result<PathBuf> {
    Ok(parent_of(out).join(format!(".{}.tmp-{}", file_name(out)?, std::process::id())))
}

/// Where this process moves a replaced output until the new one is in place.
pub(crate) fn old_path(out: &Path) -> Result<PathBuf> {
    Ok(parent_of(out).join(format!(".{}.old-{}", file_name(out)?, std::process::id())))
}

pub(crate) fn parent_of(out: &Path) -> PathBuf {
    match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn file_name(out: &Path) -> Result<String> {
    out.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| refuse(out, OutputProblem::NotUsable))
}

/// Temporaries of `out` in its directory: (path, kind, process id). `kind` is "tmp" (an
/// output being built) or "old" (a replaced output awaiting removal).
fn temps_of(out: &Path) -> Vec<(PathBuf, &'static str, u32)> {
    let (Ok(name), dir) = (file_name(out), parent_of(out)) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for e in entries.flatten() {
        let entry = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = entry.strip_prefix(&format!(".{name}.")) else {
            continue;
        };
        for kind in ["tmp", "old"] {
            let Some(tail) = rest.strip_prefix(&format!("{kind}-")) else {
                continue;
            };
            // `PID` alone, or `PID.` followed by a random suffix (files, unpacked dirs).
            let digits = tail.split('.').next().unwrap_or("");
            if let Ok(pid) = digits.parse::<u32>() {
                found.push((e.path(), kind, pid));
            }
        }
    }
    found
}

/// Whether process `pid` still runs. Without /proc (not Linux) every process counts as
/// alive, so nothing is removed.
fn alive(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new(&format!("/proc/{pid}")).exists()
}

fn remove_any(p: &Path) -> std::io::Result<()> {
    match p.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(_) => Ok(()),
    }
}

/// Removes temporaries of `out` left by runs whose process is gone (killed with SIGKILL, out
/// of memory, power loss). A replaced output that such a run moved aside is put back when
/// `out` itself is missing. Returns one note per action.
pub fn remove_stale_temps(out: &Path) -> Vec<String> {
    let mut notes = Vec::new();
    for (path, kind, pid) in temps_of(out) {
        if pid == std::process::id() || alive(pid) {
            continue;
        }
        if kind == "old" && out.symlink_metadata().is_err() {
            if std::fs::rename(&path, out).is_ok() {
                notes.push(format!(
                    "restored {} from {} (a run, process {pid}, was killed while replacing it)",
                    out.display(),
                    path.display()
                ));
            }
            continue;
        }
        if remove_any(&path).is_ok() {
            notes.push(format!(
                "removed {}, left by an interrupted run (process {pid})",
                path.display()
            ));
        }
    }
    notes
}

/// Output paths this process is writing, for the interrupt handler.
static OUTPUTS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Checks `out` ([`check_output`]), removes stale temporaries of earlier killed runs, and
/// registers `out` so an interrupt removes this run's temporary. Returns notes for the user.
pub fn prepare_output(
    out: &Path,
    inputs: &[&Path],
    kind: OutputKind,
    force: bool,
) -> Result<Vec<String>> {
    check_output(out, inputs, kind, force)?;
    let notes = remove_stale_temps(out);
    let mut outs = OUTPUTS.lock().unwrap_or_else(|e| e.into_inner());
    if !outs.iter().any(|o| o == out) {
        outs.push(out.to_path_buf());
    }
    Ok(notes)
}

/// Removes this process's temporaries of every registered output, restoring a replaced
/// output that was moved aside (for the interrupt and SIGBUS handlers). `blocking`: wait for
/// the registry (false in a signal handler, where it is skipped if busy; the next run's
/// [`remove_stale_temps`] cleans up then). Returns the paths removed.
pub fn remove_own_temps(blocking: bool) -> Vec<PathBuf> {
    let outs = if blocking {
        OUTPUTS.lock().unwrap_or_else(|e| e.into_inner()).clone()
    } else {
        match OUTPUTS.try_lock() {
            Ok(o) => o.clone(),
            Err(_) => return Vec::new(),
        }
    };
    let me = std::process::id();
    let mut removed = Vec::new();
    for out in outs {
        for (path, kind, pid) in temps_of(&out) {
            if pid != me {
                continue;
            }
            if kind == "old" && out.symlink_metadata().is_err() {
                let _ = std::fs::rename(&path, &out);
                continue;
            }
            // A writer may still be adding files: try again if the directory refills.
            for _ in 0..3 {
                if remove_any(&path).is_ok() {
                    removed.push(path.clone());
                    break;
                }
            }
        }
    }
    removed
}

/// Moves `tmp` into place at `out`, replacing an existing output by first moving it aside
/// (so `out` names a complete output at every moment but one rename).
pub(crate) fn replace_with(tmp: &Path, out: &Path) -> Result<()> {
    if out.symlink_metadata().is_ok() {
        let old = old_path(out)?;
        std::fs::rename(out, &old).map_err(Error::io(out))?;
        std::fs::rename(tmp, out).map_err(Error::io(out))?;
        remove_any(&old).map_err(Error::io(&old))
    } else {
        std::fs::rename(tmp, out).map_err(Error::io(out))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Held for reading by every test that makes temporaries, for writing by the one that
    /// calls [`remove_own_temps`]: that removes *every* temporary of this process, so it must
    /// not run while another test's are in flight (the tests share one process).
    pub(crate) static TEMPS: std::sync::RwLock<()> = std::sync::RwLock::new(());

    pub(crate) fn making_temps() -> std::sync::RwLockReadGuard<'static, ()> {
        TEMPS.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(p: &Path, s: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    }

    #[test]
    fn the_input_and_its_parents_are_never_outputs() {
        let _temps = making_temps();
        let d = tempfile::tempdir().unwrap();
        let w = d.path().join("w");
        let input = w.join("m.gguf");
        write(&input, "model");
        write(&w.join("NOTES.txt"), "notes");
        for force in [false, true] {
            for (out, why) in [
                (&input, "is the input"),
                (&w, "contains the input"),
                (&d.path().to_path_buf(), "contains the input"),
            ] {
                let e = check_output(out, &[&input], OutputKind::Dir, force)
                    .unwrap_err()
                    .to_string();
                assert!(e.contains(why), "{e}");
            }
        }
        // A relative spelling of the same place is recognised too.
        let dotted = w.join("sub").join("..");
        std::fs::create_dir(w.join("sub")).unwrap();
        let e = check_output(&dotted, &[&input], OutputKind::Dir, true).unwrap_err();
        assert!(e.to_string().contains("contains the input"), "{e}");
        // A new directory inside an input directory replaces nothing of it.
        assert!(check_output(&w.join("q4"), &[&w], OutputKind::Dir, true).is_ok());
        // A sibling is fine.
        assert!(check_output(&w.join("q4"), &[&input], OutputKind::Dir, false).is_ok());
    }

    #[test]
    fn force_replaces_only_crunch_outputs_empty_dirs_and_single_files() {
        let _temps = making_temps();
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("m.gguf");
        write(&input, "model");
        let user = d.path().join("user");
        write(&user.join("thesis.tex"), "years of work");
        let ours = d.path().join("ours");
        write(&ours.join(MARKER), MARKER_TEXT);
        write(&ours.join("model.safetensors"), "x");
        let empty = d.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let file = d.path().join("out.cpk");
        write(&file, "old pack");
        let chk = |p: &Path, k, f| check_output(p, &[&input], k, f);

        // Without --force, anything existing is refused.
        for p in [&user, &ours, &empty, &file] {
            let e = chk(p, OutputKind::Dir, false).unwrap_err().to_string();
            assert!(e.contains("already exists"), "{e}");
        }
        let e = chk(&user, OutputKind::Dir, true).unwrap_err().to_string();
        assert!(e.contains("did not write") && e.contains(MARKER), "{e}");
        assert!(chk(&ours, OutputKind::Dir, true).is_ok());
        assert!(chk(&empty, OutputKind::Dir, true).is_ok());
        assert!(chk(&file, OutputKind::Dir, true)
            .unwrap_err()
            .to_string()
            .contains("is a file"));
        assert!(chk(&file, OutputKind::File, true).is_ok());
        assert!(chk(&ours, OutputKind::File, true).is_err());
        assert!(chk(&file, OutputKind::Either, true).is_ok());
        assert!(chk(&user, OutputKind::Either, true).is_err());
        #[cfg(unix)]
        {
            let link = d.path().join("link");
            std::os::unix::fs::symlink(&ours, &link).unwrap();
            assert!(chk(&link, OutputKind::Dir, true)
                .unwrap_err()
                .to_string()
                .contains("link"));
        }
        assert_eq!(
            std::fs::read_to_string(user.join("thesis.tex")).unwrap(),
            "years of work"
        );
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_removed_and_live_ones_kept() {
        let _all_temps = TEMPS.write().unwrap_or_else(|e| e.into_inner());
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("q4");
        // A process id that cannot be running: above the kernel's pid_max.
        let dead = 4_194_304 + 7;
        let stale_dir = d.path().join(format!(".q4.tmp-{dead}"));
        write(&stale_dir.join("model.safetensors"), "partial");
        let stale_file = d.path().join(format!(".q4.tmp-{dead}.Ab12Cd.crunch-tmp"));
        write(&stale_file, "partial");
        let mine = temp_path(&out).unwrap();
        std::fs::create_dir(&mine).unwrap();
        let other = d.path().join(".q4x.tmp-1"); // another output's temporary
        std::fs::create_dir(&other).unwrap();
        let notes = remove_stale_temps(&out);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(!stale_dir.exists() && !stale_file.exists());
        assert!(mine.exists() && other.exists());

        // A replaced output moved aside by a killed run comes back if the new one never
        // arrived.
        let old = d.path().join(format!(".q4.old-{dead}"));
        write(&old.join(MARKER), MARKER_TEXT);
        let notes = remove_stale_temps(&out);
        assert!(notes[0].contains("restored"), "{notes:?}");
        assert!(out.join(MARKER).is_file());

        // This process's own temporaries go when it is interrupted.
        prepare_output(&out, &[], OutputKind::Dir, true).unwrap();
        let removed = remove_own_temps(true);
        assert_eq!(removed, vec![mine.clone()]);
        assert!(!mine.exists() && out.exists());
    }
}
