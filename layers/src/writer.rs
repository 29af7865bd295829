//! Deterministic layer tar writer, for a plain directory or an overlay upper dir.
//!
//! What makes the output reproducible and faithful (the `tar` crate's `Builder` does none of
//! this by default, so only its `Header` field encoding is used):
//! - a depth-first walk, each directory's entries in byte order of their names as written
//!   (the order Go's `filepath.Walk` gives, as in containerd and BuildKit diffs); a directory
//!   comes right before its contents, names are relative and directories end in `/`;
//! - numeric uid/gid only (no uname/gname), mode bits `0o7777` (setuid/setgid/sticky kept);
//! - mtimes clamped to `source_date_epoch` when given, in whole seconds; no atime/ctime;
//! - PAX records for paths and link targets over 100 bytes, for numbers that do not fit the
//!   ustar fields, and `SCHILY.xattr.*` for every xattr except overlay's own;
//! - hardlinks (same dev+ino, nlink > 1) written as link entries to the first path written;
//! - symlinks never followed (every node is opened relative to its parent's fd with
//!   `O_NOFOLLOW`); fifos and device nodes as such; sockets skipped;
//! - regular files streamed through a fixed buffer, so a sparse file never sits in memory
//!   (its holes are written out as zeros: no GNU sparse entries).
//!
//! The walk keeps one directory fd open per level of depth, so a tree deeper than the
//! open-file limit (commonly 1024) fails with `EMFILE`.
//!
//! In [`SourceKind::OverlayUpper`] mode the overlay conventions become OCI ones: a whiteout
//! (char device 0/0) `NAME` becomes an empty file `.wh.NAME`, and a directory with
//! `trusted.overlay.opaque=y` gets a `.wh..wh..opq` entry right after its own entry.
//! Redirects and metacopy are refused: a diff of such an upper dir would need the lower
//! layers, so build steps mount with `redirect_dir=off,metacopy=off`.

use crate::compress::{Compression, LayerDigests, LayerWriter};
use crate::pax;
use crate::sys;
use crate::xattr::{Node, Xattr};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What the source directory is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SourceKind {
    /// Any directory: every node is written as it is.
    #[default]
    Plain,
    /// An overlay upper dir: whiteouts and opaque directories become OCI whiteout entries.
    OverlayUpper,
}

/// How to write a layer tar.
#[derive(Clone, Debug, Default)]
pub struct TarOptions {
    pub source: SourceKind,
    /// `SOURCE_DATE_EPOCH`: mtimes later than this are written as this (the caller reads the
    /// environment; the library never does).
    pub source_date_epoch: Option<i64>,
}

/// Why a layer could not be written. `path` is relative to the source root.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{path}: {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path}: overlay {feature} is not supported (mount with redirect_dir=off,metacopy=off)"
    )]
    OverlayFeature { path: String, feature: &'static str },
    #[error("{path}: file changed size while it was being archived")]
    FileChanged { path: String },
    #[error("writing the layer stream: {0}")]
    Output(#[source] io::Error),
}

/// Write the tar of `root` into `out` and return `out`.
pub fn write_tar<W: Write>(root: &Path, out: W, opts: &TarOptions) -> Result<W, WriteError> {
    let dir = rfs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(b"", "open root", e.into()))?;
    let mut w = TarWriter {
        out,
        opts,
        links: HashMap::new(),
        buf: vec![0; 256 * 1024],
    };
    w.walk(dir.as_fd(), b"")?;
    w.out.write_all(&[0; 1024]).map_err(WriteError::Output)?;
    Ok(w.out)
}

/// Write the tar of `root`, compressed, into `sink`, computing both digests on the way.
pub fn write_layer<W: Write>(
    root: &Path,
    sink: W,
    compression: Compression,
    opts: &TarOptions,
) -> Result<(LayerDigests, W), WriteError> {
    let lw = LayerWriter::new(sink, compression).map_err(WriteError::Output)?;
    let lw = write_tar(root, lw, opts)?;
    lw.finish().map_err(WriteError::Output)
}

fn display(path: &[u8]) -> String {
    path.escape_ascii().to_string()
}

fn io_err(path: &[u8], op: &'static str, source: io::Error) -> WriteError {
    WriteError::Io {
        path: display(path),
        op,
        source,
    }
}

