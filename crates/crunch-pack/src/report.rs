//! What a pack run did, aggregated per dtype and plane: raw bytes, coded bytes, the order-0
//! entropy of the coded planes (the bound a static per-chunk order-0 coder cannot beat), and
//! which method won how often.

use crate::detect::{Kind, Segment};
use crate::plane::PlaneStats;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default)]
pub struct PlaneAcc {
    pub raw_bytes: u64,
    pub coded_bytes: u64,
    pub entropy_bytes: f64,
    /// Chunks whose entropy was estimated from a sample (planes stored raw without a full
    /// histogram; see `PlaneOptions::exact_stats`).
    pub estimated_chunks: u64,
    /// Chunks won by each method.
    pub methods: BTreeMap<&'static str, u64>,
}

#[derive(Clone, Debug, Default)]
pub struct PackReport {
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub index_bytes: u64,
    /// Plane directories at the head of each chunk record.
    pub chunk_header_bytes: u64,
    pub files: u64,
    pub tensors: u64,
    pub chunks: u64,
    pub seconds: f64,
    /// Time spent by `--verify` decoding and comparing, after `seconds`.
    pub verify_seconds: Option<f64>,
    pub threads: usize,
    /// Input files per detected kind ("safetensors", "gguf", "other").
    pub kinds: BTreeMap<&'static str, u64>,
    /// Keyed "DTYPE:plane" ("BF16:exponent"); non-tensor bytes are "opaque:bytes".
    pub planes: BTreeMap<String, PlaneAcc>,
}

impl PackReport {
    pub(crate) fn add_chunk(&mut self, seg: &Segment, stats: &[PlaneStats], record_len: usize) {
        let dtype = seg.tensor.as_ref().map_or("opaque", |t| t.dtype.as_str());
        let names = seg.layout.plane_names();
        let mut payload = 0;
        for (st, name) in stats.iter().zip(names) {
            let acc = self.planes.entry(format!("{dtype}:{name}")).or_default();
            acc.raw_bytes += st.raw_bytes as u64;
            acc.coded_bytes += st.coded_bytes as u64;
            acc.entropy_bytes += st.entropy_bytes;
            acc.estimated_chunks += !st.exact as u64;
            *acc.methods.entry(st.method.name()).or_default() += 1;
            payload += st.coded_bytes;
        }
        self.chunk_header_bytes += (record_len - payload) as u64;
        self.chunks += 1;
    }

    pub(crate) fn add_file(&mut self, kind: Kind, segs: &[Segment], size: u64) {
        self.files += 1;
        self.input_bytes += size;
        self.tensors += segs.iter().filter(|s| s.tensor.is_some()).count() as u64;
        *self.kinds.entry(kind.name()).or_default() += 1;
    }

    pub fn ratio(&self) -> f64 {
        self.input_bytes as f64 / self.output_bytes.max(1) as f64
    }

    /// Sum of the per-chunk order-0 entropies of every plane, in bytes.
    pub fn entropy_bound_bytes(&self) -> f64 {
        self.planes.values().map(|p| p.entropy_bytes).sum()
    }

    /// Input bytes per second of wall time.
    pub fn gbps(&self) -> f64 {
        self.input_bytes as f64 / self.seconds.max(1e-9) / 1e9
    }
}

/// What an unpack run did.
#[derive(Clone, Debug, Default)]
pub struct UnpackReport {
    pub packed_bytes: u64,
    pub output_bytes: u64,
    pub files: u64,
    pub chunks: u64,
    pub seconds: f64,
    pub threads: usize,
}

impl UnpackReport {
    /// Restored bytes per second of wall time.
    pub fn gbps(&self) -> f64 {
        self.output_bytes as f64 / self.seconds.max(1e-9) / 1e9
    }
}
