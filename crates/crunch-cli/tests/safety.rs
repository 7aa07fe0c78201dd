//! Issue 11 end to end: `--force` never deletes inputs or unrelated files, bad numbers are
//! refused before any work, interrupted runs leave nothing behind, and corrupt models fail
//! cleanly. Every corrupt file is made here.

use crunch_model::testing::{smollm2_gguf, tiny_gguf, tiny_specs, write_tiny_model};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crunch"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs crunch, expects a clean failure whose message holds every needle.
fn refused(args: &[&str], needles: &[&str]) -> String {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.contains("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: error lacks `{n}`: {err}");
    }
    err
}

fn succeeds(args: &[&str]) -> String {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every file under `dir` with its bytes.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn tiny_gguf_file(dir: &Path) -> PathBuf {
    let spec = tiny_specs().into_iter().next().unwrap();
    let p = dir.join("m.gguf");
    std::fs::write(&p, tiny_gguf(&spec, "llama").to_bytes()).unwrap();
    p
}

fn rtn<'a>(model: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "quantize",
        model,
        "--out",
        out,
        "--method",
        "rtn",
        "--group-size",
        "32",
    ];
    a.extend_from_slice(extra);
    a
}

#[test]
fn force_never_deletes_the_input_or_unrelated_files() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path().join("w");
    std::fs::create_dir(&w).unwrap();
    let model = tiny_gguf_file(&w);
    std::fs::write(w.join("NOTES.txt"), "notes").unwrap();
    let before = tree(d.path());
    let m = s(&model);
    // The case: --out is the input's directory; also its parent and the input itself.
    for out in [&w, &d.path().to_path_buf()] {
        refused(&rtn(m, s(out), &["--force"]), &["contains the input"]);
        refused(
            &["pack", m, "--out", s(out), "--force"],
            &["contains the input"],
        );
    }
    refused(&rtn(m, m, &["--force"]), &["is the input"]);
    refused(&["pack", m, "--out", m, "--force"], &["is the input"]);
    // A directory of the user's, even beside the input, is never replaced.
    let user = d.path().join("user");
    std::fs::create_dir(&user).unwrap();
    std::fs::write(user.join("thesis.tex"), "years").unwrap();
    let before_user = tree(d.path());
    refused(&rtn(m, s(&user), &[]), &["already exists"]);
    refused(
        &rtn(m, s(&user), &["--force"]),
        &["did not write", ".crunch-output"],
    );
    let packed = d.path().join("m.cpk");
    succeeds(&["pack", m, "--out", s(&packed)]);
    refused(
        &["unpack", s(&packed), "--out", s(&user), "--force"],
        &["did not write"],
    );
    std::fs::remove_file(&packed).unwrap();
    assert_eq!(tree(d.path()), before_user, "something was modified");
    assert!(before.iter().all(|f| before_user.contains(f)));

    // crunch's own output directory is replaced with --force, and only with it.
    let q = d.path().join("q");
    succeeds(&rtn(m, s(&q), &[]));
    assert!(q.join(".crunch-output").is_file());
    refused(&rtn(m, s(&q), &[]), &["already exists"]);
    succeeds(&rtn(m, s(&q), &["--force", "--bits", "3"]));
    // A single output file is replaced with --force; a directory never is by a file.
    let packed = d.path().join("q.cpk");
    succeeds(&["pack", s(&q), "--out", s(&packed)]);
    refused(&["pack", s(&q), "--out", s(&packed)], &["already exists"]);
    succeeds(&["pack", s(&q), "--out", s(&packed), "--force"]);
    refused(
        &["pack", m, "--out", s(&user), "--force"],
        &["is a directory"],
    );
    // An unpacked directory carries the marker, so unpacking over it again is allowed.
    let back = d.path().join("back");
    succeeds(&["unpack", s(&packed), "--out", s(&back)]);
    succeeds(&["unpack", s(&packed), "--out", s(&back), "--force"]);
    assert_eq!(tree(&q).len(), tree(&back).len());
    for ((_, a), (_, b)) in tree(&q).iter().zip(tree(&back).iter()) {
        assert_eq!(a, b);
    }
    // Nothing temporary is left anywhere.
    let stray: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-") || n.contains(".old-"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    assert_eq!(
        std::fs::read_to_string(w.join("NOTES.txt")).unwrap(),
        "notes"
    );
    assert_eq!(
        std::fs::read_to_string(user.join("thesis.tex")).unwrap(),
        "years"
    );
}

