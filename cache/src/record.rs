//! The record store: what each cache key produced, kept as one small JSON file per key.
//!
//! # Layout (under the directory given to [`Cache::open`], `$RBUILD_ROOT/cache`)
//!
//! ```text
//! lock                      flock: shared for record/lookup, exclusive for prune
//! gate                      flock taken on the way to `lock`: gives a waiting prune priority
//! records/<hex>.json        one Record per key (hex = the key's 64 digits)
//! slots/<sha256(slot)>.json {"slot": …, "key": "sha256:…"}: the latest key of a step
//! tmp/                      temp files being written (same filesystem, so rename is atomic)
//! mounts/<sha256(id)>/      cache mounts: `data/` (the mount), `id`, `lock` (see gc)
//! steps/<hex>.lock          flock held while a step runs (see `steps`)
//! ```
//!
//! # Crash safety
//!
//! Every file is written to `tmp/`, then renamed over its final name, so a reader sees the old
//! file or the new one, never a mix, even if the writer is SIGKILLed. Nothing is fsynced: a
//! record only points at a layer blob the store has already made durable, so a power cut can
//! at worst leave a record empty or missing, which costs a rebuild of one step, not
//! correctness (an fsync per record and slot was most of a cached step's time). A file that
//! does not parse (a power cut, disk damage, hand edits) is skipped and reported through
//! [`Cache::take_warnings`]; `prune` deletes it.
//!
//! # last_used
//!
//! A hit must stay cheap, so `lookup` does not rewrite the record: it sets the file's mtime to
//! now, and `last_used` is read back from the mtime. The JSON's `last_used` is only the value
//! at write time.
//!
//! # Concurrency
//!
//! Record and lookup take a shared `flock` on `lock`, prune an exclusive one, on a fresh open
//! file description each time (flock locks belong to the open file description, so sharing
//! one between threads would let a prune silently convert a lookup's lock). A lookup racing a
//! prune therefore sees the record whole or not at all. Two processes recording the same key
//! both write complete files; the last rename wins.
//!
//! The lock covers single operations, not a whole build: a record looked up early in a build
//! can be pruned (and its blob collected by the store) before the build uses it. The store's
//! blob GC and the builder must coordinate on the blobs themselves.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::explain::{diff, Miss};
use crate::key::{CacheKey, Inputs};
use crate::sys;

/// A layer a record points at. Plain strings keep this crate free of the OCI types; the builder
/// converts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// `sha256:…` of the compressed blob in the store.
    pub digest: String,
    /// `sha256:…` of the uncompressed tar.
    pub diff_id: String,
    /// Size of the compressed blob in bytes.
    pub size: u64,
    /// The blob's media type.
    pub media_type: String,
}

/// What one cache key produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The step's key.
    pub key: CacheKey,
    /// The layer the step made; `None` when its diff was empty.
    pub layer: Option<LayerRef>,
    /// Digests of the step's inputs (never their values).
    pub inputs: Inputs,
    /// Identifies "the same step" across builds: `<dockerfile>#<stage>#<step index>`.
    pub slot: String,
    /// Unix seconds when the record was made.
    pub created: u64,
    /// Unix seconds of the last lookup that hit (from the file's mtime when read).
    pub last_used: u64,
}

impl Record {
    /// A record made now.
    pub fn new(
        key: CacheKey,
        slot: impl Into<String>,
        inputs: Inputs,
        layer: Option<LayerRef>,
    ) -> Record {
        let now = unix_now();
        Record {
            key,
            layer,
            inputs,
            slot: slot.into(),
            created: now,
            last_used: now,
        }
    }
}

/// A cache file that was skipped because it could not be used. Not fatal: the cache carries on
/// without it; `rbuild` may print these as warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ignoring {}: {}", self.path.display(), self.problem)
    }
}

/// The slot index entry: the latest key recorded (or hit) for a step.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SlotEntry {
    pub slot: String,
    pub key: CacheKey,
}

/// A held `flock` on the cache's `lock` file (and `gate`, for an exclusive one); released on
/// drop.
#[derive(Debug)]
pub(crate) struct CacheLock {
    _lock: File,
    _gate: Option<File>,
}

/// The build cache under one directory. Cheap to share between threads (`&Cache`).
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    warnings: Mutex<Vec<Warning>>,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn mtime_secs(md: &fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    u64::try_from(md.mtime()).unwrap_or(0)
}

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

