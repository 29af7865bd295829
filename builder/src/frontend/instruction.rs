//! Typed instructions built from raw nodes, with each instruction's rules checked (argument
//! counts, allowed flags, JSON-only forms, HEALTHCHECK options). Words are kept as written —
//! expansion needs the build's variables and happens in the planner.

use super::flags::{Flags, Kind};
use super::mount::parse_mount;
use super::node::{Arg, Heredoc, Node};
use super::span::Span;
use serde::Serialize;

/// Exec form (`["a","b"]`) or shell form (`a b`, run through SHELL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "form", content = "value", rename_all = "lowercase")]
pub enum Command {
    Exec(Vec<String>),
    Shell(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDecl {
    pub name: String,
    /// The default as written (unexpanded, quotes kept); `None` for `ARG name`.
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct From {
    pub image: String,
    /// Lowercased stage name from `AS name`.
    pub name: Option<String>,
    pub platform: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    pub command: Command,
    pub heredocs: Vec<Heredoc>,
    /// Raw `--mount` values; parsed (and checked) here, re-parsed with expansion by the planner.
    pub mounts: Vec<String>,
    pub network: Option<String>,
    pub security: Option<String>,
}

/// COPY and ADD; the ADD-only options are `None`/false for COPY.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copy {
    pub sources: Vec<String>,
    pub dest: String,
    /// Heredoc sources (`COPY <<EOF /dest`), named in `sources` by their delimiter.
    pub heredocs: Vec<Heredoc>,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
    pub unpack: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    /// Docker's `Test`: `["NONE"]`, `["CMD", …]` or `["CMD-SHELL", cmd]`.
    pub test: Vec<String>,
    pub interval_ns: Option<u64>,
    pub timeout_ns: Option<u64>,
    pub start_period_ns: Option<u64>,
    pub start_interval_ns: Option<u64>,
    pub retries: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "UPPERCASE")]
pub enum Instruction {
    From(From),
    Run(Run),
    Cmd {
        command: Command,
    },
    Entrypoint {
        command: Command,
    },
    Shell {
        shell: Vec<String>,
    },
    Copy(Copy),
    Add(Copy),
    Arg {
        args: Vec<ArgDecl>,
    },
    Env {
        pairs: Vec<KeyValue>,
        legacy: bool,
    },
    Label {
        pairs: Vec<KeyValue>,
        legacy: bool,
    },
    Expose {
        ports: Vec<String>,
    },
    Volume {
        paths: Vec<String>,
    },
    User {
        user: String,
    },
    Workdir {
        path: String,
    },
    Healthcheck(Healthcheck),
    Stopsignal {
        signal: String,
    },
    /// The trigger as written; it runs (and is expanded) when a later build uses this image.
    Onbuild {
        trigger: String,
    },
    Maintainer {
        name: String,
    },
}

/// An instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Located {
    pub span: Span,
    /// The keyword as written (for casing checks).
    pub keyword: String,
    /// The instruction text after continuation joining (for history and errors).
    pub original: String,
    #[serde(flatten)]
    pub instruction: Instruction,
}

