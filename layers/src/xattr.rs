//! Extended attributes of files, symlinks and special files, never following a symlink:
//! the one implementation the layer writer, the apply side, context checksums and COPY share.

use rustix::buffer::spare_capacity;
use rustix::fs as rfs;
use rustix::io::Errno;
use std::ffi::OsStr;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;

/// One xattr: name and value.
pub type Xattr = (Vec<u8>, Vec<u8>);
/// A node's xattrs, sorted by name.
pub type Xattrs = Vec<Xattr>;

/// Overlay's own bookkeeping: never copied into a layer, never restored from one (a restored
/// `trusted.overlay.redirect` would make a later overlay mount look somewhere else).
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// Where xattrs are read from: an open regular file or directory, or a path for the rest.
#[derive(Clone, Copy)]
pub enum Node<'a> {
    Fd(BorrowedFd<'a>),
    Path(&'a std::path::Path),
}

/// All xattrs of a node, sorted by name. A filesystem without xattr support has none.
pub fn list(node: Node<'_>) -> io::Result<Xattrs> {
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
        match get(node, name)? {
            Some(value) => out.push((name.to_vec(), value)),
            None => continue, // removed meanwhile
        }
    }
    out.sort();
    Ok(out)
}

/// One xattr's value; `None` when the node has no such xattr.
pub fn get(node: Node<'_>, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
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
pub fn set(node: Node<'_>, name: &[u8], value: &[u8]) -> io::Result<()> {
    let name = OsStr::from_bytes(name);
    let flags = rfs::XattrFlags::empty();
    match node {
        Node::Fd(fd) => rfs::fsetxattr(fd, name, value, flags)?,
        Node::Path(p) => rfs::lsetxattr(p, name, value, flags)?,
    }
    Ok(())
}
