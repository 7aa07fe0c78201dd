//! Errors. Codec-level errors carry only a message; the container layer adds the file and,
//! where it knows them, the tensor and chunk, so every message a user sees names its file.

use std::path::{Path, PathBuf};

/// A coding or decoding failure inside one chunk (corrupt data, impossible parameters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

impl CodecError {
    pub fn new(msg: impl Into<String>) -> Self {
        CodecError(msg.into())
    }
}

pub type CodecResult<T> = std::result::Result<T, CodecError>;

/// Anything that can go wrong packing or unpacking; the message starts with the file.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    // The I/O error is part of the message rather than a `#[source]`, so that `{:#}` chains
    // (as the CLI prints) do not repeat it.
    // (thiserror would treat a field named `source` as one, hence `err`).
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    /// The packed file is damaged, truncated or not a packed file at all.
    #[error("{}: {msg}", path.display())]
    Corrupt { path: PathBuf, msg: String },
    /// The request cannot be carried out (output exists, unknown tensor, ...).
    #[error("{}: {msg}", path.display())]
    Invalid { path: PathBuf, msg: String },
}

impl PackError {
    pub fn io(path: impl AsRef<Path>, err: std::io::Error) -> Self {
        PackError::Io {
            path: path.as_ref().to_path_buf(),
            err,
        }
    }
    pub fn corrupt(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        PackError::Corrupt {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }
    pub fn invalid(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        PackError::Invalid {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }
}

pub type Result<T, E = PackError> = std::result::Result<T, E>;
