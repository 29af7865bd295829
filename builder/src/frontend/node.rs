//! The raw syntax tree, shaped like BuildKit's `parser.Node`: one node per instruction with its
//! keyword, leading `--flags` and argument words exactly as BuildKit's parser splits them (not
//! unquoted, not expanded). `dump` renders it like BuildKit's `Node.Dump()`, which is what the
//! shared conformance data compares against. Typed instructions are built from this tree in
//! `instruction.rs`.

use super::span::Span;

/// One instruction as the line parser sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The keyword as typed (`RUN`, `run`, `Run`...).
    pub keyword: String,
    /// Leading `--name[=value]` words, quotes removed, the `--` terminator dropped.
    pub flags: Vec<String>,
    pub args: Vec<Arg>,
    /// The arguments came from a JSON array (exec form).
    pub json: bool,
    pub heredocs: Vec<Heredoc>,
    /// The whole instruction text after joining continuation lines.
    pub original: String,
    pub span: Span,
    /// Comment lines directly above the instruction.
    pub comments: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Word(String),
    /// ONBUILD's nested instruction.
    Sub(Box<Node>),
}

impl Arg {
    pub fn as_word(&self) -> Option<&str> {
        match self {
            Arg::Word(w) => Some(w),
            Arg::Sub(_) => None,
        }
    }
}

/// A here-document attached to RUN, COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Heredoc {
    /// The delimiter word with quotes removed.
    pub name: String,
    /// The body, newline-terminated lines; leading tabs already stripped for `<<-`.
    pub content: String,
    /// False when any part of the delimiter was quoted: the body is then taken literally.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body lines and the terminator.
    pub chomp: bool,
    /// `3<<EOF` redirects file descriptor 3; 0 when not given.
    pub fd: u32,
}

impl Node {
    pub fn keyword_lower(&self) -> String {
        self.keyword.to_ascii_lowercase()
    }

    /// The argument words (ONBUILD's nested node excluded).
    pub fn words(&self) -> impl Iterator<Item = &str> {
        self.args.iter().filter_map(Arg::as_word)
    }

    /// BuildKit's `Node.Dump()` line for one instruction: `(keyword ["--flags"] "args"...)`.
    pub fn dump(&self) -> String {
        format!("({})", self.dump_inner())
    }

    fn dump_inner(&self) -> String {
        let mut s = self.keyword_lower();
        if !self.flags.is_empty() {
            s.push(' ');
            s.push('[');
            let quoted: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            s.push_str(&quoted.join(" "));
            s.push(']');
        }
        for arg in &self.args {
            s.push(' ');
            match arg {
                Arg::Word(w) => s.push_str(&go_quote(w)),
                Arg::Sub(node) => s.push_str(&node.dump()),
            }
        }
        s.trim().to_string()
    }
}

/// Go's `strconv.Quote`: printable Unicode is kept, everything else escaped.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `strconv.IsPrint` (letters, marks, numbers, punctuation, symbols
/// and the ASCII space): control, format, separator and private-use characters are escaped.
fn is_go_printable(c: char) -> bool {
    let u = c as u32;
    if u < 0x20 || u == 0x7f {
        return false;
    }
    if u < 0x7f {
        return true;
    }
    !(c.is_control()
        || (0x80..0xa0).contains(&u)
        || u == 0xa0
        || u == 0xad
        || (0x600..=0x605).contains(&u)
        || matches!(u, 0x61c | 0x6dd | 0x70f | 0x180e)
        || (0x2000..=0x200f).contains(&u)
        || (0x2028..=0x202f).contains(&u)
        || (0x205f..=0x206f).contains(&u)
        || u == 0x3000
        || u == 0xfeff
        || (0xe000..=0xf8ff).contains(&u)
        || (0xfff9..=0xfffb).contains(&u)
        || (0xd800..=0xdfff).contains(&u)
        || u >= 0xf0000)
}

#[cfg(test)]
mod tests {
    use super::go_quote;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\u{0}\t"), r#""\x00\t""#);
        assert_eq!(go_quote("♥ 한국어"), "\"♥ 한국어\"");
        assert_eq!(go_quote("\u{200b}"), r#""\u200b""#);
    }
}
