//! `crunch pack` / `crunch unpack` (owned by the packing work, issue 3): flags, progress bar
//! and the summary; the work is in `crunch-pack`.
use clap::Args;
use crunch_pack::{PackOptions, PackReport, PlaneOptions, UnpackOptions, UnpackReport, ZstdTrial};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::path::PathBuf;

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
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print one JSON object with the figures on stdout.
    #[arg(long)]
    pub json: bool,
    /// Overwrite the output if it exists.
    #[arg(long)]
    pub force: bool,
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

fn progress_bar(label: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_message(label);
    bar
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
        threads: args.threads,
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
    let kind = crunch_export::OutputKind::File;
    crate::output_notes(crunch_export::prepare_output(
        &args.out,
        &[&args.path],
        kind,
        args.force,
    )?);
    let bar = progress_bar("packing");
    let report = crunch_pack::pack_path(
        &args.path,
        &args.out,
        &opts,
        args.verify,
        args.force,
        &|done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
    )?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", pack_json(&args, &report));
    } else {
        println!(
            "packed {} ({} bytes) -> {} ({} bytes): {:.4}x in {:.3} s ({:.3} GB/s, {} threads){}",
            args.path.display(),
            report.input_bytes,
            args.out.display(),
            report.output_bytes,
            report.ratio(),
            report.seconds,
            report.gbps(),
            report.threads,
            if args.verify { ", verified" } else { "" }
        );
    }
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
        threads: args.threads,
        force: args.force,
        tensor: args.tensor.clone(),
    };
    let kind = match args.tensor {
        Some(_) => crunch_export::OutputKind::File,
        None => crunch_export::OutputKind::Either,
    };
    crate::output_notes(crunch_export::prepare_output(
        &args.out,
        &[&args.path],
        kind,
        args.force,
    )?);
    let bar = progress_bar("unpacking");
    let report = crunch_pack::unpack_path(&args.path, &args.out, &opts, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", unpack_json(&args, &report));
    } else {
        println!(
            "unpacked {} ({} bytes) -> {} ({} bytes, {} files) in {:.3} s ({:.3} GB/s, {} threads), checksums verified",
            args.path.display(),
            report.packed_bytes,
            args.out.display(),
            report.output_bytes,
            report.files,
            report.seconds,
            report.gbps(),
            report.threads
        );
    }
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
