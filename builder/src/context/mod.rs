//! The build context and the source side of COPY/ADD: which files a source names.
//!
//! A [`Tree`] is a directory that sources are resolved in: the build context (with its
//! `.dockerignore` rules) or, for `COPY --from`, a stage's or image's root (no ignore rules).
//! [`select`] turns the sources of one COPY/ADD into [`Item`]s, following BuildKit's rules
//! (`dockerfile2llb` + fsutil `copy`):
//!
//! - a source is relative to the tree's root; a leading `/` and any `..` are cleaned away
//!   lexically first (`../x` is `x`), so no source names anything outside the root;
//! - a source named without wildcards is followed if it is a symlink, inside the root only
//!   (an absolute target starts at the root): `COPY link /dst` copies what `link` points at,
//!   under the name `link`. Symlinks *inside* a copied directory are copied as symlinks;
//! - wildcards are Go's `filepath.Match` (`*`, `?`, `[...]`; no `**`) and may appear in any
//!   component; the part before the first wildcard must exist. A wildcard that matches
//!   nothing is not an error (BuildKit's `AllowEmptyWildcard`); matches are followed like
//!   named sources;
//! - `.dockerignore`d files do not exist for a build: a named source that is ignored is "not
//!   found" (the error says which ignore file hides it), and ignored files inside a copied
//!   directory are left out;
//! - `--exclude=PATTERN` (the `.dockerignore` dialect) drops paths inside a copied directory
//!   (matched relative to that directory) and wildcard matches (matched relative to the
//!   directory the wildcard was in);
//! - `--parents`: a source `pivot/./pattern` copies what `pattern` matches below `pivot` with
//!   its path from `pivot` kept (without `/./` the pivot is the root); the pattern is a
//!   `.dockerignore`-style pattern (`**` allowed) and, when nothing in it is a wildcard, it
//!   must exist.
//!
//! Everything is read through fds from [`root::RootDir`]; nothing here writes.

pub mod dockerignore;
pub mod pattern;
pub mod root;
pub mod walk;

pub use dockerignore::{DockerIgnore, IgnoreError};
pub use pattern::{MatchInfo, PatternError, PatternMatcher};
pub use root::{DirSpec, Meta, RootDir, RootError};
pub use walk::{Entry, Rule};

