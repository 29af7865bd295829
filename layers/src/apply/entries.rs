//! Applying one entry at a time: create the node, then its metadata; directory metadata is
//! kept until every entry is in place.

use super::{components, display, ApplyError, ApplyMode, ApplyOptions, Refusal};
use crate::reader::{Entry, Kind, TarReader};
use crate::resolve::{join, Follow, ResolveError, Resolved, Root};
use crate::sys;
use crate::xattr::Node;
use rustix::fd::{AsFd, BorrowedFd};
use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, OFlags, Timestamps, Uid};
use rustix::io::Errno;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;

pub(super) struct DirMeta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Default)]
pub(super) struct DirState {
    pub(super) meta: Option<DirMeta>,
    pub(super) opaque: bool,
}

pub(super) struct Applier<'o> {
    pub(super) root: Root,
    pub(super) opts: &'o ApplyOptions,
    /// Flatten mode: paths (from the root, symlink-free) this layer created.
    pub(super) written: BTreeSet<Vec<u8>>,
    /// Directory metadata to set once every entry is in place.
    pub(super) dirs: BTreeMap<Vec<u8>, DirState>,
    pub(super) buf: Vec<u8>,
}

/// Context for the errors of one entry.
pub(super) struct Ctx<'a> {
    pub(super) entry: &'a str,
}

