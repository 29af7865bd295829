//! Snapshots: each layer extracted on its own into `ROOT/snapshots/<chainID hex>/fs`, keyed by
//! OCI chain ID, and stacked by overlay as lower dirs — a build step never copies a rootfs.
//!
//! A snapshot holds only its layer's files, with whiteouts in overlay form (char device 0/0,
//! `trusted.overlay.opaque=y`; see [`ApplyMode::OverlayLower`]), so that the overlay of the
//! chain's snapshots shows exactly the flattened image.
//!
//! Crash safety and concurrency: a layer is extracted into `snapshots/tmp-<hex>`, synced
//! (`syncfs`), and renamed into place, so `<hex>/fs` is complete whenever it exists. Each
//! chain ID has a lock file (`snapshots/.locks/<hex>`, `flock`), held while preparing or
//! removing it, so two processes preparing the same snapshot extract it once; a `tmp-*` or
//! `rm-*` directory whose lock is free was left by a killed process and is removed.
//! Removing a snapshot that a mount still uses is the caller's business (cache GC).

use crate::apply::{apply, ApplyError, ApplyMode, ApplyOptions};
use crate::compress::sha256_digest;
use oci_spec::image::{Digest, DigestAlgorithm};
use rustix::fs::{flock, FlockOperation};
use sha2::{Digest as _, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("applying layer {diff_id}: {source}")]
    Apply {
        diff_id: Digest,
        #[source]
        source: ApplyError,
    },
    #[error("layer content has diffID {actual}, expected {expected}")]
    DiffIdMismatch { expected: Digest, actual: Digest },
    #[error("snapshot {0} does not exist")]
    NotFound(Digest),
    #[error("empty layer chain")]
    EmptyChain,
    #[error("{0}: only sha256 digests are supported")]
    Algorithm(Digest),
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// OCI chain IDs of every prefix of `diff_ids`: `ChainID(L0) = DiffID(L0)`,
/// `ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln))`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => {
                let mut h = Sha256::new();
                h.update(prev.to_string().as_bytes());
                h.update(b" ");
                h.update(d.to_string().as_bytes());
                sha256_digest(h)
            }
        };
        out.push(next);
    }
    out
}

/// The chain ID of the whole of `diff_ids`; `None` for no layers.
pub fn chain_id(diff_ids: &[Digest]) -> Option<Digest> {
    chain_ids(diff_ids).pop()
}

/// The snapshot store under `ROOT/snapshots`.
#[derive(Clone, Debug)]
pub struct Snapshotter {
    dir: PathBuf,
}

impl Snapshotter {
    /// Open (creating if needed) the snapshot store under `root`.
    pub fn open(root: &Path) -> Result<Self, SnapshotError> {
        let dir = root.join("snapshots");
        let locks = dir.join(".locks");
        fs::create_dir_all(&locks).map_err(io_err(&locks, "create"))?;
        Ok(Self { dir })
    }

