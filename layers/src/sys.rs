//! Small syscall helpers shared by the writer, the applier and the snapshotter: xattr listing,
//! `/proc/self/fd` paths for nodes that cannot be opened, and an fd-relative recursive remove.

use rustix::buffer::spare_capacity;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// One extended attribute, name and value as bytes.
pub(crate) type Xattr = (Vec<u8>, Vec<u8>);

/// Overlay's own bookkeeping: never copied into a layer, never restored from one (a restored
/// `trusted.overlay.redirect` would make a later overlay mount look somewhere else).
pub(crate) fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// A path that names `name` inside the directory `dir` without resolving anything again:
/// the only way to reach a symlink, fifo or device node for `l*xattr` without opening it.
pub(crate) fn proc_path(dir: BorrowedFd<'_>, name: &[u8]) -> PathBuf {
    use std::os::fd::AsRawFd;
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    if !name.is_empty() {
        p.push(OsStr::from_bytes(name));
    }
    p
}

/// Where xattrs are read from: an open regular file or directory, or a path for the rest.
#[derive(Clone, Copy)]
pub(crate) enum Node<'a> {
    Fd(BorrowedFd<'a>),
    Path(&'a std::path::Path),
}

/// All xattrs of a node, sorted by name. A filesystem without xattr support has none.
pub(crate) fn list_xattrs(node: Node<'_>) -> io::Result<Vec<Xattr>> {
    let names = loop {
        let want = match node {
            Node::Fd(fd) => rfs::flistxattr_query(fd),
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
            Node::Fd(fd) => rfs::flistxattr(fd, spare_capacity(&mut buf)),
            Node::Path(p) => rfs::llistxattr(p, spare_capacity(&mut buf)),
        };
        match got {
            Ok(_) => break buf,
            // The list grew between the two calls.
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        match get_xattr(node, name)? {
            Some(value) => out.push((name.to_vec(), value)),
            None => continue, // removed meanwhile
        }
    }
    out.sort();
    Ok(out)
}

fn get_xattr(node: Node<'_>, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let name = OsStr::from_bytes(name);
    loop {
        let want = match node {
            Node::Fd(fd) => rfs::fgetxattr_query(fd, name),
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
            Node::Fd(fd) => rfs::fgetxattr(fd, name, spare_capacity(&mut buf)),
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

/// Set one xattr on a node (never following a symlink named by `Node::Path`).
pub(crate) fn set_xattr(node: Node<'_>, name: &[u8], value: &[u8]) -> io::Result<()> {
    let name = OsStr::from_bytes(name);
    let flags = rfs::XattrFlags::empty();
    match node {
        Node::Fd(fd) => rfs::fsetxattr(fd, name, value, flags)?,
        Node::Path(p) => rfs::lsetxattr(p, name, value, flags)?,
    }
    Ok(())
}

/// Remove `name` in `dir` whatever it is; directories recursively. Never follows a symlink:
/// each directory is opened with `O_NOFOLLOW` relative to its parent's fd.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let name = OsStr::from_bytes(name);
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    let child: OwnedFd = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    empty_dir(child.as_fd())?;
    match rfs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Remove every entry of an open directory.
pub(crate) fn empty_dir(dir: BorrowedFd<'_>) -> io::Result<()> {
    for name in dir_names(dir)? {
        remove_all_at(dir, &name)?;
    }
    Ok(())
}

/// The names in an open directory (without `.` and `..`), unsorted.
pub(crate) fn dir_names(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut it = rfs::Dir::read_from(dir)?;
    let mut names = Vec::new();
    while let Some(entry) = it.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

/// `O_PATH` handle on `name` in `dir`, not following a final symlink.
pub(crate) fn open_path_nofollow(dir: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    rfs::openat(
        dir,
        OsStr::from_bytes(name),
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}