impl Ctx<'_> {
    pub(super) fn refused(&self, reason: Refusal) -> ApplyError {
        ApplyError::Refused {
            entry: self.entry.to_string(),
            reason,
        }
    }
    pub(super) fn io(&self, op: &'static str) -> impl Fn(io::Error) -> ApplyError + '_ {
        move |source| ApplyError::Io {
            entry: self.entry.to_string(),
            op,
            source,
        }
    }
    pub(super) fn errno(&self, op: &'static str) -> impl Fn(Errno) -> ApplyError + '_ {
        move |e| ApplyError::Io {
            entry: self.entry.to_string(),
            op,
            source: e.into(),
        }
    }
    pub(super) fn resolve(&self, e: ResolveError) -> ApplyError {
        match e {
            ResolveError::Escape { symlink } => self.refused(Refusal::Escape {
                symlink: display(&symlink),
            }),
            ResolveError::Loop => self.refused(Refusal::SymlinkLoop),
            ResolveError::ThroughSymlink { symlink } => {
                self.refused(Refusal::WhiteoutThroughSymlink {
                    symlink: display(&symlink),
                })
            }
            ResolveError::NotDir { at } => self.refused(Refusal::NotADirectory {
                parent: display(&at),
            }),
            ResolveError::EmptySymlink { at } => self.refused(Refusal::EmptySymlink {
                symlink: display(&at),
            }),
            ResolveError::Io { at, err } => ApplyError::Io {
                entry: self.entry.to_string(),
                op: if at.is_empty() {
                    "open root"
                } else {
                    "resolve parent"
                },
                source: err,
            },
        }
    }
}

impl<'o> Applier<'o> {
    pub(super) fn new(root: Root, opts: &'o ApplyOptions) -> Self {
        Self {
            root,
            opts,
            written: BTreeSet::new(),
            dirs: BTreeMap::new(),
            buf: vec![0; 64 * 1024],
        }
    }

    pub(super) fn flatten(&self) -> bool {
        self.opts.mode == ApplyMode::Flatten
    }

    fn note_written(&mut self, rel: &[u8]) {
        if self.flatten() {
            self.written.insert(rel.to_vec());
        }
    }

    pub(super) fn note_created(&mut self, res: &Resolved) {
        for c in &res.created {
            self.note_written(c);
        }
    }

    pub(super) fn entry<R: Read>(
        &mut self,
        e: &Entry,
        tar: &mut TarReader<R>,
    ) -> Result<(), ApplyError> {
        let shown = display(&e.path);
        let cx = Ctx { entry: &shown };
        let comps = components(&e.path).map_err(|r| cx.refused(r))?;
        let uid = u32::try_from(e.uid).map_err(|_| cx.refused(Refusal::IdOutOfRange(e.uid)))?;
        let gid = u32::try_from(e.gid).map_err(|_| cx.refused(Refusal::IdOutOfRange(e.gid)))?;

        let Some((&name, parent)) = comps.split_last() else {
            // "./" or "/": metadata for the root itself.
            if e.kind != Kind::Dir {
                return Err(cx.refused(Refusal::RootNotDirectory));
            }
            self.dirs.entry(Vec::new()).or_default().meta = Some(dir_meta(e, uid, gid));
            return Ok(());
        };
        if let Some(target) = name.strip_prefix(b".wh.") {
            return self.whiteout(parent, target, &cx);
        }

        let res = self
            .root
            .resolve_dir(parent, Follow::InRoot, true)
            .map_err(|err| cx.resolve(err))?
            .expect("create=true always resolves");
        self.note_created(&res);
        let dir = res.fd.as_fd();
        let rel = join(&res.rel, name);
        let os_name = OsStr::from_bytes(name);

        match e.kind {
            Kind::Dir => {
                let existing = rfs::statat(dir, os_name, AtFlags::SYMLINK_NOFOLLOW);
                let mut opaque = false;
                match existing {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                    Ok(st) => {
                        opaque = !self.flatten()
                            && FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice
                            && st.st_rdev == 0;
                        sys::remove_all_at(dir, name).map_err(cx.io("remove existing"))?;
                        rfs::mkdirat(dir, os_name, Mode::from_raw_mode(0o700))
                            .map_err(cx.errno("mkdir"))?;
                    }
                    Err(Errno::NOENT) => {
                        rfs::mkdirat(dir, os_name, Mode::from_raw_mode(0o700))
                            .map_err(cx.errno("mkdir"))?;
                    }
                    Err(err) => return Err(cx.errno("lstat")(err)),
                }
                let state = self.dirs.entry(rel.clone()).or_default();
                state.meta = Some(dir_meta(e, uid, gid));
                state.opaque |= opaque;
            }
            Kind::File => {
                sys::remove_all_at(dir, name).map_err(cx.io("remove existing"))?;
                let fd = rfs::openat(
                    dir,
                    os_name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(cx.errno("create"))?;
                let mut file = std::fs::File::from(fd);
                let copied = copy_sparse(&mut tar.data(), &mut file, e.size, &mut self.buf);
                copied.map_err(|err| match err {
                    CopyError::Read(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                        ApplyError::Malformed {
                            offset: tar.offset(),
                            reason: format!("archive ends inside the data of {shown:?}"),
                        }
                    }
                    CopyError::Read(err) => ApplyError::Read(err),
                    CopyError::Write(err) => cx.io("write")(err),
                })?;
                let fd = file.as_fd();
                if self.opts.restore_owner {
                    rfs::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                        .map_err(cx.errno("chown"))?;
                }
                rfs::fchmod(fd, Mode::from_raw_mode(e.mode)).map_err(cx.errno("chmod"))?;
                self.set_xattrs(Node::Fd(fd), &e.xattrs, &cx)?;
                rfs::futimens(fd, &times(e.mtime)).map_err(cx.errno("set mtime"))?;
            }
            Kind::Symlink => {
                sys::remove_all_at(dir, name).map_err(cx.io("remove existing"))?;
                rfs::symlinkat(OsStr::from_bytes(&e.link), dir, os_name)
                    .map_err(cx.errno("symlink"))?;
                self.node_meta(dir, name, e, uid, gid, false, &cx)?;
            }
            Kind::Hardlink => self.hardlink(dir, name, &rel, e, &cx)?,
            Kind::Char | Kind::Block | Kind::Fifo => {
                let ft = match e.kind {
                    Kind::Char => FileType::CharacterDevice,
                    Kind::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                if ft != FileType::Fifo && !self.opts.allow_devices {
                    return Err(cx.refused(Refusal::DeviceNotAllowed));
                }
                sys::remove_all_at(dir, name).map_err(cx.io("remove existing"))?;
                let dev = rfs::makedev(e.dev.0, e.dev.1);
                rfs::mknodat(dir, os_name, ft, Mode::from_raw_mode(0o600), dev)
                    .map_err(cx.errno("mknod"))?;
                self.node_meta(dir, name, e, uid, gid, true, &cx)?;
            }
        }
        self.note_written(&rel);
        Ok(())
    }

    /// Owner, mode, xattrs and mtime of a symlink, device or fifo, by name in `dir`.
    #[allow(clippy::too_many_arguments)]
    fn node_meta(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        e: &Entry,
        uid: u32,
        gid: u32,
        chmod: bool,
        cx: &Ctx<'_>,
    ) -> Result<(), ApplyError> {
        let os_name = OsStr::from_bytes(name);
        if self.opts.restore_owner {
            rfs::chownat(
                dir,
                os_name,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(cx.errno("chown"))?;
        }
        if chmod {
            // Only ever called right after mknod of this very name: no symlink can be there.
            rfs::chmodat(dir, os_name, Mode::from_raw_mode(e.mode), AtFlags::empty())
                .map_err(cx.errno("chmod"))?;
        }
        if !e.xattrs.is_empty() {
            let path = sys::proc_path(dir, name);
            self.set_xattrs(Node::Path(&path), &e.xattrs, cx)?;
        }
        rfs::utimensat(dir, os_name, &times(e.mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(cx.errno("set mtime"))?;
        Ok(())
    }

    fn set_xattrs(
        &self,
        node: Node<'_>,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        cx: &Ctx<'_>,
    ) -> Result<(), ApplyError> {
        for (name, value) in xattrs {
            if crate::xattr::is_overlay_xattr(name) {
                continue;
            }
            match crate::xattr::set(node, name, value) {
                Ok(()) => {}
                Err(err)
                    if self.opts.lenient_xattrs
                        && matches!(err.raw_os_error(), Some(code) if code == Errno::PERM.raw_os_error() || code == Errno::NOTSUP.raw_os_error()) =>
                    {}
                Err(err) => return Err(cx.io("set xattr")(err)),
            }
        }
        Ok(())
    }

    fn hardlink(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        rel: &[u8],
        e: &Entry,
        cx: &Ctx<'_>,
    ) -> Result<(), ApplyError> {
        let target = display(&e.link);
        let tcomps = components(&e.link).map_err(|_| {
            cx.refused(Refusal::LinkTargetDotDot {
                target: target.clone(),
            })
        })?;
        let missing = || {
            cx.refused(Refusal::LinkTargetMissing {
                target: target.clone(),
            })
        };
        let Some((&tname, tparent)) = tcomps.split_last() else {
            return Err(cx.refused(Refusal::LinkTargetIsDirectory {
                target: target.clone(),
            }));
        };
        let tres = match self.root.resolve_dir(tparent, Follow::Never, false) {
            Ok(Some(r)) => r,
            Ok(None) => return Err(missing()),
            Err(ResolveError::ThroughSymlink { symlink }) => {
                return Err(cx.refused(Refusal::LinkThroughSymlink {
                    target: target.clone(),
                    symlink: display(&symlink),
                }))
            }
            Err(ResolveError::NotDir { .. }) => return Err(missing()),
            Err(err) => return Err(cx.resolve(err)),
        };
        match rfs::statat(
            &tres.fd,
            OsStr::from_bytes(tname),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                return Err(cx.refused(Refusal::LinkTargetIsDirectory { target }))
            }
            Ok(_) => {}
            Err(Errno::NOENT) => return Err(missing()),
            Err(err) => return Err(cx.errno("lstat link target")(err)),
        }
        if join(&tres.rel, tname) == rel {
            return Ok(()); // a link to itself: already there
        }
        sys::remove_all_at(dir, name).map_err(cx.io("remove existing"))?;
        // Flags 0: a hardlink to a symlink links the symlink itself.
        rfs::linkat(
            &tres.fd,
            OsStr::from_bytes(tname),
            dir,
            OsStr::from_bytes(name),
            AtFlags::empty(),
        )
        .map_err(cx.errno("link"))?;
        Ok(())
    }

    /// Directory metadata, children before parents, so that nothing written later changes a
    /// directory's mtime and a read-only directory did not block its own children.
    pub(super) fn finish_dirs(&mut self) -> Result<(), ApplyError> {
        let dirs = std::mem::take(&mut self.dirs);
        for (rel, state) in dirs.into_iter().rev() {
            let shown = display(&rel);
            let cx = Ctx { entry: &shown };
            let fd = match self.root.open_dir_strict(&rel) {
                Ok(fd) => fd,
                // Replaced by a later entry of the layer: its metadata no longer applies.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::XDEV) => continue,
                Err(err) => return Err(cx.errno("open directory")(err)),
            };
            let fd = fd.as_fd();
            if state.opaque {
                crate::xattr::set(Node::Fd(fd), b"trusted.overlay.opaque", b"y")
                    .map_err(cx.io("set opaque xattr"))?;
            }
            let Some(meta) = state.meta else { continue };
            if self.opts.restore_owner {
                rfs::fchown(
                    fd,
                    Some(Uid::from_raw(meta.uid)),
                    Some(Gid::from_raw(meta.gid)),
                )
                .map_err(cx.errno("chown"))?;
            }
            rfs::fchmod(fd, Mode::from_raw_mode(meta.mode)).map_err(cx.errno("chmod"))?;
            self.set_xattrs(Node::Fd(fd), &meta.xattrs, &cx)?;
            rfs::futimens(fd, &times(meta.mtime)).map_err(cx.errno("set mtime"))?;
        }
        Ok(())
    }
}

fn dir_meta(e: &Entry, uid: u32, gid: u32) -> DirMeta {
    DirMeta {
        mode: e.mode,
        uid,
        gid,
        mtime: e.mtime,
        xattrs: e.xattrs.clone(),
    }
}

fn times(mtime: i64) -> Timestamps {
    let t = rustix::fs::Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copy `size` bytes, seeking over all-zero blocks so that holes stay holes.
fn copy_sparse<R: Read>(
    src: &mut R,
    dst: &mut std::fs::File,
    size: u64,
    buf: &mut [u8],
) -> Result<(), CopyError> {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let chunk = buf.len().min(ZEROS.len());
    let mut left = size;
    while left > 0 {
        let want = left.min(chunk as u64) as usize;
        src.read_exact(&mut buf[..want]).map_err(CopyError::Read)?;
        // Slice equality on bytes is a memcmp: cheap even in debug builds.
        if buf[..want] == ZEROS[..want] {
            dst.seek(SeekFrom::Current(want as i64))
                .map_err(CopyError::Write)?;
        } else {
            dst.write_all(&buf[..want]).map_err(CopyError::Write)?;
        }
        left -= want as u64;
    }
    // A trailing hole: seeking alone does not extend the file.
    dst.set_len(size).map_err(CopyError::Write)
}
