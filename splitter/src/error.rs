//! Errors of model import and sharding. Every message names the file and, where one is
//! involved, the tensor or key, so a user can tell what is wrong with their input.

use std::path::PathBuf;

/// What can go wrong while reading a checkpoint or writing shards.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    /// An operating-system error on a file or directory.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not in the format it claims, or is cut short.
    #[error("{path}: {what}")]
    Corrupt { path: PathBuf, what: String },
    /// The file is well formed but uses something Synapse does not support.
    #[error("{path}: unsupported: {what}")]
    Unsupported { path: PathBuf, what: String },
    /// A tensor the architecture needs is absent.
    #[error("{path}: missing tensor `{tensor}`")]
    MissingTensor { path: PathBuf, tensor: String },
    /// A tensor has a shape other than the architecture's hyper-parameters imply.
    #[error("{path}: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    Shape {
        path: PathBuf,
        tensor: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    /// A configuration key is absent or has the wrong type.
    #[error("{path}: config key `{key}`: {what}")]
    Config {
        path: PathBuf,
        key: String,
        what: String,
    },
    /// The request itself is impossible (for example more shards than layers).
    #[error("{0}")]
    Invalid(String),
}

impl SplitError {
    /// Wraps an io error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SplitError::Io {
            path: path.into(),
            source,
        }
    }

    /// A corrupt-input error on `path`.
    pub fn corrupt(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        SplitError::Corrupt {
            path: path.into(),
            what: what.into(),
        }
    }

    /// An unsupported-input error on `path`.
    pub fn unsupported(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        SplitError::Unsupported {
            path: path.into(),
            what: what.into(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = SplitError> = std::result::Result<T, E>;