use pattern::{clean, go_match, has_wildcards};
use rustix::fd::AsFd;
use rustix::fs::{self as rfs, AtFlags};
use rustix::io::Errno;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Why a source could not be selected.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("{}", not_found_message(.name, .origin, .ignored_by.as_deref()))]
    NotFound {
        /// The source as written.
        name: String,
        /// "the build context (/ctx)", "stage builder", …
        origin: String,
        /// The ignore file that hides an existing file, if that is why.
        ignored_by: Option<PathBuf>,
        /// The path (relative to the root) that is ignored.
        ignored_path: Option<PathBuf>,
    },
    #[error("invalid {flag} pattern {pattern:?}: {source}")]
    Pattern {
        flag: &'static str,
        pattern: String,
        #[source]
        source: PatternError,
    },
    #[error(transparent)]
    Root(#[from] RootError),
    #[error(transparent)]
    Ignore(#[from] IgnoreError),
    #[error("reading {path} in {origin}: {source}")]
    Walk {
        origin: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn not_found_message(name: &str, origin: &str, ignored_by: Option<&Path>) -> String {
    let shown = format!("/{}", clean(&format!("/{name}")).trim_start_matches('/'));
    match ignored_by {
        None => format!("{shown:?}: not found in {origin}"),
        Some(file) => format!(
            "{shown:?}: not found in {origin}: it exists but {} excludes it; \
             add an exception line \"!{}\" there (or remove the pattern) to copy it",
            file.display(),
            shown.trim_start_matches('/'),
        ),
    }
}

/// A directory sources are resolved in.
pub struct Tree<'a> {
    root: &'a RootDir,
    ignore: Option<&'a DockerIgnore>,
    origin: String,
}

impl<'a> Tree<'a> {
    /// A stage's or image's root (`COPY --from`): no ignore rules. `origin` names it in
    /// errors ("stage builder", "image alpine:3.20").
    pub fn root(root: &'a RootDir, origin: impl Into<String>) -> Self {
        Self {
            root,
            ignore: None,
            origin: origin.into(),
        }
    }

    pub fn root_dir(&self) -> &RootDir {
        self.root
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn ignore(&self) -> Option<&DockerIgnore> {
        self.ignore
    }

    fn ignored(&self, rel: &Path) -> bool {
        self.ignore.is_some_and(|i| i.is_excluded(rel, false))
    }

    fn not_found(&self, name: &str, ignored_path: Option<PathBuf>) -> ContextError {
        ContextError::NotFound {
            name: name.to_string(),
            origin: self.origin.clone(),
            ignored_by: ignored_path
                .as_ref()
                .and(self.ignore.and_then(|i| i.file().map(Path::to_path_buf))),
            ignored_path,
        }
    }

    fn walk_err(&self, path: &Path, source: io::Error) -> ContextError {
        ContextError::Walk {
            origin: self.origin.clone(),
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The build context: a directory and its ignore rules.
pub struct Context {
    root: RootDir,
    ignore: DockerIgnore,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("root", &self.root.path())
            .field("ignore", &self.ignore)
            .finish()
    }
}

impl Context {
    /// Opens the context at `root` with the ignore file that goes with `dockerfile`
    /// (see [`DockerIgnore::load`]).
    pub fn open(root: &Path, dockerfile: &Path) -> Result<Self, ContextError> {
        let ignore = DockerIgnore::load(root, dockerfile)?;
        Self::with_ignore(root, ignore)
    }

    /// Opens the context at `root` with the given rules.
    pub fn with_ignore(root: &Path, ignore: DockerIgnore) -> Result<Self, ContextError> {
        Ok(Self {
            root: RootDir::open(root)?,
            ignore,
        })
    }

    pub fn root(&self) -> &RootDir {
        &self.root
    }

    pub fn ignore(&self) -> &DockerIgnore {
        &self.ignore
    }

    /// The context as a [`Tree`] for [`select`].
    pub fn tree(&self) -> Tree<'_> {
        Tree {
            root: &self.root,
            ignore: Some(&self.ignore),
            origin: format!("the build context ({})", self.root.path().display()),
        }
    }

    /// Every entry of the context a build can see, sorted depth-first.
    pub fn entries(&self) -> Result<Vec<Entry>, ContextError> {
        Ok(self.ignore.walk(&self.root)?)
    }

    /// The sources of one COPY/ADD, selected in this context.
    pub fn select(
        &self,
        sources: &[String],
        opts: &SelectOptions,
    ) -> Result<Selection, ContextError> {
        select(&self.tree(), sources, opts)
    }
}

/// COPY/ADD flags that change what is selected.
#[derive(Clone, Debug, Default)]
pub struct SelectOptions {
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
}

/// One thing a source selected: a file, a directory (with what is copied from inside it),
/// or a special file.
#[derive(Clone, Debug)]
pub struct Item {
    /// The source as written.
    pub source: String,
    /// The path of what is copied, symlink-free, relative to the tree's root (empty for the
    /// root itself).
    pub path: PathBuf,
    /// The name it takes in a destination directory: the name as matched (a symlink's own
    /// name, not its target's).
    pub name: OsString,
    pub meta: Meta,
    /// For a directory: what is copied from inside it, in pre-order, relative to `path`.
    pub entries: Vec<Entry>,
    /// `--parents`: the directory's contents keep their paths; never placed by `name`.
    pub parents: bool,
}

/// What the sources of one COPY/ADD selected, in source order.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub items: Vec<Item>,
}

impl Selection {
    /// Every selected file and directory, relative to the tree's root, in order: what the
    /// cache key is computed over.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for item in &self.items {
            if !item.parents {
                out.push(item.path.clone());
            }
            out.extend(item.entries.iter().map(|e| item.path.join(&e.rel)));
        }
        out
    }
}

fn compile(flag: &'static str, patterns: &[String]) -> Result<PatternMatcher, ContextError> {
    PatternMatcher::new(patterns).map_err(|source| ContextError::Pattern {
        flag,
        pattern: patterns.join(" "),
        source,
    })
}

/// `clean("/" + s)` without the leading `/`: how BuildKit normalises a source.
fn normalize(s: &str) -> String {
    clean(&format!("/{s}")).trim_start_matches('/').to_string()
}

/// Selects the sources of one COPY/ADD in `tree`.
pub fn select(
    tree: &Tree<'_>,
    sources: &[String],
    opts: &SelectOptions,
) -> Result<Selection, ContextError> {
    let exclude = compile("--exclude", &opts.exclude)?;
    let mut items = Vec::new();
    for source in sources {
        if opts.parents {
            select_parents(tree, source, &exclude, &mut items)?;
        } else {
            select_one(tree, source, &exclude, &mut items)?;
        }
    }
    Ok(Selection { items })
}

/// The walk rules for the inside of a directory at `path`.
fn rules<'m>(
    tree: &Tree<'m>,
    path: &Path,
    exclude: &'m PatternMatcher,
    include: Option<&'m PatternMatcher>,
) -> Vec<Rule<'m>> {
    let mut rules = Vec::new();
    if let Some(ignore) = tree.ignore {
        rules.push(ignore.rule(path));
    }
    if !exclude.is_empty() {
        rules.push(Rule::new(exclude, "", false));
    }
    if let Some(include) = include {
        rules.push(Rule::new(include, "", true));
    }
    rules
}

