//! The line scanner: turns Dockerfile text into raw [`Node`]s the way BuildKit's
//! `parser.Parse` does — parser directives, comments, continuation lines (with the comment and
//! blank lines BuildKit skips inside them), here-documents, and each instruction's line span.

use super::diagnostic::{Diagnostic, ParseError};
use super::directives::Directives;
use super::node::{Heredoc, Node};
use super::span::Span;
use super::words::{self, split_ws, Parsed};

/// The parser's output: directives, instructions, and warnings found while scanning.
#[derive(Debug, Clone)]
pub struct RawDockerfile {
    pub directives: Directives,
    pub nodes: Vec<Node>,
    pub warnings: Vec<Diagnostic>,
}

/// Physical lines, each with its newline kept (heredoc bodies need it).
struct Lines<'a> {
    rest: &'a str,
    number: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let end = self.rest.find('\n').map_or(self.rest.len(), |i| i + 1);
        let (line, rest) = self.rest.split_at(end);
        self.rest = rest;
        self.number += 1;
        Some(line)
    }
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    trim_newline(line).trim_start().starts_with('#')
}

/// Strips a trailing escape char (plus trailing blanks) unless it is itself escaped.
/// Returns the line and whether the instruction ends here.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let body = line.trim_end_matches([' ', '\t']);
    let Some(before) = body.strip_suffix(escape) else {
        return (line, true);
    };
    if before.is_empty() || !before.ends_with(escape) {
        (before, false)
    } else {
        (line, true)
    }
}

/// Parses a whole Dockerfile. `file` only names it in error messages.
pub fn parse(file: &str, source: &str) -> Result<RawDockerfile, ParseError> {
    let text = source.strip_prefix('\u{feff}').unwrap_or(source);
    let fail = |diagnostics: Vec<Diagnostic>| ParseError {
        file: file.to_string(),
        source: source.to_string(),
        diagnostics,
    };
    let mut directives = Directives::default();
    let mut lines = Lines {
        rest: text,
        number: 0,
    };
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    let mut comments: Vec<String> = Vec::new();

    while let Some(physical) = lines.next() {
        let start_line = lines.number;
        let trimmed = trim_newline(physical).trim_start();
        if let Some(comment) = trimmed.strip_prefix('#') {
            let comment = comment.trim();
            if comment.is_empty() {
                comments.clear();
            } else {
                comments.push(comment.to_string());
            }
        }
        if let Err(e) = directives.observe(trimmed) {
            return Err(fail(vec![Diagnostic::error(Span::line(start_line, 1), e)]));
        }
        let content = if is_comment(trimmed) { "" } else { trimmed };
        let start_col = trim_newline(physical).len() - trimmed.len() + 1;
        let escape = directives.escape;
        let (first, mut ended) = trim_continuation(content, escape);
        if ended && first.is_empty() {
            continue;
        }
        let mut line = first.to_string();
        let mut empty_continuation = false;
        while !ended {
            let Some(next) = lines.next() else { break };
            if let Err(e) = directives.observe(trim_newline(next)) {
                errors.push(Diagnostic::error(Span::line(lines.number, 1), e));
            }
            if is_comment(next) {
                continue;
            }
            let next = trim_newline(next);
            if next.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (piece, end) = trim_continuation(next, escape);
            line.push_str(piece);
            ended = end;
        }
        let mut span = Span {
            start_line,
            start_col,
            end_line: lines.number,
        };
        if empty_continuation {
            warnings.push(Diagnostic::warning(
                "NoEmptyContinuation",
                span,
                "empty continuation line: remove the blank line inside the continued instruction",
            ));
        }
        let mut node = match node_from_line(&line, escape, span) {
            Ok(node) => node,
            Err(message) => {
                errors.push(Diagnostic::error(span, message));
                comments.clear();
                continue;
            }
        };
        node.comments = std::mem::take(&mut comments);
        if can_contain_heredoc(&node) && line.contains("<<") {
            match heredocs_in_line(&line) {
                Ok(docs) => {
                    for mut doc in docs {
                        let mut terminated = false;
                        for body in lines.by_ref() {
                            let mut candidate = trim_newline(body);
                            if doc.chomp {
                                candidate = candidate.trim_start_matches('\t');
                            }
                            if candidate == doc.name {
                                terminated = true;
                                break;
                            }
                            if doc.chomp {
                                doc.content.push_str(body.trim_start_matches('\t'));
                            } else {
                                doc.content.push_str(body);
                            }
                        }
                        span.end_line = lines.number;
                        if !terminated {
                            errors.push(Diagnostic::error(
                                span,
                                format!(
                                    "unterminated heredoc: no line {:?} closes it before the end of the file",
                                    doc.name
                                ),
                            ));
                        }
                        node_heredocs(&mut node).push(doc);
                    }
                }
                Err(message) => errors.push(Diagnostic::error(span, message)),
            }
            set_span(&mut node, span);
        }
        nodes.push(node);
    }
    if !errors.is_empty() {
        return Err(fail(errors));
    }
    if nodes.is_empty() {
        return Err(fail(vec![Diagnostic::error(
            Span::line(lines.number.max(1), 1),
            "file with no instructions: a Dockerfile needs at least a FROM instruction",
        )]));
    }
    Ok(RawDockerfile {
        directives,
        nodes,
        warnings,
    })
}

