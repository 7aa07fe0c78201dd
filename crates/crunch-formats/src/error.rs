use std::path::{Path, PathBuf};

pub type Result<T, E = FormatError> = std::result::Result<T, E>;

/// An error reading a checkpoint; its message always starts with the offending file.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {msg}", path.display())]
    Invalid { path: PathBuf, msg: String },
}

impl FormatError {
    pub fn invalid(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        FormatError::Invalid {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        FormatError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}
