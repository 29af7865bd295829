//! Why a step was not a cache hit, in words a person reads in `--progress=plain`.
//!
//! The builder asks [`Cache::explain_miss`](crate::Cache::explain_miss) for every step that
//! ran: the slot's previous record holds the [`Inputs`] of the last build of the same step, and
//! comparing them with this build's inputs names what changed. Only input digests are compared
//! (never values), so an explanation can say "build arg VERSION changed" but not to what.
//!
//! `Display` strings (all start with `not cached: `):
//!
//! | case | text |
//! |---|---|
//! | [`Miss::NoCache`] | `--no-cache` |
//! | [`Miss::NoPreviousBuild`] | `no earlier build of this step` |
//! | [`Miss::RecordMissing`] | `the earlier build of this step was pruned from the cache` |
//! | only `parent` changed | `the previous step was rebuilt` |
//! | `base` | `the base image changed` |
//! | `platform` | `the target platform changed` |
//! | `instruction` | `the instruction changed` |
//! | `files` | `the copied files changed` |
//! | one `file:conf/nginx.conf` | `file conf/nginx.conf changed` (or `added`, `removed`) |
//! | one `arg:VERSION` | `build arg VERSION changed` (`added`, `removed`) |
//! | one `mount:/src` | `mount /src changed` (`added`, `removed`) |
//! | another name | `input NAME changed` (`added`, `removed`) |
//! | several of a kind | `3 files changed: a, b, c`, `15 files changed: a, b, c and 12 more` |
//! | nothing recorded differs | `the cache key changed but no recorded input did (a different rbuild version?)` |
//!
//! Several parts are joined with `; ` in the order base, platform, instruction, args, files,
//! mounts, other inputs, parent: the step's own reasons first. `the previous step was rebuilt`
//! is left out when the base image changed, since that already says why.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;

use crate::key::{self, Inputs};

/// How many names a collapsed list shows before `and N more`.
pub const LIST_MAX: usize = 3;

/// One input that differs between the previous build of a step and this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", content = "input", rename_all = "snake_case")]
pub enum Change {
    /// The input exists now but did not before.
    Added(String),
    /// The input existed before but does not now.
    Removed(String),
    /// The input's digest differs.
    Modified(String),
}

impl Change {
    /// The input's full name (`file:conf/nginx.conf`).
    pub fn name(&self) -> &str {
        match self {
            Change::Added(n) | Change::Removed(n) | Change::Modified(n) => n,
        }
    }

    /// The word for this kind of change in explanations.
    fn verb(&self) -> &'static str {
        match self {
            Change::Added(_) => "added",
            Change::Removed(_) => "removed",
            Change::Modified(_) => "changed",
        }
    }
}

/// Why a step was not a cache hit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", content = "changes", rename_all = "snake_case")]
pub enum Miss {
    /// The user asked for no cache (`--no-cache`, or the step is in `--no-cache-filter`).
    NoCache,
    /// No build of this slot was ever recorded (or its slot entry was pruned).
    NoPreviousBuild,
    /// The slot points at a record that no longer exists (pruned).
    RecordMissing,
    /// These inputs differ from the slot's previous record, in name order. Empty when the key
    /// changed without any recorded input changing (a new key domain, or an input the builder
    /// hashes without recording).
    Changed(Vec<Change>),
}

/// The changes from `previous` to `current`, in name order.
pub fn diff(previous: &Inputs, current: &Inputs) -> Vec<Change> {
    let mut out = Vec::new();
    let mut prev = previous.iter().peekable();
    let mut cur = current.iter().peekable();
    // A merge of two sorted maps: one pass, names come out sorted.
    loop {
        match (prev.peek(), cur.peek()) {
            (None, None) => break,
            (Some((p, _)), None) => {
                out.push(Change::Removed((*p).clone()));
                prev.next();
            }
            (None, Some((c, _))) => {
                out.push(Change::Added((*c).clone()));
                cur.next();
            }
            (Some((p, pv)), Some((c, cv))) => match p.cmp(c) {
                std::cmp::Ordering::Less => {
                    out.push(Change::Removed((*p).clone()));
                    prev.next();
                }
                std::cmp::Ordering::Greater => {
                    out.push(Change::Added((*c).clone()));
                    cur.next();
                }
                std::cmp::Ordering::Equal => {
                    if pv != cv {
                        out.push(Change::Modified((*p).clone()));
                    }
                    prev.next();
                    cur.next();
                }
            },
        }
    }
    out
}

