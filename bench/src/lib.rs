//! Helpers shared by the GPU benchmarks (`gpu_llama`, `gpu_moe`): random bf16 checkpoints,
//! random token windows, flags, and the numbers every result line reports.

pub mod timing;

use crunch_model::testing::SplitMix64;
use rayon::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `--flag value` arguments.
pub struct Args(pub Vec<String>);

impl Args {
    pub fn get(&self, flag: &str) -> Option<&str> {
        let i = self.0.iter().position(|a| a == flag)?;
        self.0.get(i + 1).map(String::as_str)
    }
    pub fn path(&self, flag: &str) -> anyhow::Result<PathBuf> {
        Ok(self
            .get(flag)
            .ok_or_else(|| anyhow::anyhow!("{flag} is required"))?
            .into())
    }
    pub fn num(&self, flag: &str, default: usize) -> anyhow::Result<usize> {
        self.get(flag).map_or(Ok(default), |v| {
            v.parse().map_err(|e| anyhow::anyhow!("{flag} {v}: {e}"))
        })
    }
}

fn bf16_bits(f: f32) -> u16 {
    half::bf16::from_f32(f).to_bits()
}

/// N(0, std²) by Box–Muller from a per-tensor, per-chunk stream, as bf16 little-endian bytes
/// (`fill` everywhere when `std` is 0).
pub fn normal_bf16(seed: u64, n: usize, std: f32, fill: f32) -> Vec<u8> {
    const CHUNK: usize = 1 << 20;
    let mut out = vec![0u8; n * 2];
    out.par_chunks_mut(CHUNK * 2)
        .enumerate()
        .for_each(|(c, bytes)| {
            let mut rng = SplitMix64(seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            for pair in bytes.chunks_mut(4) {
                let (a, b) = if std == 0.0 {
                    (fill, fill)
                } else {
                    let u1 = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                    let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    let r = (-2.0 * u1.ln()).sqrt() * std as f64;
                    let t = std::f64::consts::TAU * u2;
                    ((r * t.cos()) as f32, (r * t.sin()) as f32)
                };
                pair[..2].copy_from_slice(&bf16_bits(a).to_le_bytes());
                if pair.len() == 4 {
                    pair[2..].copy_from_slice(&bf16_bits(b).to_le_bytes());
                }
            }
        });
    out
}

/// Writes `dir/model.safetensors`: `tensors` in bf16, every matrix N(0, 0.02²) (Llama's
/// `initializer_range`), norms 1 (`norm.weight` names). Untimed setup; prints its size.
pub fn write_random_bf16(dir: &Path, tensors: &[(String, Vec<usize>)]) -> anyhow::Result<()> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let end = offset + 2 * shape.iter().product::<usize>();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "BF16", "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut head = serde_json::to_vec(&header)?;
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let path = dir.join("model.safetensors");
    let mut f = std::io::BufWriter::with_capacity(64 << 20, std::fs::File::create(&path)?);
    f.write_all(&(head.len() as u64).to_le_bytes())?;
    f.write_all(&head)?;
    let start = Instant::now();
    for (k, (name, shape)) in tensors.iter().enumerate() {
        let n: usize = shape.iter().product();
        let is_norm = name.ends_with("norm.weight");
        let bytes = normal_bf16(k as u64 + 1, n, if is_norm { 0.0 } else { 0.02 }, 1.0);
        f.write_all(&bytes)?;
    }
    f.flush()?;
    eprintln!(
        "wrote {} ({:.1} GB) in {:.1} s",
        path.display(),
        (offset + head.len() + 8) as f64 / 1e9,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `n` windows of `ctx` uniformly random token ids (seed 0).
pub fn random_windows(vocab: usize, n: usize, ctx: usize) -> Vec<Vec<u32>> {
    let mut rng = SplitMix64(0);
    (0..n)
        .map(|_| {
            (0..ctx)
                .map(|_| (rng.next_u64() % vocab as u64) as u32)
                .collect()
        })
        .collect()
}

/// Peak resident host memory of this process (VmHWM).
pub fn peak_host_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
