//! Safetensors: an 8-byte little-endian header length, a JSON header, then raw tensor bytes.
//!
//! Files are memory-mapped; the header is checked against the file's real length (every offset
//! in range, every byte count equal to what dtype and shape imply, no overlaps) before any
//! tensor is handed out.

use crate::dtype::{f32_le_bytes, float_bytes_to_f32, BLOCKS_IN_SAFETENSORS};
use crate::mapped::MappedFile;
use crate::table::{Entry, TensorTable};
use crate::{DType, FormatError, Result, SharedBytes, TensorInfo, TensorSource};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Headers larger than this are refused: real ones are kilobytes, and a lying length
/// must not make us allocate gigabytes.
const MAX_HEADER_BYTES: u64 = 100 << 20;

/// One memory-mapped safetensors file.
pub struct SafetensorsFile {
    path: PathBuf,
    /// Shared, so a runtime can compute from a tensor's stored blocks ([`TensorSource::raw_shared`]).
    mmap: Arc<MappedFile>,
    table: TensorTable,
    metadata: BTreeMap<String, String>,
}

impl SafetensorsFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mmap = Arc::new(MappedFile::open(&path)?);
        let (entries, metadata) = parse_header(&path, mmap.bytes())?;
        Ok(Self {
            path,
            mmap,
            table: TensorTable::new(entries),
            metadata,
        })
    }

    /// The free-form `__metadata__` map of the header.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The raw little-endian bytes of one tensor.
    pub fn raw(&self, name: &str) -> Result<&[u8]> {
        let e = self.entry(name)?;
        self.mmap.check_whole()?;
        Ok(&self.mmap.bytes()[e.start..e.end])
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.table.entry(&self.path, name)
    }
}

impl TensorSource for SafetensorsFile {
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
        let e = self.entry(name)?;
        self.mmap.check_whole()?;
        let bytes = &self.mmap.bytes()[e.start..e.end];
        if BLOCKS_IN_SAFETENSORS.contains(&e.info.dtype) {
            let mut out = vec![0f32; e.info.numel()];
            crate::gguf::quants::dequantize(e.info.dtype, bytes, &mut out)
                .map_err(|m| FormatError::invalid(&self.path, format!("tensor `{name}`: {m}")))?;
            return Ok(out);
        }
        float_bytes_to_f32(e.info.dtype, bytes).ok_or_else(|| {
            FormatError::invalid(
                &self.path,
                format!(
                    "tensor `{name}` has dtype {:?}, which is not a floating-point type",
                    e.info.dtype
                ),
            )
        })
    }

    fn bytes_on_disk(&self) -> u64 {
        self.mmap.bytes().len() as u64
    }

    /// A tensor stored as GGUF blocks (crunch's own files), shared with the mapped file; `None`
    /// for float and integer tensors (read and converted as usual).
    fn raw_shared(&self, name: &str) -> Option<SharedBytes> {
        let e = self.entry(name).ok()?;
        if !BLOCKS_IN_SAFETENSORS.contains(&e.info.dtype) {
            return None;
        }
        self.mmap.check_whole().ok()?;
        Some(SharedBytes {
            dtype: e.info.dtype,
            buffer: self.mmap.clone(),
            range: e.start..e.end,
        })
    }
}

