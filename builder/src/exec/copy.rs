//! COPY and ADD: write the selected sources into a mounted image root.
//!
//! The builder mounts `overlay(lower = parent chain, upper = fresh dir)` on a `merged` dir,
//! calls [`copy`] with it as `dest_root`, unmounts, and the upper dir becomes the layer. For
//! `--from`, it mounts the source stage or image read-only and passes that root as
//! [`Source::Root`].
//!
//! Safety: the image root and a `--from` root hold symlinks the image controls, the context
//! holds symlinks the user controls. Nothing is read or written outside the given roots: the
//! destination is resolved like a chroot would resolve it (see [`crate::context::root`]),
//! everything below it is created with `*at` calls relative to directory fds with
//! `O_NOFOLLOW`, and sources are read through fds the same way. A symlink inside a copied
//! directory is copied as a symlink; a symlink where a directory is expected in the
//! destination is an error (BuildKit: "cannot copy to non-directory"), never followed.
//!
//! Docker/BuildKit rules kept here (BuildKit `dockerfile2llb/convert_copy.go`, fsutil
//! `copy/copy.go`, `solver/llbsolver/file/{backend,unpack}.go`):
//! - `dest` is relative to WORKDIR; a trailing `/` (or `.`) means a directory. A directory
//!   source copies its contents; a file goes to `dest/name` when `dest` is (or is marked as)
//!   a directory, else to `dest`. Missing directories are made with mode 0755, owned by the
//!   `--chown` user (root without it). An existing destination directory keeps its metadata;
//!   directories inside a copied tree get the source's.
//! - Several sources (or a wildcard matching several) need a directory destination: a
//!   trailing `/`, or one that already is a directory (BuildKit accepts the latter; it would
//!   overwrite a file with each source in turn where the classic builder errors, and we error
//!   with the classic builder's words instead).
//! - Owners: `--chown` if given; else 0:0 for context files and heredocs, the source's own
//!   for `--from`. Mode, xattrs (not overlay's), atime and mtime are kept; `--chmod` (octal,
//!   or symbolic as chmod(1) with umask 0, `X` meaning "directory or already executable")
//!   applies to every copied file and directory, not to symlinks nor to created parents.
//!   Hard links between copied files stay hard links; devices and fifos are recreated.
//! - ADD of a local tar (plain, gzip, bzip2, xz, zstd, detected by content) extracts it into
//!   `dest` (made a directory) through `layers::apply`, which refuses `..` and escapes;
//!   entries keep their tar owners unless `--chown`. `--unpack=false` copies it instead.
//! - ADD of a URL downloads it (file named after the URL's last path segment when `dest` is
//!   a directory, `__unnamed__` without one), mode 0600, mtime from `Last-Modified`,
//!   verified against `--checksum` first; it is not extracted unless `--unpack=true`.
//! - Heredoc sources (`COPY <<EOF /dst`) are files named after the delimiter, mode 0644.

use crate::context::root::{proc_path, WalkEnd};
use crate::context::walk::open_dir_nofollow;
use crate::context::{
    self, Context, ContextError, DirSpec, Item, Meta, RootDir, RootError, SelectOptions, Selection,
    Tree,
};
use crate::exec::users::{self, UserError};
use crate::frontend::instruction;
use layers::xattr;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Seek, Write};
use std::path::{Path, PathBuf};

mod archive;
mod chmod;
mod fetch;

pub use chmod::Chmod;

/// A heredoc body named by its delimiter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeredocSource {
    pub name: String,
    pub content: String,
}

/// One COPY or ADD, with its words already expanded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyRequest {
    /// ADD rather than COPY.
    pub add: bool,
    /// The sources as written; heredocs appear as `<<NAME`.
    pub sources: Vec<String>,
    pub heredocs: Vec<HeredocSource>,
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub parents: bool,
    pub exclude: Vec<String>,
    pub checksum: Option<String>,
    pub unpack: Option<bool>,
    pub keep_git_dir: bool,
    /// `SOURCE_DATE_EPOCH`: every node written gets this atime and mtime.
    pub mtime: Option<i64>,
}

