//! The process's peak resident set, as the kernel counts it (`VmHWM`: every page ever
//! resident at once, mapped file pages included).

/// Peak resident set size in bytes; `None` where `/proc` is unavailable.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// What a model's key/value cache size depends on: its decoder blocks, key/value heads and
/// head width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvGeometry {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl KvGeometry {
    /// Llama-3-8B (and 3.1-8B): 32 blocks, 8 key/value heads of 128.
    pub const LLAMA3_8B: KvGeometry = KvGeometry {
        layers: 32,
        kv_heads: 8,
        head_dim: 128,
    };

    pub fn of(config: &crunch_model::ModelConfig) -> KvGeometry {
        KvGeometry {
            layers: config.layers,
            kv_heads: config.kv_heads,
            head_dim: config.head_dim,
        }
    }

    /// Bytes of a cache stored as `mode`: `(per token, every block; fixed)` (the fixed part:
    /// KIVI's f16 positions awaiting a group, sink and residual window).
    pub fn bytes(&self, mode: crunch_runtime::KvMode) -> (f64, usize) {
        let per = mode.bytes_per_position(self.kv_heads, self.head_dim) * self.layers as f64;
        let fixed = mode.fixed_bytes(self.kv_heads, self.head_dim) * self.layers;
        (per, fixed)
    }

    /// The longest context a cache in `mode` holds within `budget` bytes (one sequence).
    pub fn max_context(&self, mode: crunch_runtime::KvMode, budget: u64) -> u64 {
        let (per, fixed) = self.bytes(mode);
        ((budget.saturating_sub(fixed as u64)) as f64 / per).floor() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::KvGeometry;
    use crunch_runtime::{Backend, Host, KvMode, KvSpec};

    const GIB: u64 = 1 << 30;

    /// Issue 17's fixed-memory point, as arithmetic: Llama-3-8B's cache in 8 GiB.
    #[test]
    fn llama3_8b_contexts_in_eight_gib() {
        let g = KvGeometry::LLAMA3_8B;
        let f16 = KvMode::F16;
        let kivi2 = KvMode::parse("kivi2").unwrap();
        // f16: 2 bytes × (keys + values) × 8 heads × 128 × 32 blocks.
        assert_eq!(g.bytes(f16), (131_072.0, 0));
        assert_eq!(g.max_context(f16, 8 * GIB), 65_536);
        // kivi2: per head and token 32 bytes of 2-bit key codes + 16 of per-channel f16 scale
        // and minimum (over 32 tokens), 32 of value codes + 16 of per-token scale and minimum
        // (per 32 channels): 96 × 8 heads × 32 blocks; fixed: 31 f16 positions per block.
        assert_eq!(g.bytes(kivi2), (24_576.0, 32 * 4 * 31 * 8 * 128));
        assert_eq!(g.max_context(kivi2, 8 * GIB), 349_360);
        assert_eq!(g.max_context(KvMode::F32, 8 * GIB), 32_768);
        let ratio = 349_360.0 / 65_536.0;
        assert!(ratio >= 4.0, "{ratio}");
        assert_eq!(g.max_context(kivi2, 1000), 0);
    }

    /// The arithmetic is what stores actually hold once filled: every block's store, allocated
    /// by the host backend for the whole capacity and filled to it, against `bytes`.
    #[test]
    fn allocated_stores_hold_what_the_arithmetic_says() {
        let g = KvGeometry {
            layers: 3,
            kv_heads: 2,
            head_dim: 64,
        };
        for mode in ["f16", "q8", "kivi2", "kivi2:s1:r8", "kivi4:vg64"] {
            let mode = KvMode::parse(mode).unwrap();
            for n in [32usize, 77, 128] {
                let (per, fixed) = g.bytes(mode);
                let mut held = 0;
                for layer in 0..g.layers {
                    let mut kv = Host
                        .kv_alloc(KvSpec::new(n, g.kv_heads, g.head_dim, mode))
                        .unwrap();
                    let width = g.kv_heads * g.head_dim;
                    let rows: Vec<f32> = (0..n * width)
                        .map(|i| ((i * 37 + layer * 11) % 101) as f32 / 50.0 - 1.0)
                        .collect();
                    // One position at a time, as decoding appends (a longer chunk keeps
                    // its rows in f16 until the next append: decision 121).
                    for row in rows.chunks(width) {
                        let t = |r: &[f32]| Host.upload(r.to_vec(), &[1, g.kv_heads, g.head_dim]);
                        Host.kv_append(&mut kv, &t(row).unwrap(), &t(row).unwrap())
                            .unwrap();
                    }
                    held += kv.bytes();
                }
                let grows = (per * n as f64).ceil() as usize;
                assert!(
                    held >= grows && held <= grows + fixed,
                    "{mode} at {n}: {held} bytes held, {grows} + at most {fixed} expected"
                );
            }
        }
    }
}