fn parse_header(path: &Path, bytes: &[u8]) -> Result<(Vec<Entry>, BTreeMap<String, String>)> {
    let bad = |msg: String| FormatError::invalid(path, msg);
    if bytes.len() < 8 {
        return Err(bad(format!(
            "file is {} bytes, too short for a safetensors header",
            bytes.len()
        )));
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let available = bytes.len() as u64 - 8;
    if header_len > available {
        return Err(bad(format!(
            "header claims {header_len} bytes but the file has only {available} after the length \
             prefix (truncated or not a safetensors file)"
        )));
    }
    if header_len > MAX_HEADER_BYTES {
        return Err(bad(format!(
            "header claims {header_len} bytes, more than the {MAX_HEADER_BYTES} allowed"
        )));
    }
    let header_end = 8 + header_len as usize;
    let json: serde_json::Value = serde_json::from_slice(&bytes[8..header_end])
        .map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
    let obj = json
        .as_object()
        .ok_or_else(|| bad("header is not a JSON object".into()))?;
    let data_len = bytes.len() - header_end;

    let mut metadata = BTreeMap::new();
    let mut entries = Vec::with_capacity(obj.len());
    for (name, value) in obj {
        if name == "__metadata__" {
            if let Some(m) = value.as_object() {
                for (k, v) in m {
                    if let Some(s) = v.as_str() {
                        metadata.insert(k.clone(), s.to_string());
                    }
                }
            }
            continue;
        }
        entries.push(parse_entry(path, name, value, header_end, data_len)?);
    }
    check_no_overlap(path, &mut entries)?;
    check_covered(path, &entries, header_end, bytes.len())?;
    Ok((entries, metadata))
}

fn parse_entry(
    path: &Path,
    name: &str,
    value: &serde_json::Value,
    header_end: usize,
    data_len: usize,
) -> Result<Entry> {
    let bad = |msg: String| FormatError::invalid(path, format!("tensor `{name}`: {msg}"));
    let dtype_name = value
        .get("dtype")
        .and_then(|v| v.as_str())
        .ok_or_else(|| bad("missing `dtype`".into()))?;
    let dtype = DType::from_safetensors_name(dtype_name)
        .ok_or_else(|| bad(format!("unknown dtype `{dtype_name}`")))?;
    let shape: Vec<usize> = value
        .get("shape")
        .and_then(|v| v.as_array())
        .ok_or_else(|| bad("missing `shape`".into()))?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("`shape` must be a list of non-negative integers".into()))?;
    let offsets = value
        .get("data_offsets")
        .and_then(|v| v.as_array())
        .filter(|a| a.len() == 2)
        .ok_or_else(|| bad("`data_offsets` must be a pair of integers".into()))?;
    let begin = offsets[0].as_u64().and_then(|v| usize::try_from(v).ok());
    let end = offsets[1].as_u64().and_then(|v| usize::try_from(v).ok());
    let (Some(begin), Some(end)) = (begin, end) else {
        return Err(bad("`data_offsets` must be a pair of integers".into()));
    };
    if begin > end || end > data_len {
        return Err(bad(format!(
            "data_offsets [{begin}, {end}] fall outside the {data_len} data bytes of the file \
             (truncated, or the header lies)"
        )));
    }
    let numel = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    let per_block = dtype.block().0;
    if per_block > 1 && !shape.last().is_some_and(|c| c.is_multiple_of(per_block)) {
        return Err(bad(format!(
            "shape {shape:?} of {dtype_name}: rows must be whole blocks of {per_block} values"
        )));
    }
    let expected = dtype
        .bytes_for(numel)
        .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    if expected != end - begin {
        return Err(bad(format!(
            "shape {shape:?} of {dtype_name} needs {expected} bytes but data_offsets span {}",
            end - begin
        )));
    }
    Ok(Entry {
        info: TensorInfo {
            name: name.to_string(),
            dtype,
            shape,
        },
        start: header_end + begin,
        end: header_end + end,
    })
}

fn check_no_overlap(path: &Path, entries: &mut [Entry]) -> Result<()> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| (entries[i].start, entries[i].end));
    for pair in order.windows(2) {
        let (a, b) = (&entries[pair[0]], &entries[pair[1]]);
        if a.end > b.start && a.end > a.start && b.end > b.start {
            return Err(FormatError::invalid(
                path,
                format!(
                    "tensors `{}` and `{}` overlap in the data section",
                    a.info.name, b.info.name
                ),
            ));
        }
    }
    // Keep file order for listings (empty tensors before a tensor at the same offset).
    entries.sort_by_key(|e| (e.start, e.end));
    Ok(())
}