/// ONBUILD's heredocs belong to its nested instruction.
fn node_heredocs(node: &mut Node) -> &mut Vec<Heredoc> {
    if node.keyword.eq_ignore_ascii_case("onbuild") {
        if let Some(super::node::Arg::Sub(sub)) = node.args.first_mut() {
            return &mut sub.heredocs;
        }
    }
    &mut node.heredocs
}

fn set_span(node: &mut Node, span: Span) {
    node.span = span;
    if let Some(super::node::Arg::Sub(sub)) = node.args.first_mut() {
        sub.span = span;
    }
}

fn can_contain_heredoc(node: &Node) -> bool {
    let target = match node.args.first() {
        Some(super::node::Arg::Sub(sub)) if node.keyword.eq_ignore_ascii_case("onbuild") => sub,
        _ => node,
    };
    let keyword = target.keyword.to_ascii_lowercase();
    matches!(keyword.as_str(), "run" | "copy" | "add") && !target.json
}

/// Splits `line` into keyword, flags and arguments, per BuildKit's dispatch table.
pub fn node_from_line(line: &str, escape: char, span: Span) -> Result<Node, String> {
    let parts = split_ws(line.trim(), 2);
    let keyword = parts[0].to_string();
    let (flags, rest) = match parts.get(1) {
        Some(rest) => words::extract_flags(rest, escape),
        None => (Vec::new(), ""),
    };
    let rest = rest.trim();
    let parsed: Parsed = match keyword.to_ascii_lowercase().as_str() {
        "add" | "copy" | "volume" => words::maybe_json_to_list(rest)?,
        "run" | "cmd" | "entrypoint" | "shell" => words::maybe_json(rest)?,
        "arg" => words::name_or_name_val(rest, escape),
        "env" => words::name_val(rest, "ENV", escape)?,
        "label" => words::name_val(rest, "LABEL", escape)?,
        "expose" | "from" => words::whitespace_list(rest),
        "healthcheck" => words::health(rest)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => words::string(rest),
        "onbuild" if rest.is_empty() => Parsed {
            args: Vec::new(),
            json: false,
        },
        "onbuild" => words::sub_command(node_from_line(rest, escape, span)?),
        // Unknown instructions parse (as one empty word) and are rejected by the typed layer,
        // which can suggest the instruction that was meant.
        _ => Parsed {
            args: vec![super::node::Arg::Word(String::new())],
            json: false,
        },
    };
    Ok(Node {
        keyword,
        flags,
        args: parsed.args,
        json: parsed.json,
        heredocs: Vec::new(),
        original: line.to_string(),
        span,
        comments: Vec::new(),
    })
}

