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

/// `--chmod` values: octal, or symbolic as chmod(1) reads them.
mod chmod {
    const SUID: u32 = 0o4000;
    const SGID: u32 = 0o2000;
    const STICKY: u32 = 0o1000;
    /// What `a` and an `=` without who cover: everything but the sticky bit.
    const STANDARD: u32 = SUID | SGID | 0o777;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Op {
        Add(u32),
        Remove(u32),
        /// Add execute bits when the node is a directory or already executable.
        AddX(u32),
        /// Copy the permissions of class `from` (`u`, `g`, `o`) to the classes in `to`.
        CopyFrom {
            from: u8,
            to: [bool; 3],
            bits: u32,
            set: bool,
            clear: bool,
        },
    }

    /// A parsed `--chmod`.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Chmod(Repr);

    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Repr {
        Octal(u32),
        Symbolic(Vec<Op>),
    }

    impl Chmod {
        /// Parses an octal (at most 07777) or symbolic mode; `None` when invalid.
        pub fn parse(s: &str) -> Option<Self> {
            if s.is_empty() {
                return None;
            }
            if s.as_bytes()[0].is_ascii_digit() {
                let v = u32::from_str_radix(s, 8).ok()?;
                return (v <= 0o7777).then_some(Chmod(Repr::Octal(v)));
            }
            parse_symbolic(s).map(|ops| Chmod(Repr::Symbolic(ops)))
        }

        /// The permission bits (with setuid, setgid, sticky) a node with `perm` gets.
        pub fn apply(&self, perm: u32, is_dir: bool) -> u32 {
            let ops = match &self.0 {
                Repr::Octal(v) => return *v,
                Repr::Symbolic(ops) => ops,
            };
            let orig = perm & 0o7777;
            let mut mode = orig;
            for op in ops {
                match *op {
                    Op::Add(b) => mode |= b,
                    Op::Remove(b) => mode &= !b,
                    Op::AddX(b) => {
                        // BSD setmode: judged on the mode before this --chmod.
                        if orig & 0o111 != 0 || is_dir {
                            mode |= b;
                        }
                    }
                    Op::CopyFrom {
                        from,
                        to,
                        bits,
                        set,
                        clear,
                    } => {
                        let value = match from {
                            b'u' => (mode >> 6) & 7,
                            b'g' => (mode >> 3) & 7,
                            _ => mode & 7,
                        };
                        for (i, shift) in [6u32, 3, 0].into_iter().enumerate() {
                            if !to[i] {
                                continue;
                            }
                            if clear {
                                let clr = if set { 7 } else { value };
                                mode &= !((clr << shift) & bits);
                            }
                            if set {
                                mode |= (value << shift) & bits;
                            }
                        }
                    }
                }
            }
            mode
        }
    }

    /// chmod(1) symbolic modes: `[ugoa]*([-+=]([rwxXst]*|[ugo]))+`, comma-separated.
    fn parse_symbolic(s: &str) -> Option<Vec<Op>> {
        let b = s.as_bytes();
        let mut i = 0;
        let mut ops = Vec::new();
        loop {
            let mut who = 0u32;
            while let Some(&c) = b.get(i) {
                who |= match c {
                    b'a' => STANDARD,
                    b'u' => SUID | 0o700,
                    b'g' => SGID | 0o070,
                    b'o' => 0o007,
                    _ => break,
                };
                i += 1;
            }
            loop {
                let op = *b.get(i)?;
                if !matches!(op, b'+' | b'-' | b'=') {
                    return None;
                }
                i += 1;
                let mut equal_done = false;
                who &= !STICKY;
                let mut perm = 0u32;
                let mut perm_x = 0u32;
                loop {
                    let c = b.get(i).copied();
                    match c {
                        Some(b'r') => perm |= 0o444,
                        Some(b'w') => perm |= 0o222,
                        Some(b'x') => perm |= 0o111,
                        Some(b'X') => {
                            if op == b'+' {
                                perm_x = 0o111;
                            }
                        }
                        Some(b's') => {
                            if who == 0 || who & !0o007 != 0 {
                                perm |= SUID | SGID;
                            }
                        }
                        Some(b't') => {
                            if who == 0 || who & !0o007 != 0 {
                                who |= STICKY;
                                perm |= STICKY;
                            }
                        }
                        Some(c @ (b'u' | b'g' | b'o')) => {
                            if perm != 0 {
                                push(&mut ops, op, who, perm);
                                perm = 0;
                            }
                            if op == b'=' {
                                equal_done = true;
                            }
                            if perm_x != 0 {
                                ops.push(Op::AddX(bits_for(who, perm_x)));
                                perm_x = 0;
                            }
                            ops.push(copy_op(c, who, op));
                        }
                        _ => {
                            if perm != 0 || (op == b'=' && !equal_done) {
                                push(&mut ops, op, who, perm);
                            }
                            if perm_x != 0 {
                                ops.push(Op::AddX(bits_for(who, perm_x)));
                            }
                            break;
                        }
                    }
                    i += 1;
                }
                match b.get(i) {
                    None => return Some(ops),
                    Some(b',') => {
                        i += 1;
                        break;
                    }
                    Some(_) => continue,
                }
            }
        }
    }

