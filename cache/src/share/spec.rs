//! `--cache-to` and `--cache-from` values, in BuildKit's syntax, and the records a mode
//! exports.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use images::Reference;

use crate::error::{Error, Result};
use crate::Record;

/// Where a cache export lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A repository and tag (or digest, to import) of a registry.
    Registry(Reference),
    /// An OCI image layout directory; the export is its index entry named `tag`.
    Local {
        /// The layout's directory.
        dir: PathBuf,
        /// Its `org.opencontainers.image.ref.name` (`latest` unless `tag=` says).
        tag: String,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Registry(r) => write!(f, "{}", r.familiar()),
            Location::Local { dir, tag } if tag == DEFAULT_TAG => {
                write!(f, "{}", dir.display())
            }
            Location::Local { dir, tag } => write!(f, "{}:{tag}", dir.display()),
        }
    }
}

/// Which records an export holds (BuildKit's `mode=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// The steps that make the final image: the target stage and the stages it is based on
    /// (`FROM stage`), not those it only copies from.
    #[default]
    Min,
    /// Every step of every stage the build ran or found in the cache.
    Max,
}

/// A `--cache-to` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheTo {
    /// Where to write.
    pub location: Location,
    /// Which records.
    pub mode: Mode,
    /// `ignore-error=true`: a failed export is a warning, not a failed build.
    pub ignore_error: bool,
}

/// A `--cache-from` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheFrom {
    /// Where to read.
    pub location: Location,
}

const DEFAULT_TAG: &str = "latest";

/// BuildKit options that describe what our exports always are (OCI media types, an image
/// manifest): accepted and ignored, so flags copied from a BuildKit setup keep working.
const ALWAYS_ON: &[&str] = &["oci-mediatypes", "image-manifest"];

fn fields<'a>(flag: &'static str, spec: &'a str) -> Result<Vec<(&'a str, &'a str)>> {
    let bad = |reason: String| Error::Spec {
        flag,
        spec: spec.to_string(),
        reason,
    };
    if !spec.contains('=') && !spec.trim().is_empty() {
        // `--cache-from 127.0.0.1:5000/cache:t`, as docker allows.
        return Ok(vec![("type", "registry"), ("ref", spec.trim())]);
    }
    spec.split(',')
        .filter(|f| !f.trim().is_empty())
        .map(|f| {
            f.split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| bad(format!("{f:?} is not key=value")))
        })
        .collect()
}

/// Reads the fields shared by both flags; `path_key` is `dest` or `src`.
fn location(
    flag: &'static str,
    spec: &str,
    fields: &[(&str, &str)],
    path_key: &str,
    extra: &[&str],
) -> Result<Location> {
    let bad = |reason: String| Error::Spec {
        flag,
        spec: spec.to_string(),
        reason,
    };
    let get = |key: &str| {
        fields
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    };
    for (k, v) in fields {
        let known = ["type", "ref", "tag", path_key].contains(k) || extra.contains(k);
        let always_on = ALWAYS_ON.contains(k) && *v == "true";
        if !known && !always_on {
            return Err(bad(format!(
                "unknown option {k}={v}; rbuild knows type=registry,ref=NAME:TAG or \
                 type=local,{path_key}=DIR[,tag=NAME]{}",
                if extra.is_empty() {
                    String::new()
                } else {
                    format!(", and {}", extra.join(", "))
                }
            )));
        }
    }
    match get("type").unwrap_or("registry") {
        "registry" => {
            let r = get("ref").ok_or_else(|| bad("type=registry needs ref=NAME:TAG".into()))?;
            let reference = Reference::parse(r).map_err(|e| bad(format!("ref={r}: {e}")))?;
            Ok(Location::Registry(reference))
        }
        "local" => {
            let dir = get(path_key)
                .filter(|d| !d.is_empty())
                .ok_or_else(|| bad(format!("type=local needs {path_key}=DIR")))?;
            Ok(Location::Local {
                dir: PathBuf::from(dir),
                tag: get("tag").unwrap_or(DEFAULT_TAG).to_string(),
            })
        }
        other => Err(bad(format!(
            "cache type {other:?} is not supported: use type=registry or type=local"
        ))),
    }
}

impl CacheTo {
    /// Parses `type=registry,ref=R[,mode=min|max]` or `type=local,dest=DIR[,tag=T]`, plus
    /// `ignore-error=true|false`.
    pub fn parse(spec: &str) -> Result<CacheTo> {
        const FLAG: &str = "--cache-to";
        let bad = |reason: String| Error::Spec {
            flag: FLAG,
            spec: spec.to_string(),
            reason,
        };
        let fields = fields(FLAG, spec)?;
        let location = location(FLAG, spec, &fields, "dest", &["mode", "ignore-error"])?;
        if let Location::Registry(r) = &location {
            if r.digest().is_some() {
                return Err(bad(
                    "a cache is pushed under a tag: give ref=NAME:TAG".into()
                ));
            }
        }
        let get = |key: &str| {
            fields
                .iter()
                .rev()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| *v)
        };
        let mode = match get("mode") {
            None | Some("min") => Mode::Min,
            Some("max") => Mode::Max,
            Some(m) => return Err(bad(format!("mode={m}: expected mode=min or mode=max"))),
        };
        let ignore_error = match get("ignore-error") {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => return Err(bad(format!("ignore-error={v}: expected true or false"))),
        };
        Ok(CacheTo {
            location,
            mode,
            ignore_error,
        })
    }
}

