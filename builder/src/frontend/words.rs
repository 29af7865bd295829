//! How BuildKit's parser cuts an instruction's text into argument words, per instruction
//! (its `dispatch` table): JSON arrays, whitespace lists, `key=value` pairs, raw strings.
//! Words keep their quotes and escapes; unquoting and expansion happen later, in the planner.

use super::node::{Arg, Node};

/// Whitespace as Go's `[\t\v\f\r ]+` splitter sees it (no newline: lines are joined already).
fn is_split_ws(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Splits on runs of `[\t\v\f\r ]`, at most `limit` pieces (0 = no limit).
pub fn split_ws(s: &str, limit: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        if limit != 0 && out.len() + 1 == limit {
            out.push(rest);
            return out;
        }
        match rest.find(is_split_ws) {
            None => {
                out.push(rest);
                return out;
            }
            Some(i) => {
                out.push(&rest[..i]);
                rest = rest[i..].trim_start_matches(is_split_ws);
            }
        }
    }
}

/// The outcome of cutting one instruction's text.
pub struct Parsed {
    pub args: Vec<Arg>,
    pub json: bool,
}

impl Parsed {
    fn words<I: IntoIterator<Item = String>>(words: I, json: bool) -> Self {
        Parsed {
            args: words.into_iter().map(Arg::Word).collect(),
            json,
        }
    }
}

/// Why the JSON form was rejected: only an array with a non-string element is a hard error.
enum JsonError {
    NotJson,
    NotStringArray,
}

fn parse_json(rest: &str) -> Result<Vec<String>, JsonError> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Err(JsonError::NotJson);
    }
    let values: Vec<serde_json::Value> =
        serde_json::from_str(rest).map_err(|_| JsonError::NotJson)?;
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(JsonError::NotStringArray),
        })
        .collect()
}

const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

/// RUN, CMD, ENTRYPOINT, SHELL: a JSON string array, else the raw text as one word.
pub fn maybe_json(rest: &str) -> Result<Parsed, String> {
    if rest.is_empty() {
        return Ok(Parsed::words([], false));
    }
    match parse_json(rest) {
        Ok(words) => Ok(Parsed::words(words, true)),
        Err(JsonError::NotStringArray) => Err(NOT_STRING_ARRAY.into()),
        Err(JsonError::NotJson) => Ok(Parsed::words([rest.to_string()], false)),
    }
}

/// ADD, COPY, VOLUME: a JSON string array, else whitespace-separated words (quotes ignored).
pub fn maybe_json_to_list(rest: &str) -> Result<Parsed, String> {
    match parse_json(rest) {
        Ok(words) => Ok(Parsed::words(words, true)),
        Err(JsonError::NotStringArray) => Err(NOT_STRING_ARRAY.into()),
        Err(JsonError::NotJson) => Ok(whitespace_list(rest)),
    }
}

/// FROM, EXPOSE.
pub fn whitespace_list(rest: &str) -> Parsed {
    if rest.is_empty() {
        return Parsed::words([], false);
    }
    Parsed::words(split_ws(rest, 0).into_iter().map(String::from), false)
}

/// USER, WORKDIR, MAINTAINER, STOPSIGNAL: the raw text.
pub fn string(rest: &str) -> Parsed {
    if rest.is_empty() {
        return Parsed::words([], false);
    }
    Parsed::words([rest.to_string()], false)
}

/// ENV, LABEL: `k=v ...` (new form, each pair as `k`, `v`, `=`) or `k v w` (legacy form, as
/// `k`, `v w`, ``).
pub fn name_val(rest: &str, keyword: &str, escape: char) -> Result<Parsed, String> {
    let words = shell_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Parsed::words([], false));
    };
    if !first.contains('=') {
        let parts = split_ws(rest, 2);
        if parts.len() < 2 {
            return Err(format!("{keyword} must have two arguments"));
        }
        return Ok(Parsed::words(
            [parts[0].to_string(), parts[1].to_string(), String::new()],
            false,
        ));
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(format!(
                "syntax error - can't find = in {word:?}. Must be of the form: name=value"
            ));
        };
        out.extend([k.to_string(), v.to_string(), "=".to_string()]);
    }
    Ok(Parsed::words(out, false))
}

