//! Garbage collection of the record store: by size, by age, or everything.
//!
//! [`prune`] runs under the cache's exclusive lock, so no record or lookup is half done while
//! it decides. It always removes leftovers that are garbage whatever the policy: temp files of
//! killed writers, record files that do not parse, slot entries whose record is gone, and step
//! lock files nobody holds. Then:
//!
//! - `all`: every record, and every cache mount not in use;
//! - `older_than`: records not used (looked up or written) for longer than that;
//! - `keep_storage`: records in least-recently-used order until the layers still referenced
//!   by the remaining records fit in that many bytes.
//!
//! Storage is counted per distinct layer digest (two records sharing a layer count it once),
//! and layers in [`Policy::kept_elsewhere`] (those tagged images use, which pruning the cache
//! cannot free) count for nothing. Removing records frees no blob by itself: the report lists
//! the digests no remaining record references ([`PruneReport::freed_layers`]), and the store's
//! blob GC, which knows what images reference, deletes what nobody needs
//! ([`Cache::referenced_layers`] is what the cache still needs).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::error::{IoContext, Result};
use crate::record::{mtime_secs, Cache, Record};

/// What to prune. The default removes only garbage (temp files, damaged records, dangling slot
/// entries).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Keep at most this many bytes of layers referenced by records (LRU eviction).
    pub keep_storage: Option<u64>,
    /// Remove records not used for longer than this.
    pub older_than: Option<Duration>,
    /// Remove every record and every cache mount not in use.
    pub all: bool,
    /// Layer digests that other owners (tagged images) keep anyway: they do not count
    /// towards `keep_storage`.
    pub kept_elsewhere: HashSet<String>,
}

/// What [`prune`] did.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// The records removed (their `last_used` from the file's mtime), least recently used first.
    pub removed: Vec<Record>,
    /// Digests of layers the removed records referenced and no remaining record does: the
    /// store may delete these blobs unless an image uses them.
    pub freed_layers: BTreeSet<String>,
    /// Total size of `freed_layers`.
    pub freed_bytes: u64,
    /// Records left.
    pub kept: usize,
    /// Bytes of layers the remaining records reference (as counted for `keep_storage`).
    pub kept_bytes: u64,
    /// Record files removed because they could not be parsed.
    pub removed_damaged: Vec<PathBuf>,
    /// Slot entries removed because their record is gone (or they were damaged).
    pub removed_slots: usize,
    /// Temp files of interrupted writers removed.
    pub removed_temp_files: usize,
    /// Cache mount ids removed (only with `all`).
    pub removed_mounts: Vec<String>,
    /// Cache mount ids left because a build is using them.
    pub busy_mounts: Vec<String>,
}

struct Candidate {
    path: PathBuf,
    record: Record,
    /// mtime in ns, for an LRU order finer than `last_used`'s seconds.
    used_ns: i128,
}

/// Prune `cache` by `policy` (see the [module docs](self)).
pub fn prune(cache: &Cache, policy: &Policy) -> Result<PruneReport> {
    let _lock = cache.lock(true)?;
    let mut report = PruneReport::default();

    // Under the exclusive lock no writer is active: every temp file is a killed writer's.
    let tmp = cache.sub("tmp");
    for entry in fs::read_dir(&tmp).ctx("list", &tmp)? {
        let path = entry.ctx("list", &tmp)?.path();
        if remove_file(&path)? {
            report.removed_temp_files += 1;
        }
    }

    let mut candidates = Vec::new();
    for (path, record) in cache.scan_records(false)? {
        let Some(record) = record else {
            if remove_file(&path)? {
                report.removed_damaged.push(path);
            }
            continue;
        };
        let md = match fs::metadata(&path) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(crate::Error::io("stat", &path, e)),
        };
        candidates.push(Candidate {
            used_ns: mtime_ns(&md),
            record: Record {
                last_used: mtime_secs(&md),
                ..record
            },
            path,
        });
    }
    // Least recently used first; ties broken by key so that the order is deterministic.
    candidates.sort_by_key(|c| (c.used_ns, c.record.key));

    let mut remove = vec![policy.all; candidates.len()];
    if let Some(age) = policy.older_than {
        let cutoff = SystemTime::now()
            .checked_sub(age)
            .map(system_time_ns)
            .unwrap_or(i128::MIN);
        for (i, c) in candidates.iter().enumerate() {
            if c.used_ns < cutoff {
                remove[i] = true;
            }
        }
    }

    // Reference counts and sizes of the layers the records that stay would keep.
    let mut refs: HashMap<&str, (usize, u64)> = HashMap::new();
    for (i, c) in candidates.iter().enumerate() {
        if let (false, Some(layer)) = (remove[i], &c.record.layer) {
            let e = refs.entry(layer.digest.as_str()).or_insert((0, layer.size));
            e.0 += 1;
            e.1 = e.1.max(layer.size);
        }
    }
    let counted = |digest: &str| !policy.kept_elsewhere.contains(digest);
    let mut total: u64 = refs
        .iter()
        .filter(|(d, _)| counted(d))
        .map(|(_, (_, size))| size)
        .sum();
    if let Some(limit) = policy.keep_storage {
        for (i, c) in candidates.iter().enumerate() {
            if total <= limit {
                break;
            }
            if remove[i] {
                continue;
            }
            remove[i] = true;
            if let Some(layer) = &c.record.layer {
                if let Some(e) = refs.get_mut(layer.digest.as_str()) {
                    e.0 -= 1;
                    if e.0 == 0 && counted(&layer.digest) {
                        total -= e.1;
                    }
                }
            }
        }
    }
    report.kept_bytes = total;

    let still_referenced: HashSet<&str> = refs
        .iter()
        .filter(|(_, (n, _))| *n > 0)
        .map(|(d, _)| *d)
        .collect();
    let mut freed: BTreeSet<String> = BTreeSet::new();
    let mut freed_bytes = 0;
    for (i, c) in candidates.iter().enumerate() {
        if !remove[i] {
            report.kept += 1;
            continue;
        }
        remove_file(&c.path)?;
        if let Some(layer) = &c.record.layer {
            if !still_referenced.contains(layer.digest.as_str())
                && freed.insert(layer.digest.clone())
            {
                freed_bytes += layer.size;
            }
        }
        report.removed.push(c.record.clone());
    }
    report.freed_layers = freed;
    report.freed_bytes = freed_bytes;

    // Slot entries: drop those whose record is gone, and damaged ones.
    let slots = cache.sub("slots");
    for entry in fs::read_dir(&slots).ctx("list", &slots)? {
        let path = entry.ctx("list", &slots)?.path();
        let keep = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<crate::record::SlotEntry>(&b).ok())
            .is_some_and(|e| cache.record_path(&e.key).exists());
        if !keep && remove_file(&path)? {
            report.removed_slots += 1;
        }
    }

    // Step locks are empty files that only matter while held.
    cache.remove_step_locks()?;

    if policy.all {
        let (removed, busy) = cache.remove_mounts()?;
        report.removed_mounts = removed;
        report.busy_mounts = busy;
    }
    Ok(report)
}

/// Remove a file or (a temp left as a directory) a tree; `false` if it was already gone.
fn remove_file(path: &std::path::Path) -> Result<bool> {
    let r = match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(crate::Error::io("remove", path, e)),
    }
}

fn mtime_ns(md: &fs::Metadata) -> i128 {
    use std::os::unix::fs::MetadataExt;
    i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec())
}

fn system_time_ns(t: SystemTime) -> i128 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}
