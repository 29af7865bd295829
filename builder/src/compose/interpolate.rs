//! Variable interpolation as the Compose specification defines it: `$VAR`, `${VAR}`,
//! `${VAR:-default}` / `${VAR-default}` (when unset or empty / unset), `${VAR:?error}` /
//! `${VAR?error}`, `${VAR:+other}` / `${VAR+other}`, and `$$` for a literal `$`. Defaults
//! may themselves hold interpolations (`${A:-${B}}`). This is not the Dockerfile's shell-word
//! expansion (`frontend::shell`): no quotes, no escapes but `$$`.

/// `text` with its variables replaced by `lookup`'s values. Variables used bare (`$X`, `${X}`)
/// that `lookup` does not know become empty and are pushed to `unset`, for a warning.
pub fn interpolate(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<String>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = closing_brace(inner)
                .ok_or_else(|| format!("invalid interpolation format in {text:?}: missing }}"))?;
            out.push_str(&braced(&inner[..end], text, lookup, unset)?);
            rest = &inner[end + 1..];
        } else {
            let len = name_len(after);
            if len == 0 {
                return Err(format!(
                    "invalid interpolation format in {text:?}: `$` starts no variable (write $$ \
                     for a literal $)"
                ));
            }
            out.push_str(&value_or_unset(&after[..len], lookup, unset));
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `${…}` without its braces.
fn braced(
    inner: &str,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<String>,
) -> Result<String, String> {
    let len = name_len(inner);
    let (name, op) = inner.split_at(len);
    if name.is_empty() {
        return Err(format!(
            "invalid interpolation format in {text:?}: ${{{inner}}} names no variable"
        ));
    }
    if op.is_empty() {
        return Ok(value_or_unset(name, lookup, unset));
    }
    let (colon, op) = match op.strip_prefix(':') {
        Some(op) => (true, op),
        None => (false, op),
    };
    let mut chars = op.chars();
    let kind = chars.next();
    let word = chars.as_str();
    let value = lookup(name);
    // With a colon, an empty value counts as unset.
    let set = match &value {
        Some(v) => !(colon && v.is_empty()),
        None => false,
    };
    match kind {
        Some('-') if set => Ok(value.unwrap_or_default()),
        Some('-') => interpolate(word, lookup, unset),
        Some('+') if set => interpolate(word, lookup, unset),
        Some('+') => Ok(String::new()),
        Some('?') if set => Ok(value.unwrap_or_default()),
        Some('?') => {
            let message = interpolate(word, lookup, unset)?;
            Err(if message.is_empty() {
                format!("required variable {name} is missing a value")
            } else {
                format!("required variable {name} is missing a value: {message}")
            })
        }
        _ => Err(format!(
            "invalid interpolation format in {text:?}: ${{{inner}}} (expected :-, -, :?, ?, :+ or \
             + after the name)"
        )),
    }
}

fn value_or_unset(
    name: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<String>,
) -> String {
    lookup(name).unwrap_or_else(|| {
        if !unset.iter().any(|n| n == name) {
            unset.push(name.to_string());
        }
        String::new()
    })
}

/// Length of the variable name at the start of `s`: `[A-Za-z_][A-Za-z0-9_]*`.
fn name_len(s: &str) -> usize {
    let bytes = s.as_bytes();
    if bytes.first().is_none_or(|b| b.is_ascii_digit()) {
        return 0;
    }
    bytes
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
        .count()
}

/// Index of the `}` that closes a `${` whose body starts `s`, skipping nested `${…}` and `$$`.
fn closing_brace(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(text: &str) -> Result<String, String> {
        let lookup = |name: &str| match name {
            "SET" => Some("value".to_string()),
            "EMPTY" => Some(String::new()),
            "INNER" => Some("in".to_string()),
            _ => None,
        };
        interpolate(text, &lookup, &mut Vec::new())
    }

    #[test]
    fn forms_of_the_compose_spec() {
        let cases = [
            ("plain", "plain"),
            ("$SET", "value"),
            ("${SET}", "value"),
            ("a-${SET}-b/$SET.x", "a-value-b/value.x"),
            ("$$SET", "$SET"),
            ("$${SET}", "${SET}"),
            ("cost: 5$$", "cost: 5$"),
            ("${UNSET:-d}", "d"),
            ("${EMPTY:-d}", "d"),
            ("${EMPTY-d}", ""),
            ("${UNSET-d}", "d"),
            ("${SET:-d}", "value"),
            ("${SET:+x}", "x"),
            ("${EMPTY:+x}", ""),
            ("${EMPTY+x}", "x"),
            ("${UNSET+x}", ""),
            ("${SET:?boom}", "value"),
            ("${EMPTY?boom}", ""),
            ("${UNSET:-${INNER}-x}", "in-x"),
            ("${UNSET:-${ALSO:-deep}}", "deep"),
            ("${UNSET:-a b: c}", "a b: c"),
        ];
        for (text, want) in cases {
            assert_eq!(expand(text).as_deref(), Ok(want), "{text}");
        }
    }

    #[test]
    fn unset_variables_are_blank_and_reported_once() {
        let mut unset = Vec::new();
        let out = interpolate("$NOPE/${NOPE}/${DEF:-x}", &|_| None, &mut unset).unwrap();
        assert_eq!(out, "//x");
        assert_eq!(
            unset,
            ["NOPE"],
            "a default hides the variable from the warning"
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            expand("${UNSET:?set it in .env}").unwrap_err(),
            "required variable UNSET is missing a value: set it in .env"
        );
        assert_eq!(
            expand("${EMPTY:?}").unwrap_err(),
            "required variable EMPTY is missing a value"
        );
        assert!(expand("${UNSET?x}").is_err());
        for bad in ["${SET", "$ x", "$1", "${}", "${SET%x}", "end$"] {
            let e = expand(bad).unwrap_err();
            assert!(e.contains("invalid interpolation format"), "{bad}: {e}");
        }
    }
}