    fn bits_for(who: u32, perm: u32) -> u32 {
        if who != 0 {
            who & perm
        } else {
            perm
        }
    }

    fn push(ops: &mut Vec<Op>, op: u8, who: u32, perm: u32) {
        match op {
            b'+' => ops.push(Op::Add(bits_for(who, perm))),
            b'-' => ops.push(Op::Remove(bits_for(who, perm))),
            _ => {
                ops.push(Op::Remove(if who != 0 { who } else { STANDARD }));
                ops.push(Op::Add(bits_for(who, perm)));
            }
        }
    }

    fn copy_op(from: u8, who: u32, op: u8) -> Op {
        let (to, bits) = if who != 0 {
            (
                [who & 0o400 != 0, who & 0o040 != 0, who & 0o004 != 0],
                u32::MAX,
            )
        } else {
            ([true; 3], u32::MAX)
        };
        Op::CopyFrom {
            from,
            to,
            bits,
            set: op == b'+' || op == b'=',
            clear: op == b'-' || op == b'=',
        }
    }

    #[cfg(test)]
    mod tests {
        use super::Chmod;

        #[test]
        fn octal_and_symbolic() {
            let c = |s: &str| Chmod::parse(s).unwrap_or_else(|| panic!("{s} parses"));
            assert_eq!(c("0755").apply(0o600, false), 0o755);
            assert_eq!(c("4755").apply(0o600, false), 0o4755);
            assert!(Chmod::parse("07778").is_none());
            assert!(Chmod::parse("17777").is_none());
            assert!(Chmod::parse("u=rwz").is_none());
            assert!(Chmod::parse("").is_none());
            assert_eq!(c("u=rwx,go=rx").apply(0o600, false), 0o755);
            assert_eq!(c("+x").apply(0o644, false), 0o755);
            assert_eq!(c("a-w").apply(0o666, false), 0o444);
            assert_eq!(c("go-rwx").apply(0o755, true), 0o700);
            assert_eq!(c("u+s").apply(0o755, false), 0o4755);
            assert_eq!(c("+t").apply(0o777, true), 0o1777);
            assert_eq!(c("a+X").apply(0o644, false), 0o644);
            assert_eq!(c("a+X").apply(0o644, true), 0o755);
            assert_eq!(c("a+X").apply(0o744, false), 0o755);
            assert_eq!(c("g=u").apply(0o640, false), 0o660);
            assert_eq!(c("o=").apply(0o777, false), 0o770);
            assert_eq!(c("u=rw,g=r,o=").apply(0o777, false), 0o640);
            assert_eq!(c("=r").apply(0o4777, false), 0o444);
            assert_eq!(c("u+x-w").apply(0o644, false), 0o544);
        }
    }
}

/// Local archives for ADD: detection by content, decompression, and extraction through
/// `layers::apply` (which refuses `..`, absolute escapes and links out of the root).
mod archive {
    use rustix::fd::BorrowedFd;
    use std::fs::File;
    use std::io::{self, Read, Seek};

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Compression {
        Plain,
        Gzip,
        Bzip2,
        Xz,
        Zstd,
    }

    fn by_magic(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
            || (head.len() >= 4
                && u32::from_le_bytes([head[0], head[1], head[2], head[3]]) & 0xffff_fff0
                    == 0x184d_2a50)
        {
            Compression::Zstd
        } else {
            Compression::Plain
        }
    }

