//! The few syscalls std does not offer: xattrs, `flock` and "touch the mtime of an open file".
//! Everything else (stat, rename, fsync) goes through std.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::buffer::spare_capacity;
use rustix::fd::AsFd;
use rustix::fs::{self as rfs, FlockOperation, Timespec, Timestamps};
use rustix::io::Errno;

/// One extended attribute, name and value as bytes.
pub(crate) type Xattr = (Vec<u8>, Vec<u8>);

/// Where xattrs are read from: an open file, or a path that is not followed if it is a symlink
/// (symlinks, fifos and devices must not be opened just to read their xattrs).
#[derive(Clone, Copy)]
pub(crate) enum Node<'a> {
    Fd(&'a File),
    Path(&'a Path),
}

/// All xattrs of a node, sorted by name. A filesystem without xattr support has none.
pub(crate) fn list_xattrs(node: Node<'_>) -> io::Result<Vec<Xattr>> {
    let names = loop {
        let want = match node {
            Node::Fd(f) => rfs::flistxattr_query(f.as_fd()),
            Node::Path(p) => rfs::llistxattr_query(p),
        };
        let want = match want {
            Ok(n) => n,
            Err(Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        if want == 0 {
            return Ok(Vec::new());
        }
        let mut buf = Vec::with_capacity(want);
        let got = match node {
            Node::Fd(f) => rfs::flistxattr(f.as_fd(), spare_capacity(&mut buf)),
            Node::Path(p) => rfs::llistxattr(p, spare_capacity(&mut buf)),
        };
        match got {
            Ok(_) => break buf,
            // The list grew between the two calls: ask again.
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if let Some(value) = get_xattr(node, name)? {
            out.push((name.to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}

/// One xattr's value; `None` if it was removed since it was listed.
fn get_xattr(node: Node<'_>, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let name = OsStr::from_bytes(name);
    loop {
        let want = match node {
            Node::Fd(f) => rfs::fgetxattr_query(f.as_fd(), name),
            Node::Path(p) => rfs::lgetxattr_query(p, name),
        };
        let want = match want {
            Ok(n) => n,
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if want == 0 {
            return Ok(Some(Vec::new()));
        }
        let mut buf = Vec::with_capacity(want);
        let got = match node {
            Node::Fd(f) => rfs::fgetxattr(f.as_fd(), name, spare_capacity(&mut buf)),
            Node::Path(p) => rfs::lgetxattr(p, name, spare_capacity(&mut buf)),
        };
        match got {
            Ok(_) => return Ok(Some(buf)),
            Err(Errno::RANGE) => continue,
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

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
