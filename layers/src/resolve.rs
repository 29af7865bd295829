//! Resolving a layer path's parent directory inside the root, one component at a time.
//!
//! Each component is opened with `O_PATH|O_NOFOLLOW` relative to the fd of the directory
//! before it, so nothing the kernel resolves can leave the root. Symlinks met on the way are
//! expanded here, by hand, the way a chroot would see them: an absolute target starts again at
//! the root. Unlike a chroot, a `..` that would climb above the root is refused rather than
//! clamped: no legitimate layer needs it, and refusing names the culprit. Callers that must not
//! traverse symlinks at all (whiteouts, hardlink targets) pass [`Follow::Never`].

use crate::sys;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{self as rfs, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Linux's own limit on symlinks followed in one lookup.
const MAX_HOPS: usize = 40;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Follow {
    InRoot,
    Never,
}

#[derive(Debug)]
pub(crate) enum ResolveError {
    /// A `..` from a symlink target would climb above the root; `symlink` is the last link.
    Escape {
        symlink: Vec<u8>,
    },
    Loop,
    /// [`Follow::Never`] met this symlink.
    ThroughSymlink {
        symlink: Vec<u8>,
    },
    NotDir {
        at: Vec<u8>,
    },
    EmptySymlink {
        at: Vec<u8>,
    },
    Io {
        at: Vec<u8>,
        err: io::Error,
    },
}

/// A directory inside the root: an `O_PATH` fd on it and its symlink-free path from the root.
pub(crate) struct Resolved {
    pub fd: OwnedFd,
    pub rel: Vec<u8>,
    /// Directories this resolution created (missing parents), as paths from the root.
    pub created: Vec<Vec<u8>>,
}

pub(crate) struct Root {
    fd: OwnedFd,
}

pub(crate) fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    if rel.is_empty() {
        name.to_vec()
    } else {
        [rel, b"/", name].concat()
    }
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Self> {
        let fd = rfs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self { fd })
    }

    /// Resolve `comps` (already free of `..`) to a directory. `create` makes missing
    /// directories (mode 0755); without it a missing component gives `Ok(None)`.
    pub fn resolve_dir(
        &self,
        comps: &[&[u8]],
        follow: Follow,
        create: bool,
    ) -> Result<Option<Resolved>, ResolveError> {
        let mut todo: VecDeque<Vec<u8>> = comps.iter().map(|c| c.to_vec()).collect();
        // Only the names are kept, not an fd per level: a hostile 2000-component path must
        // not run the process out of file descriptors. `..` reopens its target from the root.
        let mut names: Vec<Vec<u8>> = Vec::new();
        let mut cur = self.reopen(&[]).map_err(|e| ResolveError::Io {
            at: Vec::new(),
            err: e.into(),
        })?;
        let mut created = Vec::new();
        let mut hops = 0;
        let mut last_link: Vec<u8> = Vec::new();
        while let Some(c) = todo.pop_front() {
            if c.is_empty() || c == b"." {
                continue;
            }
            if c == b".." {
                if names.pop().is_none() {
                    return Err(ResolveError::Escape { symlink: last_link });
                }
                cur = self.reopen(&names).map_err(|e| ResolveError::Io {
                    at: names.join(&b'/'),
                    err: e.into(),
                })?;
                continue;
            }
            let at = join(&names.join(&b'/'), &c);
            let io_err = |err: Errno| ResolveError::Io {
                at: at.clone(),
                err: err.into(),
            };
            let fd = match sys::open_path_nofollow(cur.as_fd(), &c) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    let os = OsStr::from_bytes(&c);
                    match rfs::mkdirat(&cur, os, Mode::from_raw_mode(0o755)) {
                        Ok(()) => {
                            // The umask must not decide a layer's directory modes.
                            rfs::chmodat(
                                &cur,
                                os,
                                Mode::from_raw_mode(0o755),
                                rfs::AtFlags::empty(),
                            )
                            .map_err(io_err)?;
                            created.push(at.clone());
                        }
                        Err(Errno::EXIST) => {}
                        Err(e) => return Err(io_err(e)),
                    }
                    sys::open_path_nofollow(cur.as_fd(), &c).map_err(io_err)?
                }
                Err(Errno::NOENT) => return Ok(None),
                Err(e) => return Err(io_err(e)),
            };
            let st = rfs::fstat(&fd).map_err(io_err)?;
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    names.push(c);
                    cur = fd;
                }
                FileType::Symlink => {
                    if follow == Follow::Never {
                        return Err(ResolveError::ThroughSymlink { symlink: at });
                    }
                    hops += 1;
                    if hops > MAX_HOPS {
                        return Err(ResolveError::Loop);
                    }
                    // An O_PATH fd on a symlink reads it with an empty path.
                    let target = rfs::readlinkat(&fd, c"", Vec::new())
                        .map_err(io_err)?
                        .into_bytes();
                    if target.is_empty() {
                        return Err(ResolveError::EmptySymlink { at });
                    }
                    if target[0] == b'/' {
                        names.clear();
                        cur = self.reopen(&[]).map_err(io_err)?;
                    }
                    let mut next: VecDeque<Vec<u8>> =
                        target.split(|&b| b == b'/').map(|s| s.to_vec()).collect();
                    next.extend(todo);
                    todo = next;
                    last_link = at;
                }
                _ => return Err(ResolveError::NotDir { at }),
            }
        }
        Ok(Some(Resolved {
            fd: cur,
            rel: names.join(&b'/'),
            created,
        }))
    }

    /// `O_PATH` fd on a directory by its symlink-free components, kernel-checked.
    fn reopen(&self, names: &[Vec<u8>]) -> Result<OwnedFd, Errno> {
        let rel = names.join(&b'/');
        let path: &[u8] = if rel.is_empty() { b"." } else { &rel };
        rfs::openat2(
            &self.fd,
            OsStr::from_bytes(path),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// Open a directory for reading and metadata by its symlink-free path; the kernel refuses
    /// any symlink or escape on the way (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`).
    pub fn open_dir_strict(&self, rel: &[u8]) -> Result<OwnedFd, Errno> {
        let path: &[u8] = if rel.is_empty() { b"." } else { rel };
        rfs::openat2(
            &self.fd,
            OsStr::from_bytes(path),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
    }
}
