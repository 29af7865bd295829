//! Checksums of build-context files, with a stat index so that a fully cached build does not
//! read unchanged files again.
//!
//! # What a checksum covers
//!
//! A [`FileSum`] is sha256 over the file's content and the metadata a COPY preserves, and
//! nothing else: no timestamps, so touching a file keeps its checksum. With `u32(x)`/`u64(x)`
//! big-endian and `lp(x)` = `u32(len(x))` then the bytes of `x`:
//!
//! ```text
//! "rbuild.filesum.v1\0"
//! kind       1 byte: f regular, d directory, l symlink, c char dev, b block dev, p fifo, s socket
//! u32(mode)  st_mode: file type and permission bits (setuid, setgid, sticky included)
//! u32(uid) u32(gid)
//! u32(number of xattrs), then lp(name) lp(value) for each, sorted by name
//! then by kind:
//!   f: u64(size) and the content
//!   l: lp(link target)
//!   c, b: u64(rdev)
//!   d (checksum_tree only): u64(number of entries), then lp(name) and the 32-byte sum of
//!      each entry, sorted by name bytes (directories recursively)
//! ```
//!
//! # The index
//!
//! For regular files, an index maps the absolute path to the stat data at hashing time
//! (dev, ino, size, mtime, ctime, mode, uid, gid) and the checksum. An entry is trusted only if
//! all of those still match, so any write, chmod, chown or xattr change (each updates ctime,
//! which no one can set back) forces a re-read. Re-reads stream the file through a fixed
//! buffer.
//!
//! # Racy entries
//!
//! Timestamps have a granularity: a file written again within the same clock tick as the
//! version that was hashed keeps the same mtime and ctime. Git's rule is to distrust entries
//! whose mtime is not older than the index file itself; it assumes hashing happens when the
//! index is written. Here hashing happens during a build and the save comes later, so the rule
//! is applied per entry as well: an entry is trusted only if its ctime and mtime are older than
//! the moment hashing started minus [`RACY_WINDOW`] (2 s when the file's timestamps have no
//! sub-second part, as on filesystems with whole-second times). A file changed just before it
//! was hashed is thus hashed again next time, once. Git's rule proper is applied when the
//! index is loaded, against the index file's mtime.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::digest::sha256_newtype;
use crate::error::{Error, IoContext, Result};
use crate::record::Warning;
use crate::sys;
use layers::xattr::{self, Node};
use std::os::fd::AsFd;

sha256_newtype!(
    /// The checksum of a context file or tree (see the [module docs](self) for what it covers),
    /// written `sha256:<hex>`.
    FileSum,
    "file checksum"
);

/// Read buffer for streaming file contents: large enough for few syscalls, small enough that
/// hashing never holds a file in memory.
pub const READ_BUFFER: usize = 256 * 1024;

/// How recent a change must be, relative to the hash, for the entry to count as racy (on
/// filesystems with sub-second timestamps; those without get 2 s). The kernel stamps files
/// from a coarse clock that lags the precise one by up to a tick (≤ 10 ms).
pub const RACY_WINDOW: Duration = Duration::from_millis(50);
const COARSE_RACY_WINDOW: Duration = Duration::from_secs(2);

/// How many times a file that changes while it is read is tried before giving up.
const ATTEMPTS: u32 = 3;

const INDEX_VERSION: u32 = 1;

/// sha256 of a byte slice.
pub fn hash_bytes(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// sha256 of everything `reader` yields, read through a [`READ_BUFFER`]-sized buffer; also
/// returns the number of bytes.
pub fn hash_reader<R: Read>(mut reader: R) -> io::Result<([u8; 32], u64)> {
    let mut hasher = Sha256::new();
    let n = stream_into(&mut hasher, &mut reader)?;
    Ok((hasher.finalize().into(), n))
}

fn stream_into<R: Read + ?Sized>(hasher: &mut Sha256, reader: &mut R) -> io::Result<u64> {
    let mut buf = vec![0u8; READ_BUFFER];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

/// Counters since the [`Checksummer`] was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChecksumStats {
    /// Regular files whose content was read and hashed.
    pub hashed_files: u64,
    /// Bytes of content read.
    pub hashed_bytes: u64,
    /// Regular files whose checksum came from the index without reading them.
    pub reused_files: u64,
}

/// The stat data an index entry is valid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct StatKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    mode: u32,
    uid: u32,
    gid: u32,
}

