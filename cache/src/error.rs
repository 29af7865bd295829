//! The crate's error type.
//!
//! Every variant names the file involved and, where there is one, what to do about it; the
//! `rbuild` CLI prints `Display` as is. Damaged cache files are *not* errors: the cache is a
//! cache, so a record or index that cannot be parsed is skipped and reported as a
//! [`Warning`](crate::Warning) instead of failing the build.

use std::io;
use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the `cache` crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("cannot {op} {}: {source}{}", path.display(), io_hint(source))]
    Io {
        /// What we were doing ("open", "rename", "lock", ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A string that should have been a cache key or checksum is not one.
    #[error("invalid {what} {value:?}: expected \"sha256:\" followed by 64 lowercase hex digits")]
    InvalidDigest {
        /// "cache key" or "file checksum".
        what: &'static str,
        /// The rejected text.
        value: String,
    },

    /// A context path given to the checksummer is not a plain relative path.
    #[error(
        "cannot checksum {}: {reason}; pass a path relative to the context root, \
         without `..`",
        path.display()
    )]
    InvalidPath {
        /// The path as given.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A context file kept changing while it was read, so no checksum of it is meaningful.
    #[error(
        "{} changed while it was being checksummed ({attempts} attempts); stop whatever \
         writes to it during the build and build again",
        path.display()
    )]
    Unstable {
        /// The file.
        path: PathBuf,
        /// How many times it was read.
        attempts: u32,
    },

    /// A `--cache-to` or `--cache-from` value that cannot be used.
    #[error("{flag} {spec}: {reason}")]
    Spec {
        /// `--cache-to` or `--cache-from`.
        flag: &'static str,
        /// The value as given.
        spec: String,
        /// What is wrong, and what to write instead.
        reason: String,
    },

    /// A registry failed while a cache was exported or imported.
    #[error("cache {location}: {source}")]
    Registry {
        /// The export's reference.
        location: String,
        /// The registry client's error (it names the registry, the blob, and what to do).
        #[source]
        source: Box<images::registry::Error>,
    },

    /// The local store, or a local cache directory, failed.
    #[error("cache {location}: {source}")]
    Store {
        /// The export's reference or directory.
        location: String,
        /// The store's error.
        #[source]
        source: Box<images::Error>,
    },

    /// What is at a cache location is not an export this rbuild can read.
    #[error("cache {location} cannot be used: {reason}")]
    Unusable {
        /// The export's reference or directory.
        location: String,
        /// What is wrong.
        reason: String,
    },

    /// Encoding a record or index as JSON failed (a bug: every field is serialisable).
    #[error("cannot encode {}: {source}", path.display())]
    Encode {
        /// The file that was to be written.
        path: PathBuf,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

fn io_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            " (run as root, or point RBUILD_ROOT at a directory you can write)"
        }
        io::ErrorKind::StorageFull => " (the disk is full: free space, e.g. with `rbuild prune`)",
        io::ErrorKind::ReadOnlyFilesystem => {
            " (the cache is on a read-only filesystem: point RBUILD_ROOT at a writable one)"
        }
        _ => "",
    }
}

/// Extension to attach an operation and a path to `io::Result`s.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}
