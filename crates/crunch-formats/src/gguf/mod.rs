//! GGUF (llama.cpp's checkpoint format, versions 2 and 3): a little-endian header, typed
//! metadata key/values, tensor descriptions, then an aligned data section of raw (often
//! block-quantized) tensor bytes.
//!
//! [`GgufFile::open`] memory-maps the file and validates every count, length, offset and size
//! against the file's real length before anything is allocated or handed out (see
//! `reader.rs`); [`dequantize`] turns stored blocks into f32 and [`quants`] holds every block
//! type's layout, decoder and encoder; [`build_tokenizer`] rebuilds the Hugging Face tokenizer
//! from the `tokenizer.ggml.*` metadata.

pub mod quants;
mod reader;
mod tokenizer;
mod value;
mod writer;

pub use quants::dequantize;
pub use tokenizer::{build_tokenizer, tokenizer_metadata, SpecialIds, SUPPORTED_PRE};
pub use value::GgufValue;
pub use writer::{serialize, Layout, TensorSpec};

use crate::mapped::MappedFile;
use crate::table::{Entry, TensorTable};
use crate::{DType, FormatError, Result, SharedBytes, TensorInfo, TensorSource};
use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// The file's bytes: mapped from disk, or owned (for parsing from memory, e.g. when fuzzing).
enum Bytes {
    Mapped(MappedFile),
    Owned(Vec<u8>),
}

impl Bytes {
    /// An error if a mapped file shrank since it was opened (see [`MappedFile::check_whole`]).
    fn check_whole(&self) -> Result<()> {
        match self {
            Bytes::Mapped(m) => m.check_whole(),
            Bytes::Owned(_) => Ok(()),
        }
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m.bytes(),
            Bytes::Owned(v) => v,
        }
    }
}

/// One GGUF file, memory-mapped and validated.
pub struct GgufFile {
    path: PathBuf,
    /// Shared so that a runtime can keep computing from the mapped blocks
    /// ([`TensorSource::raw_shared`]) after this value is dropped.
    bytes: Arc<Bytes>,
    version: u32,
    alignment: u64,
    data_start: usize,
    metadata: BTreeMap<String, GgufValue>,
    table: TensorTable,
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let len = std::fs::metadata(&path)
            .map_err(|e| FormatError::io(&path, e))?
            .len();
        // Mapping an empty file fails on some platforms with an unhelpful message; a file this
        // short cannot hold a header anyway, so say that instead.
        if len < reader::MIN_HEADER_BYTES as u64 {
            return Err(FormatError::invalid(
                &path,
                format!("file is {len} bytes, too short for a GGUF header"),
            ));
        }
        let mmap = MappedFile::open(&path)?;
        Self::parse(path, Bytes::Mapped(mmap))
    }

    /// Parses a GGUF image held in memory. `path` only labels error messages.
    pub fn from_bytes(path: impl AsRef<Path>, bytes: Vec<u8>) -> Result<Self> {
        Self::parse(path.as_ref().to_path_buf(), Bytes::Owned(bytes))
    }

    fn parse(path: PathBuf, bytes: Bytes) -> Result<Self> {
        let parsed = reader::parse(&path, &bytes)?;
        Ok(Self {
            path,
            bytes: Arc::new(bytes),
            version: parsed.version,
            alignment: parsed.alignment,
            data_start: parsed.data_start,
            metadata: parsed.metadata,
            table: TensorTable::new(parsed.entries),
        })
    }

    /// Format version: 2 or 3 (the only ones accepted).
    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// `general.architecture`, e.g. "llama".
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(GgufValue::as_str)
    }

    /// Alignment of the data section and of each tensor's offset.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset at which the data section starts.
    pub fn data_start(&self) -> usize {
        self.data_start
    }

    /// The raw stored bytes of one tensor (quantized blocks for quantized types).
    pub fn raw(&self, name: &str) -> Result<&[u8]> {
        let e = self.entry(name)?;
        self.bytes.check_whole()?;
        Ok(&self.bytes[e.start..e.end])
    }

    /// Dequantizes one tensor into `out`, which must hold exactly its element count; lets a
    /// caller reuse a buffer across tensors.
    pub fn read_f32_into(&self, name: &str, out: &mut [f32]) -> Result<()> {
        let e = self.entry(name)?;
        self.bytes.check_whole()?;
        dequantize(e.info.dtype, &self.bytes[e.start..e.end], out)
            .map_err(|msg| FormatError::invalid(&self.path, format!("tensor `{name}`: {msg}")))
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.table.entry(&self.path, name)
    }

    /// Error helper for the tokenizer and other metadata consumers.
    pub(crate) fn invalid(&self, msg: impl Into<String>) -> FormatError {
        FormatError::invalid(&self.path, msg)
    }
}