    fn decoder<'a>(kind: Compression, r: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match kind {
            Compression::Plain => Box::new(r),
            // layers knows gzip (multi-member) and zstd by their magic.
            Compression::Gzip | Compression::Zstd => layers::compress::decompress(r)?.1,
            Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(r)),
            Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
        })
    }

    /// A tar header block: not all zeros, and its checksum adds up (unsigned, or signed as
    /// some old tars wrote it). That is what Go's `tar.Reader.Next` accepts.
    fn is_tar_header(block: &[u8; 512]) -> bool {
        if block.iter().all(|&b| b == 0) {
            return false;
        }
        let field = &block[148..156];
        let text: String = field
            .iter()
            .map(|&b| b as char)
            .filter(|c| !matches!(c, ' ' | '\0'))
            .collect();
        let Ok(want) = i64::from_str_radix(&text, 8) else {
            return false;
        };
        let mut unsigned: i64 = 0;
        let mut signed: i64 = 0;
        for (i, &b) in block.iter().enumerate() {
            let b = if (148..156).contains(&i) { b' ' } else { b };
            unsigned += b as i64;
            signed += b as i8 as i64;
        }
        want == unsigned || want == signed
    }

    /// Whether `file` is a tar archive (maybe compressed); the file is rewound either way.
    pub fn sniff(file: &File) -> io::Result<Option<Compression>> {
        let mut f = file;
        f.rewind()?;
        let mut head = [0u8; 6];
        let n = read_full(&mut f, &mut head)?;
        let kind = by_magic(&head[..n]);
        f.rewind()?;
        let mut block = [0u8; 512];
        // A corrupt compressed stream is simply "not an archive", as in BuildKit.
        let ok = match decoder(kind, f) {
            Ok(mut d) => matches!(read_full(&mut d, &mut block), Ok(512)) && is_tar_header(&block),
            Err(_) => false,
        };
        f.rewind()?;
        Ok(ok.then_some(kind))
    }

    fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Extracts into the directory `dest` (an fd inside the image root, already resolved);
    /// `owner` replaces every entry's owner (`--chown`). Returns entries and bytes read.
    pub fn extract(
        file: File,
        kind: Compression,
        dest: BorrowedFd<'_>,
        owner: Option<(u32, u32)>,
    ) -> Result<(u64, u64), layers::ApplyError> {
        let counter = std::rc::Rc::new(std::cell::Cell::new(0u64));
        let counted = CountInto {
            inner: file,
            count: counter.clone(),
        };
        let plain = decoder(kind, counted).map_err(layers::ApplyError::Read)?;
        let plain: Box<dyn Read> = match owner {
            Some((uid, gid)) => Box::new(ChownTar::new(plain, uid, gid)),
            None => plain,
        };
        // The fd was resolved inside the image root; /proc/self/fd names exactly that
        // directory, so `layers::apply` roots itself there with no lookup of its own.
        let path = super::proc_path(dest, std::ffi::OsStr::new(""));
        let stats = layers::apply(
            plain,
            &path,
            &layers::ApplyOptions::new(layers::ApplyMode::Flatten),
        )?;
        Ok((stats.entries, counter.get()))
    }

    /// Counts the (compressed) bytes read, for the stats.
    struct CountInto<R> {
        inner: R,
        count: std::rc::Rc<std::cell::Cell<u64>>,
    }

    impl<R: Read> Read for CountInto<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.count.set(self.count.get() + n as u64);
            Ok(n)
        }
    }

    /// Rewrites a tar stream so that every entry belongs to `uid:gid` (`ADD --chown` of an
    /// archive): header owner fields are replaced, PAX `uid`/`gid`/`uname`/`gname` records
    /// dropped; data passes through untouched.
    pub struct ChownTar<R> {
        inner: R,
        uid: u32,
        gid: u32,
        out: Vec<u8>,
        pos: usize,
        /// Bytes of entry data (with padding) still to pass through.
        data_left: u64,
        /// After the end-of-archive marker, or on anything unparsable: copy as is and let
        /// `layers::apply` judge it.
        passthrough: bool,
    }

    impl<R: Read> ChownTar<R> {
        pub fn new(inner: R, uid: u32, gid: u32) -> Self {
            Self {
                inner,
                uid,
                gid,
                out: Vec::new(),
                pos: 0,
                data_left: 0,
                passthrough: false,
            }
        }

        fn fill(&mut self) -> io::Result<()> {
            self.out.clear();
            self.pos = 0;
            if self.passthrough || self.data_left > 0 {
                let want = if self.passthrough {
                    64 << 10
                } else {
                    self.data_left.min(64 << 10) as usize
                };
                self.out.resize(want, 0);
                let n = read_full(&mut self.inner, &mut self.out)?;
                self.out.truncate(n);
                if !self.passthrough {
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    self.data_left -= n as u64;
                }
                return Ok(());
            }
            let mut block = [0u8; 512];
            let n = read_full(&mut self.inner, &mut block)?;
            if n < 512 || block.iter().all(|&b| b == 0) {
                self.out.extend_from_slice(&block[..n]);
                self.passthrough = true;
                return Ok(());
            }
            let mut header = tar::Header::new_old();
            header.as_mut_bytes().copy_from_slice(&block);
            let Ok(size) = header.entry_size() else {
                self.out.extend_from_slice(&block);
                self.passthrough = true;
                return Ok(());
            };
            let padded = size.div_ceil(512) * 512;
            match header.entry_type().as_byte() {
                b'x' if size <= 1 << 20 => {
                    let mut data = vec![0u8; padded as usize];
                    if read_full(&mut self.inner, &mut data)? < data.len() {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    let records = strip_owner_records(&data[..size as usize]);
                    header.set_size(records.len() as u64);
                    header.set_cksum();
                    self.out.extend_from_slice(header.as_bytes());
                    self.out.extend_from_slice(&records);
                    let pad = records.len().div_ceil(512) * 512 - records.len();
                    self.out.resize(self.out.len() + pad, 0);
                }
                b'x' | b'g' | b'L' | b'K' => {
                    self.out.extend_from_slice(&block);
                    self.data_left = padded;
                }
                _ => {
                    header.set_uid(self.uid as u64);
                    header.set_gid(self.gid as u64);
                    header.set_cksum();
                    self.out.extend_from_slice(header.as_bytes());
                    self.data_left = padded;
                }
            }
            Ok(())
        }
    }

    /// PAX records without the ones that carry an owner.
    fn strip_owner_records(mut data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let Some(sp) = data.iter().position(|&b| b == b' ') else {
                break;
            };
            let Some(len) = std::str::from_utf8(&data[..sp])
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|&l| l > sp && l <= data.len())
            else {
                break;
            };
            let record = &data[..len];
            let kv = &record[sp + 1..];
            let key = kv.split(|&b| b == b'=').next().unwrap_or_default();
            if !matches!(key, b"uid" | b"gid" | b"uname" | b"gname") {
                out.extend_from_slice(record);
            }
            data = &data[len..];
        }
        out
    }

    impl<R: Read> Read for ChownTar<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos >= self.out.len() {
                self.fill()?;
                if self.out.is_empty() {
                    return Ok(0);
                }
            }
            let n = buf.len().min(self.out.len() - self.pos);
            buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn magic_numbers() {
            assert_eq!(by_magic(&[0x1f, 0x8b, 8]), Compression::Gzip);
            assert_eq!(by_magic(b"BZh91AY"), Compression::Bzip2);
            assert_eq!(
                by_magic(&[0xfd, b'7', b'z', b'X', b'Z', 0]),
                Compression::Xz
            );
            assert_eq!(by_magic(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
            assert_eq!(by_magic(b"hello"), Compression::Plain);
        }

        #[test]
        fn pax_owner_records_are_dropped() {
            let rec = |k: &str, v: &str| {
                let body = format!(" {k}={v}\n");
                let mut len = body.len() + 1;
                while len != body.len() + len.to_string().len() {
                    len = body.len() + len.to_string().len();
                }
                format!("{len}{body}")
            };
            let data = format!(
                "{}{}{}",
                rec("uid", "1000"),
                rec("path", "a/b"),
                rec("gname", "x")
            );
            let out = strip_owner_records(data.as_bytes());
            assert_eq!(String::from_utf8(out).unwrap(), rec("path", "a/b"));
        }
    }
}

