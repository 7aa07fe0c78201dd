//! A file's tensor table, shared by the GGUF and safetensors readers: each tensor's
//! description and absolute byte range, in file order, found by name.

use crate::{FormatError, Result, TensorInfo};
use std::collections::HashMap;
use std::path::Path;

/// One tensor of a file: a validated description and its absolute byte range.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub info: TensorInfo,
    pub start: usize,
    pub end: usize,
}

#[derive(Clone, Debug)]
pub(crate) struct TensorTable {
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
}

impl TensorTable {
    pub fn new(entries: Vec<Entry>) -> Self {
        let by_name = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.info.name.clone(), i))
            .collect();
        Self { entries, by_name }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn infos(&self) -> Vec<TensorInfo> {
        self.entries.iter().map(|e| e.info.clone()).collect()
    }

    pub fn info(&self, name: &str) -> Option<TensorInfo> {
        self.by_name
            .get(name)
            .map(|&i| self.entries[i].info.clone())
    }

    /// The tensor `name`, or an error naming `path` (the file) and the missing tensor.
    pub fn entry(&self, path: &Path, name: &str) -> Result<&Entry> {
        self.by_name
            .get(name)
            .map(|&i| &self.entries[i])
            .ok_or_else(|| FormatError::invalid(path, format!("no tensor named `{name}`")))
    }
}
