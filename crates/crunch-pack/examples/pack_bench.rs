//! In-memory throughput of the packer, the counterpart of calling `zipnn` on a bytes buffer:
//! the file is read into memory first, then packed and unpacked `--reps` times; the best time
//! of each is reported as one JSON line. File-to-file timings come from `crunch pack --json`.
//!
//! `cargo run --release -p crunch-pack --example pack_bench -- FILE [--threads N] [--reps R]
//!  [--smallest] [--chunk-size BYTES] [--zstd never|sampled|always]`

use crunch_pack::{pack_bytes, PackOptions, ZstdTrial};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut file = None;
    let mut opts = PackOptions {
        threads: 1,
        ..PackOptions::default()
    };
    let mut reps = 5;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = it.clone().next().cloned().unwrap_or_default();
        let num = || {
            value
                .parse::<usize>()
                .unwrap_or_else(|_| panic!("{a} needs a number"))
        };
        match a.as_str() {
            "--threads" => opts.threads = num(),
            "--reps" => reps = num(),
            "--chunk-size" => opts.chunk_size = num(),
            "--smallest" => opts.plane.min_gain = 0.0,
            "--zstd" => {
                opts.plane.zstd = match value.as_str() {
                    "never" => ZstdTrial::Never,
                    "always" => ZstdTrial::Always,
                    _ => ZstdTrial::Sampled,
                }
            }
            f => {
                file = Some(f.to_string());
                continue;
            }
        }
        if a != "--smallest" {
            it.next();
        }
    }
    let file = file.expect("usage: pack_bench FILE [--threads N] [--reps R] [--smallest]");
    let data = std::fs::read(&file).expect("read input");
    // One pool for all decompression calls, as ZipNN's object (and its thread setting) is
    // made once, outside the timing; each call still gets a new output buffer.
    let pool = crunch_pack::workers::Workers::new(opts.threads).expect("pool");
    // One untimed round first, as a long-running caller would be: thread-local buffers, zstd
    // contexts and the allocator's thresholds warm up once per process, not per call.
    let (warm, _) = pack_bytes("input", &data, &opts).expect("pack");
    assert!(unpack_fresh(&warm, &pool) == data, "round trip differs");
    drop(warm);
    let (mut best_c, mut best_d) = (f64::MAX, f64::MAX);
    let mut last = None;
    for _ in 0..reps {
        let t = Instant::now();
        let (packed, report) = pack_bytes("input", &data, &opts).expect("pack");
        best_c = best_c.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let restored = unpack_fresh(&packed, &pool);
        best_d = best_d.min(t.elapsed().as_secs_f64());
        assert!(restored == data, "round trip differs");
        last = Some((packed, report));
    }
    let (packed, _) = last.expect("at least one rep");
    // The statistics (entropy bound) come from one more, untimed, pack with exact statistics;
    // it must give the same bytes.
    let mut exact = opts.clone();
    exact.plane.exact_stats = true;
    let (again, report) = pack_bytes("input", &data, &exact).expect("pack");
    assert!(again == packed, "exact statistics changed the output");
    let packed_len = packed.len();
    // Codec speed as lzbench measures it: decoding into one output buffer reused across runs,
    // so page faults of a fresh allocation are not counted (ZipNN's API cannot do this).
    let p = crunch_pack::Packed::open(&packed[..], std::path::Path::new("<memory>")).expect("open");
    let mut out = vec![0u8; data.len()];
    let mut best_reuse = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        p.restore_file_into(0, &pool, &mut out).expect("unpack");
        best_reuse = best_reuse.min(t.elapsed().as_secs_f64());
    }
    assert!(out == data, "round trip differs");
    let bound = report.entropy_bound_bytes();
    let planes: serde_json::Map<String, serde_json::Value> = report
        .planes
        .iter()
        .map(|(k, p)| {
            (
                k.clone(),
                serde_json::json!({"raw": p.raw_bytes, "coded": p.coded_bytes,
                "entropy": p.entropy_bytes.round(), "methods": p.methods}),
            )
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "tool": "crunch-inmem", "file": file, "bytes": data.len(), "packed_bytes": packed_len,
            "ratio": data.len() as f64 / packed_len as f64, "threads": report.threads,
            "compress_s": best_c, "decompress_s": best_d,
            "compress_gbps": data.len() as f64 / best_c / 1e9,
            "decompress_gbps": data.len() as f64 / best_d / 1e9,
            "decompress_reused_buffer_gbps": data.len() as f64 / best_reuse / 1e9,
            "entropy_bound_bytes": bound.round(),
            "over_entropy_bound": packed_len as f64 / bound - 1.0,
            "bit_exact": true, "planes": planes,
        })
    );
}

/// Like ZipNN's `decompress`: a new output buffer per call, allocated by the library.
fn unpack_fresh(packed: &[u8], pool: &crunch_pack::workers::Workers) -> Vec<u8> {
    let p = crunch_pack::Packed::open(packed, std::path::Path::new("<memory>")).expect("open");
    p.restore_file_vec(0, pool).expect("unpack")
}
