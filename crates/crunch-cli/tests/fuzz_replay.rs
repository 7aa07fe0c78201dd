//! The fuzz targets on stable, in CI: each target (`fuzz/targets.rs`) runs on every seed of
//! `fuzz/seeds/<target>/`, then on seeded random mutations of them (bit flips, planted
//! extreme integers, truncations, insertions, deletions, splices) for a bounded time per
//! target — `CRUNCH_FUZZ_SECONDS` (default 3) — so that a regression in any parser, config
//! builder or the quantization path surfaces as a failing test. A panicking input is saved
//! under `target/fuzz-failures/` and named in the failure; replay it with
//! `CRUNCH_FUZZ_REPLAY=path cargo test -p crunch-cli --test fuzz_replay`.
//!
//! `cargo fuzz` (nightly, libFuzzer) runs the same bodies open-ended: see fuzz/Cargo.toml.

#[path = "../../../fuzz/targets.rs"]
mod targets;

use crunch_model::testing::SplitMix64;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(ROOT).join("fuzz/seeds").join(target);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (every target needs seeds)", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "{}: no seeds", dir.display());
    out
}

/// Little-endian integers a corrupt or hostile file plants in length and count fields.
const EXTREMES: [u64; 10] = [
    0,
    1,
    2,
    255,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    i64::MAX as u64,
    u64::MAX,
];

fn mutate(rng: &mut SplitMix64, mut b: Vec<u8>, corpus: &[(PathBuf, Vec<u8>)]) -> Vec<u8> {
    let n = 1 + rng.next_u64() % 4;
    for _ in 0..n {
        let len = b.len();
        let at = if len == 0 {
            0
        } else {
            rng.next_u64() as usize % len
        };
        match rng.next_u64() % 9 {
            0 if len > 0 => b[at] ^= 1 << (rng.next_u64() % 8),
            1 if len > 0 => b[at] = rng.next_u64() as u8,
            2 | 3 => {
                let v = EXTREMES[rng.next_u64() as usize % EXTREMES.len()];
                let width = if rng.next_u64().is_multiple_of(2) {
                    8
                } else {
                    4
                };
                let k = (len - at.min(len)).min(width);
                b[at..at + k].copy_from_slice(&v.to_le_bytes()[..k]);
            }
            4 => b.truncate(at),
            5 => {
                let extra: Vec<u8> = (0..1 + rng.next_u64() % 16)
                    .map(|_| rng.next_u64() as u8)
                    .collect();
                b.splice(at..at, extra);
            }
            6 => {
                let k = (1 + rng.next_u64() as usize % 64).min(len - at.min(len));
                b.drain(at..at + k);
            }
            7 if len > 0 => {
                // Duplicate a run of bytes (repeated fields, array elements).
                let k = (1 + rng.next_u64() as usize % 32).min(len - at);
                let run = b[at..at + k].to_vec();
                b.splice(at..at, run);
            }
            _ => {
                // Splice in a piece of another seed.
                let (_, other) = &corpus[rng.next_u64() as usize % corpus.len()];
                if !other.is_empty() {
                    let from = rng.next_u64() as usize % other.len();
                    let k = (1 + rng.next_u64() as usize % 64).min(other.len() - from);
                    let end = (at + k).min(len);
                    b.splice(at..end, other[from..from + k].iter().copied());
                }
            }
        }
    }
    b
}

/// Runs `f` on `input`; on a panic saves the input and fails naming it.
fn check(target: &str, f: targets::Target, input: &[u8], what: &str) {
    let result = std::panic::catch_unwind(|| f(input));
    if result.is_err() {
        let dir = Path::new(ROOT).join("target/fuzz-failures");
        std::fs::create_dir_all(&dir).unwrap();
        let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
            (h ^ x as u64).wrapping_mul(0x100_0000_01b3)
        });
        let path = dir.join(format!("{target}-{hash:016x}.bin"));
        std::fs::write(&path, input).unwrap();
        panic!(
            "fuzz target `{target}` panicked on {what}; input saved to {}",
            path.display()
        );
    }
}

fn replay(target: &str) {
    let f = targets::TARGETS
        .iter()
        .find(|(n, _)| *n == target)
        .map(|(_, f)| *f)
        .unwrap();
    if let Some(p) = std::env::var_os("CRUNCH_FUZZ_REPLAY") {
        if Path::new(&p)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(target)
        {
            let input = std::fs::read(&p).unwrap();
            f(&input);
        }
        return;
    }
    let corpus = seeds(target);
    for (path, bytes) in &corpus {
        check(target, f, bytes, &format!("seed {}", path.display()));
    }
    let seconds: f64 = std::env::var("CRUNCH_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let budget = Duration::from_secs_f64(seconds);
    let mut rng = SplitMix64(
        target
            .bytes()
            .fold(11u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)),
    );
    let start = Instant::now();
    let mut runs = 0u64;
    while start.elapsed() < budget {
        let (_, base) = &corpus[rng.next_u64() as usize % corpus.len()];
        let input = mutate(&mut rng, base.clone(), &corpus);
        check(target, f, &input, &format!("mutation {runs}"));
        runs += 1;
    }
    let reached: Vec<String> = targets::REACHED
        .iter()
        .filter(|(what, _)| what.starts_with(target) && what.as_bytes()[target.len()] == b':')
        .map(|(what, n)| format!("{what}: {}", n.load(std::sync::atomic::Ordering::Relaxed)))
        .collect();
    eprintln!(
        "{target}: {} seeds + {runs} mutations in {:.1} s, no panic{}{}",
        corpus.len(),
        start.elapsed().as_secs_f64(),
        if reached.is_empty() { "" } else { "; " },
        reached.join("; ")
    );
}