impl CacheFrom {
    /// Parses `type=registry,ref=R`, a bare `R`, or `type=local,src=DIR[,tag=T]`.
    pub fn parse(spec: &str) -> Result<CacheFrom> {
        const FLAG: &str = "--cache-from";
        let fields = fields(FLAG, spec)?;
        Ok(CacheFrom {
            location: location(FLAG, spec, &fields, "src", &[])?,
        })
    }
}

/// The records an export of `mode` holds: `target`'s (the records of the final image's
/// steps, its base stages' included) for [`Mode::Min`]; those and every other stage's for
/// [`Mode::Max`]. Each key once, in first-seen order.
pub fn select(mode: Mode, target: &[Record], stages: &[&[Record]]) -> Vec<Record> {
    let mut seen = HashSet::new();
    let others = match mode {
        Mode::Min => &[][..],
        Mode::Max => stages,
    };
    std::iter::once(target)
        .chain(others.iter().copied())
        .flatten()
        .filter(|r| seen.insert(r.key))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Inputs, KeyBuilder};

    fn record(n: u8) -> Record {
        let key = KeyBuilder::new("test").field("n", [n]).finish();
        Record::new(key, format!("slot{n}"), Inputs::new(), None)
    }

    #[test]
    fn registry_specs() {
        let to = CacheTo::parse("type=registry,ref=127.0.0.1:5000/cache:t,mode=max").unwrap();
        assert_eq!(to.mode, Mode::Max);
        assert!(!to.ignore_error);
        assert_eq!(to.location.to_string(), "127.0.0.1:5000/cache:t");
        let to = CacheTo::parse("type=registry,ref=127.0.0.1:5000/cache:t").unwrap();
        assert_eq!(to.mode, Mode::Min, "min is the default, as in BuildKit");
        let from = CacheFrom::parse("127.0.0.1:5000/cache:t").unwrap();
        assert_eq!(from.location, to.location, "a bare ref is type=registry");
        let from = CacheFrom::parse("type=registry,ref=127.0.0.1:5000/cache").unwrap();
        assert_eq!(from.location.to_string(), "127.0.0.1:5000/cache:latest");
        CacheTo::parse("type=registry,ref=r:5000/c:t,oci-mediatypes=true,image-manifest=true")
            .unwrap();
    }

    #[test]
    fn local_specs() {
        let to = CacheTo::parse("type=local,dest=/tmp/c").unwrap();
        assert_eq!(
            to.location,
            Location::Local {
                dir: "/tmp/c".into(),
                tag: "latest".into()
            }
        );
        let from = CacheFrom::parse("type=local,src=/tmp/c,tag=x").unwrap();
        assert_eq!(from.location.to_string(), "/tmp/c:x");
    }

    #[test]
    fn bad_specs_say_what_to_write() {
        for (spec, expect) in [
            ("type=registry", "needs ref="),
            ("type=registry,ref=r/c:t,mode=all", "mode=min or mode=max"),
            ("type=gha", "not supported"),
            ("type=local,src=/x", "unknown option src=/x"),
            ("type=local", "needs dest=DIR"),
            ("type=registry,ref=r/c:t,colour=blue", "unknown option"),
            (
                "type=registry,ref=r/c@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "under a tag",
            ),
        ] {
            let e = CacheTo::parse(spec).expect_err(spec).to_string();
            assert!(e.contains(expect) && e.contains("--cache-to"), "{spec}: {e}");
        }
        let e = CacheFrom::parse("type=local,dest=/x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown option dest=/x"), "{e}");
        let e = CacheFrom::parse("type=registry,ref=a/b:c:d")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ref=a/b:c:d"), "{e}");
    }

    #[test]
    fn min_exports_the_target_chain_and_max_every_stage() {
        let (a, b, c, d) = (record(1), record(2), record(3), record(4));
        // The target stage was based on a stage whose records it carries (a, b), and copied
        // from another stage (c, d); b is shared.
        let target = vec![a.clone(), b.clone()];
        let other = vec![b.clone(), c.clone(), d.clone()];
        let keys = |rs: Vec<Record>| rs.into_iter().map(|r| r.key).collect::<Vec<_>>();
        assert_eq!(
            keys(select(Mode::Min, &target, &[&other])),
            vec![a.key, b.key]
        );
        assert_eq!(
            keys(select(Mode::Max, &target, &[&other, &target])),
            vec![a.key, b.key, c.key, d.key],
            "each key once"
        );
    }
}
