//! The `.env` file beside a compose file: `KEY=VALUE` lines, `#` comments, an optional
//! `export ` prefix; values unquoted (an inline comment starts at ` #`), in single quotes
//! (literal) or in double quotes (`\n`, `\t`, `\"`, `\\` escapes; may span lines). Unquoted and
//! double-quoted values are interpolated, from the keys above them, then the environment.

use super::interpolate::interpolate;
use std::collections::BTreeMap;

/// Parses `.env` text; errors say `LINE: problem`.
pub fn parse(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut vars = BTreeMap::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let at = index + 1;
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("{at}: expected KEY=VALUE, found {line:?}"));
        };
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!("{at}: {key:?} is not a variable name"));
        }
        let value = value.trim_start();
        let lookup = |name: &str| vars.get(name).cloned().or_else(|| env(name));
        let unquoted = |raw: &str| interpolate(raw, &lookup, &mut Vec::new());
        let value = if let Some(body) = value.strip_prefix('\'') {
            let end = body.find('\'').ok_or_else(|| {
                format!("{at}: the ' that opens the value of {key} is not closed")
            })?;
            body[..end].to_string()
        } else if let Some(body) = value.strip_prefix('"') {
            // Gather lines until the closing quote, then unescape and interpolate.
            let mut body = body.to_string();
            let raw = loop {
                if let Some(end) = unescaped_quote(&body) {
                    break body[..end].to_string();
                }
                match lines.next() {
                    Some((_, next)) => {
                        body.push('\n');
                        body.push_str(next);
                    }
                    None => {
                        return Err(format!(
                            "{at}: the \" that opens the value of {key} is not closed"
                        ))
                    }
                }
            };
            unquoted(&unescape(&raw)).map_err(|e| format!("{at}: {e}"))?
        } else {
            let raw = match value.find(" #").or_else(|| value.find("\t#")) {
                Some(comment) => &value[..comment],
                None => value,
            };
            unquoted(raw.trim_end()).map_err(|e| format!("{at}: {e}"))?
        };
        vars.insert(key.to_string(), value);
    }
    Ok(vars)
}

fn unescaped_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other @ ('"' | '\\')) => out.push(other),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_quotes_comments() {
        let text = "# settings\n\nA=1\nexport B = two words # a comment\nC='lit $A # x'\n\
                    D=\"say \\\"hi\\\"\\n$A\"\nE=${A}-${HOME_X:-h}\nF=\"multi\nline\"\nG=\nH=a#b\n";
        let env = |name: &str| (name == "A").then(|| "from-env".to_string());
        let vars = parse(text, &env).unwrap();
        let want = [
            ("A", "1"),
            ("B", "two words"),
            ("C", "lit $A # x"),
            ("D", "say \"hi\"\n1"),
            ("E", "1-h"),
            ("F", "multi\nline"),
            ("G", ""),
            ("H", "a#b"),
        ];
        for (k, v) in want {
            assert_eq!(vars.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert_eq!(vars.len(), want.len());
    }

    #[test]
    fn errors_name_the_line() {
        let none = |_: &str| None;
        assert_eq!(
            parse("A=1\nnot a pair\n", &none).unwrap_err(),
            "2: expected KEY=VALUE, found \"not a pair\""
        );
        assert!(parse("A=\"open\n", &none)
            .unwrap_err()
            .starts_with("1: the \""));
        assert!(parse("A=${B:?needed}\n", &none)
            .unwrap_err()
            .contains("required variable B"));
    }
}
