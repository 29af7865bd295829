//! Apply a layer (gzip, zstd or plain tar, detected by magic) to a directory, never writing
//! outside it.
//!
//! Two modes, because snapshots and flattened trees need whiteouts in different forms:
//! - [`ApplyMode::Flatten`]: onto an existing tree. `.wh.NAME` removes NAME as lower layers
//!   left it, `.wh..wh..opq` removes what lower layers put in its directory; entries of the
//!   layer being applied survive both (OCI image spec: whiteouts apply to lower layers only).
//! - [`ApplyMode::OverlayLower`]: into an empty directory that will be one overlay lowerdir
//!   among a snapshot chain. Whiteouts are stored the way overlayfs reads them: `.wh.NAME`
//!   becomes a char device 0/0 named NAME, `.wh..wh..opq` becomes `trusted.overlay.opaque=y`
//!   on its directory. A directory that replaces a whiteout of the same layer is made opaque,
//!   since in a flattened apply it would have replaced the lower directory.
//!
//! Path rules (decided here, tested in `tests/hostile.rs`):
//! - names are split on `/`; empty and `.` components are dropped, so a leading `/` or `./`
//!   is stripped (absolute names land inside the root, as with containerd and BuildKit);
//! - any `..` component is refused, anywhere in a name or hardlink target;
//! - parents are resolved inside the root component by component; symlinks met are followed
//!   as a chroot would (absolute targets restart at the root) but a `..` above the root is
//!   refused; missing parents are created with mode 0755;
//! - whiteouts, opaque markers and hardlink targets may not go through any symlink;
//! - the final component is never followed: an existing node there is removed first (a
//!   directory stays only when a directory replaces it, whose metadata is then updated);
//! - hardlink targets must exist in the tree and not be directories;
//! - device nodes need root (or [`ApplyOptions::allow_devices`]); fifos do not;
//! - extension headers (PAX, GNU long names) over [`ApplyOptions::max_extension_bytes`] per
//!   entry are refused before being read.
//!
//! Metadata: owner (lchown semantics) first, then mode (chown clears setuid), then xattrs
//! (chown also clears `security.capability`), then mtime. Directories get theirs after all
//! entries, deepest first, through fds the kernel resolved with no symlink allowed.
//! Overlay's own xattrs in a layer are never restored.
//!
//! The target must not be modified by anyone else while a layer is applied to it.

mod entries;
mod whiteout;

use crate::compress::{self, sha256_digest, Detected};
use crate::reader::{ReadError, TarReader};
use crate::resolve::Root;
use entries::Applier;
use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Where whiteouts go; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyMode {
    Flatten,
    OverlayLower,
}

#[derive(Clone, Debug)]
pub struct ApplyOptions {
    pub mode: ApplyMode,
    /// Create char and block devices. Default: running as root (euid 0).
    pub allow_devices: bool,
    /// Restore uid/gid. Default: running as root.
    pub restore_owner: bool,
    /// Skip xattrs the kernel will not let us set (EPERM, ENOTSUP) instead of failing.
    /// Default: not running as root.
    pub lenient_xattrs: bool,
    /// Most bytes of PAX/GNU extension headers accepted before one entry. Default 1 MiB.
    pub max_extension_bytes: usize,
}

impl ApplyOptions {
    pub fn new(mode: ApplyMode) -> Self {
        let root = rustix::process::geteuid().is_root();
        Self {
            mode,
            allow_devices: root,
            restore_owner: root,
            lenient_xattrs: !root,
            max_extension_bytes: 1 << 20,
        }
    }
}

/// What applying a layer found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyStats {
    /// sha256 of the uncompressed stream: compare it with the expected diffID.
    pub diff_id: Digest,
    pub compression: Detected,
    pub entries: u64,
}