/// Builds the item for a node found at `matched` (followed if a symlink); `None` when
/// it does not exist or the ignore rules hide it entirely.
fn item_at(
    tree: &Tree<'_>,
    source: &str,
    matched: &Path,
    exclude: &PatternMatcher,
) -> Result<Result<Item, Option<PathBuf>>, ContextError> {
    let Some(resolved) = tree.root.resolve(matched)? else {
        return Ok(Err(None));
    };
    // Reached through a symlink: the link itself must not be ignored either (an ignored
    // link is not in the context, whatever it points at).
    if resolved.path != matched && !matched.as_os_str().is_empty() && tree.ignored(matched) {
        return Ok(Err(Some(matched.to_path_buf())));
    }
    let name = matched.file_name().map(OsString::from).unwrap_or_default();
    let mut item = Item {
        source: source.to_string(),
        path: resolved.path.clone(),
        name,
        meta: resolved.meta,
        entries: Vec::new(),
        parents: false,
    };
    let ignored = !resolved.path.as_os_str().is_empty() && tree.ignored(&resolved.path);
    if !resolved.meta.is_dir() {
        return Ok(if ignored {
            Err(Some(resolved.path))
        } else {
            Ok(item)
        });
    }
    let rules = rules(tree, &resolved.path, exclude, None);
    if ignored && !rules.iter().all(Rule::may_keep_inside_root) {
        return Ok(Err(Some(resolved.path)));
    }
    item.entries = walk::walk(
        resolved.fd.as_fd(),
        &rules,
        &tree.root.path().join(&resolved.path),
    )
    .map_err(|e| tree.walk_err(&resolved.path, e))?;
    if ignored && item.entries.is_empty() {
        return Ok(Err(Some(resolved.path)));
    }
    Ok(Ok(item))
}

fn select_one(
    tree: &Tree<'_>,
    source: &str,
    exclude: &PatternMatcher,
    items: &mut Vec<Item>,
) -> Result<(), ContextError> {
    let rel = normalize(source);
    if !has_wildcards(&rel) {
        return match item_at(tree, source, Path::new(&rel), exclude)? {
            Ok(item) => {
                items.push(item);
                Ok(())
            }
            Err(ignored) => Err(tree.not_found(source, ignored)),
        };
    }
    let (base, pattern) = split_wildcards(&rel);
    for m in wildcard_matches(tree, source, &base, &pattern)? {
        // --exclude applies to wildcard matches, relative to the wildcard's directory.
        if !exclude.is_empty() && exclude.matches_or_parent_matches(&m.rel.to_string_lossy()) {
            continue;
        }
        if let Ok(item) = item_at(tree, source, &m.full, exclude)? {
            items.push(item);
        }
    }
    Ok(())
}

/// Splits a cleaned relative path before its first component with a wildcard.
fn split_wildcards(rel: &str) -> (String, String) {
    let comps: Vec<&str> = rel.split('/').collect();
    let at = comps
        .iter()
        .position(|c| has_wildcards(c))
        .unwrap_or(comps.len());
    (comps[..at].join("/"), comps[at..].join("/"))
}

struct Match {
    /// Relative to the wildcard's (resolved) directory.
    rel: PathBuf,
    /// Relative to the root.
    full: PathBuf,
}