impl TensorSource for GgufFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn tensors(&self) -> Vec<TensorInfo> {
        self.table.infos()
    }

    fn info(&self, name: &str) -> Option<TensorInfo> {
        self.table.info(name)
    }

    fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let numel = self.entry(name)?.info.numel();
        let mut out = vec![0f32; numel];
        self.read_f32_into(name, &mut out)?;
        Ok(out)
    }

    /// Only the blocks of the range are dequantized; it must start and end on block
    /// boundaries (a stacked expert is whole rows, and rows are whole blocks).
    fn read_f32_range(&self, name: &str, start: usize, len: usize) -> Result<Vec<f32>> {
        let e = self.entry(name)?;
        self.bytes.check_whole()?;
        let dtype = e.info.dtype;
        let bad = |msg: String| FormatError::invalid(&self.path, format!("tensor `{name}`: {msg}"));
        let end = start
            .checked_add(len)
            .filter(|&end| end <= e.info.numel())
            .ok_or_else(|| {
                bad(format!(
                    "elements {start}..+{len} are past its {} elements",
                    e.info.numel()
                ))
            })?;
        let (Some(from), Some(to)) = (dtype.bytes_for(start), dtype.bytes_for(end)) else {
            return Err(bad(format!(
                "elements {start}..{end} do not fall on {dtype:?} block boundaries"
            )));
        };
        let mut out = vec![0f32; len];
        dequantize(dtype, &self.bytes[e.start + from..e.start + to], &mut out).map_err(bad)?;
        Ok(out)
    }

    fn bytes_on_disk(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn raw_shared(&self, name: &str) -> Option<SharedBytes> {
        let e = self.entry(name).ok()?;
        self.bytes.check_whole().ok()?;
        Some(SharedBytes {
            dtype: e.info.dtype,
            buffer: self.bytes.clone(),
            range: e.start..e.end,
        })
    }
}

/// The ggml type id of each [`DType`] GGUF can store.
pub fn ggml_type_id(dtype: DType) -> u32 {
    use DType::*;
    match dtype {
        F32 => 0,
        F16 => 1,
        Q4_0 => 2,
        Q4_1 => 3,
        Q5_0 => 6,
        Q5_1 => 7,
        Q8_0 => 8,
        Q2K => 10,
        Q3K => 11,
        Q4K => 12,
        Q5K => 13,
        Q6K => 14,
        Q8K => 15,
        IQ2XXS => 16,
        IQ2XS => 17,
        IQ3XXS => 18,
        IQ1S => 19,
        IQ4NL => 20,
        IQ3S => 21,
        IQ2S => 22,
        IQ4XS => 23,
        IQ1M => 29,
        I8 => 24,
        I16 => 25,
        I32 => 26,
        I64 => 27,
        F64 => 28,
        BF16 => 30,
        // Not ggml types; the writer refuses them before asking.
        U8 | U32 | Bool => u32::MAX,
    }
}

/// The [`DType`] of a ggml type id, or a message naming the id (and the type, when it is a
/// known ggml type crunch does not read).
pub fn dtype_from_ggml(id: u32) -> std::result::Result<DType, String> {
    use DType::*;
    Ok(match id {
        0 => F32,
        1 => F16,
        2 => Q4_0,
        3 => Q4_1,
        6 => Q5_0,
        7 => Q5_1,
        8 => Q8_0,
        10 => Q2K,
        11 => Q3K,
        12 => Q4K,
        13 => Q5K,
        14 => Q6K,
        15 => Q8K,
        16 => IQ2XXS,
        17 => IQ2XS,
        18 => IQ3XXS,
        19 => IQ1S,
        20 => IQ4NL,
        21 => IQ3S,
        22 => IQ2S,
        23 => IQ4XS,
        29 => IQ1M,
        24 => I8,
        25 => I16,
        26 => I32,
        27 => I64,
        28 => F64,
        30 => BF16,
        _ => {
            let known = match id {
                4 | 5 => "Q4_2/Q4_3, removed from ggml in 2023",
                9 => "Q8_1",
                31..=33 => "Q4_0_4_4/Q4_0_4_8/Q4_0_8_8, removed from ggml",
                34 => "TQ1_0",
                35 => "TQ2_0",
                36..=38 => "IQ4_NL_4_4/IQ4_NL_4_8/IQ4_NL_8_8, removed from ggml",
                39 => "MXFP4",
                40 => "NVFP4",
                41 => "Q1_0",
                _ => return Err(format!("unknown ggml type id {id}")),
            };
            return Err(format!(
                "ggml type id {id} ({known}) is not supported by crunch"
            ));
        }
    })
}

#[cfg(test)]
mod tests;
