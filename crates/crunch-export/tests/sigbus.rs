//! An input truncated under a memory map while it is read: the SIGBUS handler names the file,
//! removes the run's temporary output and exits with status 1 (decision 080). The fault is
//! provoked in a child process (this test binary run again with an environment variable), so
//! the test harness itself never takes the signal.

use crunch_export::output::{prepare_output, temp_path, OutputKind};
use crunch_formats::mapped::MappedFile;
use std::path::Path;
use std::process::Command;

const CHILD: &str = "CRUNCH_SIGBUS_TEST_DIR";

/// In the child: map the input, start an output, truncate the input, touch its lost end.
fn child(dir: &Path) {
    crunch_export::interrupt::install();
    let input = dir.join("weights.bin");
    let out = dir.join("out");
    let map = MappedFile::open(&input).unwrap();
    prepare_output(&out, &[&input], OutputKind::Dir, false).unwrap();
    std::fs::create_dir(temp_path(&out).unwrap()).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&input)
        .unwrap()
        .set_len(0)
        .unwrap();
    let last = map.bytes().len() - 1;
    // SAFETY: in bounds of the map; the page behind it is gone, which is the point.
    let v = unsafe { std::ptr::read_volatile(map.bytes().as_ptr().add(last)) };
    println!("read {v} without a fault");
}

#[test]
fn a_truncated_mapped_input_is_named_and_the_output_removed() {
    if let Some(dir) = std::env::var_os(CHILD) {
        child(Path::new(&dir));
        return;
    }
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("weights.bin"), vec![1u8; 1 << 16]).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_truncated_mapped_input_is_named_and_the_output_removed",
            "--nocapture",
        ])
        .env(CHILD, d.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("weights.bin") && err.contains("shrank"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("weights.bin")], "{err}");
}