    /// The directory snapshots live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn hex(chain_id: &Digest) -> Result<&str, SnapshotError> {
        if *chain_id.algorithm() != DigestAlgorithm::Sha256 {
            return Err(SnapshotError::Algorithm(chain_id.clone()));
        }
        Ok(chain_id.digest())
    }

    /// Where a snapshot's files are (whether or not it exists).
    pub fn fs_path(&self, chain_id: &Digest) -> Result<PathBuf, SnapshotError> {
        Ok(self.dir.join(Self::hex(chain_id)?).join("fs"))
    }

    pub fn exists(&self, chain_id: &Digest) -> bool {
        self.fs_path(chain_id).is_ok_and(|p| p.is_dir())
    }

    fn lock(&self, hex: &str, op: FlockOperation) -> Result<Option<File>, SnapshotError> {
        let path = self.dir.join(".locks").join(hex);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path, "open lock"))?;
        match flock(&file, op) {
            Ok(()) => Ok(Some(file)),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(io_err(&path, "lock")(e.into())),
        }
    }

    /// Make sure the snapshot for `chain` (its last element being this layer's diffID)
    /// exists, extracting `layer` (compressed or not) if it does not. Returns its `fs` dir.
    /// The layer's content must hash to its diffID.
    pub fn prepare<R: Read>(&self, chain: &[Digest], layer: R) -> Result<PathBuf, SnapshotError> {
        let cid = chain_id(chain).ok_or(SnapshotError::EmptyChain)?;
        let diff_id = chain.last().expect("non-empty").clone();
        let hex = Self::hex(&cid)?.to_string();
        let final_dir = self.dir.join(&hex);
        let _lock = self.lock(&hex, FlockOperation::LockExclusive)?;
        self.clean_stale()?;
        if final_dir.join("fs").is_dir() {
            return Ok(final_dir.join("fs"));
        }

        // Under the lock, a leftover temp dir of this chain ID is from a killed process.
        let tmp = self.dir.join(format!("tmp-{hex}"));
        remove_if_exists(&tmp)?;
        let fs_dir = tmp.join("fs");
        fs::create_dir_all(&fs_dir).map_err(io_err(&fs_dir, "create"))?;

        let stats = match apply(layer, &fs_dir, &ApplyOptions::new(ApplyMode::OverlayLower)) {
            Ok(stats) => stats,
            Err(source) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(SnapshotError::Apply { diff_id, source });
            }
        };
        if stats.diff_id != diff_id {
            let _ = fs::remove_dir_all(&tmp);
            return Err(SnapshotError::DiffIdMismatch {
                expected: diff_id,
                actual: stats.diff_id,
            });
        }

        // One syncfs covers every file of the snapshot; cheaper than an fsync per file.
        let t = File::open(&tmp).map_err(io_err(&tmp, "open"))?;
        rustix::fs::syncfs(&t).map_err(|e| io_err(&tmp, "syncfs")(e.into()))?;
        fs::rename(&tmp, &final_dir).map_err(io_err(&final_dir, "rename into place"))?;
        self.sync_dir()?;
        Ok(final_dir.join("fs"))
    }

    /// Fresh `upper`, `work` and `merged` dirs for one build step, on the snapshots'
    /// filesystem so the upper dir can become a snapshot by a rename. The area is removed when
    /// the returned value is dropped; a killed process's areas go with `clean_stale`.
    pub fn step_area(&self) -> Result<StepArea, SnapshotError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{}-{n}", std::process::id());
        let lock = self
            .lock(&format!("step-{id}"), FlockOperation::LockExclusive)?
            .expect("blocking lock");
        let dir = self.dir.join(format!("step-{id}"));
        remove_if_exists(&dir)?;
        for sub in ["upper", "work", "merged"] {
            fs::create_dir_all(dir.join(sub)).map_err(io_err(&dir, "create"))?;
        }
        let lock_path = self.dir.join(".locks").join(format!("step-{id}"));
        Ok(StepArea {
            dir,
            lock_path,
            _lock: lock,
        })
    }

    /// Makes `upper` (a step's overlay upper dir: overlay-style whiteouts, exactly the layer
    /// `chain` ends with) the snapshot of `chain`, by rename: the step's files are never
    /// copied. If the snapshot exists already, `upper` is left for its area to discard.
    pub fn adopt(&self, chain: &[Digest], upper: &Path) -> Result<PathBuf, SnapshotError> {
        let cid = chain_id(chain).ok_or(SnapshotError::EmptyChain)?;
        let hex = Self::hex(&cid)?.to_string();
        let final_dir = self.dir.join(&hex);
        let _lock = self.lock(&hex, FlockOperation::LockExclusive)?;
        if final_dir.join("fs").is_dir() {
            return Ok(final_dir.join("fs"));
        }
        let tmp = self.dir.join(format!("tmp-{hex}"));
        remove_if_exists(&tmp)?;
        fs::create_dir(&tmp).map_err(io_err(&tmp, "create"))?;
        fs::rename(upper, tmp.join("fs")).map_err(io_err(upper, "move into the snapshot store"))?;
        let t = File::open(&tmp).map_err(io_err(&tmp, "open"))?;
        rustix::fs::syncfs(&t).map_err(|e| io_err(&tmp, "syncfs")(e.into()))?;
        fs::rename(&tmp, &final_dir).map_err(io_err(&final_dir, "rename into place"))?;
        self.sync_dir()?;
        Ok(final_dir.join("fs"))
    }

    /// The `fs` dirs of every prefix of `chain`, top-most first (overlay's lowerdir order).
    pub fn lower_dirs(&self, chain: &[Digest]) -> Result<Vec<PathBuf>, SnapshotError> {
        let mut out = Vec::with_capacity(chain.len());
        for cid in chain_ids(chain).iter().rev() {
            let p = self.fs_path(cid)?;
            if !p.is_dir() {
                return Err(SnapshotError::NotFound(cid.clone()));
            }
            out.push(p);
        }
        Ok(out)
    }

    /// Remove a snapshot; `Ok(false)` when there was none.
    pub fn remove(&self, chain_id: &Digest) -> Result<bool, SnapshotError> {
        let hex = Self::hex(chain_id)?.to_string();
        let _lock = self.lock(&hex, FlockOperation::LockExclusive)?;
        let dir = self.dir.join(&hex);
        if !dir.exists() {
            return Ok(false);
        }
        // Renamed first so that no reader ever sees a half-removed snapshot.
        let doomed = self.dir.join(format!("rm-{hex}"));
        remove_if_exists(&doomed)?;
        fs::rename(&dir, &doomed).map_err(io_err(&dir, "rename for removal"))?;
        self.sync_dir()?;
        remove_if_exists(&doomed)?;
        Ok(true)
    }

    /// Remove `tmp-*` and `rm-*` directories left by killed processes (those whose lock is
    /// free). Returns how many were removed.
    pub fn clean_stale(&self) -> Result<usize, SnapshotError> {
        let mut removed = 0;
        let entries = fs::read_dir(&self.dir).map_err(io_err(&self.dir, "read"))?;
        for entry in entries {
            let entry = entry.map_err(io_err(&self.dir, "read"))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // A step area's lock is named like the area; a snapshot's like its chain ID.
            let lock_name = if name.starts_with("step-") {
                name
            } else {
                let Some(hex) = name
                    .strip_prefix("tmp-")
                    .or_else(|| name.strip_prefix("rm-"))
                else {
                    continue;
                };
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    continue;
                }
                hex
            };
            // Held by us (this process preparing it) or by another live process: skip.
            if let Some(_lock) = self.lock(lock_name, FlockOperation::NonBlockingLockExclusive)? {
                remove_if_exists(&entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn sync_dir(&self) -> Result<(), SnapshotError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir, "fsync"))
    }
}

/// A build step's scratch dirs (see [`Snapshotter::step_area`]).
#[derive(Debug)]
pub struct StepArea {
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: File,
}

impl StepArea {
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    pub fn merged(&self) -> PathBuf {
        self.dir.join("merged")
    }
}

impl Drop for StepArea {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
        // Unique to this area, so unlinking it (still locked) races with nobody.
        let _ = fs::remove_file(&self.lock_path);
    }
}

fn remove_if_exists(path: &Path) -> Result<(), SnapshotError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path, "remove")(e)),
    }
}