/// Why an entry was refused. Display text is the reason; [`ApplyError`] adds the entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("name has a `..` component")]
    DotDot,
    #[error("name contains a NUL byte")]
    NulByte,
    #[error("path climbs out of the root through symlink {symlink:?}")]
    Escape { symlink: String },
    #[error("too many levels of symbolic links")]
    SymlinkLoop,
    #[error("symlink {symlink:?} has an empty target")]
    EmptySymlink { symlink: String },
    #[error("{parent:?} is not a directory")]
    NotADirectory { parent: String },
    #[error("whiteout may not go through symlink {symlink:?}")]
    WhiteoutThroughSymlink { symlink: String },
    #[error("whiteout of an empty name, `.` or `..`")]
    BadWhiteout,
    #[error("hardlink target {target:?} has a `..` component")]
    LinkTargetDotDot { target: String },
    #[error("hardlink target {target:?} does not exist")]
    LinkTargetMissing { target: String },
    #[error("hardlink target {target:?} is a directory")]
    LinkTargetIsDirectory { target: String },
    #[error("hardlink target {target:?} goes through symlink {symlink:?}")]
    LinkThroughSymlink { target: String, symlink: String },
    #[error("device nodes need root")]
    DeviceNotAllowed,
    #[error("the root directory can only be given directory metadata")]
    RootNotDirectory,
    #[error("uid or gid {0} does not fit 32 bits")]
    IdOutOfRange(u64),
    #[error("extension headers over {limit} bytes")]
    ExtensionHeadersTooBig { limit: usize },
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("layer entry {entry:?}: refused: {reason}")]
    Refused { entry: String, reason: Refusal },
    #[error("layer entry {entry:?}: {op}: {source}")]
    Io {
        entry: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("layer entry {entry:?}: unsupported: {what}")]
    Unsupported { entry: String, what: String },
    #[error("malformed layer tar at byte {offset}: {reason}")]
    Malformed { offset: u64, reason: String },
    #[error("reading the layer: {0}")]
    Read(#[source] io::Error),
    #[error("apply target {path}: {source}")]
    Target {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ApplyError {
    /// The refusal, if this error is one.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Self::Refused { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

pub(super) fn display(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// Apply `layer` to the directory `root` (which must exist).
pub fn apply<R: Read>(
    layer: R,
    root: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, ApplyError> {
    let (compression, reader) = compress::decompress(layer).map_err(ApplyError::Read)?;
    let hashing = HashingReader {
        inner: reader,
        hash: Sha256::new(),
    };
    let mut tar = TarReader::new(hashing, opts.max_extension_bytes);
    let root_fd = Root::open(root).map_err(|source| ApplyError::Target {
        path: root.to_path_buf(),
        source,
    })?;
    let mut st = Applier::new(root_fd, opts);
    let mut entries = 0;
    while let Some(entry) = tar.next().map_err(read_error)? {
        st.entry(&entry, &mut tar)?;
        entries += 1;
    }
    // Bytes after the end-of-archive marker (record padding) are part of the diffID.
    let mut hashing = tar.into_inner();
    io::copy(&mut hashing, &mut io::sink()).map_err(ApplyError::Read)?;
    st.finish_dirs()?;
    Ok(ApplyStats {
        diff_id: sha256_digest(hashing.hash),
        compression,
        entries,
    })
}

fn read_error(e: ReadError) -> ApplyError {
    match e {
        ReadError::Malformed { offset, reason } => ApplyError::Malformed { offset, reason },
        ReadError::TooBig { offset, limit } => ApplyError::Refused {
            entry: format!("(extension header at byte {offset})"),
            reason: Refusal::ExtensionHeadersTooBig { limit },
        },
        ReadError::Unsupported { path, what } => ApplyError::Unsupported {
            entry: display(&path),
            what,
        },
        ReadError::Io(e) => ApplyError::Read(e),
    }
}

struct HashingReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Split a name into components: empty and `.` dropped, `..` and NUL refused.
pub(super) fn components(name: &[u8]) -> Result<Vec<&[u8]>, Refusal> {
    if name.contains(&0) {
        return Err(Refusal::NulByte);
    }
    let mut out = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(Refusal::DotDot),
            c => out.push(c),
        }
    }
    Ok(out)
}
