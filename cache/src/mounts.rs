//! Cache mounts (`RUN --mount=type=cache,id=…`): directories that outlive builds, kept apart
//! from records.
//!
//! `mounts/<sha256(id)>/` holds `data/` (what the step sees), `id` (the id, for people reading
//! the directory) and `lock`. The id is hashed because it is user text: `id=../../etc` must not
//! name a path. Whoever uses a mount holds a [`MountGuard`]: shared for `sharing=shared`,
//! exclusive for `sharing=locked`. `prune` with `all` removes only mounts whose lock it can
//! take exclusively at once, so a mount in use is never pulled from under a step.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};
use crate::record::Cache;
use crate::sys;

/// A held lock on a cache mount; the mount directory is [`path`](Self::path). Released on drop.
#[derive(Debug)]
pub struct MountGuard {
    _file: File,
    path: PathBuf,
    exclusive: bool,
}

impl MountGuard {
    /// The mount's `data` directory (it exists while the guard is held).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the lock is exclusive (`sharing=locked`).
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }
}

impl Cache {
    fn mount_root(&self, id: &str) -> PathBuf {
        let hex = hex::encode(Sha256::digest(id.as_bytes()));
        self.sub("mounts").join(hex)
    }

    /// The `data` directory of cache mount `id`, created if needed. Prefer
    /// [`lock_mount`](Self::lock_mount), which also keeps prune away while it is used.
    pub fn mount_dir(&self, id: &str) -> Result<PathBuf> {
        let root = self.mount_root(id);
        let data = root.join("data");
        fs::create_dir_all(&data).ctx("create cache mount", &data)?;
        let id_file = root.join("id");
        if !id_file.exists() {
            fs::write(&id_file, id).ctx("write", &id_file)?;
        }
        Ok(data)
    }

    /// Lock cache mount `id` (shared or exclusive, waiting for it) and return its directory.
    pub fn lock_mount(&self, id: &str, exclusive: bool) -> Result<MountGuard> {
        let root = self.mount_root(id);
        let lock_path = root.join("lock");
        loop {
            fs::create_dir_all(&root).ctx("create cache mount", &root)?;
            let file = match OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
            {
                Ok(f) => f,
                // A prune removed the directory between create_dir_all and open.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(crate::Error::io("open lock file", &lock_path, e)),
            };
            sys::flock(&file, exclusive, true).ctx("lock", &lock_path)?;
            // A prune may have removed the mount (lock file included) while we waited: our
            // lock is then on a deleted file and protects nothing. Start again.
            let held = file.metadata().ctx("stat", &lock_path)?;
            match fs::metadata(&lock_path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {}
                _ => continue,
            }
            let path = self.mount_dir(id)?;
            return Ok(MountGuard {
                _file: file,
                path,
                exclusive,
            });
        }
    }

    /// Remove every cache mount not in use. Returns (removed ids, busy ids).
    pub(crate) fn remove_mounts(&self) -> Result<(Vec<String>, Vec<String>)> {
        let dir = self.sub("mounts");
        let mut removed = Vec::new();
        let mut busy = Vec::new();
        for entry in fs::read_dir(&dir).ctx("list", &dir)? {
            let root = entry.ctx("list", &dir)?.path();
            let id = fs::read_to_string(root.join("id")).unwrap_or_else(|_| {
                root.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
            if !root.is_dir() {
                fs::remove_file(&root).ctx("remove", &root)?;
                continue;
            }
            let lock_path = root.join("lock");
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .ctx("open lock file", &lock_path)?;
            if !sys::flock(&file, true, false).ctx("lock", &lock_path)? {
                busy.push(id);
                continue;
            }
            // Holding the lock while the directory goes: a waiter then finds its lock file
            // replaced and starts over (see lock_mount).
            fs::remove_dir_all(&root).ctx("remove cache mount", &root)?;
            drop(file);
            removed.push(id);
        }
        Ok((removed, busy))
    }
}
