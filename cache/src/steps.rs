//! One execution per step key: builds that reach the same step at the same time (threads of one
//! `rbuild bake`, or separate rbuild processes) run it once; the others wait, then find its
//! record and take it as a cache hit.
//!
//! `steps/<hex>.lock` (hex = the key's digits) is an empty file; a builder holds an exclusive
//! `flock` on it from its second lookup through running the step to recording it. flock locks
//! belong to open file descriptions, so two threads of one process, each opening the file,
//! exclude each other as two processes do. A killed builder's lock is released by the kernel.
//! `prune` removes the lock files nobody holds (under the lock, like cache mounts; see
//! [`Cache::lock_step`] for why a waiter notices).

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::MetadataExt;

use crate::error::{IoContext, Result};
use crate::key::CacheKey;
use crate::record::Cache;
use crate::sys;

/// A held lock on one step key. Released on drop.
#[derive(Debug)]
pub struct StepLock {
    _file: File,
}

impl Cache {
    /// Takes the exclusive lock of `key`'s step. When another build holds it, calls `waiting`
    /// once, then blocks until that build is done (look the key up again after this returns).
    pub fn lock_step(&self, key: &CacheKey, waiting: impl FnOnce()) -> Result<StepLock> {
        let dir = self.sub("steps");
        let path = dir.join(format!("{}.lock", key.hex()));
        let mut waiting = Some(waiting);
        loop {
            fs::create_dir_all(&dir).ctx("create directory", &dir)?;
            let file = match OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(crate::Error::io("open lock file", &path, e)),
            };
            if !sys::flock(&file, true, false).ctx("lock", &path)? {
                if let Some(waiting) = waiting.take() {
                    waiting();
                }
                sys::flock(&file, true, true).ctx("lock", &path)?;
            }
            // A prune may have removed the file while we waited: a lock on a deleted file
            // excludes nobody who opens the name afresh. Start again.
            let held = file.metadata().ctx("stat", &path)?;
            match fs::metadata(&path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(StepLock { _file: file })
                }
                _ => continue,
            }
        }
    }

    /// Removes the step lock files no build holds. Returns how many.
    pub(crate) fn remove_step_locks(&self) -> Result<usize> {
        let dir = self.sub("steps");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(crate::Error::io("list", &dir, e)),
        };
        let mut removed = 0;
        for entry in entries {
            let path = entry.ctx("list", &dir)?.path();
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(crate::Error::io("open lock file", &path, e)),
            };
            // Removed while held, so a waiter finds its file replaced and starts over.
            if sys::flock(&file, true, false).ctx("lock", &path)? {
                fs::remove_file(&path).ctx("remove", &path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyBuilder;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    fn key(n: &str) -> CacheKey {
        KeyBuilder::new("test").field("n", n).finish()
    }

    #[test]
    fn threads_of_one_process_exclude_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let k = key("a");
        let inside = AtomicUsize::new(0);
        let waited = AtomicUsize::new(0);
        let start = Barrier::new(4);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    start.wait();
                    let _lock = cache
                        .lock_step(&k, || {
                            waited.fetch_add(1, Ordering::SeqCst);
                        })
                        .unwrap();
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    inside.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        assert!(waited.load(Ordering::SeqCst) >= 1, "someone had to wait");
        // Another key is independent of a held one.
        let _a = cache.lock_step(&k, || panic!("free")).unwrap();
        let _b = cache.lock_step(&key("b"), || panic!("free")).unwrap();
    }

    #[test]
    fn prune_removes_only_free_lock_files() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let held = cache.lock_step(&key("held"), || {}).unwrap();
        drop(cache.lock_step(&key("free"), || {}).unwrap());
        assert_eq!(cache.remove_step_locks().unwrap(), 1);
        assert_eq!(fs::read_dir(dir.path().join("steps")).unwrap().count(), 1);
        drop(held);
        assert_eq!(cache.remove_step_locks().unwrap(), 1);
    }
}
