//! Typed instruction flags with BuildKit's rules: each instruction accepts a known set; a
//! string flag needs a value and may appear once; list flags (`--mount`, `--exclude`) repeat;
//! boolean flags take no value or `=true`/`=false`.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    List,
    Bool,
}

#[derive(Debug, Default)]
pub struct Flags {
    values: BTreeMap<&'static str, Vec<String>>,
}

impl Flags {
    /// Parses raw `--name[=value]` words against `allowed` (names without the dashes).
    pub fn parse(raw: &[String], allowed: &[(&'static str, Kind)]) -> Result<Self, String> {
        let mut values: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        for word in raw {
            let body = word.strip_prefix("--").unwrap_or(word);
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(name, kind)) = allowed.iter().find(|(n, _)| *n == name) else {
                let known: Vec<String> = allowed.iter().map(|(n, _)| format!("--{n}")).collect();
                return Err(if known.is_empty() {
                    format!("unknown flag: --{name} (this instruction takes no flags)")
                } else {
                    format!(
                        "unknown flag: --{name} (expected one of {})",
                        known.join(", ")
                    )
                });
            };
            let value = match (kind, value) {
                (Kind::Bool, None) => "true".to_string(),
                (Kind::Bool, Some(v)) if v.eq_ignore_ascii_case("true") => "true".to_string(),
                (Kind::Bool, Some(v)) if v.eq_ignore_ascii_case("false") => "false".to_string(),
                (Kind::Bool, Some(v)) => {
                    return Err(format!(
                        "expecting boolean value for flag --{name}, not: {v}"
                    ))
                }
                (_, None) => return Err(format!("missing a value on flag: --{name}")),
                (_, Some(v)) => v.to_string(),
            };
            let slot = values.entry(name).or_default();
            if kind != Kind::List && !slot.is_empty() {
                return Err(format!("duplicate flag specified: --{name}"));
            }
            slot.push(value);
        }
        Ok(Flags { values })
    }

    pub fn string(&self, name: &str) -> Option<String> {
        self.values.get(name).and_then(|v| v.first()).cloned()
    }

    pub fn list(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }

    pub fn bool(&self, name: &str) -> bool {
        self.string(name).is_some_and(|v| v == "true")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn buildkit_flag_rules() {
        let allowed = [
            ("from", Kind::String),
            ("link", Kind::Bool),
            ("exclude", Kind::List),
        ];
        let f = Flags::parse(
            &words(&["--from=a", "--link", "--exclude=x", "--exclude=y"]),
            &allowed,
        )
        .unwrap();
        assert_eq!(f.string("from").as_deref(), Some("a"));
        assert!(f.bool("link"));
        assert_eq!(f.list("exclude"), ["x", "y"]);
        assert!(Flags::parse(&words(&["--from"]), &allowed).is_err());
        assert!(Flags::parse(&words(&["--from=a", "--from=b"]), &allowed).is_err());
        assert!(Flags::parse(&words(&["--link=maybe"]), &allowed).is_err());
        let err = Flags::parse(&words(&["--nope"]), &allowed).unwrap_err();
        assert!(err.contains("unknown flag: --nope"), "{err}");
        assert!(!Flags::parse(&words(&["--link=FALSE"]), &allowed)
            .unwrap()
            .bool("link"));
    }
}