impl StatKey {
    fn of(md: &Metadata) -> StatKey {
        StatKey {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime_ns: i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
            ctime_ns: i128::from(md.ctime()) * 1_000_000_000 + i128::from(md.ctime_nsec()),
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
        }
    }

    fn whole_seconds(&self) -> bool {
        self.mtime_ns % 1_000_000_000 == 0 && self.ctime_ns % 1_000_000_000 == 0
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    stat: StatKey,
    /// When hashing started (ns since the epoch, precise clock).
    hashed_ns: i128,
    sum: FileSum,
    /// Looked up or hashed since the index was opened (for `retain_used`).
    #[serde(skip)]
    used: bool,
}

impl Entry {
    fn trusted_for(&self, stat: &StatKey) -> bool {
        if self.stat != *stat {
            return false;
        }
        let window = if stat.whole_seconds() {
            COARSE_RACY_WINDOW
        } else {
            RACY_WINDOW
        };
        let limit = self.hashed_ns - window.as_nanos() as i128;
        stat.ctime_ns < limit && stat.mtime_ns < limit
    }
}

#[derive(Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    entries: HashMap<String, Entry>,
}

#[derive(Default)]
struct IndexState {
    entries: HashMap<PathBuf, Entry>,
    dirty: bool,
}

/// Checksums context files, remembering them in a stat index at `index_path`.
///
/// `&self` methods may run on several threads at once; the index lock is never held while a
/// file is read.
pub struct Checksummer {
    path: PathBuf,
    state: Mutex<IndexState>,
    warnings: Mutex<Vec<Warning>>,
    hashed_files: AtomicU64,
    hashed_bytes: AtomicU64,
    reused_files: AtomicU64,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn now_ns() -> i128 {
    match SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(_) => 0,
    }
}

fn lp(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u32).to_be_bytes());
    hasher.update(bytes);
}

fn kind_byte(ft: &fs::FileType) -> u8 {
    if ft.is_file() {
        b'f'
    } else if ft.is_dir() {
        b'd'
    } else if ft.is_symlink() {
        b'l'
    } else if ft.is_char_device() {
        b'c'
    } else if ft.is_block_device() {
        b'b'
    } else if ft.is_fifo() {
        b'p'
    } else {
        b's'
    }
}

/// The common header: magic, kind, mode, owner, xattrs.
fn header(hasher: &mut Sha256, md: &Metadata, xattrs: &[xattr::Xattr]) {
    hasher.update(b"rbuild.filesum.v1\0");
    hasher.update([kind_byte(&md.file_type())]);
    hasher.update(md.mode().to_be_bytes());
    hasher.update(md.uid().to_be_bytes());
    hasher.update(md.gid().to_be_bytes());
    hasher.update((xattrs.len() as u32).to_be_bytes());
    for (name, value) in xattrs {
        lp(hasher, name);
        lp(hasher, value);
    }
}

/// `root/rel`, refusing absolute and `..` paths in `rel` (`.` components are dropped).
fn join(root: &Path, rel: &Path) -> Result<PathBuf> {
    let root = std::path::absolute(root).ctx("resolve context root", root)?;
    let mut out = root;
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(Error::InvalidPath {
                    path: rel.to_path_buf(),
                    reason: "it contains `..`",
                })
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(Error::InvalidPath {
                    path: rel.to_path_buf(),
                    reason: "it is absolute",
                })
            }
        }
    }
    Ok(out)
}

impl Checksummer {
    /// Open the index at `index_path`. A missing index starts empty; so does a damaged one
    /// (reported by [`take_warnings`](Self::take_warnings)): it is only a cache of checksums.
    pub fn open(index_path: impl Into<PathBuf>) -> Result<Checksummer> {
        let path = index_path.into();
        let mut warnings = Vec::new();
        let entries = match Self::load(&path) {
            Ok(entries) => entries,
            Err(problem) => {
                if let Some(problem) = problem {
                    warnings.push(Warning {
                        path: path.clone(),
                        problem,
                    });
                }
                HashMap::new()
            }
        };
        Ok(Checksummer {
            path,
            state: Mutex::new(IndexState {
                entries,
                dirty: false,
            }),
            warnings: Mutex::new(warnings),
            hashed_files: AtomicU64::new(0),
            hashed_bytes: AtomicU64::new(0),
            reused_files: AtomicU64::new(0),
        })
    }