/// ADD of URLs: download, checksum, naming.
mod fetch {
    use super::CopyError;
    use sha2::Digest as _;
    use std::fs::File;
    use std::io::{self, Read, Write};
    use std::time::Duration;

    /// A downloaded file, rewound, with what the destination needs.
    pub struct Downloaded {
        pub file: File,
        pub name: String,
        pub mtime: Option<i64>,
    }

    /// Git sources as BuildKit's `dfgitutil` recognises them well enough to refuse them.
    pub fn is_git(s: &str) -> bool {
        if s.starts_with("git@") || s.starts_with("git://") || s.starts_with("ssh://") {
            return true;
        }
        if !(s.starts_with("http://") || s.starts_with("https://")) {
            return false;
        }
        let no_frag = s.split('#').next().unwrap_or(s);
        let path = no_frag.split('?').next().unwrap_or(no_frag);
        path.ends_with(".git") || path.ends_with(".git/")
    }

    /// The file name BuildKit gives a download: the URL path's last segment (`path.Base`,
    /// percent-decoded), or `__unnamed__`.
    pub fn file_name(url: &str) -> String {
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
        let rest = rest.split(['?', '#']).next().unwrap_or(rest);
        let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("");
        let base = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        let decoded = percent_decode(base);
        if decoded.is_empty() || decoded == "." || decoded == ".." || decoded.contains('/') {
            "__unnamed__".to_string()
        } else {
            decoded
        }
    }

