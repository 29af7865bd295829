//! Parser directives (`# syntax=`, `# escape=`, `# check=`): comment lines that count only at
//! the very top of the file, before any instruction, comment or blank line, each at most once,
//! keys case-insensitive — BuildKit's rules.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directives {
    pub escape: char,
    pub syntax: Option<String>,
    pub check: Option<String>,
    #[serde(skip)]
    seen: Vec<&'static str>,
    #[serde(skip)]
    done: bool,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            escape: '\\',
            syntax: None,
            check: None,
            seen: Vec::new(),
            done: false,
        }
    }
}

impl Directives {
    /// Looks at one physical line (leading whitespace already trimmed). The first line that is
    /// not a directive ends the directive block for good.
    pub fn observe(&mut self, line: &str) -> Result<(), String> {
        if self.done {
            return Ok(());
        }
        let Some((key, value)) = split_directive(line) else {
            self.done = true;
            return Ok(());
        };
        let key: &'static str = match key.to_ascii_lowercase().as_str() {
            "syntax" => "syntax",
            "escape" => "escape",
            "check" => "check",
            _ => {
                self.done = true;
                return Ok(());
            }
        };
        if self.seen.contains(&key) {
            return Err(format!("only one {key} parser directive can be used"));
        }
        self.seen.push(key);
        match key {
            "escape" => {
                self.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    other => {
                        return Err(format!(
                            "invalid escape token '{other}' does not match ` or \\"
                        ))
                    }
                }
            }
            "syntax" => self.syntax = Some(value.to_string()),
            _ => self.check = Some(value.to_string()),
        }
        Ok(())
    }
}

/// `#[ \t]*KEY[ \t]*=[ \t]*VALUE[ \t]*` with KEY `[a-zA-Z][a-zA-Z0-9]*` and VALUE non-empty.
fn split_directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start_matches([' ', '\t']);
    let key_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if key_len == 0 {
        return None;
    }
    let (key, rest) = rest.split_at(key_len);
    let value = rest
        .trim_start_matches([' ', '\t'])
        .strip_prefix('=')?
        .trim_matches([' ', '\t']);
    (!value.is_empty()).then_some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_block_rules() {
        let mut d = Directives::default();
        d.observe("# syntax = docker/dockerfile:1").unwrap();
        d.observe("#ESCAPE=`").unwrap();
        assert_eq!(d.escape, '`');
        assert!(d.observe("# escape=\\").is_err(), "twice is an error");
        let mut d = Directives::default();
        d.observe("# a comment").unwrap();
        d.observe("# escape=`").unwrap();
        assert_eq!(d.escape, '\\', "a comment ends the block");
        let mut d = Directives::default();
        assert!(d.observe("# escape=x").is_err());
        assert_eq!(split_directive("#key="), None);
        assert_eq!(
            split_directive("# check = skip=all "),
            Some(("check", "skip=all"))
        );
    }
}