/// The data section must be exactly the tensors' bytes, back to back: the reference
/// implementation (the `safetensors` library) refuses a file with a gap between tensors or
/// bytes after the last one, so a file crunch accepts is one every other reader accepts, and
/// appended or misplaced data is noticed. `entries` are sorted by offset.
fn check_covered(path: &Path, entries: &[Entry], header_end: usize, file_len: usize) -> Result<()> {
    let mut at = header_end;
    for e in entries {
        if e.start != at {
            let what = if e.start > at {
                format!("{} unused bytes before", e.start - at)
            } else {
                "another tensor's bytes under".to_string()
            };
            return Err(FormatError::invalid(
                path,
                format!(
                    "{what} tensor `{}` in the data section (the safetensors format stores \
                     tensors back to back)",
                    e.info.name
                ),
            ));
        }
        at = e.end;
    }
    if at != file_len {
        return Err(FormatError::invalid(
            path,
            format!(
                "{} bytes after the last tensor's data (trailing bytes: the file was appended \
                 to, or its header is wrong)",
                file_len - at
            ),
        ));
    }
    Ok(())
}

/// A Hugging Face checkpoint: one `model.safetensors`, or shards listed by
/// `model.safetensors.index.json`.
pub struct SafetensorsModel {
    dir: PathBuf,
    files: Vec<SafetensorsFile>,
    /// tensor name -> index into `files`
    owner: BTreeMap<String, usize>,
}

impl SafetensorsModel {
    /// Opens the weights in a model directory (or a single `.safetensors` file).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_file() {
            let file = SafetensorsFile::open(path)?;
            return Ok(Self::from_files(path.to_path_buf(), vec![file]));
        }
        let index_path = path.join("model.safetensors.index.json");
        let single = path.join("model.safetensors");
        if index_path.is_file() {
            let text = std::fs::read_to_string(&index_path)
                .map_err(|e| FormatError::io(&index_path, e))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| FormatError::invalid(&index_path, format!("not valid JSON: {e}")))?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| FormatError::invalid(&index_path, "missing `weight_map` object"))?;
            let mut shard_names: Vec<String> = map
                .values()
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        FormatError::invalid(&index_path, "`weight_map` values must be file names")
                    })
                })
                .collect::<Result<_>>()?;
            shard_names.sort();
            shard_names.dedup();
            let mut files = Vec::with_capacity(shard_names.len());
            for shard in &shard_names {
                if shard.contains("..") || Path::new(shard).is_absolute() {
                    return Err(FormatError::invalid(
                        &index_path,
                        format!("shard name `{shard}` points outside the model directory"),
                    ));
                }
                files.push(SafetensorsFile::open(path.join(shard))?);
            }
            let model = Self::from_files(path.to_path_buf(), files);
            for name in map.keys() {
                if !model.owner.contains_key(name) {
                    return Err(FormatError::invalid(
                        &index_path,
                        format!("lists tensor `{name}` but no shard contains it"),
                    ));
                }
            }
            Ok(model)
        } else if single.is_file() {
            let file = SafetensorsFile::open(&single)?;
            Ok(Self::from_files(path.to_path_buf(), vec![file]))
        } else {
            Err(FormatError::invalid(
                path,
                "no model.safetensors or model.safetensors.index.json in this directory",
            ))
        }
    }

    fn from_files(dir: PathBuf, files: Vec<SafetensorsFile>) -> Self {
        let mut owner = BTreeMap::new();
        for (i, f) in files.iter().enumerate() {
            for e in f.table.entries() {
                owner.entry(e.info.name.clone()).or_insert(i);
            }
        }
        Self { dir, files, owner }
    }

    pub fn files(&self) -> &[SafetensorsFile] {
        &self.files
    }

    fn file_of(&self, name: &str) -> Result<&SafetensorsFile> {
        self.owner
            .get(name)
            .map(|&i| &self.files[i])
            .ok_or_else(|| FormatError::invalid(&self.dir, format!("no tensor named `{name}`")))
    }

    pub fn raw(&self, name: &str) -> Result<&[u8]> {
        self.file_of(name)?.raw(name)
    }
}

impl TensorSource for SafetensorsModel {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn tensors(&self) -> Vec<TensorInfo> {
        self.files.iter().flat_map(|f| f.tensors()).collect()
    }

    fn info(&self, name: &str) -> Option<TensorInfo> {
        self.file_of(name).ok().and_then(|f| f.info(name))
    }

    fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        self.file_of(name)?.read_f32(name)
    }

    fn bytes_on_disk(&self) -> u64 {
        self.files.iter().map(|f| f.bytes_on_disk()).sum()
    }

    fn raw_half(&self, name: &str) -> Option<(DType, &[u8])> {
        let dtype = self.info(name)?.dtype;
        matches!(dtype, DType::F16 | DType::BF16)
            .then(|| self.raw(name).ok().map(|b| (dtype, b)))
            .flatten()
    }

    fn raw_shared(&self, name: &str) -> Option<SharedBytes> {
        self.file_of(name).ok()?.raw_shared(name)
    }
}

/// One tensor to write: name, type, row-major shape and little-endian bytes.
pub struct OwnedTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl OwnedTensor {
    pub fn f32(name: impl Into<String>, shape: &[usize], values: &[f32]) -> Self {
        Self {
            name: name.into(),
            dtype: DType::F32,
            shape: shape.to_vec(),
            data: f32_le_bytes(values),
        }
    }
}

/// Writes `tensors` (in the order given) as a safetensors file at `path`, streaming the data.
/// The header is padded to a multiple of 8 bytes, as the format recommends.
pub fn write_file(
    path: &Path,
    tensors: &[OwnedTensor],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    use std::io::Write;
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::json!(metadata));
    }
    let mut offset = 0usize;
    for t in tensors {
        let dtype = t.dtype.safetensors_name().ok_or_else(|| {
            FormatError::invalid(
                path,
                format!("{:?} cannot be stored in safetensors", t.dtype),
            )
        })?;
        let numel: usize = t.shape.iter().product();
        if t.dtype.bytes_for(numel) != Some(t.data.len()) {
            return Err(FormatError::invalid(
                path,
                format!(
                    "tensor `{}`: {} bytes do not match shape {:?}",
                    t.name,
                    t.data.len(),
                    t.shape
                ),
            ));
        }
        let end = offset + t.data.len();
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": dtype, "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut json = serde_json::to_vec(&header).expect("header serializes");
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let io = |e| FormatError::io(path, e);
    let mut f = std::io::BufWriter::new(File::create(path).map_err(io)?);
    f.write_all(&(json.len() as u64).to_le_bytes())
        .map_err(io)?;
    f.write_all(&json).map_err(io)?;
    for t in tensors {
        f.write_all(&t.data).map_err(io)?;
    }
    f.into_inner()
        .map_err(|e| FormatError::io(path, e.into_error()))?
        .sync_all()
        .map_err(io)
}