pub const KEYWORDS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Builds the typed instruction for one raw node.
pub fn from_node(node: &Node) -> Result<Located, String> {
    let keyword = node.keyword.to_ascii_uppercase();
    let words: Vec<String> = node.words().map(str::to_string).collect();
    let flags = |allowed: &[(&'static str, Kind)]| Flags::parse(&node.flags, allowed);
    let need = |n: usize, what: &str| -> Result<(), String> {
        if words.len() < n || words.iter().all(String::is_empty) {
            Err(format!("{keyword} requires {what}"))
        } else {
            Ok(())
        }
    };
    let one = |what: &str| -> Result<String, String> {
        flags(&[])?;
        match words.as_slice() {
            [w] if !w.is_empty() => Ok(w.clone()),
            _ => Err(format!("{keyword} requires exactly one argument: {what}")),
        }
    };
    let instruction = match keyword.as_str() {
        "FROM" => {
            let f = flags(&[("platform", Kind::String)])?;
            let name = match words.as_slice() {
                [_] => None,
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => {
                    let name = name.to_ascii_lowercase();
                    if !valid_stage_name(&name) {
                        return Err(format!("invalid name for build stage: {name:?}, name can't start with a number or contain symbols"));
                    }
                    Some(name)
                }
                _ => {
                    return Err(
                        "FROM requires either one or three arguments: FROM <image> [AS <name>]"
                            .into(),
                    )
                }
            };
            Instruction::From(From {
                image: words[0].clone(),
                name,
                platform: f.string("platform"),
            })
        }
        "RUN" => {
            let f = flags(&[
                ("mount", Kind::List),
                ("network", Kind::String),
                ("security", Kind::String),
            ])?;
            need(1, "at least one argument")?;
            let mounts = f.list("mount");
            // A spec with variables is checked by the planner, once expanded.
            for m in mounts.iter().filter(|m| !m.contains('$')) {
                parse_mount(m, &|v| Ok(v.to_string())).map_err(|e| format!("--mount={m}: {e}"))?;
            }
            if let Some(n) = f.string("network") {
                if !matches!(n.as_str(), "default" | "none" | "host") && !n.contains('$') {
                    return Err(format!("--network={n}: expected default, none or host"));
                }
            }
            if let Some(s) = f.string("security") {
                if !matches!(s.as_str(), "sandbox" | "insecure") {
                    return Err(format!("--security={s}: expected sandbox or insecure"));
                }
            }
            Instruction::Run(Run {
                command: command(node, &words),
                heredocs: node.heredocs.clone(),
                mounts,
                network: f.string("network"),
                security: f.string("security"),
            })
        }
        "CMD" | "ENTRYPOINT" => {
            flags(&[])?;
            let command = command(node, &words);
            if keyword == "CMD" {
                Instruction::Cmd { command }
            } else {
                Instruction::Entrypoint { command }
            }
        }
        "SHELL" => {
            flags(&[])?;
            if !node.json {
                return Err(
                    r#"SHELL requires the arguments to be in JSON form: SHELL ["/bin/bash", "-c"]"#
                        .into(),
                );
            }
            need(1, "at least one argument")?;
            Instruction::Shell { shell: words }
        }
        "COPY" | "ADD" => {
            let mut allowed = vec![
                ("chown", Kind::String),
                ("chmod", Kind::String),
                ("link", Kind::Bool),
                ("exclude", Kind::List),
            ];
            if keyword == "COPY" {
                allowed.extend([("from", Kind::String), ("parents", Kind::Bool)]);
            } else {
                allowed.extend([
                    ("checksum", Kind::String),
                    ("keep-git-dir", Kind::Bool),
                    ("unpack", Kind::Bool),
                ]);
            }
            let f = flags(&allowed)?;
            if words.len() < 2 {
                return Err(format!("{keyword} requires at least two arguments, but only {} provided: a source and a destination", words.len()));
            }
            let (dest, sources) = words.split_last().expect("checked above");
            let copy = Copy {
                sources: sources.to_vec(),
                dest: dest.clone(),
                heredocs: node.heredocs.clone(),
                from: f.string("from"),
                chown: f.string("chown"),
                chmod: f.string("chmod"),
                link: f.bool("link"),
                parents: f.bool("parents"),
                exclude: f.list("exclude"),
                checksum: f.string("checksum"),
                keep_git_dir: f.bool("keep-git-dir"),
                unpack: f.string("unpack").map(|v| v == "true"),
            };
            if keyword == "COPY" {
                Instruction::Copy(copy)
            } else {
                Instruction::Add(copy)
            }
        }
        "ARG" => {
            flags(&[])?;
            need(1, "at least one argument")?;
            let mut args = Vec::new();
            for w in &words {
                let (name, default) = match w.split_once('=') {
                    Some((n, d)) => (n, Some(d.to_string())),
                    None => (w.as_str(), None),
                };
                if name.is_empty() {
                    return Err("ARG names can not be blank".into());
                }
                args.push(ArgDecl {
                    name: name.to_string(),
                    default,
                });
            }
            Instruction::Arg { args }
        }
        "ENV" | "LABEL" => {
            flags(&[])?;
            need(1, "at least one argument")?;
            let legacy = words
                .chunks(3)
                .any(|c| c.get(2).is_some_and(String::is_empty));
            let mut pairs = Vec::new();
            for c in words.chunks(3) {
                if c[0].is_empty() {
                    return Err(format!("{keyword} names can not be blank"));
                }
                pairs.push(KeyValue {
                    key: c[0].clone(),
                    value: c.get(1).cloned().unwrap_or_default(),
                });
            }
            if keyword == "ENV" {
                Instruction::Env { pairs, legacy }
            } else {
                Instruction::Label { pairs, legacy }
            }
        }
        "EXPOSE" => {
            flags(&[])?;
            need(1, "at least one argument")?;
            Instruction::Expose { ports: words }
        }
        "VOLUME" => {
            flags(&[])?;
            if words.iter().any(|w| w.trim().is_empty()) {
                return Err("VOLUME specified can not be an empty string".into());
            }
            need(1, "at least one argument")?;
            Instruction::Volume { paths: words }
        }
        "USER" => Instruction::User {
            user: one("USER <user>[:<group>]")?,
        },
        "WORKDIR" => Instruction::Workdir {
            path: one("WORKDIR <path>")?,
        },
        "STOPSIGNAL" => Instruction::Stopsignal {
            signal: one("STOPSIGNAL <signal>")?,
        },
        "MAINTAINER" => Instruction::Maintainer {
            name: one("MAINTAINER <name>")?,
        },
        "HEALTHCHECK" => Instruction::Healthcheck(healthcheck(node, &words)?),
        "ONBUILD" => {
            flags(&[])?;
            let Some(Arg::Sub(sub)) = node.args.first() else {
                return Err("ONBUILD requires at least one argument: ONBUILD <instruction>".into());
            };
            let trigger = sub.keyword.to_ascii_uppercase();
            if matches!(trigger.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                return Err(format!("{trigger} isn't allowed as an ONBUILD trigger"));
            }
            from_node(sub)?;
            // Heredoc bodies travel with the trigger text, terminators included.
            let mut trigger_text = sub.original.trim().to_string();
            for doc in &sub.heredocs {
                trigger_text.push('\n');
                trigger_text.push_str(&doc.content);
                trigger_text.push_str(&doc.name);
            }
            Instruction::Onbuild {
                trigger: trigger_text,
            }
        }
        _ => {
            let hint = closest_keyword(&keyword)
                .map(|k| format!(" (did you mean {k:?}?)"))
                .unwrap_or_default();
            return Err(format!("unknown instruction {:?}{hint}", node.keyword));
        }
    };
    Ok(Located {
        span: node.span,
        keyword: node.keyword.clone(),
        original: node.original.trim().to_string(),
        instruction,
    })
}

fn command(node: &Node, words: &[String]) -> Command {
    if node.json {
        Command::Exec(words.to_vec())
    } else {
        Command::Shell(words.first().cloned().unwrap_or_default())
    }
}

fn healthcheck(node: &Node, words: &[String]) -> Result<Healthcheck, String> {
    let f = Flags::parse(
        &node.flags,
        &[
            ("interval", Kind::String),
            ("timeout", Kind::String),
            ("start-period", Kind::String),
            ("start-interval", Kind::String),
            ("retries", Kind::String),
        ],
    )?;
    let Some(kind) = words.first() else {
        return Err("HEALTHCHECK requires an argument: HEALTHCHECK [OPTIONS] CMD command, or HEALTHCHECK NONE".into());
    };
    let test = match kind.to_ascii_uppercase().as_str() {
        "NONE" => {
            if words.len() > 1 {
                return Err("HEALTHCHECK NONE takes no arguments".into());
            }
            if !node.flags.is_empty() {
                return Err("HEALTHCHECK NONE takes no options".into());
            }
            vec!["NONE".to_string()]
        }
        "CMD" => {
            let rest = &words[1..];
            if rest.is_empty() || (!node.json && rest[0].is_empty()) {
                return Err("missing command after HEALTHCHECK CMD".into());
            }
            if node.json {
                std::iter::once("CMD".to_string())
                    .chain(rest.iter().cloned())
                    .collect()
            } else {
                vec!["CMD-SHELL".to_string(), rest[0].clone()]
            }
        }
        other => return Err(format!("unknown type {other:?} in HEALTHCHECK (try CMD)")),
    };
    let duration = |name: &str| -> Result<Option<u64>, String> {
        let Some(v) = f.string(name) else {
            return Ok(None);
        };
        let ns = parse_duration(&v).map_err(|e| format!("--{name}={v}: {e}"))?;
        if ns != 0 && ns < 1_000_000 {
            return Err(format!("--{name}={v}: cannot be less than 1ms"));
        }
        Ok(Some(ns))
    };
    let retries = match f.string("retries") {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .map_err(|_| format!("--retries={v}: expected a whole number"))
                .and_then(|n| {
                    u32::try_from(n).map_err(|_| "--retries cannot be negative".to_string())
                })?,
        ),
    };
    Ok(Healthcheck {
        test,
        interval_ns: duration("interval")?,
        timeout_ns: duration("timeout")?,
        start_period_ns: duration("start-period")?,
        start_interval_ns: duration("start-interval")?,
        retries,
    })
}

/// Go's `time.ParseDuration`, in nanoseconds: `1h2m3.5s`, `300ms`, `0`.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    if s == "0" {
        return Ok(0);
    }
    let invalid =
        || format!("invalid duration {s:?}: use a number with a unit, such as 30s or 1m30s");
    let mut rest = s;
    let mut total: f64 = 0.0;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..num_len].parse().map_err(|_| invalid())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total += value * factor;
    }
    if total > u64::MAX as f64 {
        return Err(invalid());
    }
    Ok(total.round() as u64)
}

fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

/// The known keyword within two edits of `word`, if any.
pub fn closest_keyword(word: &str) -> Option<&'static str> {
    KEYWORDS
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut row = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            row.push((prev[j] + cost).min(prev[j + 1] + 1).min(row[j] + 1));
        }
        prev = row;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(5_000_000_000));
        assert_eq!(parse_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_duration("1.5ms"), Ok(1_500_000));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn suggestions() {
        assert_eq!(closest_keyword("RUNN"), Some("RUN"));
        assert_eq!(closest_keyword("COPPY"), Some("COPY"));
        assert_eq!(closest_keyword("XYZZYQ"), None);
    }
}
