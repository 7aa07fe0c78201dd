//! `crunch pack` / `crunch unpack` (owned by the packing work, issue 3): flags, progress bar
//! and the summary; the work is in `crunch-pack`.
use clap::Args;
use crunch_export::OutputKind;
use crunch_pack::{PackOptions, PackReport, PlaneOptions, UnpackOptions, UnpackReport, ZstdTrial};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The flags `pack` and `unpack` share.
#[derive(Args)]
pub struct RunArgs {
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print one JSON object with the figures on stdout.
    #[arg(long)]
    pub json: bool,
    /// Overwrite the output if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args)]
pub struct PackArgs {
    /// File or model directory to pack.
    pub path: PathBuf,
    /// Where to write the packed output.
    #[arg(long)]
    pub out: PathBuf,
    /// Decode what was written and compare it with the input before keeping it.
    #[arg(long)]
    pub verify: bool,
    #[command(flatten)]
    pub run: RunArgs,
    /// Always keep the strictly smallest coding of each plane, even where it saves under 1/128
    /// of the plane and costs decode speed.
    #[arg(long)]
    pub smallest: bool,
    /// Raw bytes per chunk.
    #[arg(long, default_value_t = 512 << 10, hide = true)]
    pub chunk_size: usize,
    /// When to try zstd on tensor planes: never, sampled, always.
    #[arg(long, default_value = "sampled", hide = true)]
    pub zstd: String,
}

#[derive(Args)]
pub struct UnpackArgs {
    /// Packed file to restore.
    pub path: PathBuf,
    /// Where to write the restored file or directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Restore only this tensor's raw little-endian bytes (`NAME`, or `FILE::NAME` when a
    /// directory pack has the name in several files).
    #[arg(long)]
    pub tensor: Option<String>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Checks `out` for a command reading `input` (the `--force` rules), printing any notes.
fn prepare(out: &Path, input: &Path, kind: OutputKind, force: bool) -> anyhow::Result<()> {
    crate::output_notes(crunch_export::prepare_output(out, &[input], kind, force)?);
    Ok(())
}

/// Runs `work` with a byte-counting progress bar labelled `label`.
fn with_bar<R>(label: &'static str, work: impl FnOnce(&(dyn Fn(u64, u64) + Sync)) -> R) -> R {
    let bar = progress_bar(label);
    let report = work(&|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    report
}

/// Prints the report: `json` with --json, else the text `line`.
fn emit(json: bool, value: impl FnOnce() -> Value, line: impl FnOnce() -> String) {
    if json {
        crate::report::json(value());
    } else {
        println!("{}", line());
    }
}

/// `{verb} {from} ({from_bytes} bytes) -> {to} ({to_what}){rest}`.
fn summary(verb: &str, from: (&Path, u64), to: (&Path, String), rest: String) -> String {
    format!(
        "{verb} {} ({} bytes) -> {} ({}){rest}",
        from.0.display(),
        from.1,
        to.0.display(),
        to.1
    )
}

/// `1.234 s (5.678 GB/s, 2 threads)`, as both reports print it.
fn speed(seconds: f64, gbps: f64, threads: usize) -> String {
    format!("{seconds:.3} s ({gbps:.3} GB/s, {threads} threads)")
}

fn progress_bar(label: &'static str) -> crate::progress::Bar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_message(label);
    crate::progress::Bar(bar)
}

pub fn pack(args: PackArgs) -> anyhow::Result<()> {
    let zstd = match args.zstd.as_str() {
        "never" => ZstdTrial::Never,
        "sampled" => ZstdTrial::Sampled,
        "always" => ZstdTrial::Always,
        other => anyhow::bail!("--zstd must be never, sampled or always, not `{other}`"),
    };
    if args.chunk_size == 0 || args.chunk_size > (64 << 20) {
        anyhow::bail!("--chunk-size must be between 1 and 64 MiB");
    }
    let opts = PackOptions {
        threads: args.run.threads,
        chunk_size: args.chunk_size,
        plane: PlaneOptions {
            min_gain: if args.smallest {
                0.0
            } else {
                PlaneOptions::default().min_gain
            },
            zstd,
            ..PlaneOptions::default()
        },
    };
    prepare(&args.out, &args.path, OutputKind::File, args.run.force)?;
    let report = with_bar("packing", |progress| {
        crunch_pack::pack_path(
            &args.path,
            &args.out,
            &opts,
            args.verify,
            args.run.force,
            progress,
        )
    })?;
    let line = || {
        summary(
            "packed",
            (&args.path, report.input_bytes),
            (&args.out, format!("{} bytes", report.output_bytes)),
            format!(
                ": {:.4}x in {}{}",
                report.ratio(),
                speed(report.seconds, report.gbps(), report.threads),
                if args.verify { ", verified" } else { "" }
            ),
        )
    };
    emit(args.run.json, || pack_json(&args, &report), line);
    Ok(())
}

fn pack_json(args: &PackArgs, r: &PackReport) -> Value {
    let bound = r.entropy_bound_bytes();
    let planes: serde_json::Map<String, Value> = r
        .planes
        .iter()
        .map(|(k, p)| {
            let v = json!({
                "raw_bytes": p.raw_bytes,
                "coded_bytes": p.coded_bytes,
                "entropy_bytes": p.entropy_bytes.round(),
                "bits_per_byte": 8.0 * p.coded_bytes as f64 / p.raw_bytes.max(1) as f64,
                "entropy_bits_per_byte": 8.0 * p.entropy_bytes / p.raw_bytes.max(1) as f64,
                "chunks_by_method": p.methods,
                "entropy_estimated_chunks": p.estimated_chunks,
            });
            (k.clone(), v)
        })
        .collect();
    json!({
        "command": "pack",
        "input": args.path,
        "output": args.out,
        "input_bytes": r.input_bytes,
        "output_bytes": r.output_bytes,
        "ratio": r.ratio(),
        "seconds": r.seconds,
        "gbps": r.gbps(),
        "threads": r.threads,
        "files": r.files,
        "file_kinds": r.kinds,
        "tensors": r.tensors,
        "chunks": r.chunks,
        "index_bytes": r.index_bytes,
        "chunk_header_bytes": r.chunk_header_bytes,
        "entropy_bound_bytes": bound.round(),
        "over_entropy_bound": r.output_bytes as f64 / bound.max(1.0) - 1.0,
        "verified": args.verify,
        "verify_seconds": r.verify_seconds,
        "planes": planes,
    })
}

pub fn unpack(args: UnpackArgs) -> anyhow::Result<()> {
    let opts = UnpackOptions {
        threads: args.run.threads,
        force: args.run.force,
        tensor: args.tensor.clone(),
    };
    let kind = match args.tensor {
        Some(_) => OutputKind::File,
        None => OutputKind::Either,
    };
    prepare(&args.out, &args.path, kind, args.run.force)?;
    let report = with_bar("unpacking", |progress| {
        crunch_pack::unpack_path(&args.path, &args.out, &opts, progress)
    })?;
    let line = || {
        summary(
            "unpacked",
            (&args.path, report.packed_bytes),
            (
                &args.out,
                format!("{} bytes, {} files", report.output_bytes, report.files),
            ),
            format!(
                " in {}, checksums verified",
                speed(report.seconds, report.gbps(), report.threads)
            ),
        )
    };
    emit(args.run.json, || unpack_json(&args, &report), line);
    Ok(())
}

fn unpack_json(args: &UnpackArgs, r: &UnpackReport) -> Value {
    json!({
        "command": "unpack",
        "input": args.path,
        "output": args.out,
        "tensor": args.tensor,
        "packed_bytes": r.packed_bytes,
        "output_bytes": r.output_bytes,
        "seconds": r.seconds,
        "gbps": r.gbps(),
        "threads": r.threads,
        "files": r.files,
        "chunks": r.chunks,
    })
}