/// Serializes f32 tensors to safetensors bytes (used by tests and by crunch's writers).
pub fn serialize_f32(tensors: &[(&str, &[usize], &[f32])]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape, data) in tensors {
        let n = data.len() * 4;
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n]}),
        );
        offset += n;
    }
    let mut json = serde_json::to_vec(&header).expect("header serializes");
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for (_, _, data) in tensors {
        for v in *data {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.safetensors");
        std::fs::write(&p, bytes).unwrap();
        (dir, p)
    }

    /// The error opening a file of `bytes` gives.
    fn open_err(bytes: &[u8]) -> String {
        let (_d, p) = write(bytes);
        SafetensorsFile::open(&p).err().unwrap().to_string()
    }

    /// A file of `header` (its length first) and `data`.
    fn with_header(header: &[u8], data: &[u8]) -> Vec<u8> {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(data);
        bytes
    }

    /// GGUF blocks inside crunch's safetensors files (decision 093): written and read back by
    /// name, decoded by the GGUF decoder, shared with the mapped file, and refused when a row is
    /// not whole blocks.
    #[test]
    fn gguf_blocks_round_trip_and_rows_must_be_whole_blocks() {
        use crate::gguf::quants::{dequantize, Codec};
        let (rows, cols) = (3, 64);
        let x: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.37).sin()).collect();
        let blocks = Codec::new(DType::Q8_0)
            .unwrap()
            .encode_rows(&x, cols, None)
            .unwrap();
        let mut want = vec![0f32; x.len()];
        dequantize(DType::Q8_0, &blocks, &mut want).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let t = OwnedTensor {
            name: "e".into(),
            dtype: DType::Q8_0,
            shape: vec![rows, cols],
            data: blocks.clone(),
        };
        write_file(&p, &[t], &BTreeMap::new()).unwrap();
        let f = SafetensorsFile::open(&p).unwrap();
        assert_eq!(f.info("e").unwrap().dtype, DType::Q8_0);
        assert_eq!(f.read_f32("e").unwrap(), want);
        let raw = f.raw_shared("e").unwrap();
        assert_eq!(&raw.buffer[raw.range], &blocks[..]);
        // The same bytes declared as rows of 48 values: 48 is not whole 32-value blocks.
        let text = std::fs::read(&p).unwrap();
        let header_len = u64::from_le_bytes(text[..8].try_into().unwrap()) as usize;
        let header = String::from_utf8(text[8..8 + header_len].to_vec()).unwrap();
        let bad_header = header.replace("[3,64]", "[4,48]");
        assert_ne!(header, bad_header);
        let mut bad = text.clone();
        bad[8..8 + header_len].copy_from_slice(bad_header.as_bytes());
        let e = open_err(&bad);
        assert!(e.contains("whole blocks of 32"), "{e}");
    }

    #[test]
    fn round_trip() {
        let bytes = serialize_f32(&[
            ("a", &[2, 3], &[1., 2., 3., 4., 5., 6.]),
            ("b", &[1], &[7.]),
        ]);
        let (_d, p) = write(&bytes);
        let f = SafetensorsFile::open(&p).unwrap();
        assert_eq!(f.read_f32("a").unwrap(), vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!(f.info("b").unwrap().shape, vec![1]);
    }

    #[test]
    fn written_files_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        let tensors = vec![
            OwnedTensor::f32("a", &[2], &[1.5, -2.0]),
            OwnedTensor {
                name: "codes".into(),
                dtype: DType::U8,
                shape: vec![3],
                data: vec![7, 8, 9],
            },
        ];
        let meta = BTreeMap::from([("format".to_string(), "crunch".to_string())]);
        write_file(&p, &tensors, &meta).unwrap();
        let f = SafetensorsFile::open(&p).unwrap();
        assert_eq!(f.read_f32("a").unwrap(), vec![1.5, -2.0]);
        assert_eq!(f.raw("codes").unwrap(), &[7, 8, 9]);
        assert_eq!(f.metadata()["format"], "crunch");
        assert!(f.read_f32("codes").is_err());
    }

    #[test]
    fn truncated_file_is_an_error_naming_the_file() {
        let bytes = serialize_f32(&[("a", &[2, 3], &[1., 2., 3., 4., 5., 6.])]);
        let err = open_err(&bytes[..bytes.len() - 4]);
        assert!(err.contains("model.safetensors"), "{err}");
        assert!(err.contains("outside"), "{err}");
    }

    #[test]
    fn lying_header_length_is_an_error() {
        let mut bytes = serialize_f32(&[("a", &[1], &[1.])]);
        bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = open_err(&bytes);
        assert!(err.contains("header claims"), "{err}");
    }

    #[test]
    fn unknown_dtype_is_an_error() {
        let header = br#"{"a":{"dtype":"F8_E9","shape":[1],"data_offsets":[0,1]}}"#;
        let err = open_err(&with_header(header, &[0]));
        assert!(err.contains("unknown dtype `F8_E9`"), "{err}");
    }

    #[test]
    fn shape_size_mismatch_is_an_error() {
        let header = br#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
        let err = open_err(&with_header(header, &[0; 8]));
        assert!(err.contains("needs 12 bytes"), "{err}");
    }

    #[test]
    fn trailing_bytes_and_gaps_are_errors() {
        let mut bytes = serialize_f32(&[("a", &[2], &[1., 2.])]);
        bytes.extend_from_slice(&[0; 3]);
        let err = open_err(&bytes);
        assert!(err.contains("3 bytes after the last tensor"), "{err}");
        let header = br#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
        let err = open_err(&with_header(header, &[0; 8]));
        assert!(err.contains("4 unused bytes before tensor `a`"), "{err}");
        let header = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}}"#;
        let err = open_err(&with_header(header, &[0; 8]));
        assert!(err.contains("under tensor `b`"), "{err}");
    }

    #[test]
    fn overlapping_tensors_are_an_error() {
        let header = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
        let err = open_err(&with_header(header, &[0; 12]));
        assert!(err.contains("overlap"), "{err}");
    }
}
