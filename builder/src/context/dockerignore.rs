//! `.dockerignore`: which context files a build never sees.
//!
//! Reading follows moby's `ignorefile.ReadAll`: a UTF-8 BOM on the first line is dropped, a
//! line whose first character is `#` is a comment, other lines are trimmed and skipped when
//! empty; a leading `!` marks an exception; the rest is cleaned like `filepath.Clean` (so
//! `./a`, `a/` and `a//b/..` become `a`) and a leading `/` is dropped.
//!
//! Matching is [`PatternMatcher`]'s: the last matching pattern wins, and a path is excluded
//! when it or one of its parent directories matches. A directory that is excluded is still
//! walked when an exception could match inside it.
//!
//! Which file: `<Dockerfile>.dockerignore` beside the Dockerfile (for `-f nginx/Dockerfile`,
//! `nginx/Dockerfile.dockerignore`) when it exists, even empty; otherwise `.dockerignore` at
//! the context root (BuildKit's `dockerui` reads them in that order).

use super::pattern::{PatternError, PatternMatcher};
use super::root::{RootDir, RootError};
use super::walk::{self, Entry, Rule};
use std::io;
use std::path::{Path, PathBuf};

/// An ignore file is small; anything bigger is a mistake worth reporting.
const MAX_IGNORE_FILE: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading .dockerignore in the context: {0}")]
    Root(#[from] RootError),
    #[error("{path}: {source}; fix or remove that line")]
    Pattern {
        path: PathBuf,
        #[source]
        source: PatternError,
    },
    #[error("walking the build context {path}: {source}")]
    Walk {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Parses ignore-file text into patterns (moby's `ReadAll`).
pub fn parse(text: &[u8]) -> Vec<String> {
    let text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
    let mut out = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(line);
        // Comments are recognised before trimming: " # x" is a pattern.
        if line.starts_with('#') {
            continue;
        }
        let mut p = line.trim();
        if p.is_empty() {
            continue;
        }
        let invert = p.starts_with('!');
        if invert {
            p = p[1..].trim();
        }
        let mut p = if p.is_empty() {
            String::new()
        } else {
            super::pattern::clean(p)
        };
        if p.len() > 1 && p.starts_with('/') {
            p.remove(0);
        }
        out.push(if invert { format!("!{p}") } else { p });
    }
    out
}

/// The ignore rules of one build context.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    file: Option<PathBuf>,
    patterns: Vec<String>,
    matcher: PatternMatcher,
}

impl DockerIgnore {
    /// No rules: nothing is excluded.
    pub fn none() -> Self {
        Self::default()
    }

    /// Rules from pattern lines (as [`parse`] returns them); `file` names them in errors.
    pub fn from_patterns(
        patterns: Vec<String>,
        file: Option<PathBuf>,
    ) -> Result<Self, IgnoreError> {
        let matcher = PatternMatcher::new(&patterns).map_err(|source| IgnoreError::Pattern {
            path: file
                .clone()
                .unwrap_or_else(|| PathBuf::from(".dockerignore")),
            source,
        })?;
        Ok(Self {
            file,
            patterns,
            matcher,
        })
    }

    /// Finds and reads the ignore file for a build: `<dockerfile>.dockerignore` first, then
    /// `context/.dockerignore` (read inside the context, so a symlink there cannot point at
    /// a host file). Neither existing means no rules.
    pub fn load(context: &Path, dockerfile: &Path) -> Result<Self, IgnoreError> {
        let mut beside = dockerfile.as_os_str().to_owned();
        beside.push(".dockerignore");
        let beside = PathBuf::from(beside);
        // The Dockerfile's own ignore file sits wherever the Dockerfile is, like the
        // Dockerfile itself: read as the user named it.
        match std::fs::read(&beside) {
            Ok(text) => {
                if text.len() as u64 > MAX_IGNORE_FILE {
                    return Err(IgnoreError::Read {
                        path: beside,
                        source: io::Error::other("file too large"),
                    });
                }
                return Self::from_patterns(parse(&text), Some(beside));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(IgnoreError::Read {
                    path: beside,
                    source,
                })
            }
        }
        let root = RootDir::open(context)?;
        match root.read_file(Path::new(".dockerignore"), MAX_IGNORE_FILE)? {
            Some(text) => Self::from_patterns(parse(&text), Some(context.join(".dockerignore"))),
            None => Ok(Self::none()),
        }
    }

    /// The file the rules came from, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The patterns, cleaned, in file order (`!` kept on exceptions).
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    pub fn matcher(&self) -> &PatternMatcher {
        &self.matcher
    }

    /// Whether `rel` (relative to the context root) is excluded, itself or through a parent
    /// directory. `.dockerignore` patterns make no difference between files and directories
    /// (a trailing `/` is cleaned away), so `is_dir` only documents the caller's intent.
    pub fn is_excluded(&self, rel: &Path, is_dir: bool) -> bool {
        let _ = is_dir;
        self.matcher
            .matches_or_parent_matches(&rel.to_string_lossy())
    }

    /// Whether an excluded directory must still be walked because an exception could match
    /// something inside it.
    pub fn may_include_inside(&self, dir: &Path) -> bool {
        self.matcher.has_exclusions()
            && self.matcher.may_match_inside(&dir.to_string_lossy(), true) != Some(false)
    }

    /// The walk rule for a directory at `rel` in the context.
    pub fn rule(&self, rel: &Path) -> Rule<'_> {
        Rule::new(&self.matcher, &rel.to_string_lossy(), false)
    }

    /// Every context entry a build can see, sorted depth-first; excluded directories are
    /// skipped unless an exception keeps something inside them.
    pub fn walk(&self, root: &RootDir) -> Result<Vec<Entry>, IgnoreError> {
        walk::walk(root.fd(), &[self.rule(Path::new(""))], root.path()).map_err(|source| {
            IgnoreError::Walk {
                path: root.path().to_path_buf(),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_all_like_moby() {
        let text = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ";
        assert_eq!(
            parse(text.as_bytes()),
            [
                "test1",
                "test2",
                "a/file/here",
                "lastfile",
                "!inverted/abs/path",
                "!",
                "!"
            ]
        );
        assert_eq!(parse(b"\xef\xbb\xbf# c\n./a/\n  #x \n"), ["a", "#x"]);
    }
}
