//! GGUF quant types as a search's levels: every block linear layer encoded in each type of its
//! ladder by crunch's importance-weighted encoders (`crunch_formats::gguf::quants`, the same
//! code the GGUF writer runs), so that the file a search writes holds exactly the bytes the
//! search scored.
//!
//! A layer's ladder depends on its row length, as llama.cpp's type fallbacks do: k-quants need
//! rows of whole 256-value super-blocks; other rows (576 on SmolLM2) take the 32-value types.
//! Each ladder lists types of strictly growing size, so a level up always costs bits.
//!
//! Cache layout: `DIR/<model>-<importance>/<TYPE>/<layer>.q` (magic, then the tensor's bytes in
//! Hugging Face row order); a file of the wrong length or magic is encoded again.

use crate::database::{block_units, model_hash, Variants};
use crate::{hash_bytes, Error, Result, HASH_START};
use crunch_formats::gguf::quants::{dequantize, Codec};
use crunch_formats::DType;
use crunch_model::{Checkpoint, LinearId};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Types for rows of whole 256-value super-blocks, from smallest to largest.
pub const K_LADDER: [DType; 7] = [
    DType::Q2K,
    DType::Q3K,
    DType::IQ4XS,
    DType::Q4K,
    DType::Q5K,
    DType::Q6K,
    DType::Q8_0,
];

/// Types for rows of whole 32-value blocks only (llama.cpp's fallbacks; IQ4_NL in place of
/// Q4_0: the same 4.5 bits on a non-uniform grid).
pub const LEGACY_LADDER: [DType; 5] = [
    DType::IQ4NL,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q8_0,
];

/// The types a matrix with rows of `cols` values can take (empty: none fits).
pub fn ladder(cols: usize) -> &'static [DType] {
    if cols.is_multiple_of(256) {
        &K_LADDER
    } else if cols.is_multiple_of(32) {
        &LEGACY_LADDER
    } else {
        &[]
    }
}

/// Every block linear layer encoded in every type of its ladder.
pub struct GgufDatabase {
    pub units: Vec<LinearId>,
    pub shapes: Vec<(usize, usize)>,
    /// `[unit][level]`: the type of each level.
    pub types: Vec<Vec<DType>>,
    /// `[unit][level]`: the tensor's bytes in that type, rows in Hugging Face order.
    pub encoded: Vec<Vec<Vec<u8>>>,
    pub cached: usize,
    pub made: usize,
}

