//! A filtered, sorted, depth-first walk of a directory tree through fds.
//!
//! Rules are pattern matchers (`.dockerignore`, `--exclude`, `--parents` includes) applied to
//! each path the way BuildKit's fsutil filter applies them:
//! - a node is kept when every include rule matches it and no exclude rule does;
//! - a directory that is not kept is still walked when something inside it could be kept
//!   (an exception such as `!docs/README.md` under an excluded `docs`), and it is emitted,
//!   before its children, only when one of them is;
//! - symlinks are never followed: each directory is opened with `O_NOFOLLOW` relative to its
//!   parent's fd, and every name comes from `readdir`.
//!
//! Entries come out in pre-order with names sorted bytewise, which is also the order a
//! layer tar is written in.

use super::pattern::{MatchInfo, PatternMatcher};
use super::root::Meta;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// One node below the walked directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the walked directory.
    pub rel: PathBuf,
    pub meta: Meta,
}

/// A matcher applied during a walk to `prefix/rel`.
#[derive(Clone, Debug)]
pub struct Rule<'a> {
    matcher: &'a PatternMatcher,
    prefix: String,
    include: bool,
    start: MatchInfo,
    root_matched: bool,
}

impl<'a> Rule<'a> {
    /// `prefix` is the walked directory's own path as this matcher sees it (`""` when the
    /// matcher's paths start at the walked directory). Its components are matched now, so
    /// that children inherit what matched their parents.
    pub fn new(matcher: &'a PatternMatcher, prefix: &str, include: bool) -> Self {
        let mut info = MatchInfo::default();
        let mut matched = false;
        let mut acc = String::new();
        for c in prefix.split('/').filter(|c| !c.is_empty() && *c != ".") {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(c);
            let (m, i) = matcher.matches_using_parent_results(&acc, &info);
            matched = m;
            info = i;
        }
        Self {
            matcher,
            prefix: acc,
            include,
            start: info,
            root_matched: matched,
        }
    }

    /// Whether the walked directory itself passes this rule (an include rule with an empty
    /// prefix does not: nothing named it).
    pub fn passes_root(&self) -> bool {
        if self.include {
            self.root_matched
        } else {
            !self.root_matched
        }
    }

    /// Whether the walked directory itself could hold something this rule keeps.
    pub fn may_keep_inside_root(&self) -> bool {
        self.passes_root() || self.may_keep_inside(&self.prefix)
    }

    fn full(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    fn may_keep_inside(&self, path: &str) -> bool {
        if self.include {
            self.matcher.may_match_inside(path, false) != Some(false)
        } else {
            self.matcher.has_exclusions()
                && self.matcher.may_match_inside(path, true) != Some(false)
        }
    }
}

/// Walks the directory `dir` (any fd on it, `O_PATH` included) with `rules`.
pub fn walk(dir: BorrowedFd<'_>, rules: &[Rule<'_>], what: &Path) -> io::Result<Vec<Entry>> {
    let fd = rfs::openat(
        dir,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| annotate(e, what))?;
    let infos: Vec<MatchInfo> = rules.iter().map(|r| r.start.clone()).collect();
    let mut out = Vec::new();
    walk_dir(fd.as_fd(), Path::new(""), &infos, rules, what, &mut out)?;
    Ok(out)
}

fn annotate(e: Errno, at: &Path) -> io::Error {
    let e = io::Error::from(e);
    io::Error::new(e.kind(), format!("{}: {e}", at.display()))
}

/// The names in an open directory, sorted bytewise, without `.` and `..`.
pub fn read_names(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut it = rfs::Dir::read_from(dir)?;
    let mut names = Vec::new();
    while let Some(entry) = it.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name.to_vec()));
        }
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

fn walk_dir(
    dir: BorrowedFd<'_>,
    rel: &Path,
    infos: &[MatchInfo],
    rules: &[Rule<'_>],
    what: &Path,
    out: &mut Vec<Entry>,
) -> io::Result<()> {
    let names = read_names(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", what.join(rel).display())))?;
    for name in names {
        let child = rel.join(&name);
        let st = match rfs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Removed while we walked: as if it had never been there.
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(annotate(e, &what.join(&child))),
        };
        let meta = Meta::from_stat(&st);
        let path = child.to_string_lossy();
        let mut kept = true;
        let mut walk_anyway = true;
        let mut child_infos = Vec::with_capacity(rules.len());
        for (rule, info) in rules.iter().zip(infos) {
            let full = rule.full(&path);
            let (m, i) = rule.matcher.matches_using_parent_results(&full, info);
            child_infos.push(i);
            if m != rule.include {
                kept = false;
                if meta.is_dir() && walk_anyway && !rule.may_keep_inside(&full) {
                    walk_anyway = false;
                }
            }
        }
        if !meta.is_dir() {
            if kept {
                out.push(Entry { rel: child, meta });
            }
            continue;
        }
        if !kept && !walk_anyway {
            continue;
        }
        let sub = open_dir_nofollow(dir, &name).map_err(|e| annotate(e, &what.join(&child)))?;
        let mut inner = Vec::new();
        walk_dir(sub.as_fd(), &child, &child_infos, rules, what, &mut inner)?;
        if kept || !inner.is_empty() {
            out.push(Entry { rel: child, meta });
            out.append(&mut inner);
        }
    }
    Ok(())
}

/// Opens the directory `name` in `dir` for reading, refusing a symlink.
pub fn open_dir_nofollow(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}
