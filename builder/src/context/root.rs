//! A directory used as a root the way `chroot` would: every path given to it is resolved
//! inside it, absolute symlink targets start again at the root and `..` stops at the root.
//!
//! The image root, a `--from` root and the build context all hold symlinks that someone else
//! controls, so nothing here ever joins a string path and opens it:
//!
//! - reading resolves with `openat2(RESOLVE_IN_ROOT)`: the kernel follows symlinks and clamps
//!   `..` at the root, and the result is an fd ([`RootDir::resolve`], [`RootDir::read_file`]);
//! - writing ([`RootDir::walk`], [`RootDir::mkdir_all`]) goes one component at a time with
//!   `O_PATH | O_NOFOLLOW` opens relative to the previous directory's fd; symlinks met are
//!   expanded by hand with the same chroot rules, so that missing directories (even behind a
//!   dangling link such as `/var/run -> /run`) can be created where a chroot would put them;
//! - a directory reached by name is reopened with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`,
//!   so the kernel checks that the symlink-free path really is inside the root.

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec};
use rustix::io::Errno;
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Linux's own limit on symlinks followed in one lookup.
const MAX_HOPS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("{op} {path:?} in {root}: {source}")]
    Io {
        root: PathBuf,
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{path:?} in {root} is not a directory")]
    NotADirectory { root: PathBuf, path: PathBuf },
    #[error("too many levels of symbolic links resolving {path:?} in {root}")]
    SymlinkLoop { root: PathBuf, path: PathBuf },
    #[error("{path:?} in {root} is larger than {limit} bytes")]
    TooLarge {
        root: PathBuf,
        path: PathBuf,
        limit: u64,
    },
}

/// What `stat` says about a node, kept small and `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Full `st_mode`: type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u64,
    pub dev: u64,
    pub ino: u64,
    pub rdev: u64,
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
}

impl Meta {
    pub fn from_stat(st: &rfs::Stat) -> Self {
        Self {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            nlink: st.st_nlink,
            dev: st.st_dev,
            ino: st.st_ino,
            rdev: st.st_rdev,
            atime: (st.st_atime, st.st_atime_nsec as i64),
            mtime: (st.st_mtime, st.st_mtime_nsec as i64),
        }
    }

    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }

    pub fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }

    /// Permission bits with setuid, setgid and sticky.
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
}

/// How [`RootDir::mkdir_all`] creates a missing directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirSpec {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch for atime and mtime; `None` leaves the creation time.
    pub mtime: Option<i64>,
}

/// Where a [`RootDir::walk`] ended.
#[derive(Debug)]
pub enum WalkEnd {
    /// The whole path is a directory: the walk's `dir`.
    Dir,
    /// The last component exists in `dir` and is not a directory (never a symlink).
    NonDir { name: OsString, file_type: FileType },
    /// `rest[0]` does not exist in `dir`; `rest` is what was left to resolve.
    Missing { rest: Vec<OsString> },
}

/// The result of a walk: the deepest directory reached, by fd and by symlink-free path.
#[derive(Debug)]
pub struct Walked {
    /// `O_PATH` fd on the directory.
    pub dir: OwnedFd,
    /// Its path from the root, without symlinks (empty for the root itself).
    pub dir_path: PathBuf,
    pub end: WalkEnd,
}

/// A path resolved inside the root with every symlink followed.
#[derive(Debug)]
pub struct Resolved {
    /// `O_PATH` fd on the node.
    pub fd: OwnedFd,
    /// The node's path from the root, without symlinks (empty for the root itself).
    pub path: PathBuf,
    pub meta: Meta,
}

/// A directory that acts as `/` for every path handed to it.
#[derive(Debug)]
pub struct RootDir {
    fd: OwnedFd,
    path: PathBuf,
    /// The root's own path as `/proc/self/fd` shows it, to turn resolved fds into paths.
    real: PathBuf,
}

/// Splits a path into byte components.
fn components(rel: &Path) -> VecDeque<OsString> {
    rel.as_os_str()
        .as_bytes()
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| OsString::from_vec(c.to_vec()))
        .collect()
}

/// The path of an open fd, from `/proc/self/fd`.
pub fn fd_path(fd: BorrowedFd<'_>) -> io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// A path that names `name` inside the directory `dir` without resolving anything again:
/// the only way to reach a symlink for `l*xattr` without opening it.
pub fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    use std::os::fd::AsRawFd;
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    if !name.is_empty() {
        p.push(name);
    }
    p
}