impl CopyRequest {
    /// The request for a typed COPY (`add = false`) or ADD instruction.
    pub fn from_instruction(c: &instruction::Copy, add: bool) -> Self {
        Self {
            add,
            sources: c.sources.clone(),
            heredocs: c
                .heredocs
                .iter()
                .map(|h| HeredocSource {
                    name: h.name.clone(),
                    content: h.content.clone(),
                })
                .collect(),
            dest: c.dest.clone(),
            chown: c.chown.clone(),
            chmod: c.chmod.clone(),
            parents: c.parents,
            exclude: c.exclude.clone(),
            checksum: c.checksum.clone(),
            unpack: c.unpack,
            keep_git_dir: c.keep_git_dir,
            mtime: None,
        }
    }

    fn name(&self) -> &'static str {
        if self.add {
            "ADD"
        } else {
            "COPY"
        }
    }

    /// The sources that name files (not heredocs, not URLs): what the cache key covers.
    pub fn file_sources(&self) -> Vec<String> {
        self.sources
            .iter()
            .filter(|s| matches!(classify(s), Kind::File))
            .cloned()
            .collect()
    }

    /// Selection flags for [`Context::select`].
    pub fn select_options(&self) -> SelectOptions {
        SelectOptions {
            parents: self.parents,
            exclude: self.exclude.clone(),
        }
    }
}

/// Where file sources come from.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    /// The build context (`.dockerignore` applies; files become root-owned).
    Context(&'a Context),
    /// A stage's or image's root for `--from` (owners kept). `name` is the `--from` value.
    Root { root: &'a Path, name: &'a str },
    /// No file source: heredocs and URLs only.
    Inline,
}

/// What a copy wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Devices and fifos.
    pub specials: u64,
    /// Sockets are not copied (a layer cannot hold them).
    pub skipped_sockets: u64,
    /// Bytes of file content written (archives and downloads included).
    pub bytes: u64,
    pub archives: u64,
    pub archive_entries: u64,
    pub downloads: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Select(#[from] ContextError),
    #[error("--chown: {0}")]
    User(#[from] UserError),
    #[error(transparent)]
    Root(#[from] RootError),
    #[error("invalid chmod parameter: '{0}'. it should be octal string and between 0 and 07777, or symbolic like u=rwx,go=rx")]
    Chmod(String),
    #[error("When using {0} with more than one source file, the destination must be a directory and end with a /")]
    NeedsDirectory(&'static str),
    #[error("{instruction} {source_name}: file sources need the build context or --from, and none was given")]
    NoFileSource {
        instruction: &'static str,
        source_name: String,
    },
    #[error("source can't be a URL for COPY: {0} (use ADD, or RUN curl)")]
    UrlInCopy(String),
    #[error("ADD of a git repository ({0}) is not supported yet: clone it in a RUN step (git clone) or in a separate stage")]
    GitNotSupported(String),
    #[error("{0}")]
    Checksum(String),
    #[error("ADD {url}: checksum mismatch: expected {expected}, downloaded content is {actual}")]
    ChecksumMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("ADD {url}: download failed: {reason}")]
    Download { url: String, reason: String },
    #[error("{instruction} <<{name}: no heredoc with that name")]
    HeredocMissing {
        instruction: &'static str,
        name: String,
    },
    #[error(
        "{0:?} cannot name a file: use a heredoc delimiter (or URL path) ending in a file name"
    )]
    BadName(String),
    #[error("cannot replace directory /{} with a file: remove it first, or end the destination with / to copy into it", .0.display())]
    CannotReplaceDirectory(PathBuf),
    #[error("cannot copy to non-directory: /{}", .0.display())]
    NotADirectory(PathBuf),
    #[error("{op} /{}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("ADD {archive}: extracting into /{}: {source}", .dest.display())]
    Archive {
        archive: String,
        dest: PathBuf,
        #[source]
        source: layers::ApplyError,
    },
}