    /// The entries of the index file; `Err(None)` if there is none, `Err(Some(why))` if it
    /// cannot be used.
    fn load(path: &Path) -> std::result::Result<HashMap<PathBuf, Entry>, Option<String>> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(None),
            Err(e) => return Err(Some(format!("cannot read the checksum index: {e}"))),
        };
        let saved_ns = file
            .metadata()
            .map(|md| StatKey::of(&md).mtime_ns)
            .map_err(|e| Some(format!("cannot stat the checksum index: {e}")))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| Some(format!("cannot read the checksum index: {e}")))?;
        let index: IndexFile = serde_json::from_slice(&bytes)
            .map_err(|e| Some(format!("damaged checksum index, starting afresh: {e}")))?;
        if index.version != INDEX_VERSION {
            return Err(Some(format!(
                "checksum index version {} (expected {INDEX_VERSION}), starting afresh",
                index.version
            )));
        }
        Ok(index
            .entries
            .into_iter()
            // Git's racy rule: an entry stamped at or after the index was written may have
            // been hashed before a change within the same tick.
            .filter(|(_, e)| e.stat.mtime_ns < saved_ns && e.stat.ctime_ns < saved_ns)
            .map(|(p, e)| (PathBuf::from(p), e))
            .collect())
    }

    /// Write the index: temp file beside it, then rename (not fsynced: an index lost to a power
    /// cut only costs hashing again). Paths that are not UTF-8 are not persisted (JSON keys
    /// are strings); they are simply hashed again next time.
    pub fn save(&self) -> Result<()> {
        let bytes = {
            let state = self.lock_state();
            if !state.dirty && self.path.exists() {
                return Ok(());
            }
            let index = IndexFile {
                version: INDEX_VERSION,
                entries: state
                    .entries
                    .iter()
                    .filter_map(|(p, e)| p.to_str().map(|s| (s.to_string(), e.clone())))
                    .collect(),
            };
            serde_json::to_vec(&index).map_err(|source| Error::Encode {
                path: self.path.clone(),
                source,
            })?
        };
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).ctx("create directory", parent)?;
        }
        let file_name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = self.path.with_file_name(format!(
            ".{file_name}.tmp-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = crate::record::write_atomic(&temp, &self.path, &bytes);
        if result.is_ok() {
            self.lock_state().dirty = false;
        }
        result
    }

    /// Forget entries not used since the index was opened: for an index kept per context,
    /// call it before `save` so that deleted files do not accumulate.
    pub fn retain_used(&self) {
        let mut state = self.lock_state();
        let before = state.entries.len();
        state.entries.retain(|_, e| e.used);
        if state.entries.len() != before {
            state.dirty = true;
        }
    }

    /// Counters since open.
    pub fn stats(&self) -> ChecksumStats {
        ChecksumStats {
            hashed_files: self.hashed_files.load(Ordering::Relaxed),
            hashed_bytes: self.hashed_bytes.load(Ordering::Relaxed),
            reused_files: self.reused_files.load(Ordering::Relaxed),
        }
    }

    /// Problems met while loading the index (it was then ignored).
    pub fn take_warnings(&self) -> Vec<Warning> {
        match self.warnings.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, IndexState> {
        // A panic while holding the lock leaves the map consistent (every update is a single
        // insert), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The checksum of `root/rel` without following a final symlink. For a directory, only
    /// its own metadata: a caller that lists a directory's entries (COPY, after
    /// `.dockerignore`) checksums each of them, so an ignored file never counts.
    pub fn checksum(&self, root: &Path, rel: &Path) -> Result<FileSum> {
        let abs = join(root, rel)?;
        let md = fs::symlink_metadata(&abs).ctx("stat", &abs)?;
        if md.is_dir() {
            self.sum_metadata(&abs, &md)
        } else {
            self.sum_path(&abs, Some(md))
        }
    }

    /// The checksum of the tree at `root/rel`: a directory's own metadata and each entry, by
    /// name, recursively; symlinks are not followed. A file gives its file checksum.
    pub fn checksum_tree(&self, root: &Path, rel: &Path) -> Result<FileSum> {
        let abs = join(root, rel)?;
        self.sum_path(&abs, None)
    }

    fn sum_path(&self, abs: &Path, md: Option<Metadata>) -> Result<FileSum> {
        let md = match md {
            Some(md) => md,
            None => fs::symlink_metadata(abs).ctx("stat", abs)?,
        };
        if md.is_dir() {
            self.sum_dir(abs, &md)
        } else if md.is_file() {
            self.sum_regular(abs, md)
        } else {
            self.sum_metadata(abs, &md)
        }
    }

    fn sum_dir(&self, abs: &Path, md: &Metadata) -> Result<FileSum> {
        let mut names = Vec::new();
        for entry in fs::read_dir(abs).ctx("list", abs)? {
            let entry = entry.ctx("list", abs)?;
            names.push(entry.file_name());
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let xattrs = xattr::list(Node::Path(abs)).ctx("read xattrs of", abs)?;
        let mut hasher = Sha256::new();
        header(&mut hasher, md, &xattrs);
        hasher.update((names.len() as u64).to_be_bytes());
        for name in names {
            let child = abs.join(&name);
            let child_md = fs::symlink_metadata(&child).ctx("stat", &child)?;
            let sum = self.sum_path(&child, Some(child_md))?;
            lp(&mut hasher, name.as_bytes());
            hasher.update(sum.as_bytes());
        }
        Ok(FileSum::from_bytes(hasher.finalize().into()))
    }

    /// Type, mode, owner and xattrs, plus a symlink's target or a device's number: all there
    /// is to a special file, and a directory's own part.
    fn sum_metadata(&self, abs: &Path, md: &Metadata) -> Result<FileSum> {
        let xattrs = xattr::list(Node::Path(abs)).ctx("read xattrs of", abs)?;
        let mut hasher = Sha256::new();
        header(&mut hasher, md, &xattrs);
        let ft = md.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(abs).ctx("read symlink", abs)?;
            lp(&mut hasher, target.as_os_str().as_bytes());
        } else if ft.is_char_device() || ft.is_block_device() {
            hasher.update(md.rdev().to_be_bytes());
        }
        Ok(FileSum::from_bytes(hasher.finalize().into()))
    }

    fn sum_regular(&self, abs: &Path, first: Metadata) -> Result<FileSum> {
        let mut md = first;
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                md = fs::symlink_metadata(abs).ctx("stat", abs)?;
                if !md.is_file() {
                    // Replaced by something else meanwhile: checksum what is there now.
                    return self.sum_path(abs, Some(md));
                }
            }
            let stat = StatKey::of(&md);
            {
                let mut state = self.lock_state();
                if let Some(e) = state.entries.get_mut(abs) {
                    if e.trusted_for(&stat) {
                        e.used = true;
                        self.reused_files.fetch_add(1, Ordering::Relaxed);
                        return Ok(e.sum);
                    }
                }
            }
            if let Some(sum) = self.hash_regular(abs, &stat)? {
                return Ok(sum);
            }
        }
        Err(Error::Unstable {
            path: abs.to_path_buf(),
            attempts: ATTEMPTS,
        })
    }

    /// Read and hash a regular file whose lstat gave `stat`. `None` if it changed meanwhile
    /// (the caller tries again).
    fn hash_regular(&self, abs: &Path, stat: &StatKey) -> Result<Option<FileSum>> {
        let hashed_ns = now_ns();
        let mut file = match sys::open_nofollow(abs) {
            Ok(f) => f,
            // Replaced by a symlink, or removed and recreated, since the stat.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                return Ok(None)
            }
            Err(e) => return Err(Error::io("open", abs, e)),
        };
        let md = file.metadata().ctx("stat", abs)?;
        if StatKey::of(&md) != *stat || !md.is_file() {
            return Ok(None);
        }
        let xattrs = xattr::list(Node::Fd(file.as_fd())).ctx("read xattrs of", abs)?;
        let mut hasher = Sha256::new();
        header(&mut hasher, &md, &xattrs);
        hasher.update(stat.size.to_be_bytes());
        let n = stream_into(&mut hasher, &mut file).ctx("read", abs)?;
        self.hashed_files.fetch_add(1, Ordering::Relaxed);
        self.hashed_bytes.fetch_add(n, Ordering::Relaxed);
        // Changed while being read: the bytes hashed may be a mix of two versions.
        let after = file.metadata().ctx("stat", abs)?;
        if n != stat.size || StatKey::of(&after) != *stat {
            return Ok(None);
        }
        let sum = FileSum::from_bytes(hasher.finalize().into());
        let mut state = self.lock_state();
        state.entries.insert(
            abs.to_path_buf(),
            Entry {
                stat: *stat,
                hashed_ns,
                sum,
                used: true,
            },
        );
        state.dirty = true;
        Ok(Some(sum))
    }
}

impl std::fmt::Debug for Checksummer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checksummer")
            .field("path", &self.path)
            .field("stats", &self.stats())
            .finish()
    }
}