impl Cache {
    /// Open (creating if needed) the cache in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Cache> {
        let dir = dir.into();
        for sub in ["records", "slots", "tmp", "mounts"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).ctx("create cache directory", &p)?;
        }
        let cache = Cache {
            dir,
            warnings: Mutex::new(Vec::new()),
        };
        // Create the lock file now so that a read-only problem shows up at open.
        drop(cache.lock(false)?);
        Ok(cache)
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the record of `key` is (whether or not it exists).
    pub fn record_path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join("records").join(format!("{}.json", key.hex()))
    }

    /// Where the slot index entry of `slot` is (whether or not it exists).
    pub fn slot_path(&self, slot: &str) -> PathBuf {
        let hex = hex::encode(Sha256::digest(slot.as_bytes()));
        self.dir.join("slots").join(format!("{hex}.json"))
    }

    pub(crate) fn sub(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Take the cache lock: shared (`exclusive == false`) or exclusive. Blocks.
    ///
    /// `flock` grants shared locks while an exclusive request waits, so a steady stream of
    /// overlapping lookups (parallel stages, several builds) could starve a prune forever. A
    /// second lock, `gate`, gives the writer priority: everyone passes it on the way in, readers
    /// hold it only while acquiring `lock`, and a prune holds it exclusively throughout, so new
    /// readers queue behind a waiting prune instead of overtaking it.
    pub(crate) fn lock(&self, exclusive: bool) -> Result<CacheLock> {
        let gate = self.open_lock_file("gate")?;
        sys::flock(&gate.0, exclusive, true).ctx("lock", &gate.1)?;
        let lock = self.open_lock_file("lock")?;
        sys::flock(&lock.0, exclusive, true).ctx("lock", &lock.1)?;
        Ok(CacheLock {
            _lock: lock.0,
            _gate: exclusive.then_some(gate.0),
        })
    }

    fn open_lock_file(&self, name: &str) -> Result<(File, PathBuf)> {
        let path = self.dir.join(name);
        // flock needs no write access: opening read-only first lets a cache on a read-only
        // mount still serve lookups.
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if is_not_found(&e) => OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .ctx("create lock file", &path)?,
            Err(e) => return Err(Error::io("open lock file", &path, e)),
        };
        Ok((file, path))
    }

    pub(crate) fn warn(&self, path: impl Into<PathBuf>, problem: impl Into<String>) {
        let w = Warning {
            path: path.into(),
            problem: problem.into(),
        };
        match self.warnings.lock() {
            Ok(mut v) => v.push(w),
            Err(poisoned) => poisoned.into_inner().push(w),
        }
    }

    /// The cache files skipped since the last call (unparsable records or slot entries).
    pub fn take_warnings(&self) -> Vec<Warning> {
        match self.warnings.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    /// Read and check a record file. `Ok(None)` if it does not exist or cannot be used (then
    /// with a warning); the open file comes back for `lookup` to touch.
    pub(crate) fn read_record(
        &self,
        path: &Path,
        expected: Option<&CacheKey>,
        report: bool,
    ) -> Result<Option<(Record, File)>> {
        let warn = |problem: String| {
            if report {
                self.warn(path, problem);
            }
        };
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(Error::io("open cache record", path, e)),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .ctx("read cache record", path)?;
        let mut record: Record = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                warn(format!(
                    "not a valid cache record ({e}); `rbuild prune` removes it"
                ));
                return Ok(None);
            }
        };
        // The file name is the key: a record under another key's name (a hand copy, a bug)
        // must not be served for it.
        let named = path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(|s| s == record.key.hex())
            .unwrap_or(false);
        if !named || expected.is_some_and(|k| *k != record.key) {
            warn(format!(
                "holds the record of {}, not of its file name; `rbuild prune` removes it",
                record.key
            ));
            return Ok(None);
        }
        let md = file.metadata().ctx("stat cache record", path)?;
        record.last_used = mtime_secs(&md);
        Ok(Some((record, file)))
    }

    /// The record of `key`, if any; marks it used now. A record removed by a concurrent prune
    /// is simply not found.
    pub fn lookup(&self, key: &CacheKey) -> Result<Option<Record>> {
        let _lock = self.lock(false)?;
        self.lookup_locked(key)
    }

    fn lookup_locked(&self, key: &CacheKey) -> Result<Option<Record>> {
        let path = self.record_path(key);
        let Some((mut record, file)) = self.read_record(&path, Some(key), true)? else {
            return Ok(None);
        };
        // LRU bookkeeping is best effort: a read-only cache still serves hits.
        if sys::touch_mtime(&file).is_ok() {
            record.last_used = unix_now().max(record.last_used);
        }
        Ok(Some(record))
    }

    /// [`lookup`](Self::lookup), and on a hit also point `slot` at `key`, so that the next
    /// miss of this step is explained against the build that was used last (not the one that
    /// was recorded last). Writes the slot entry only when it changes.
    pub fn lookup_for(&self, slot: &str, key: &CacheKey) -> Result<Option<Record>> {
        let _lock = self.lock(false)?;
        let found = self.lookup_locked(key)?;
        if found.is_some() && self.slot_key(slot).as_ref() != Some(key) {
            self.write_slot(slot, key)?;
        }
        Ok(found)
    }

    /// Store `record` and make it the latest of its slot. Call it only once the layer blob is
    /// safely in the store: a record must never point at a blob that may not exist.
    pub fn record(&self, record: Record) -> Result<()> {
        let _lock = self.lock(false)?;
        let path = self.record_path(&record.key);
        let bytes = serde_json::to_vec_pretty(&record).map_err(|source| Error::Encode {
            path: path.clone(),
            source,
        })?;
        self.write_atomic(&path, &bytes)?;
        self.write_slot(&record.slot, &record.key)
    }

    fn write_slot(&self, slot: &str, key: &CacheKey) -> Result<()> {
        let path = self.slot_path(slot);
        let entry = SlotEntry {
            slot: slot.to_string(),
            key: *key,
        };
        let bytes = serde_json::to_vec_pretty(&entry).map_err(|source| Error::Encode {
            path: path.clone(),
            source,
        })?;
        self.write_atomic(&path, &bytes)
    }

    /// The key `slot` points at, if its entry exists and parses.
    fn slot_key(&self, slot: &str) -> Option<CacheKey> {
        let path = self.slot_path(slot);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if is_not_found(&e) => return None,
            Err(e) => {
                self.warn(&path, format!("cannot read slot entry: {e}"));
                return None;
            }
        };
        match serde_json::from_slice::<SlotEntry>(&bytes) {
            Ok(entry) if entry.slot == slot => Some(entry.key),
            Ok(entry) => {
                self.warn(&path, format!("holds slot {:?}, not {slot:?}", entry.slot));
                None
            }
            Err(e) => {
                self.warn(&path, format!("not a valid slot entry: {e}"));
                None
            }
        }
    }

    /// Temp file in `tmp/`, fsync, rename over `dest`. A kill at any point leaves `dest` as it
    /// was or complete, plus at most a temp file that prune removes.
    pub(crate) fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = self.dir.join("tmp").join(format!(
            "{}-{}-{name}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        write_atomic(&temp, dest, bytes)
    }

    /// Why `slot`'s step is not a hit with these `current` inputs (see [`Miss`]).
    pub fn explain_miss(&self, slot: &str, current: &Inputs) -> Miss {
        let Some(key) = self.slot_key(slot) else {
            return Miss::NoPreviousBuild;
        };
        match self.read_record(&self.record_path(&key), Some(&key), true) {
            Ok(Some((previous, _))) => Miss::Changed(diff(&previous.inputs, current)),
            Ok(None) => Miss::RecordMissing,
            Err(e) => {
                self.warn(self.record_path(&key), e.to_string());
                Miss::RecordMissing
            }
        }
    }

    /// Every usable record (damaged ones are skipped with a warning), in no particular order.
    pub fn records(&self) -> Result<Vec<Record>> {
        let _lock = self.lock(false)?;
        Ok(self
            .scan_records(true)?
            .into_iter()
            .filter_map(|(_, r)| r)
            .collect())
    }

    /// All record files: path and record, or `None` for one that cannot be used (reported as
    /// a warning if `report`; prune removes them instead).
    pub(crate) fn scan_records(&self, report: bool) -> Result<Vec<(PathBuf, Option<Record>)>> {
        let dir = self.dir.join("records");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).ctx("list", &dir)? {
            let entry = entry.ctx("list", &dir)?;
            let path = entry.path();
            let is_record_name = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .is_some_and(|stem| {
                    stem.len() == 64 && stem.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                });
            if !is_record_name {
                if report {
                    self.warn(&path, "not a cache record name; `rbuild prune` removes it");
                }
                out.push((path, None));
                continue;
            }
            match self.read_record(&path, None, report)? {
                Some((record, _)) => out.push((path, Some(record))),
                None => out.push((path, None)),
            }
        }
        Ok(out)
    }

    /// Digests of the layers any record references, for the store's blob GC to keep.
    pub fn referenced_layers(&self) -> Result<HashSet<String>> {
        Ok(self
            .records()?
            .into_iter()
            .filter_map(|r| r.layer.map(|l| l.digest))
            .collect())
    }
}

/// Writes `bytes` to `temp` (created new) and renames it onto `dest`: a reader sees the old
/// file or the new one, never part of one. The temp file is removed on failure. Not fsynced:
/// only for files whose loss or truncation by a power cut is harmless (see the module docs).
pub(crate) fn write_atomic(temp: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(temp)
            .ctx("create temp file", temp)?;
        f.write_all(bytes).ctx("write", temp)?;
        fs::rename(temp, dest).ctx("rename into place", dest)
    })();
    if result.is_err() {
        let _ = fs::remove_file(temp);
    }
    result
}