fn io_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(Errno) -> CopyError + 'p {
    move |e| CopyError::Io {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// What a source word is.
enum Kind<'a> {
    Heredoc(&'a str),
    Url,
    Git,
    File,
}

fn classify(s: &str) -> Kind<'_> {
    if let Some(rest) = s.strip_prefix("<<") {
        let rest = rest.strip_prefix('-').unwrap_or(rest);
        return Kind::Heredoc(rest.trim_matches(|c| c == '"' || c == '\''));
    }
    if fetch::is_git(s) {
        Kind::Git
    } else if s.starts_with("http://") || s.starts_with("https://") {
        Kind::Url
    } else {
        Kind::File
    }
}

/// Where WORKDIR-relative `dest` lands, relative to the root, and whether it was marked as
/// a directory (BuildKit `pathRelativeToWorkingDir` keeps a trailing `/` or `/.`).
fn dest_path(dest: &str, workdir: &str) -> (PathBuf, bool) {
    let d = if dest.is_empty() || dest == "." {
        "./"
    } else {
        dest
    };
    let hint = d.ends_with('/') || d.ends_with("/.");
    let joined = if d.starts_with('/') {
        context::pattern::clean(d)
    } else {
        context::pattern::clean(&format!("/{workdir}/{d}"))
    };
    (PathBuf::from(joined.trim_start_matches('/')), hint)
}

