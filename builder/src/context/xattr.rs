//! Extended attributes of a node, read and written through an fd or a `/proc/self/fd` path
//! (symlinks, fifos and devices cannot be opened for `f*xattr`).

use rustix::buffer::spare_capacity;
use rustix::fd::BorrowedFd;
use rustix::fs as rfs;
use rustix::io::Errno;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Name and value pairs, sorted by name.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Where xattrs are read from or written to.
#[derive(Clone, Copy)]
pub enum Node<'a> {
    /// An open regular file or directory.
    Fd(BorrowedFd<'a>),
    /// A path that resolves nothing on its own (see `root::proc_path`); `l*xattr` calls.
    Path(&'a Path),
}

/// Overlay's bookkeeping (`trusted.overlay.*`): never copied, it would redirect lookups.
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// All xattrs of a node, sorted by name; none on a filesystem without xattr support.
pub fn list(node: Node<'_>) -> io::Result<Xattrs> {
    let names = loop {
        let want = match node {
            Node::Fd(fd) => rfs::flistxattr_query(fd),
            Node::Path(p) => rfs::llistxattr_query(p),
        };
        let want = match want {
            Ok(0) | Err(Errno::NOTSUP) => return Ok(Vec::new()),
            Ok(n) => n,
            Err(e) => return Err(e.into()),
        };
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
        if let Some(value) = get(node, name)? {
            out.push((name.to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}

fn get(node: Node<'_>, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let name = OsStr::from_bytes(name);
    loop {
        let want = match node {
            Node::Fd(fd) => rfs::fgetxattr_query(fd, name),
            Node::Path(p) => rfs::lgetxattr_query(p, name),
        };
        let want = match want {
            Ok(0) => return Ok(Some(Vec::new())),
            Ok(n) => n,
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
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

/// Sets one xattr (never following a symlink named by `Node::Path`).
pub fn set(node: Node<'_>, name: &[u8], value: &[u8]) -> io::Result<()> {
    let name = OsStr::from_bytes(name);
    let flags = rfs::XattrFlags::empty();
    match node {
        Node::Fd(fd) => rfs::fsetxattr(fd, name, value, flags)?,
        Node::Path(p) => rfs::lsetxattr(p, name, value, flags)?,
    }
    Ok(())
}