struct TarWriter<'a, W> {
    out: W,
    opts: &'a TarOptions,
    /// (dev, ino) of multiply-linked non-directories → first path written.
    links: HashMap<(u64, u64), Vec<u8>>,
    buf: Vec<u8>,
}

/// The header fields that come from `lstat`.
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
}

enum Body<'f> {
    None,
    File(&'f mut std::fs::File, u64),
}

struct Child {
    name: Vec<u8>,
    /// The name as written: `.wh.NAME` for an overlay whiteout.
    out_name: Vec<u8>,
    st: Stat,
    whiteout: bool,
}

impl<W: Write> TarWriter<'_, W> {
    // `Stat` field types differ between architectures; the casts are not no-ops everywhere.
    #[allow(clippy::unnecessary_cast)]
    fn meta(&self, st: &Stat) -> Meta {
        let mtime = st.st_mtime as i64;
        Meta {
            mode: st.st_mode & 0o7777,
            uid: st.st_uid as u64,
            gid: st.st_gid as u64,
            mtime: self.clamp(mtime),
        }
    }

    fn clamp(&self, mtime: i64) -> i64 {
        match self.opts.source_date_epoch {
            Some(epoch) => mtime.min(epoch),
            None => mtime,
        }
    }

    fn overlay(&self) -> bool {
        self.opts.source == SourceKind::OverlayUpper
    }

    fn walk(&mut self, dir: BorrowedFd<'_>, prefix: &[u8]) -> Result<(), WriteError> {
        let names = sys::dir_names(dir).map_err(|e| io_err(prefix, "read directory", e))?;
        let mut children = Vec::with_capacity(names.len());
        for name in names {
            let st = rfs::statat(dir, OsStr::from_bytes(&name), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_err(&[prefix, &name].concat(), "lstat", e.into()))?;
            let ft = FileType::from_raw_mode(st.st_mode);
            if ft == FileType::Socket {
                continue;
            }
            let whiteout = self.overlay() && ft == FileType::CharacterDevice && st.st_rdev == 0;
            let out_name = if whiteout {
                [b".wh.", &name[..]].concat()
            } else {
                name.clone()
            };
            children.push(Child {
                name,
                out_name,
                st,
                whiteout,
            });
        }
        children.sort_by(|a, b| a.out_name.cmp(&b.out_name));
        for child in children {
            let path = [prefix, &child.out_name].concat();
            self.entry(dir, &child, &path)?;
        }
        Ok(())
    }

    fn entry(&mut self, dir: BorrowedFd<'_>, c: &Child, path: &[u8]) -> Result<(), WriteError> {
        let ft = FileType::from_raw_mode(c.st.st_mode);
        let name = OsStr::from_bytes(&c.name);
        let meta = self.meta(&c.st);
        if c.whiteout {
            let wh = Meta {
                mode: 0,
                uid: 0,
                gid: 0,
                ..meta
            };
            return self.header(
                path,
                tar::EntryType::Regular,
                &wh,
                None,
                (0, 0),
                &[],
                Body::None,
            );
        }
        if ft == FileType::Directory {
            let fd: OwnedFd = rfs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_err(path, "open directory", e.into()))?;
            let xattrs = self.xattrs(Node::Fd(fd.as_fd()), path)?;
            let opaque = self.check_overlay_xattrs(&xattrs, path, true)?;
            let dir_path = [path, b"/"].concat();
            let kept = keep_xattrs(&xattrs);
            self.header(
                &dir_path,
                tar::EntryType::Directory,
                &meta,
                None,
                (0, 0),
                &kept,
                Body::None,
            )?;
            if opaque {
                let opq = [&dir_path[..], b".wh..wh..opq"].concat();
                let m = Meta {
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    ..meta
                };
                self.header(
                    &opq,
                    tar::EntryType::Regular,
                    &m,
                    None,
                    (0, 0),
                    &[],
                    Body::None,
                )?;
            }
            return self.walk(fd.as_fd(), &dir_path);
        }

        // Everything else may be one of several links to one inode.
        if c.st.st_nlink > 1 {
            #[allow(clippy::unnecessary_cast)] // as in `meta`
            let key = (c.st.st_dev as u64, c.st.st_ino as u64);
            if let Some(first) = self.links.get(&key) {
                let first = first.clone();
                return self.header(
                    path,
                    tar::EntryType::Link,
                    &meta,
                    Some(&first),
                    (0, 0),
                    &[],
                    Body::None,
                );
            }
            self.links.insert(key, path.to_vec());
        }

        match ft {
            FileType::RegularFile => {
                let fd = rfs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io_err(path, "open", e.into()))?;
                let xattrs = self.xattrs(Node::Fd(fd.as_fd()), path)?;
                self.check_overlay_xattrs(&xattrs, path, false)?;
                let mut file = std::fs::File::from(fd);
                let size = c.st.st_size as u64;
                let kept = keep_xattrs(&xattrs);
                self.header(
                    path,
                    tar::EntryType::Regular,
                    &meta,
                    None,
                    (0, 0),
                    &kept,
                    Body::File(&mut file, size),
                )
            }
            FileType::Symlink => {
                let target = rfs::readlinkat(dir, name, Vec::new())
                    .map_err(|e| io_err(path, "readlink", e.into()))?;
                let xattrs = self.xattrs(Node::Path(&sys::proc_path(dir, &c.name)), path)?;
                self.check_overlay_xattrs(&xattrs, path, false)?;
                let kept = keep_xattrs(&xattrs);
                let target = target.into_bytes();
                self.header(
                    path,
                    tar::EntryType::Symlink,
                    &meta,
                    Some(&target),
                    (0, 0),
                    &kept,
                    Body::None,
                )
            }
            FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
                let kind = match ft {
                    FileType::CharacterDevice => tar::EntryType::Char,
                    FileType::BlockDevice => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                };
                let dev = if ft == FileType::Fifo {
                    (0, 0)
                } else {
                    (rfs::major(c.st.st_rdev), rfs::minor(c.st.st_rdev))
                };
                let xattrs = self.xattrs(Node::Path(&sys::proc_path(dir, &c.name)), path)?;
                self.check_overlay_xattrs(&xattrs, path, false)?;
                let kept = keep_xattrs(&xattrs);
                self.header(path, kind, &meta, None, dev, &kept, Body::None)
            }
            _ => Ok(()), // sockets were filtered; nothing else exists
        }
    }

    fn xattrs(&self, node: Node<'_>, path: &[u8]) -> Result<Vec<Xattr>, WriteError> {
        crate::xattr::list(node).map_err(|e| io_err(path, "read xattrs", e))
    }

    /// Refuse what a diff cannot express; return whether the directory is opaque.
    fn check_overlay_xattrs(
        &self,
        xattrs: &[Xattr],
        path: &[u8],
        is_dir: bool,
    ) -> Result<bool, WriteError> {
        if !self.overlay() {
            return Ok(false);
        }
        let mut opaque = false;
        for (name, value) in xattrs {
            match &name[..] {
                b"trusted.overlay.redirect" => {
                    return Err(WriteError::OverlayFeature {
                        path: display(path),
                        feature: "redirect_dir",
                    })
                }
                b"trusted.overlay.metacopy" => {
                    return Err(WriteError::OverlayFeature {
                        path: display(path),
                        feature: "metacopy",
                    })
                }
                // "x" (kernel 6.7+) marks a directory holding xwhiteouts, not an opaque one.
                b"trusted.overlay.opaque" if is_dir && value == b"y" => opaque = true,
                _ => {}
            }
        }
        Ok(opaque)
    }

    #[allow(clippy::too_many_arguments)]
    fn header(
        &mut self,
        path: &[u8],
        kind: tar::EntryType,
        meta: &Meta,
        link: Option<&[u8]>,
        dev: (u32, u32),
        xattrs: &[&Xattr],
        body: Body<'_>,
    ) -> Result<(), WriteError> {
        const MAX_OCTAL_8: u64 = 0o7777777;
        const MAX_OCTAL_12: u64 = 0o77777777777;
        let size = match body {
            Body::File(_, size) => size,
            Body::None => 0,
        };

        let mut records = Vec::new();
        if path.len() > 100 {
            pax::push_record(&mut records, b"path", path);
        }
        if let Some(link) = link.filter(|l| l.len() > 100) {
            pax::push_record(&mut records, b"linkpath", link);
        }
        if size > MAX_OCTAL_12 {
            pax::push_record(&mut records, b"size", size.to_string().as_bytes());
        }
        if meta.uid > MAX_OCTAL_8 {
            pax::push_record(&mut records, b"uid", meta.uid.to_string().as_bytes());
        }
        if meta.gid > MAX_OCTAL_8 {
            pax::push_record(&mut records, b"gid", meta.gid.to_string().as_bytes());
        }
        if meta.mtime < 0 || meta.mtime as u64 > MAX_OCTAL_12 {
            pax::push_record(&mut records, b"mtime", meta.mtime.to_string().as_bytes());
        }
        for (name, value) in xattrs {
            pax::push_record(&mut records, &[b"SCHILY.xattr.", &name[..]].concat(), value);
        }

        if !records.is_empty() {
            // Go's archive/tar names extension headers this way; any fixed name keeps the
            // output reproducible (GNU tar's default embeds the pid).
            let base = path
                .strip_suffix(b"/")
                .unwrap_or(path)
                .rsplit(|&b| b == b'/')
                .next()
                .unwrap_or(b"");
            let name = [b"PaxHeaders.0/", base].concat();
            let pax_meta = Meta {
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime: meta.mtime.clamp(0, MAX_OCTAL_12 as i64),
            };
            let h = ustar_header(
                &name,
                tar::EntryType::XHeader,
                &pax_meta,
                None,
                (0, 0),
                records.len() as u64,
            );
            self.out
                .write_all(h.as_bytes())
                .map_err(WriteError::Output)?;
            self.out.write_all(&records).map_err(WriteError::Output)?;
            self.pad(records.len() as u64)?;
        }

        let fits = |v: u64, max: u64| if v > max { 0 } else { v };
        let main_meta = Meta {
            mode: meta.mode,
            uid: fits(meta.uid, MAX_OCTAL_8),
            gid: fits(meta.gid, MAX_OCTAL_8),
            mtime: if meta.mtime < 0 || meta.mtime as u64 > MAX_OCTAL_12 {
                0
            } else {
                meta.mtime
            },
        };
        let h = ustar_header(path, kind, &main_meta, link, dev, fits(size, MAX_OCTAL_12));
        self.out
            .write_all(h.as_bytes())
            .map_err(WriteError::Output)?;

        if let Body::File(file, size) = body {
            self.copy_data(file, size, path)?;
            self.pad(size)?;
        }
        Ok(())
    }

    /// Stream exactly `size` bytes: the header already promised that many.
    fn copy_data(
        &mut self,
        file: &mut std::fs::File,
        size: u64,
        path: &[u8],
    ) -> Result<(), WriteError> {
        let mut left = size;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = match file.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(WriteError::FileChanged {
                        path: display(path),
                    })
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(path, "read", e)),
            };
            self.out
                .write_all(&self.buf[..n])
                .map_err(WriteError::Output)?;
            left -= n as u64;
        }
        Ok(())
    }

    fn pad(&mut self, len: u64) -> Result<(), WriteError> {
        let rem = (len % 512) as usize;
        if rem != 0 {
            self.out
                .write_all(&[0; 512][..512 - rem])
                .map_err(WriteError::Output)?;
        }
        Ok(())
    }
}

fn keep_xattrs(xattrs: &[Xattr]) -> Vec<&Xattr> {
    xattrs
        .iter()
        .filter(|(n, _)| !crate::xattr::is_overlay_xattr(n))
        .collect()
}

/// A ustar header with raw-byte name and link fields (PAX records carry the full values).
fn ustar_header(
    path: &[u8],
    kind: tar::EntryType,
    meta: &Meta,
    link: Option<&[u8]>,
    dev: (u32, u32),
    size: u64,
) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    {
        let old = h.as_old_mut();
        let n = path.len().min(100);
        old.name[..n].copy_from_slice(&path[..n]);
        if let Some(link) = link {
            let n = link.len().min(100);
            old.linkname[..n].copy_from_slice(&link[..n]);
        }
    }
    h.set_entry_type(kind);
    h.set_mode(meta.mode);
    h.set_uid(meta.uid);
    h.set_gid(meta.gid);
    h.set_mtime(meta.mtime as u64);
    h.set_size(size);
    // Always written (as zeros for non-devices) because some readers reject empty fields.
    let _ = h.set_device_major(dev.0);
    let _ = h.set_device_minor(dev.1);
    h.set_cksum();
    h
}