impl GgufDatabase {
    /// Encodes (or reads from `cache`) every block linear layer of `ckpt` in every type of its
    /// ladder, weighting rounding errors by `importance` (E[x²] per input column, keyed by
    /// Hugging Face weight name). `progress(done, total)` after each layer.
    pub fn build(
        ckpt: &Checkpoint,
        importance: Option<&BTreeMap<String, Vec<f32>>>,
        cache: Option<&Path>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<GgufDatabase> {
        let (units, shapes) = block_units(ckpt)?;
        let dir = match cache {
            Some(root) => {
                let model = model_hash(&ckpt.path)?;
                let mut h = HASH_START;
                for (name, v) in importance.into_iter().flatten() {
                    h = hash_bytes(h, name.as_bytes());
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    h = hash_bytes(h, &bytes);
                }
                Some(root.join(format!("{model:016x}-{h:016x}")))
            }
            None => None,
        };
        let (mut cached, mut made) = (0, 0);
        let mut types = Vec::with_capacity(units.len());
        let mut encoded = Vec::with_capacity(units.len());
        for (u, id) in units.iter().enumerate() {
            let (rows, cols) = shapes[u];
            let name = format!("{}.weight", id.full_name());
            let ladder = ladder(cols);
            if ladder.is_empty() {
                return Err(Error::Params(format!(
                    "{name}: rows of {cols} values fit no GGUF block type (a multiple of 32 \
                     is needed)"
                )));
            }
            let imp = importance.and_then(|m| m.get(&name)).map(Vec::as_slice);
            let mut values: Option<Vec<f32>> = None;
            let mut row = Vec::with_capacity(ladder.len());
            for &dtype in ladder {
                let len = dtype.bytes_for(rows * cols).expect("whole blocks");
                let path = dir
                    .as_ref()
                    .map(|d| d.join(dtype.ggml_name()).join(format!("{name}.q")));
                if let Some(b) = path.as_deref().and_then(|p| read_cached(p, len)) {
                    row.push(b);
                    cached += 1;
                    continue;
                }
                if values.is_none() {
                    values = Some(ckpt.weights.read(&name, &[rows, cols], &ckpt.config)?);
                }
                let bytes = encode(values.as_deref().expect("read"), cols, dtype, imp)
                    .map_err(|problem| Error::Params(format!("{name}: {problem}")))?;
                if let Some(p) = &path {
                    write_cached(p, &bytes)?;
                }
                row.push(bytes);
                made += 1;
            }
            types.push(ladder.to_vec());
            encoded.push(row);
            progress(u + 1, units.len());
        }
        Ok(GgufDatabase {
            units,
            shapes,
            types,
            encoded,
            cached,
            made,
        })
    }

    /// Each unit's cost in bits at each of its levels: its bytes with the padding to the
    /// file's 32-byte tensor alignment, so that costs add up to the file's tensor data.
    pub fn costs(&self) -> Vec<Vec<f64>> {
        self.encoded
            .iter()
            .map(|row| row.iter().map(|b| 8.0 * padded(b.len()) as f64).collect())
            .collect()
    }

    /// The level of each unit that holds `dtype_of(unit)` (e.g. a llama.cpp preset's type for
    /// the layer): that type where the ladder has it, else the largest type of the ladder that
    /// takes no more bytes (Q4_0 → IQ4_NL, the same size), else the lowest level.
    pub fn levels_of(&self, dtype_of: impl Fn(usize) -> Option<DType>) -> Vec<u8> {
        (0..self.units.len())
            .map(|u| {
                let Some(d) = dtype_of(u) else { return 0 };
                let types = &self.types[u];
                if let Some(i) = types.iter().position(|&t| t == d) {
                    return i as u8;
                }
                let (rows, cols) = self.shapes[u];
                let Some(want) = d.bytes_for(rows * cols) else {
                    return 0;
                };
                types
                    .iter()
                    .rposition(|t| t.bytes_for(rows * cols).is_some_and(|b| b <= want))
                    .unwrap_or(0) as u8
            })
            .collect()
    }
}

/// GGUF aligns every tensor's data to 32 bytes.
pub const ALIGNMENT: usize = 32;

/// `bytes` rounded up to the tensor alignment.
pub fn padded(bytes: usize) -> usize {
    bytes.div_ceil(ALIGNMENT) * ALIGNMENT
}

impl Variants for GgufDatabase {
    fn layers(&self) -> (&[LinearId], &[(usize, usize)]) {
        (&self.units, &self.shapes)
    }

    fn levels(&self, unit: usize) -> usize {
        self.types[unit].len()
    }

    fn dense(&self, unit: usize, level: usize) -> Vec<f32> {
        let mut out = Vec::new();
        self.dense_into(unit, level, &mut out);
        out
    }

    fn dense_into(&self, unit: usize, level: usize, out: &mut Vec<f32>) {
        let (rows, cols) = self.shapes[unit];
        if out.len() != rows * cols {
            *out = vec![0f32; rows * cols];
        }
        // Every value is written (on the rayon pool for large tensors).
        dequantize(self.types[unit][level], &self.encoded[unit][level], out)
            .expect("the bytes were made for this shape");
    }
}

/// Encodes row-major `values` (rows of `cols`) as `dtype`, weighted by `importance`.
pub fn encode(
    values: &[f32],
    cols: usize,
    dtype: DType,
    importance: Option<&[f32]>,
) -> Result<Vec<u8>, String> {
    let codec = Codec::new(dtype).ok_or_else(|| format!("crunch does not encode {dtype:?}"))?;
    codec.encode_rows(values, cols, importance)
}

const MAGIC: &[u8; 8] = b"CRGGUFQ1";

fn read_cached(path: &Path, len: usize) -> Option<Vec<u8>> {
    let b = std::fs::read(path).ok()?;
    (b.len() == MAGIC.len() + len && b.starts_with(MAGIC)).then(|| b[MAGIC.len()..].to_vec())
}

fn write_cached(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp: PathBuf = path.with_extension(format!("q.tmp{}", std::process::id()));
    let mut b = Vec::with_capacity(MAGIC.len() + bytes.len());
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(bytes);
    std::fs::write(&tmp, &b).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladders_grow_and_fit() {
        for cols in [256usize, 576, 1536, 4096] {
            let l = ladder(cols);
            let bytes: Vec<usize> = l.iter().map(|d| d.bytes_for(cols).unwrap()).collect();
            assert!(bytes.windows(2).all(|w| w[0] < w[1]), "{cols}: {bytes:?}");
        }
        assert_eq!(ladder(576)[0], DType::IQ4NL);
        assert_eq!(ladder(1536)[0], DType::Q2K);
        assert!(ladder(100).is_empty());
    }
}