/// What an input name is about, in the order parts are printed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Category {
    Base,
    Platform,
    Instruction,
    Args,
    Files,
    FilesDigest,
    Mounts,
    Other,
    Parent,
}

fn classify(name: &str) -> (Category, &str) {
    match name {
        key::BASE => (Category::Base, name),
        key::PLATFORM => (Category::Platform, name),
        key::INSTRUCTION => (Category::Instruction, name),
        key::PARENT => (Category::Parent, name),
        key::FILES => (Category::FilesDigest, name),
        _ => {
            if let Some(rest) = name.strip_prefix(key::ARG_PREFIX) {
                (Category::Args, rest)
            } else if let Some(rest) = name.strip_prefix(key::FILE_PREFIX) {
                (Category::Files, rest)
            } else if let Some(rest) = name.strip_prefix(key::MOUNT_PREFIX) {
                (Category::Mounts, rest)
            } else {
                (Category::Other, name)
            }
        }
    }
}

/// A name as printed: quoted when it holds control characters, which would otherwise break
/// the progress line (file names may contain newlines).
fn shown(name: &str) -> Cow<'_, str> {
    if name.chars().any(char::is_control) {
        Cow::Owned(format!("{name:?}"))
    } else {
        Cow::Borrowed(name)
    }
}

fn list_part(singular: &str, plural: &str, verb: &str, names: &[&str]) -> String {
    match names {
        [one] => format!("{singular} {} {verb}", shown(one)),
        _ => {
            let listed: Vec<Cow<'_, str>> = names.iter().take(LIST_MAX).map(|n| shown(n)).collect();
            let mut s = format!("{} {plural} {verb}: {}", names.len(), listed.join(", "));
            if names.len() > LIST_MAX {
                s.push_str(&format!(" and {} more", names.len() - LIST_MAX));
            }
            s
        }
    }
}

fn describe(changes: &[Change]) -> String {
    let mut by_cat: Vec<(Category, &Change, &str)> = changes
        .iter()
        .map(|c| {
            let (cat, short) = classify(c.name());
            (cat, c, short)
        })
        .collect();
    by_cat.sort_by_key(|(cat, _, _)| *cat);

    let has = |cat: Category| by_cat.iter().any(|(c, _, _)| *c == cat);
    let mut parts: Vec<String> = Vec::new();
    for cat in [
        Category::Base,
        Category::Platform,
        Category::Instruction,
        Category::Args,
        Category::Files,
        Category::FilesDigest,
        Category::Mounts,
        Category::Other,
        Category::Parent,
    ] {
        if !has(cat) {
            continue;
        }
        match cat {
            Category::Base => parts.push("the base image changed".into()),
            Category::Platform => parts.push("the target platform changed".into()),
            Category::Instruction => parts.push("the instruction changed".into()),
            Category::FilesDigest => parts.push("the copied files changed".into()),
            // A new base image makes the first step's parent change too: saying so twice
            // would only add noise.
            Category::Parent if has(Category::Base) => {}
            Category::Parent => parts.push("the previous step was rebuilt".into()),
            Category::Args | Category::Files | Category::Mounts | Category::Other => {
                let (singular, plural) = match cat {
                    Category::Args => ("build arg", "build args"),
                    Category::Files => ("file", "files"),
                    Category::Mounts => ("mount", "mounts"),
                    _ => ("input", "inputs"),
                };
                for verb in ["changed", "added", "removed"] {
                    let names: Vec<&str> = by_cat
                        .iter()
                        .filter(|(c, ch, _)| *c == cat && ch.verb() == verb)
                        .map(|(_, _, short)| *short)
                        .collect();
                    if !names.is_empty() {
                        parts.push(list_part(singular, plural, verb, &names));
                    }
                }
            }
        }
    }
    parts.join("; ")
}

impl fmt::Display for Miss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not cached: ")?;
        match self {
            Miss::NoCache => f.write_str("--no-cache"),
            Miss::NoPreviousBuild => f.write_str("no earlier build of this step"),
            Miss::RecordMissing => {
                f.write_str("the earlier build of this step was pruned from the cache")
            }
            Miss::Changed(changes) if changes.is_empty() => f.write_str(
                "the cache key changed but no recorded input did (a different rbuild version?)",
            ),
            Miss::Changed(changes) => f.write_str(&describe(changes)),
        }
    }
}
