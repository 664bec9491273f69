//! Errors of the road graph crate. Every variant names the file involved, so
//! the CLI can print one line that tells the user what is wrong and where.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not an OSM PBF file or a lastmile graph snapshot")]
    UnknownFormat { path: PathBuf },
    #[error("{path}: corrupt or truncated OSM PBF: {reason}")]
    CorruptPbf { path: PathBuf, reason: String },
    #[error("{path}: no car-routable roads found")]
    NoRoads { path: PathBuf },
    #[error(
        "{path}: snapshot format version {found}, this build reads version {expected}; re-run `lastmile import`"
    )]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{path}: truncated snapshot: {found} bytes, the header promises {expected}")]
    Truncated {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("{path}: snapshot checksum mismatch (file is corrupt)")]
    Checksum { path: PathBuf },
    #[error("{path}: snapshot is malformed: {reason}")]
    Malformed { path: PathBuf, reason: String },
}

impl GraphError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