/// Copies what `req` names from `source` into the image root `dest_root` (the mounted
/// overlay), with relative destinations taken from `workdir`.
pub fn copy(
    req: &CopyRequest,
    source: Source<'_>,
    dest_root: &Path,
    workdir: &str,
) -> Result<CopyStats, CopyError> {
    let instruction = req.name();
    let chmod = req
        .chmod
        .as_deref()
        .map(|s| Chmod::parse(s).ok_or_else(|| CopyError::Chmod(s.to_string())))
        .transpose()?;
    check_checksum(req)?;

    let mut heredocs = Vec::new();
    let mut urls = Vec::new();
    let mut files = Vec::new();
    for s in &req.sources {
        match classify(s) {
            Kind::Heredoc(name) => {
                let doc = req
                    .heredocs
                    .iter()
                    .find(|h| h.name == name)
                    .ok_or_else(|| CopyError::HeredocMissing {
                        instruction,
                        name: name.to_string(),
                    })?;
                heredocs.push(doc);
            }
            Kind::Git => return Err(CopyError::GitNotSupported(s.clone())),
            Kind::Url if !req.add => return Err(CopyError::UrlInCopy(s.clone())),
            Kind::Url => urls.push(s.clone()),
            Kind::File => files.push(s.clone()),
        }
    }

    let root = RootDir::open(dest_root)?;
    let owner = req
        .chown
        .as_deref()
        .map(|spec| users::resolve_chown_in(&root, spec))
        .transpose()?;

    let opts = req.select_options();
    let from_root;
    let (selection, keep_owner, src_root): (Selection, bool, Option<&RootDir>) = match source {
        _ if files.is_empty() => (Selection::default(), false, None),
        Source::Context(ctx) => (ctx.select(&files, &opts)?, false, Some(ctx.root())),
        Source::Root { root: r, name } => {
            from_root = RootDir::open(r)?;
            let tree = Tree::root(&from_root, format!("--from={name} ({})", r.display()));
            (
                context::select(&tree, &files, &opts)?,
                true,
                Some(&from_root),
            )
        }
        Source::Inline => {
            return Err(CopyError::NoFileSource {
                instruction,
                source_name: files[0].clone(),
            })
        }
    };

    let (dest, hint) = dest_path(&req.dest, workdir);
    let mut engine = Engine {
        root: &root,
        dest,
        hint,
        owner,
        keep_owner,
        chmod,
        mtime: req.mtime,
        links: HashMap::new(),
        stats: CopyStats::default(),
    };

    let count = selection.items.len() + heredocs.len() + urls.len();
    if count > 1 && !hint && !req.parents && !engine.dest_is_dir()? {
        return Err(CopyError::NeedsDirectory(instruction));
    }

    for item in &selection.items {
        let src_root = src_root.expect("file items come with a source root");
        if req.add && req.unpack != Some(false) && item.meta.file_type() == FileType::RegularFile {
            let file = open_item_file(src_root, item)?;
            if let Some(kind) = archive::sniff(&file).map_err(|e| CopyError::Io {
                op: "read",
                path: item.path.clone(),
                source: e,
            })? {
                engine.extract(file, kind, &item.source)?;
                continue;
            }
        }
        engine.place_item(src_root, item)?;
    }
    for doc in heredocs {
        engine.place_blob(
            OsStr::new(&doc.name),
            Blob::Bytes(doc.content.as_bytes()),
            0o644,
            None,
        )?;
    }
    for url in &urls {
        let got = fetch::download(url, req.checksum.as_deref())?;
        engine.stats.downloads += 1;
        let mut file = got.file;
        if req.unpack == Some(true) {
            if let Some(kind) = archive::sniff(&file).map_err(|e| CopyError::Io {
                op: "read",
                path: PathBuf::from(url),
                source: e,
            })? {
                engine.extract(file, kind, url)?;
                continue;
            }
        }
        file.rewind().map_err(|e| CopyError::Download {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        engine.place_blob(
            OsStr::new(&got.name),
            Blob::File(&mut file),
            0o600,
            got.mtime,
        )?;
    }
    Ok(engine.stats)
}

fn check_checksum(req: &CopyRequest) -> Result<(), CopyError> {
    let Some(sum) = &req.checksum else {
        return Ok(());
    };
    if !req.add {
        return Err(CopyError::Checksum(
            "checksum can't be specified for COPY".into(),
        ));
    }
    if req.sources.len() != 1 {
        return Err(CopyError::Checksum(
            "checksum can't be specified for multiple sources".into(),
        ));
    }
    if !matches!(classify(&req.sources[0]), Kind::Url | Kind::Git) {
        return Err(CopyError::Checksum(
            "checksum requires HTTP(S) or Git sources".into(),
        ));
    }
    fetch::parse_checksum(sum).map(|_| ())
}

fn open_item_file(root: &RootDir, item: &Item) -> Result<File, CopyError> {
    let fd = root
        .open_beneath(
            &item.path,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY,
        )
        .map_err(io_err("open", &item.path))?;
    Ok(File::from(fd))
}

/// Content that is not in a source tree.
enum Blob<'a> {
    Bytes(&'a [u8]),
    File(&'a mut File),
}

/// An open directory pair while a tree is copied: its source and destination fds, and the
/// metadata to give the destination once everything inside it is written.
struct Frame {
    rel: PathBuf,
    src: OwnedFd,
    dst: OwnedFd,
    dst_path: PathBuf,
    finish: Option<(Meta, xattr::Xattrs)>,
}

struct Engine<'a> {
    root: &'a RootDir,
    /// The destination, relative to the root, as written (symlinks not yet resolved).
    dest: PathBuf,
    hint: bool,
    owner: Option<(u32, u32)>,
    keep_owner: bool,
    chmod: Option<Chmod>,
    mtime: Option<i64>,
    /// Source (dev, inode) of multiply-linked files → where the first copy went.
    links: HashMap<(u64, u64), PathBuf>,
    stats: CopyStats,
}

/// Where metadata is applied: an open file or directory, or a name in a directory.
#[derive(Clone, Copy)]
enum Target<'a> {
    Fd(BorrowedFd<'a>),
    At(BorrowedFd<'a>, &'a OsStr),
}

impl Engine<'_> {
    fn dir_spec(&self) -> DirSpec {
        let (uid, gid) = self.owner.unwrap_or((0, 0));
        DirSpec {
            mode: 0o755,
            uid,
            gid,
            mtime: self.mtime,
        }
    }

    fn dest_is_dir(&self) -> Result<bool, CopyError> {
        let w = self.root.walk(&self.dest, None)?;
        Ok(matches!(w.end, WalkEnd::Dir))
    }

    /// The destination as a directory, made if missing.
    fn dir_target(&self) -> Result<(OwnedFd, PathBuf), CopyError> {
        let w = self.root.walk(&self.dest, None)?;
        match w.end {
            WalkEnd::Dir => Ok((w.dir, w.dir_path)),
            WalkEnd::NonDir { name, .. } => Err(CopyError::NotADirectory(w.dir_path.join(name))),
            WalkEnd::Missing { .. } => Ok(self.root.mkdir_all(&self.dest, &self.dir_spec())?),
        }
    }

    /// Where a file named `name` goes: its parent directory (made if missing), its name
    /// there, and its path from the root.
    fn file_target(&self, name: &OsStr) -> Result<(OwnedFd, OsString, PathBuf), CopyError> {
        let spec = self.dir_spec();
        // fsutil makes the destination (when marked as a directory) or its parent first.
        if self.hint {
            self.root.mkdir_all(&self.dest, &spec)?;
        } else if let Some(parent) = self.dest.parent() {
            self.root.mkdir_all(parent, &spec)?;
        }
        let w = self.root.walk(&self.dest, None)?;
        match w.end {
            WalkEnd::Dir => {
                let path = w.dir_path.join(name);
                Ok((w.dir, name.to_os_string(), path))
            }
            WalkEnd::NonDir { name: leaf, .. } => {
                let path = w.dir_path.join(&leaf);
                Ok((w.dir, leaf, path))
            }
            WalkEnd::Missing { rest } => {
                // A dangling symlink or a plain missing name: the file goes where a chroot
                // would put it.
                let mut p = w.dir_path;
                for c in rest {
                    if c == ".." {
                        p.pop();
                    } else if c != "." && !c.is_empty() {
                        p.push(c);
                    }
                }
                let leaf = p.file_name().map(OsString::from).unwrap_or_default();
                let parent = p.parent().map(Path::to_path_buf).unwrap_or_default();
                if leaf.is_empty() {
                    let (fd, path) = self.root.mkdir_all(&parent, &spec)?;
                    let path = path.join(name);
                    return Ok((fd, name.to_os_string(), path));
                }
                let (fd, ppath) = self.root.mkdir_all(&parent, &spec)?;
                let path = ppath.join(&leaf);
                Ok((fd, leaf, path))
            }
        }
    }

    fn owner_of(&self, meta: &Meta) -> (u32, u32) {
        match self.owner {
            Some(o) => o,
            None if self.keep_owner => (meta.uid, meta.gid),
            None => (0, 0),
        }
    }

    fn mode_of(&self, meta: &Meta) -> u32 {
        match &self.chmod {
            Some(c) => c.apply(meta.perm(), meta.is_dir()),
            None => meta.perm(),
        }
    }

    fn times(&self, meta: &Meta) -> Timestamps {
        let ts = |(s, n): (i64, i64)| Timespec {
            tv_sec: s,
            tv_nsec: n as _,
        };
        match self.mtime {
            Some(t) => Timestamps {
                last_access: ts((t, 0)),
                last_modification: ts((t, 0)),
            },
            None => Timestamps {
                last_access: ts(meta.atime),
                last_modification: ts(meta.mtime),
            },
        }
    }

    /// Owner, then mode (chown clears setuid), then xattrs (chown clears
    /// `security.capability`), then times.
    fn apply_meta(
        &self,
        target: Target<'_>,
        meta: &Meta,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        path: &Path,
    ) -> Result<(), CopyError> {
        let (uid, gid) = self.owner_of(meta);
        let (uid, gid) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        let symlink = meta.file_type() == FileType::Symlink;
        match target {
            Target::Fd(fd) => rfs::fchown(fd, uid, gid),
            Target::At(dir, name) => rfs::chownat(dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW),
        }
        .map_err(io_err("chown", path))?;
        if !symlink {
            let mode = Mode::from_raw_mode(self.mode_of(meta));
            match target {
                Target::Fd(fd) => rfs::fchmod(fd, mode),
                // Only devices and fifos get here: chmodat cannot skip following, and these
                // are nodes we just made, not symlinks.
                Target::At(dir, name) => rfs::chmodat(dir, name, mode, AtFlags::empty()),
            }
            .map_err(io_err("chmod", path))?;
        }
        for (name, value) in xattrs {
            if xattr::is_overlay_xattr(name) {
                continue;
            }
            // BuildKit logs and ignores xattrs it cannot set (an unprivileged namespace,
            // a filesystem without user xattrs on symlinks): so do we.
            let _ = match target {
                Target::Fd(fd) => xattr::set(xattr::Node::Fd(fd), name, value),
                Target::At(dir, n) => {
                    xattr::set(xattr::Node::Path(&proc_path(dir, n)), name, value)
                }
            };
        }
        let times = self.times(meta);
        match target {
            Target::Fd(fd) => rfs::futimens(fd, &times),
            Target::At(dir, name) => rfs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW),
        }
        .map_err(io_err("utimensat", path))
    }

    fn place_item(&mut self, src_root: &RootDir, item: &Item) -> Result<(), CopyError> {
        if item.meta.is_dir() {
            return self.copy_tree(src_root, item);
        }
        let parent = item.path.parent().unwrap_or(Path::new(""));
        let src_dir = src_root
            .open_beneath(parent, OFlags::PATH | OFlags::DIRECTORY)
            .map_err(io_err("open", parent))?;
        let src_name = item.path.file_name().unwrap_or_default();
        let (dir, leaf, path) = self.file_target(&item.name)?;
        self.write_node(
            dir.as_fd(),
            &leaf,
            &path,
            src_dir.as_fd(),
            src_name,
            &item.meta,
        )?;
        Ok(())
    }

    /// Copies a directory item's contents into the destination directory.
    fn copy_tree(&mut self, src_root: &RootDir, item: &Item) -> Result<(), CopyError> {
        let (_, dst_path) = self.dir_target()?;
        let dst = self
            .root
            .open_beneath(&dst_path, OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(io_err("open", &dst_path))?;
        let src = src_root
            .open_beneath(&item.path, OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(io_err("open", &item.path))?;
        let mut stack = vec![Frame {
            rel: PathBuf::new(),
            src,
            dst,
            dst_path,
            // The destination directory itself keeps its metadata (fsutil never copies the
            // source directory's own onto it).
            finish: None,
        }];
        for entry in &item.entries {
            let parent = entry.rel.parent().unwrap_or(Path::new(""));
            while stack.last().is_some_and(|f| f.rel != parent) {
                let frame = stack.pop().expect("checked");
                self.finish_dir(frame)?;
            }
            let frame = stack.last().ok_or_else(|| CopyError::Io {
                op: "walk",
                path: item.path.join(&entry.rel),
                source: io::Error::other("entry out of order"),
            })?;
            let name = entry.rel.file_name().unwrap_or_default();
            let dst_path = frame.dst_path.join(name);
            if let Some(new) = self.write_node(
                frame.dst.as_fd(),
                name,
                &dst_path,
                frame.src.as_fd(),
                name,
                &entry.meta,
            )? {
                stack.push(Frame {
                    rel: entry.rel.clone(),
                    ..new
                });
            }
        }
        while let Some(frame) = stack.pop() {
            self.finish_dir(frame)?;
        }
        Ok(())
    }

    fn finish_dir(&self, frame: Frame) -> Result<(), CopyError> {
        if let Some((meta, xattrs)) = &frame.finish {
            self.apply_meta(Target::Fd(frame.dst.as_fd()), meta, xattrs, &frame.dst_path)?;
        }
        Ok(())
    }

    /// Writes one node `src_name` (in `src_dir`, described by `meta`) as `name` in `dir`.
    /// A directory returns its frame, to be finished after its contents.
    fn write_node(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        path: &Path,
        src_dir: BorrowedFd<'_>,
        src_name: &OsStr,
        meta: &Meta,
    ) -> Result<Option<Frame>, CopyError> {
        let existing = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(Meta::from_stat(&st)),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(io_err("stat", path)(e)),
        };
        let file_type = meta.file_type();
        if file_type == FileType::Directory {
            match existing {
                Some(e) if e.is_dir() => {}
                Some(_) => return Err(CopyError::NotADirectory(path.to_path_buf())),
                None => {
                    rfs::mkdirat(dir, name, Mode::from_raw_mode(0o700))
                        .map_err(io_err("mkdir", path))?;
                    self.stats.dirs += 1;
                }
            }
            let dst = open_dir_nofollow(dir, name).map_err(io_err("open", path))?;
            let src = open_dir_nofollow(src_dir, src_name).map_err(io_err("open source", path))?;
            let xattrs = xattr::list(xattr::Node::Fd(src.as_fd())).unwrap_or_default();
            return Ok(Some(Frame {
                rel: PathBuf::new(),
                src,
                dst,
                dst_path: path.to_path_buf(),
                finish: Some((*meta, xattrs)),
            }));
        }
        match existing {
            Some(e) if e.is_dir() => {
                return Err(CopyError::CannotReplaceDirectory(path.to_path_buf()))
            }
            Some(_) => {
                rfs::unlinkat(dir, name, AtFlags::empty()).map_err(io_err("remove", path))?
            }
            None => {}
        }
        match file_type {
            FileType::RegularFile => self.write_file(dir, name, path, src_dir, src_name, meta)?,
            FileType::Symlink => {
                let target = rfs::readlinkat(src_dir, src_name, Vec::new())
                    .map_err(io_err("readlink source", path))?;
                rfs::symlinkat(target.as_c_str(), dir, name).map_err(io_err("symlink", path))?;
                let xattrs = xattr::list(xattr::Node::Path(&proc_path(src_dir, src_name)))
                    .unwrap_or_default();
                self.apply_meta(Target::At(dir, name), meta, &xattrs, path)?;
                self.stats.symlinks += 1;
            }
            FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
                rfs::mknodat(dir, name, file_type, Mode::from_raw_mode(0o600), meta.rdev)
                    .map_err(io_err("mknod", path))?;
                let xattrs = xattr::list(xattr::Node::Path(&proc_path(src_dir, src_name)))
                    .unwrap_or_default();
                self.apply_meta(Target::At(dir, name), meta, &xattrs, path)?;
                self.stats.specials += 1;
            }
            _ => self.stats.skipped_sockets += 1,
        }
        Ok(None)
    }

    fn write_file(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        path: &Path,
        src_dir: BorrowedFd<'_>,
        src_name: &OsStr,
        meta: &Meta,
    ) -> Result<(), CopyError> {
        let key = (meta.dev, meta.ino);
        if meta.nlink > 1 {
            if let Some(first) = self.links.get(&key) {
                let first_parent = first.parent().unwrap_or(Path::new(""));
                let old_dir = self
                    .root
                    .open_beneath(first_parent, OFlags::PATH | OFlags::DIRECTORY)
                    .map_err(io_err("open", first_parent))?;
                let old_name = first.file_name().unwrap_or_default();
                rfs::linkat(&old_dir, old_name, dir, name, AtFlags::empty())
                    .map_err(io_err("link", path))?;
                self.stats.hardlinks += 1;
                return Ok(());
            }
        }
        let src = rfs::openat(
            src_dir,
            src_name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err("open source", path))?;
        let st = rfs::fstat(&src).map_err(io_err("stat source", path))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || st.st_ino != meta.ino {
            return Err(CopyError::Io {
                op: "copy",
                path: path.to_path_buf(),
                source: io::Error::other("the source changed while it was being copied"),
            });
        }
        let mut src = File::from(src);
        let xattrs = xattr::list(xattr::Node::Fd(src.as_fd())).unwrap_or_default();
        let mut dst = self.create_file(dir, name, path)?;
        self.stats.bytes += io::copy(&mut src, &mut dst).map_err(|e| CopyError::Io {
            op: "copy",
            path: path.to_path_buf(),
            source: e,
        })?;
        self.apply_meta(Target::Fd(dst.as_fd()), meta, &xattrs, path)?;
        self.stats.files += 1;
        if meta.nlink > 1 {
            self.links.insert(key, path.to_path_buf());
        }
        Ok(())
    }

    fn create_file(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        path: &Path,
    ) -> Result<File, CopyError> {
        let fd = rfs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(io_err("create", path))?;
        Ok(File::from(fd))
    }

    /// Writes a heredoc body or a download as a file named `name` (in a directory
    /// destination) with `mode` before `--chmod`.
    fn place_blob(
        &mut self,
        name: &OsStr,
        blob: Blob<'_>,
        mode: u32,
        mtime: Option<i64>,
    ) -> Result<(), CopyError> {
        // Like BuildKit's `path.Base` of the heredoc or URL name: one component, never
        // `..` (a heredoc delimiter is arbitrary text).
        let name = Path::new(name)
            .file_name()
            .ok_or_else(|| CopyError::BadName(name.to_string_lossy().into_owned()))?;
        let (dir, leaf, path) = self.file_target(name)?;
        match rfs::statat(&dir, &leaf, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                return Err(CopyError::CannotReplaceDirectory(path))
            }
            Ok(_) => {
                rfs::unlinkat(&dir, &leaf, AtFlags::empty()).map_err(io_err("remove", &path))?
            }
            Err(Errno::NOENT) => {}
            Err(e) => return Err(io_err("stat", &path)(e)),
        }
        let mut file = self.create_file(dir.as_fd(), &leaf, &path)?;
        let written = match blob {
            Blob::Bytes(b) => file.write_all(b).map(|_| b.len() as u64),
            Blob::File(f) => io::copy(f, &mut file),
        }
        .map_err(|e| CopyError::Io {
            op: "write",
            path: path.clone(),
            source: e,
        })?;
        self.stats.bytes += written;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| (d.as_secs() as i64, d.subsec_nanos() as i64))
            .unwrap_or((0, 0));
        let t = mtime.map(|t| (t, 0)).unwrap_or(now);
        let meta = Meta {
            mode: libc::S_IFREG | mode,
            uid: 0,
            gid: 0,
            size: written,
            nlink: 1,
            dev: 0,
            ino: 0,
            rdev: 0,
            atime: t,
            mtime: t,
        };
        // Owned by 0:0 in `meta`: heredocs and downloads are root's unless --chown.
        self.apply_meta(Target::Fd(file.as_fd()), &meta, &[], &path)?;
        self.stats.files += 1;
        Ok(())
    }

    /// Extracts an archive into the destination (made a directory).
    fn extract(
        &mut self,
        file: File,
        kind: archive::Compression,
        label: &str,
    ) -> Result<(), CopyError> {
        let (fd, dest_path) = self.root.mkdir_all(&self.dest, &self.dir_spec())?;
        let (entries, bytes) =
            archive::extract(file, kind, fd.as_fd(), self.owner).map_err(|source| {
                CopyError::Archive {
                    archive: label.to_string(),
                    dest: dest_path.clone(),
                    source,
                }
            })?;
        self.stats.archives += 1;
        self.stats.archive_entries += entries;
        self.stats.bytes += bytes;
        Ok(())
    }
}
