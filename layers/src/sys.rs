//! Small syscall helpers shared by the writer, the applier and the snapshotter: xattr listing,
//! `/proc/self/fd` paths for nodes that cannot be opened, and an fd-relative recursive remove.

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// One extended attribute, name and value as bytes.
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