    fn percent_decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// `algo:hex` for sha256, sha384 or sha512.
    pub fn parse_checksum(s: &str) -> Result<(&str, &str), CopyError> {
        let bad = || {
            CopyError::Checksum(format!(
                "invalid checksum {s:?}: expected sha256:<64 hex digits> (or sha384:, sha512:)"
            ))
        };
        let (algo, hex) = s.split_once(':').ok_or_else(bad)?;
        let len = match algo {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => return Err(bad()),
        };
        if hex.len() != len
            || !hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(bad());
        }
        Ok((algo, hex))
    }

    enum Hasher {
        S256(sha2::Sha256),
        S384(sha2::Sha384),
        S512(sha2::Sha512),
    }

    impl Hasher {
        fn new(algo: &str) -> Self {
            match algo {
                "sha384" => Hasher::S384(sha2::Sha384::new()),
                "sha512" => Hasher::S512(sha2::Sha512::new()),
                _ => Hasher::S256(sha2::Sha256::new()),
            }
        }
        fn update(&mut self, b: &[u8]) {
            match self {
                Hasher::S256(h) => h.update(b),
                Hasher::S384(h) => h.update(b),
                Hasher::S512(h) => h.update(b),
            }
        }
        fn hex(self) -> String {
            match self {
                Hasher::S256(h) => hex::encode(h.finalize()),
                Hasher::S384(h) => hex::encode(h.finalize()),
                Hasher::S512(h) => hex::encode(h.finalize()),
            }
        }
    }

    /// Downloads `url` into an unnamed temp file, checking `checksum` when given.
    pub fn download(url: &str, checksum: Option<&str>) -> Result<Downloaded, CopyError> {
        let fail = |reason: String| CopyError::Download {
            url: url.to_string(),
            reason,
        };
        let expected = checksum.map(parse_checksum).transpose()?;
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            // A stalled transfer fails instead of hanging the build.
            .timeout_per_read(Some(Duration::from_secs(120)))
            .user_agent("rbuild")
            .build()
            .new_agent();
        let response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
        let mtime = response
            .headers()
            .get("last-modified")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        let mut body = response.into_body().into_reader();
        let mut file = tempfile::tempfile().map_err(|e| fail(format!("temp file: {e}")))?;
        let mut hasher = Hasher::new(expected.map(|(a, _)| a).unwrap_or("sha256"));
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(fail(e.to_string())),
            };
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])
                .map_err(|e| fail(format!("temp file: {e}")))?;
        }
        if let Some((algo, want)) = expected {
            let got = hasher.hex();
            if got != want {
                return Err(CopyError::ChecksumMismatch {
                    url: url.to_string(),
                    expected: format!("{algo}:{want}"),
                    actual: format!("{algo}:{got}"),
                });
            }
        }
        use std::io::Seek;
        file.rewind().map_err(|e| fail(e.to_string()))?;
        Ok(Downloaded {
            file,
            name: file_name(url),
            mtime,
        })
    }

    /// RFC 7231 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form servers must send.
    pub fn parse_http_date(s: &str) -> Option<i64> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        let [_, day, mon, year, time, "GMT"] = parts.as_slice() else {
            return None;
        };
        let day: i64 = day.parse().ok()?;
        let month = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ]
        .iter()
        .position(|m| m == mon)? as i64
            + 1;
        let year: i64 = year.parse().ok()?;
        let hms: Vec<i64> = time
            .split(':')
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        let [h, m, sec] = hms.as_slice() else {
            return None;
        };
        // Days from civil (Howard Hinnant's algorithm).
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (month + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Some(days * 86_400 + h * 3600 + m * 60 + sec)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn names_and_dates() {
            assert_eq!(
                file_name("https://x.org/a/b/file.tar.gz?x=1#f"),
                "file.tar.gz"
            );
            assert_eq!(file_name("https://x.org/dir/"), "dir");
            assert_eq!(file_name("https://x.org"), "__unnamed__");
            assert_eq!(file_name("https://x.org/a%20b"), "a b");
            assert_eq!(
                parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
                Some(784_111_777)
            );
            assert_eq!(parse_http_date("garbage"), None);
            assert!(is_git("https://github.com/moby/buildkit.git#v0.13"));
            assert!(is_git("git@github.com:moby/buildkit.git"));
            assert!(!is_git("https://example.com/file.tar.gz"));
        }
    }
}