#[test]
fn stale_temporaries_of_killed_runs_are_removed_on_the_next_run() {
    let d = tempfile::tempdir().unwrap();
    let model = tiny_gguf_file(d.path());
    let out = d.path().join("q");
    // Left by a run whose process no longer exists (a pid above the kernel's maximum).
    let stale = d.path().join(".q.tmp-4194311");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("model.safetensors"), vec![0u8; 1000]).unwrap();
    let err = succeeds(&rtn(s(&model), s(&out), &[]));
    assert!(
        err.contains("removed") && err.contains(".q.tmp-4194311"),
        "{err}"
    );
    assert!(!stale.exists() && out.is_dir());
}

#[test]
fn sigint_removes_the_unfinished_output() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("big.bin");
    // Incompressible bytes: packing takes long enough to be interrupted.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let bytes: Vec<u8> = (0..48 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&input, bytes).unwrap();
    let out = d.path().join("big.cpk");
    let mut child = Command::new(env!("CARGO_BIN_EXE_crunch"))
        .args(["pack", s(&input), "--out", s(&out), "--threads", "1"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let temp = || {
        std::fs::read_dir(d.path()).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".big.cpk.tmp-")
        })
    };
    let start = Instant::now();
    while !temp() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no temporary output appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "pack finished before it was interrupted"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let result = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(!temp(), "the temporary output was left behind: {err}");
    assert!(!out.exists());
}

#[test]
fn numbers_beyond_what_the_input_supplies_are_refused_before_work() {
    let d = tempfile::tempdir().unwrap();
    let model = tiny_gguf_file(d.path());
    let m = s(&model);
    let out = d.path().join("q");
    let o = s(&out);
    refused(
        &["--threads", "100000", "info", m],
        &["--threads 100000", "per core"],
    );
    for (g, why) in [
        ("1", "smaller than 8"),
        ("7", "smaller than 8"),
        ("100000", "wider than the layer"),
    ] {
        let mut a = rtn(m, o, &[]);
        a[7] = g;
        refused(&a, &[&format!("group size {g}"), why]);
    }
    // 48 divides neither 64 nor 160 columns: refused where the consumer needs whole groups,
    // a note (shorter last group) in crunch's own format.
    let mut a = rtn(m, o, &["--format", "compressed-tensors"]);
    a[7] = "48";
    refused(&a, &["group size 48", "cannot store a shorter last group"]);
    assert!(!out.exists());
    let mut a = rtn(m, o, &[]);
    a[7] = "48";
    let err = succeeds(&a);
    assert!(err.contains("note:") && err.contains("last group"), "{err}");
    refused(
        &[
            "quantize",
            m,
            "--out",
            s(&d.path().join("g")),
            "--method",
            "gptq",
            "--group-size",
            "32",
            "--calib",
            "self:4x16",
            "--damp",
            "NaN",
        ],
        &["damp NaN"],
    );
}

#[test]
fn calibration_and_evaluation_ask_for_what_the_text_holds() {
    let gguf = smollm2_gguf();
    let g = s(&gguf);
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("q");
    let demo = format!("{ROOT}/data/demo.txt");
    let gptq = |extra: &[&str]| {
        let mut a = vec![
            "quantize".to_string(),
            g.into(),
            "--out".into(),
            s(&out).into(),
            "--method".into(),
            "gptq".into(),
            "--group-size".into(),
            "64".into(),
            "--calib".into(),
            demo.clone(),
        ];
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let start = Instant::now();
    let a = gptq(&["--calib-samples", "1000000000"]);
    refused(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &["1000000000 calibration windows"],
    );
    let a = gptq(&["--calib-samples", "5000", "--calib-len", "16"]);
    refused(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &["demo.txt", "distinct windows"],
    );
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "refusals took {:?}",
        start.elapsed()
    );
    assert!(!out.exists());
    // A two-token text is not a perplexity measurement.
    let short = d.path().join("short.txt");
    std::fs::write(&short, "Hello world").unwrap();
    refused(
        &["eval", g, "--data", s(&short)],
        &["short.txt", "scored positions", "longer text"],
    );
}

#[test]
fn non_finite_weights_are_refused_and_nothing_is_written() {
    for bad in [
        "model.layers.1.mlp.up_proj.weight",
        "model.layers.0.input_layernorm.weight",
    ] {
        let d = tempfile::tempdir().unwrap();
        let spec = tiny_specs().into_iter().next().unwrap();
        let m = d.path().join("m");
        write_tiny_model(&spec, &m, 0).unwrap();
        let f = m.join("model.safetensors");
        let bytes = std::fs::read(&f).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let at = 8 + n + header[bad]["data_offsets"][0].as_u64().unwrap() as usize;
        let mut bytes = bytes;
        bytes[at + 8..at + 12].copy_from_slice(&f32::NAN.to_le_bytes());
        std::fs::write(&f, bytes).unwrap();
        let out = d.path().join("q");
        refused(&rtn(s(&m), s(&out), &[]), &[bad, "NaN", "non-finite"]);
        assert!(!out.exists());
    }
}