/// What `pattern` (Go `filepath.Match`, may span components) matches below `base`.
/// Matched directories are not searched further; symlinks are listed, not followed.
fn wildcard_matches(
    tree: &Tree<'_>,
    source: &str,
    base: &str,
    pattern: &str,
) -> Result<Vec<Match>, ContextError> {
    go_match(pattern, ".").map_err(|e| ContextError::Pattern {
        flag: "source",
        pattern: source.to_string(),
        source: e,
    })?;
    // The part before the wildcard must exist (BuildKit stats it).
    let Some(dir) = tree.root.resolve(Path::new(base))? else {
        return Err(tree.not_found(base, None));
    };
    if !dir.meta.is_dir() {
        return Ok(Vec::new());
    }
    let depth = pattern.split('/').count();
    let mut out = Vec::new();
    let fd = walk::open_dir_nofollow(dir.fd.as_fd(), std::ffi::OsStr::new("."))
        .map_err(|e| tree.walk_err(&dir.path, e.into()))?;
    find(
        tree,
        fd.as_fd(),
        &dir.path,
        Path::new(""),
        pattern,
        depth,
        &mut out,
    )?;
    Ok(out)
}

fn find(
    tree: &Tree<'_>,
    dir: rustix::fd::BorrowedFd<'_>,
    base: &Path,
    rel: &Path,
    pattern: &str,
    depth_left: usize,
    out: &mut Vec<Match>,
) -> Result<(), ContextError> {
    let here = base.join(rel);
    let names = walk::read_names(dir).map_err(|e| tree.walk_err(&here, e))?;
    for name in names {
        let child = rel.join(&name);
        let st = match rfs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Meta::from_stat(&st),
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(tree.walk_err(&here.join(&name), e.into())),
        };
        if go_match(pattern, &child.to_string_lossy()).unwrap_or(false) {
            out.push(Match {
                full: base.join(&child),
                rel: child,
            });
        } else if st.is_dir() && depth_left > 1 {
            let sub = walk::open_dir_nofollow(dir, &name)
                .map_err(|e| tree.walk_err(&here.join(&name), e.into()))?;
            find(
                tree,
                sub.as_fd(),
                base,
                &child,
                pattern,
                depth_left - 1,
                out,
            )?;
        }
    }
    Ok(())
}

fn select_parents(
    tree: &Tree<'_>,
    source: &str,
    exclude: &PatternMatcher,
    items: &mut Vec<Item>,
) -> Result<(), ContextError> {
    let (pivot, pattern) = match source.split_once("/./") {
        Some((p, rest)) => (normalize(p), normalize(rest)),
        None => (String::new(), normalize(source)),
    };
    let include = compile("--parents source", std::slice::from_ref(&pattern))?;
    let pivots: Vec<PathBuf> = if has_wildcards(&pivot) {
        let (base, pat) = split_wildcards(&pivot);
        wildcard_matches(tree, source, &base, &pat)?
            .into_iter()
            .map(|m| m.full)
            .collect()
    } else {
        vec![PathBuf::from(&pivot)]
    };
    let required = !has_wildcards(&pivot) && !has_wildcards(&pattern);
    for p in pivots {
        let Some(resolved) = tree.root.resolve(&p)? else {
            return Err(tree.not_found(source, None));
        };
        if !resolved.meta.is_dir() {
            continue;
        }
        if required {
            let wanted = p.join(&pattern);
            if tree.root.resolve(&wanted)?.is_none() {
                return Err(tree.not_found(&wanted.to_string_lossy(), None));
            }
        }
        let rules = rules(tree, &resolved.path, exclude, Some(&include));
        let entries = walk::walk(
            resolved.fd.as_fd(),
            &rules,
            &tree.root.path().join(&resolved.path),
        )
        .map_err(|e| tree.walk_err(&resolved.path, e))?;
        if required && entries.is_empty() {
            let wanted = resolved.path.join(&pattern);
            let ignored = tree.ignored(&wanted).then_some(wanted);
            return Err(tree.not_found(&p.join(&pattern).to_string_lossy(), ignored));
        }
        items.push(Item {
            source: source.to_string(),
            name: p.file_name().map(OsString::from).unwrap_or_default(),
            path: resolved.path,
            meta: resolved.meta,
            entries,
            parents: true,
        });
    }
    Ok(())
}