#[test]
fn fuzz_gguf() {
    replay("gguf");
}

#[test]
fn fuzz_safetensors_header() {
    replay("safetensors_header");
}

#[test]
fn fuzz_unpack() {
    replay("unpack");
}

#[test]
fn fuzz_recipe() {
    replay("recipe");
}

#[test]
fn fuzz_gguf_model() {
    replay("gguf_model");
}

#[test]
fn fuzz_hf_config() {
    replay("hf_config");
}

#[test]
fn fuzz_quantize_tiny() {
    replay("quantize_tiny");
}

/// Writes the seeds that are made in code (run after changing the tiny models):
/// `cargo test -p crunch-cli --test fuzz_replay -- --ignored write_seeds`.
#[test]
#[ignore]
fn write_seeds() {
    use crunch_model::testing::{tiny_gguf, tiny_specs, TinySpec};
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let dir = Path::new(ROOT).join("fuzz/seeds").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    for spec in tiny_specs() {
        put(
            "hf_config",
            &format!("{}.json", spec.name),
            serde_json::to_string_pretty(&spec.config)
                .unwrap()
                .as_bytes(),
        );
        // Micro versions for the whole-model target: a few KB each, so mutations run fast.
        let mut config = spec.config.clone();
        config["hidden_size"] = 16.into();
        config["intermediate_size"] = 24.into();
        config["num_attention_heads"] = 2.into();
        config["num_key_value_heads"] = 1.into();
        config["head_dim"] = 8.into();
        config["vocab_size"] = 16.into();
        if config.get("sliding_window").is_some() {
            config["sliding_window"] = 3.into();
        }
        let micro = TinySpec {
            name: spec.name,
            config,
        };
        let arch = if spec.name == "mistral" {
            "llama"
        } else {
            spec.name
        };
        put(
            "gguf_model",
            &format!("{}.gguf", spec.name),
            &tiny_gguf(&micro, arch).to_bytes(),
        );
    }
    put(
        "hf_config",
        "smollm2.json",
        &std::fs::read(Path::new(ROOT).join("tests/fixtures/smollm2/config.json")).unwrap(),
    );
    for (name, text) in [
        ("gptq.toml", "[[stage]]\nmethod = \"gptq\"\nbits = 4\ngroup_size = 128\nact_order = true\ndamp = 0.01\n"),
        ("rtn_skip.toml", "skip = [\"model.layers.0.*\"]\n\n[[stage]]\nmethod = \"rtn\"\nbits = 3\ngroup_size = 32\nsymmetric = true\nmse_clip = true\n"),
        ("sparsegpt_joint.toml", "[calibration]\ndata = \"self:4x16\"\nseed = 1\n\n[[stage]]\nmethod = \"sparsegpt\"\nsparsity = \"2:4\"\nbits = 4\ngroup_size = 64\n"),
        ("lowrank_eora.toml", "[[stage]]\nmethod = \"whitened-svd\"\nlayers = [\"*mlp*\"]\nkeep = 0.8\n\n[[stage]]\nmethod = \"gptq\"\nlayers = [\"*self_attn*\"]\nbits = 4\n\n[[stage]]\nmethod = \"eora\"\nrank = 16\n"),
        ("prune.toml", "[[stage]]\nmethod = \"wanda\"\nsparsity = \"0.5\"\n\n[[stage]]\nmethod = \"magnitude\"\nlayers = [\"*down_proj\"]\nsparsity = \"4:8\"\n"),
    ] {
        put("recipe", name, text.as_bytes());
    }
    // Byte strings that steer the fuzzed tiny model and recipe (see `quantize_tiny`).
    let mut rng = SplitMix64(5);
    for i in 0..6 {
        let bytes: Vec<u8> = (0..48).map(|_| rng.next_u64() as u8).collect();
        put("quantize_tiny", &format!("random{i}.bin"), &bytes);
    }
    put("quantize_tiny", "zeros.bin", &[0u8; 48]);
    put(
        "quantize_tiny",
        "gptq_llama.bin",
        &[
            0, 1, 0, 1, 0, 0, 1, 0, 2, 0, 1, 0, 1, 2, 1, 0, 0, 0, 0, 4, 5, 6, 7, 8, 9,
        ],
    );
}
