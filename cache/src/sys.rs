//! The few syscalls std does not offer: `flock` and "touch the mtime of an open file"
//! (xattrs come from `layers::xattr`).
//! Everything else (stat, rename, fsync) goes through std.

use std::fs::File;
use std::io;
use std::path::Path;

use rustix::fd::AsFd;
use rustix::fs::{self as rfs, FlockOperation, Timespec, Timestamps};
use rustix::io::Errno;

/// `flock(2)`. With `wait == false`, `Ok(false)` means someone else holds a conflicting lock.
pub(crate) fn flock(file: &File, exclusive: bool, wait: bool) -> io::Result<bool> {
    let op = match (exclusive, wait) {
        (true, true) => FlockOperation::LockExclusive,
        (false, true) => FlockOperation::LockShared,
        (true, false) => FlockOperation::NonBlockingLockExclusive,
        (false, false) => FlockOperation::NonBlockingLockShared,
    };
    loop {
        match rfs::flock(file.as_fd(), op) {
            Ok(()) => return Ok(true),
            Err(Errno::WOULDBLOCK) if !wait => return Ok(false),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Set an open file's mtime to now, leaving its atime alone. `UTIME_NOW` needs only write
/// permission (or ownership), unlike an explicit time.
pub(crate) fn touch_mtime(file: &File) -> io::Result<()> {
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_NOW,
        },
    };
    rfs::futimens(file.as_fd(), &times)?;
    Ok(())
}

/// Open a file for reading without following a final symlink and without blocking if it was
/// swapped for a fifo since it was stat'ed.
pub(crate) fn open_nofollow(path: &Path) -> io::Result<File> {
    let fd = rfs::open(
        path,
        rfs::OFlags::RDONLY | rfs::OFlags::NOFOLLOW | rfs::OFlags::CLOEXEC | rfs::OFlags::NONBLOCK,
        rfs::Mode::empty(),
    )?;
    Ok(File::from(fd))
}
