//! The crate's error type.
//!
//! Every variant carries the context a user needs to act on it: the path, reference or digest
//! involved, and where there is one, what to do next. Callers (the `rbuild` CLI) print
//! `Display` as is.

use std::io;
use std::path::PathBuf;

use oci_spec::image::Digest;

use crate::reference::ReferenceError;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the `images` crate.
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

    /// An image reference could not be parsed.
    #[error(transparent)]
    Reference(#[from] ReferenceError),

    /// Content did not hash to the digest it was expected to have.
    #[error(
        "content verification failed: expected {expected}, got {actual} ({size} bytes); \
         the source is corrupt or truncated: fetch or build it again"
    )]
    DigestMismatch {
        /// The digest the caller promised.
        expected: Digest,
        /// The digest of what was actually written or read.
        actual: Digest,
        /// How many bytes were hashed.
        size: u64,
    },

    /// A blob the caller asked for (or that a manifest refers to) is not in the store.
    #[error(
        "blob {digest} is not in the store ({}); pull or build the image again, \
         and run `rbuild fsck` to see what else is missing",
        path.display()
    )]
    BlobNotFound {
        /// The missing blob.
        digest: Digest,
        /// Where it should have been.
        path: PathBuf,
    },

    /// No image is tagged with this reference.
    #[error(
        "no such image: {reference} (not in the local store {}); \
         `rbuild images` lists what is there",
        root.display()
    )]
    RefNotFound {
        /// The reference, in its familiar form.
        reference: String,
        /// The store that was searched.
        root: PathBuf,
    },

    /// Only sha256 content addresses are supported by the store.
    #[error("unsupported digest {digest}: rbuild's store only holds sha256 content")]
    UnsupportedDigest {
        /// The digest that was rejected.
        digest: String,
    },

    /// JSON that we read (a manifest, a config, `index.json`) did not parse, or a value could
    /// not be encoded.
    #[error("invalid JSON in {what}: {source}")]
    Json {
        /// What was being read or written, with its path or digest.
        what: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },

    /// An image is structurally wrong or not usable here (wrong media type, no manifest for
    /// this platform, layer count that does not match the config, ...).
    #[error("invalid image {what}: {reason}")]
    InvalidImage {
        /// The reference or digest of the image.
        what: String,
        /// What is wrong, and what to do about it.
        reason: String,
    },

    /// A request that makes no sense (tagging with a digest reference, an empty list, ...).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Builds an [`Error::Io`] from an operation name, a path and an `io::Error`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Builds an [`Error::Json`].
    pub(crate) fn json(what: impl Into<String>, source: serde_json::Error) -> Self {
        Error::Json {
            what: what.into(),
            source,
        }
    }
}

/// A short suggestion appended to I/O errors whose cause is usually the same.
fn io_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            " (run as root, or point RBUILD_ROOT at a directory you can write)"
        }
        io::ErrorKind::StorageFull => " (the disk is full: free space, e.g. with `rbuild prune`)",
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