/// `O_PATH | O_NOFOLLOW` handle on `name` in `dir`.
pub fn open_path_nofollow(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    rfs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Retries `openat2` on `EAGAIN`, which it returns when a rename raced with the lookup.
fn openat2_retry(
    dir: BorrowedFd<'_>,
    path: &OsStr,
    flags: OFlags,
    resolve: ResolveFlags,
) -> Result<OwnedFd, Errno> {
    let mut tries = 0;
    loop {
        match rfs::openat2(dir, path, flags, Mode::empty(), resolve) {
            Err(Errno::AGAIN) if tries < 16 => tries += 1,
            r => return r,
        }
    }
}

impl RootDir {
    /// Opens `path` (which the caller trusts: it is the root itself) as a root.
    pub fn open(path: &Path) -> Result<Self, RootError> {
        let err = |op, source: io::Error| RootError::Io {
            root: path.to_path_buf(),
            path: PathBuf::from("/"),
            op,
            source,
        };
        let fd = rfs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| err("open", e.into()))?;
        let real = fd_path(fd.as_fd()).map_err(|e| err("readlink /proc/self/fd of", e))?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
            real,
        })
    }

    /// The root as given to [`RootDir::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn io(&self, op: &'static str, path: &Path, e: impl Into<io::Error>) -> RootError {
        RootError::Io {
            root: self.path.clone(),
            path: Path::new("/").join(path),
            op,
            source: e.into(),
        }
    }

    /// Resolves `rel` following every symlink inside the root (the final one too), with the
    /// kernel's `RESOLVE_IN_ROOT`. `Ok(None)` when something on the way does not exist or is
    /// not a directory, as `stat` inside a chroot would say.
    pub fn resolve(&self, rel: &Path) -> Result<Option<Resolved>, RootError> {
        let p = if components(rel).is_empty() {
            OsStr::new(".")
        } else {
            rel.as_os_str()
        };
        let fd = match openat2_retry(
            self.fd(),
            p,
            OFlags::PATH | OFlags::CLOEXEC,
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
            Err(Errno::LOOP) => {
                return Err(RootError::SymlinkLoop {
                    root: self.path.clone(),
                    path: rel.to_path_buf(),
                })
            }
            Err(e) => return Err(self.io("open", rel, e)),
        };
        let meta = Meta::from_stat(&rfs::fstat(&fd).map_err(|e| self.io("stat", rel, e))?);
        let abs = fd_path(fd.as_fd()).map_err(|e| self.io("readlink /proc/self/fd of", rel, e))?;
        // The kernel kept the lookup inside the root, so its path has the root's as prefix.
        let path = abs
            .strip_prefix(&self.real)
            .map(Path::to_path_buf)
            .map_err(|_| {
                self.io(
                    "resolve",
                    rel,
                    io::Error::other(format!("resolved to {abs:?}, outside the root")),
                )
            })?;
        Ok(Some(Resolved { fd, path, meta }))
    }

    /// Opens a path that has no symlink in it; the kernel refuses any symlink or escape.
    pub fn open_beneath(&self, rel: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
        let p = if components(rel).is_empty() {
            OsStr::new(".")
        } else {
            rel.as_os_str()
        };
        openat2_retry(
            self.fd(),
            p,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// Reads a whole regular file found by chroot-style resolution (`/etc/passwd`,
    /// `.dockerignore`); `Ok(None)` when it does not exist. Refuses files over `limit`.
    pub fn read_file(&self, rel: &Path, limit: u64) -> Result<Option<Vec<u8>>, RootError> {
        let fd = match openat2_retry(
            self.fd(),
            rel.as_os_str(),
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
            Err(e) => return Err(self.io("open", rel, e)),
        };
        let st = rfs::fstat(&fd).map_err(|e| self.io("stat", rel, e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Ok(None);
        }
        let mut out = Vec::new();
        std::fs::File::from(fd)
            .take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| self.io("read", rel, e))?;
        if out.len() as u64 > limit {
            return Err(RootError::TooLarge {
                root: self.path.clone(),
                path: rel.to_path_buf(),
                limit,
            });
        }
        Ok(Some(out))
    }

    /// `O_PATH` directory fd by symlink-free components, kernel-checked.
    fn reopen(&self, names: &[OsString]) -> Result<OwnedFd, RootError> {
        let rel: PathBuf = names.iter().collect();
        self.open_beneath(&rel, OFlags::PATH | OFlags::DIRECTORY)
            .map_err(|e| self.io("open", &rel, e))
    }

    /// Walks `rel` with chroot semantics, following symlinks (the last one too). With
    /// `create`, missing directories are made on the way (and the walk always ends on a
    /// directory); without it the walk stops at the first missing component.
    pub fn walk(&self, rel: &Path, create: Option<&DirSpec>) -> Result<Walked, RootError> {
        let mut todo = components(rel);
        let mut names: Vec<OsString> = Vec::new();
        let mut cur = self.reopen(&names)?;
        let mut hops = 0;
        let here = |names: &[OsString], c: &OsStr| -> PathBuf {
            let mut p: PathBuf = names.iter().collect();
            p.push(c);
            p
        };
        while let Some(c) = todo.pop_front() {
            if c == "." || c.is_empty() {
                continue;
            }
            if c == ".." {
                names.pop();
                cur = self.reopen(&names)?;
                continue;
            }
            let fd = match open_path_nofollow(cur.as_fd(), &c) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => match create {
                    Some(spec) => {
                        self.make_dir(cur.as_fd(), &c, spec, &here(&names, &c))?;
                        open_path_nofollow(cur.as_fd(), &c)
                            .map_err(|e| self.io("open", &here(&names, &c), e))?
                    }
                    None => {
                        let mut rest = vec![c];
                        rest.extend(todo);
                        return Ok(Walked {
                            dir: cur,
                            dir_path: names.iter().collect(),
                            end: WalkEnd::Missing { rest },
                        });
                    }
                },
                Err(e) => return Err(self.io("open", &here(&names, &c), e)),
            };
            let st = rfs::fstat(&fd).map_err(|e| self.io("stat", &here(&names, &c), e))?;
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    names.push(c);
                    cur = fd;
                }
                FileType::Symlink => {
                    hops += 1;
                    if hops > MAX_HOPS {
                        return Err(RootError::SymlinkLoop {
                            root: self.path.clone(),
                            path: rel.to_path_buf(),
                        });
                    }
                    // An O_PATH fd on a symlink reads it with an empty path.
                    let target = rfs::readlinkat(&fd, c"", Vec::new())
                        .map_err(|e| self.io("readlink", &here(&names, &c), e))?
                        .into_bytes();
                    if target.first() == Some(&b'/') {
                        names.clear();
                        cur = self.reopen(&names)?;
                    }
                    for t in target.split(|&b| b == b'/').rev() {
                        todo.push_front(OsString::from_vec(t.to_vec()));
                    }
                }
                file_type => {
                    let more = todo.iter().any(|t| t != "." && !t.is_empty());
                    if more || create.is_some() {
                        return Err(RootError::NotADirectory {
                            root: self.path.clone(),
                            path: Path::new("/").join(here(&names, &c)),
                        });
                    }
                    return Ok(Walked {
                        dir: cur,
                        dir_path: names.iter().collect(),
                        end: WalkEnd::NonDir { name: c, file_type },
                    });
                }
            }
        }
        Ok(Walked {
            dir: cur,
            dir_path: names.iter().collect(),
            end: WalkEnd::Dir,
        })
    }

    /// `mkdir -p` with chroot semantics; returns the directory's `O_PATH` fd and its
    /// symlink-free path. Directories that exist keep their metadata.
    pub fn mkdir_all(&self, rel: &Path, spec: &DirSpec) -> Result<(OwnedFd, PathBuf), RootError> {
        let w = self.walk(rel, Some(spec))?;
        Ok((w.dir, w.dir_path))
    }

    fn make_dir(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        spec: &DirSpec,
        at: &Path,
    ) -> Result<(), RootError> {
        match rfs::mkdirat(dir, name, Mode::from_raw_mode(spec.mode)) {
            Ok(()) => {}
            Err(Errno::EXIST) => return Ok(()),
            Err(e) => return Err(self.io("mkdir", at, e)),
        }
        rfs::chownat(
            dir,
            name,
            Some(rustix::process::Uid::from_raw(spec.uid)),
            Some(rustix::process::Gid::from_raw(spec.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.io("chown", at, e))?;
        // After chown (which clears setuid/setgid), and so that the umask has no say.
        rfs::chmodat(dir, name, Mode::from_raw_mode(spec.mode), AtFlags::empty())
            .map_err(|e| self.io("chmod", at, e))?;
        if let Some(t) = spec.mtime {
            let ts = Timespec {
                tv_sec: t,
                tv_nsec: 0,
            };
            rfs::utimensat(
                dir,
                name,
                &rfs::Timestamps {
                    last_access: ts,
                    last_modification: ts,
                },
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.io("utimensat", at, e))?;
        }
        Ok(())
    }
}