/// Finds `<<EOF`, `<<-EOF`, `<<"EOF"`, `3<<EOF` words in an instruction line.
fn heredocs_in_line(line: &str) -> Result<Vec<Heredoc>, String> {
    let mut docs = Vec::new();
    for word in raw_shell_words(line) {
        let digits = word.chars().take_while(char::is_ascii_digit).count();
        let Some(rest) = word[digits..].strip_prefix("<<") else {
            continue;
        };
        let (chomp, rest) = match rest.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        if rest.is_empty() || rest.contains('<') {
            continue;
        }
        let name = unquote(rest).ok_or_else(|| format!("invalid heredoc delimiter {rest:?}"))?;
        if name.is_empty() {
            continue;
        }
        let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
        docs.push(Heredoc {
            expand: quotes(&name) == quotes(rest),
            name,
            content: String::new(),
            chomp,
            fd: word[..digits].parse().unwrap_or(0),
        });
    }
    Ok(docs)
}

/// Shell words with quotes and backslashes kept, and `$VAR`s outside single quotes removed (the
/// expansion BuildKit applies with an empty environment before looking for heredocs).
/// An unbalanced quote yields no words.
fn raw_shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut started = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
                continue;
            }
            (_, '\\') if quote != Some('\'') => {
                word.push(c);
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            (None, '\'' | '"') => {
                quote = Some(c);
                word.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                word.push(c);
            }
            (q, '$') if q != Some('\'') => match chars.peek() {
                Some('{') => {
                    for n in chars.by_ref() {
                        if n == '}' {
                            break;
                        }
                    }
                }
                Some(n) if n.is_ascii_alphabetic() || *n == '_' => {
                    while chars
                        .peek()
                        .is_some_and(|n| n.is_ascii_alphanumeric() || *n == '_')
                    {
                        chars.next();
                    }
                }
                Some(n) if n.is_ascii_digit() || "#@*$!?-".contains(*n) => {
                    chars.next();
                }
                _ => word.push(c),
            },
            _ => word.push(c),
        }
        started = true;
    }
    if quote.is_some() {
        return Vec::new();
    }
    if started {
        words.push(word);
    }
    words
}

/// Shell quote removal of one heredoc delimiter word; `None` when it is more than one word.
fn unquote(word: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => loop {
                match chars.next()? {
                    '\'' => break,
                    c => out.push(c),
                }
            },
            '"' => loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => match chars.next()? {
                        c @ ('"' | '\\' | '$' | '`') => out.push(c),
                        c => {
                            out.push('\\');
                            out.push(c);
                        }
                    },
                    c => out.push(c),
                }
            },
            '\\' => out.push(chars.next()?),
            c if c.is_whitespace() => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(src: &str) -> Vec<String> {
        parse("Dockerfile", src)
            .unwrap()
            .nodes
            .iter()
            .map(Node::dump)
            .collect()
    }

    #[test]
    fn continuation_rules() {
        assert_eq!(trim_continuation("a \\  ", '\\'), ("a ", false));
        assert_eq!(trim_continuation("a \\\\", '\\'), ("a \\\\", true));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
        assert_eq!(
            dump("FROM a\nRUN x \\\n# c\n\n  y"),
            ["(from \"a\")", "(run \"x   y\")"]
        );
    }

    #[test]
    fn heredocs_are_consumed_and_kept() {
        let src = "FROM a\nRUN <<EOF\necho $A\nEOF\nCOPY <<-\"X\" <<Y /d/\n\thi\n\tX\ny\nY\n";
        let raw = parse("Dockerfile", src).unwrap();
        assert_eq!(raw.nodes[1].dump(), "(run \"<<EOF\")");
        assert_eq!(raw.nodes[1].heredocs[0].content, "echo $A\n");
        assert!(raw.nodes[1].heredocs[0].expand);
        let docs = &raw.nodes[2].heredocs;
        assert_eq!(
            (docs[0].name.as_str(), docs[0].content.as_str()),
            ("X", "hi\n")
        );
        assert!(!docs[0].expand && docs[0].chomp);
        assert_eq!(docs[1].content, "y\n");
        assert_eq!(raw.nodes[2].span.end_line, 9);
    }

    #[test]
    fn unterminated_heredoc_is_an_error() {
        let err = parse("Dockerfile", "FROM a\nRUN <<EOF\necho\n").unwrap_err();
        assert!(err.to_string().contains("unterminated heredoc"), "{err}");
    }

    #[test]
    fn bom_and_crlf() {
        assert_eq!(
            dump("\u{feff}FROM a\r\nRUN x \\\r\n  y\r\n"),
            ["(from \"a\")", "(run \"x   y\")"]
        );
    }
}