/// ARG: words respecting quotes, `=` not split.
pub fn name_or_name_val(rest: &str, escape: char) -> Parsed {
    Parsed::words(shell_words(rest, escape), false)
}

/// HEALTHCHECK: the first word (`CMD`, `NONE`...), then RUN-like arguments.
pub fn health(rest: &str) -> Result<Parsed, String> {
    let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
    if sep == 0 {
        return Ok(Parsed::words([], false));
    }
    let cmd = maybe_json(rest[sep..].trim_start())?;
    let mut args = vec![Arg::Word(rest[..sep].to_string())];
    args.extend(cmd.args);
    Ok(Parsed {
        args,
        json: cmd.json,
    })
}

/// ONBUILD: the rest is an instruction of its own.
pub fn sub_command(node: Node) -> Parsed {
    Parsed {
        args: vec![Arg::Sub(Box::new(node))],
        json: false,
    }
}

/// Splits on whitespace outside quotes; quotes and escapes are kept in the words. Inside
/// single quotes the escape char is literal. An escape char at the very end is dropped.
pub fn shell_words(rest: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            None if c.is_whitespace() => {
                if in_word && (blank_ok || !word.is_empty()) {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                in_word = false;
                blank_ok = false;
            }
            None => {
                in_word = true;
                if c == '\'' || c == '"' {
                    quote = Some(c);
                    blank_ok = true;
                }
                if c == escape {
                    match chars.next() {
                        None => continue,
                        Some(next) => {
                            word.push(c);
                            word.push(next);
                            continue;
                        }
                    }
                }
                word.push(c);
            }
            Some(q) => {
                if c == q {
                    quote = None;
                }
                if c == escape && q != '\'' {
                    match chars.next() {
                        None => {
                            quote = None;
                            continue;
                        }
                        Some(next) => {
                            word.push(c);
                            word.push(next);
                            continue;
                        }
                    }
                }
                word.push(c);
            }
        }
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// Takes the leading `--flag[=value]` words off an instruction's text. Quotes are removed and
/// the escape char escapes the next char; a bare `--` ends the flags and is dropped.
pub fn extract_flags(line: &str, escape: char) -> (Vec<String>, &str) {
    let mut flags = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &line[pos..];
        let start = match rest.find(|c: char| !c.is_whitespace()) {
            None => return (flags, ""),
            Some(i) => pos + i,
        };
        if !line[start..].starts_with("--") {
            return (flags, &line[start..]);
        }
        let mut word = String::new();
        let mut blank_ok = false;
        let mut quote: Option<char> = None;
        let mut iter = line[start..].char_indices();
        let mut end = line.len();
        while let Some((i, c)) = iter.next() {
            if quote.is_none() && c.is_whitespace() {
                end = start + i;
                break;
            }
            if Some(c) == quote {
                quote = None;
            } else if quote.is_none() && (c == '\'' || c == '"') {
                quote = Some(c);
                blank_ok = true;
            } else if c == escape {
                match iter.next() {
                    Some((_, next)) => word.push(next),
                    None => quote = None,
                }
            } else {
                word.push(c);
            }
        }
        if word == "--" {
            return (flags, &line[end..]);
        }
        if blank_ok || !word.is_empty() {
            flags.push(word);
        }
        pos = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_stop_at_first_non_flag_and_at_double_dash() {
        let (f, rest) = extract_flags("--a=1 --b=\"x y\" foo --c", '\\');
        assert_eq!(f, ["--a=1", "--b=x y"]);
        assert_eq!(rest, "foo --c");
        let (f, rest) = extract_flags("--doit=true -- foo /tmp/", '\\');
        assert_eq!(f, ["--doit=true"]);
        assert_eq!(rest.trim(), "foo /tmp/");
        let (f, rest) = extract_flags("--doit -- [ ]", '\\');
        assert_eq!(
            (f.as_slice(), rest.trim()),
            (&["--doit".to_string()][..], "[ ]")
        );
    }

    #[test]
    fn shell_words_keep_quotes() {
        assert_eq!(
            shell_words(r#"abc="123 456" def"#, '\\'),
            [r#"abc="123 456""#, "def"]
        );
        assert_eq!(shell_words(r"a\ b c", '\\'), [r"a\ b", "c"]);
        assert_eq!(shell_words("''", '\\'), ["''"]);
    }
}
