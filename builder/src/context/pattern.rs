//! Path patterns, two dialects, both as Docker reads them:
//!
//! - [`go_match`]: Go's `filepath.Match` (`*`, `?`, `[...]`, `\` escapes; `*` and `?` never
//!   match `/`). COPY/ADD source wildcards use it, one pattern against one relative path.
//! - [`PatternMatcher`]: moby's `patternmatcher`, used for `.dockerignore`, `--exclude` and
//!   `--parents`: the `filepath.Match` alphabet plus `**` (any number of path components),
//!   patterns cleaned like `filepath.Clean`, `!` exceptions, the last matching pattern wins,
//!   and a path matches when the path or any of its parent directories does.
//!
//! Both are our own implementations of the documented behaviour; the test tables come from
//! moby's `patternmatcher_test.go` and Go's `filepath` tests.
//!
//! Names that are not UTF-8 are matched with each invalid byte read as U+FFFD, as Go does.

use std::fmt;

/// A pattern that Go's `filepath.Match` would reject (`ErrBadPattern`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("syntax error in pattern {0:?}")]
    BadPattern(String),
    #[error("illegal exclusion pattern: \"!\"")]
    LoneExclamation,
}

// ---------------------------------------------------------------------------------------------
// Go's filepath.Match
// ---------------------------------------------------------------------------------------------

/// Decodes one character at the start of `b`; an invalid byte counts as U+FFFD of length 1.
fn decode(b: &[u8]) -> (char, usize) {
    let n = match b.first() {
        None => return ('\u{fffd}', 0),
        Some(&c) if c < 0x80 => return (c as char, 1),
        Some(&c) if c >= 0xf0 => 4,
        Some(&c) if c >= 0xe0 => 3,
        Some(_) => 2,
    };
    match b.get(..n).and_then(|s| std::str::from_utf8(s).ok()) {
        Some(s) => (s.chars().next().unwrap_or('\u{fffd}'), n),
        None => ('\u{fffd}', 1),
    }
}

/// Splits off a leading run of `*` and the chunk up to the next `*` outside a class.
fn scan_chunk(pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut p = pattern;
    let mut star = false;
    while let [b'*', rest @ ..] = p {
        p = rest;
        star = true;
    }
    let mut in_range = false;
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'\\' if i + 1 < p.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &p[..i], &p[i..])
}

/// One character of a class, `\` escapes honoured. Mirrors Go's `getEsc`.
fn class_char(chunk: &[u8]) -> Result<(char, &[u8]), ()> {
    let mut c = chunk;
    match c.first() {
        None | Some(b'-') | Some(b']') => return Err(()),
        Some(b'\\') => {
            c = &c[1..];
            if c.is_empty() {
                return Err(());
            }
        }
        _ => {}
    }
    let (r, n) = decode(c);
    if r == '\u{fffd}' && n == 1 && c[0] >= 0x80 {
        return Err(());
    }
    let rest = &c[n..];
    if rest.is_empty() {
        return Err(());
    }
    Ok((r, rest))
}

/// Matches `chunk` (no `*`) at the start of `s`: `Ok(Some(rest))` on a match. After a
/// mismatch the rest of the chunk is still checked for syntax, like Go.
fn match_chunk<'a>(chunk: &[u8], s: &'a [u8]) -> Result<Option<&'a [u8]>, ()> {
    let mut chunk = chunk;
    let mut s = s;
    let mut failed = false;
    while !chunk.is_empty() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match chunk[0] {
            b'[' => {
                let mut r = '\0';
                if !failed {
                    let (c, n) = decode(s);
                    r = c;
                    s = &s[n..];
                }
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&b'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if chunk.first() == Some(&b']') && ranges > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = class_char(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if chunk[0] == b'-' {
                        let (h, rest) = class_char(&chunk[1..])?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s[0] == b'/' {
                        failed = true;
                    }
                    let (_, n) = decode(s);
                    s = &s[n..];
                }
                chunk = &chunk[1..];
            }
            c => {
                let c = if c == b'\\' {
                    chunk = &chunk[1..];
                    *chunk.first().ok_or(())?
                } else {
                    c
                };
                if !failed {
                    if c != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Ok(if failed { None } else { Some(s) })
}

/// Go's `filepath.Match(pattern, name)` on Linux.
pub fn go_match(pattern: &str, name: &str) -> Result<bool, PatternError> {
    let bad = || PatternError::BadPattern(pattern.to_string());
    let mut pat = pattern.as_bytes();
    let mut name = name.as_bytes();
    'outer: while !pat.is_empty() {
        let (star, chunk, rest) = scan_chunk(pat);
        pat = rest;
        if star && chunk.is_empty() {
            // A trailing `*` takes the rest of the name unless it holds a `/`.
            return Ok(!name.contains(&b'/'));
        }
        match match_chunk(chunk, name) {
            Ok(Some(t)) if t.is_empty() || !pat.is_empty() => {
                name = t;
                continue;
            }
            Ok(_) => {}
            Err(()) => return Err(bad()),
        }
        if star {
            // Try again after skipping 1..n bytes; a `*` cannot skip a `/`.
            let mut i = 0;
            while i < name.len() && name[i] != b'/' {
                match match_chunk(chunk, &name[i + 1..]) {
                    Ok(Some(t)) => {
                        if pat.is_empty() && !t.is_empty() {
                            i += 1;
                            continue;
                        }
                        name = t;
                        continue 'outer;
                    }
                    Ok(None) => {}
                    Err(()) => return Err(bad()),
                }
                i += 1;
            }
        }
        // Before answering "no", the rest of the pattern must still be well-formed.
        while !pat.is_empty() {
            let (_, chunk, rest) = scan_chunk(pat);
            pat = rest;
            match_chunk(chunk, b"").map_err(|_| bad())?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Whether a COPY source has wildcard characters (`*`, `?`, `[`), skipping `\`-escaped ones.
pub fn has_wildcards(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// Go's `path.Clean`: lexical, `..` above a rooted path is dropped, empty becomes `.`.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            c => out.push(c),
        }
    }
    let body = out.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".into(),
        (false, false) => body,
    }
}

// ---------------------------------------------------------------------------------------------
// moby/patternmatcher
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `?`: one character other than `/`.
    One,
    /// `*`: any run of characters without `/`.
    Star,
    /// `**` followed by more pattern: empty, or anything ending with `/`.
    AnyDirs,
    /// `**` at the end: anything.
    Any,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// How a pattern is matched; the shortcuts are part of the behaviour (`**file` matches
/// `dir/myfile` through the suffix rule).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Exact,
    /// Pattern ends with `**` after literal text: the path starts with that text.
    Prefix(String),
    /// Pattern starts with `**` followed by literal text.
    Suffix(String),
    Tokens(Vec<Token>),
}

/// One cleaned pattern of a [`PatternMatcher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    cleaned: String,
    exclusion: bool,
    kind: Kind,
}

impl Pattern {
    /// The pattern after cleaning, without its `!`.
    pub fn as_str(&self) -> &str {
        &self.cleaned
    }

    /// A `!` exception.
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    fn compile(cleaned: &str) -> Kind {
        #[derive(PartialEq)]
        enum Detected {
            Exact,
            Prefix,
            Suffix,
            Regexp,
        }
        let chars: Vec<char> = cleaned.chars().collect();
        let mut tokens = Vec::new();
        let mut detected = Detected::Exact;
        let mut i = 0;
        let mut step = 0;
        while i < chars.len() {
            let ch = chars[i];
            i += 1;
            match ch {
                '*' if chars.get(i) == Some(&'*') => {
                    i += 1;
                    // `**/` is read as `**`.
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    if i >= chars.len() {
                        if detected == Detected::Exact {
                            detected = Detected::Prefix;
                        } else {
                            detected = Detected::Regexp;
                        }
                        tokens.push(Token::Any);
                    } else {
                        detected = Detected::Regexp;
                        tokens.push(Token::AnyDirs);
                    }
                    if step == 0 {
                        detected = Detected::Suffix;
                    }
                }
                '*' => {
                    tokens.push(Token::Star);
                    detected = Detected::Regexp;
                }
                '?' => {
                    tokens.push(Token::One);
                    detected = Detected::Regexp;
                }
                '\\' => {
                    if i < chars.len() {
                        tokens.push(Token::Char(chars[i]));
                        i += 1;
                        detected = Detected::Regexp;
                    } else {
                        tokens.push(Token::Char('\\'));
                    }
                }
                '[' => {
                    // Validated by go_match already; parse the class the way it does.
                    let (class, used) = parse_class(&chars[i..]);
                    tokens.push(class);
                    i += used;
                    detected = Detected::Regexp;
                }
                ']' => {
                    tokens.push(Token::Char(']'));
                    detected = Detected::Regexp;
                }
                c => tokens.push(Token::Char(c)),
            }
            step += 1;
        }
        match detected {
            Detected::Exact => Kind::Exact,
            Detected::Prefix => Kind::Prefix(cleaned[..cleaned.len() - 2].to_string()),
            Detected::Suffix => Kind::Suffix(cleaned[2..].to_string()),
            Detected::Regexp => Kind::Tokens(tokens),
        }
    }

    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.cleaned,
            Kind::Prefix(p) => path.starts_with(p.as_str()),
            Kind::Suffix(s) => {
                path.ends_with(s.as_str()) || (s.starts_with('/') && path == &s[1..])
            }
            Kind::Tokens(t) => {
                let chars: Vec<char> = path.chars().collect();
                match_tokens(t, &chars)
            }
        }
    }
}

/// Parses a class body (after `[`) as `filepath.Match` reads it; returns the token and how
/// many characters it used, `]` included.
fn parse_class(chars: &[char]) -> (Token, usize) {
    let mut i = 0;
    let negated = chars.first() == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let esc = |i: &mut usize| -> Option<char> {
        let mut c = *chars.get(*i)?;
        if c == '\\' {
            *i += 1;
            c = *chars.get(*i)?;
        }
        *i += 1;
        Some(c)
    };
    loop {
        if chars.get(i) == Some(&']') && !ranges.is_empty() {
            i += 1;
            break;
        }
        let Some(lo) = esc(&mut i) else { break };
        let mut hi = lo;
        if chars.get(i) == Some(&'-') {
            i += 1;
            match esc(&mut i) {
                Some(h) => hi = h,
                None => break,
            }
        }
        ranges.push((lo, hi));
    }
    (Token::Class { negated, ranges }, i)
}

/// Anchored match of `tokens` against the whole of `s` (backtracking; patterns are short).
fn match_tokens(tokens: &[Token], s: &[char]) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return s.is_empty();
    };
    match first {
        Token::Char(c) => s.first() == Some(c) && match_tokens(rest, &s[1..]),
        Token::One => s.first().is_some_and(|&c| c != '/') && match_tokens(rest, &s[1..]),
        Token::Class { negated, ranges } => {
            s.first().is_some_and(|c| {
                let hit = ranges.iter().any(|(lo, hi)| lo <= c && c <= hi);
                hit != *negated
            }) && match_tokens(rest, &s[1..])
        }
        Token::Star => {
            let mut i = 0;
            loop {
                if match_tokens(rest, &s[i..]) {
                    return true;
                }
                if i >= s.len() || s[i] == '/' {
                    return false;
                }
                i += 1;
            }
        }
        Token::Any => (0..=s.len()).any(|i| match_tokens(rest, &s[i..])),
        Token::AnyDirs => {
            // `(.*/)?`: nothing, or any prefix that ends with `/`.
            match_tokens(rest, s)
                || (0..s.len()).any(|i| s[i] == '/' && match_tokens(rest, &s[i + 1..]))
        }
    }
}

/// Which patterns matched a directory, handed down to its children while walking so that
/// a child of a matched directory matches without re-testing (moby's `MatchInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

/// An ordered list of patterns with `!` exceptions: the last pattern that matches decides.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

impl fmt::Debug for PatternMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self
            .patterns
            .iter()
            .map(|p| format!("{}{}", if p.exclusion { "!" } else { "" }, p.cleaned))
            .collect();
        f.debug_tuple("PatternMatcher").field(&list).finish()
    }
}

impl PatternMatcher {
    /// Builds a matcher: each pattern is trimmed, skipped when empty, cleaned, and checked
    /// for `filepath.Match` syntax.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        let mut out = PatternMatcher::default();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let mut p = clean(p);
            let mut exclusion = false;
            if let Some(rest) = p.strip_prefix('!') {
                if rest.is_empty() {
                    return Err(PatternError::LoneExclamation);
                }
                exclusion = true;
                out.exclusions = true;
                p = rest.to_string();
            }
            go_match(&p, ".")?;
            out.patterns.push(Pattern {
                kind: Pattern::compile(&p),
                cleaned: p,
                exclusion,
            });
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether any pattern is a `!` exception.
    pub fn has_exclusions(&self) -> bool {
        self.exclusions
    }

    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// The path itself matches (no parent-directory rule).
    pub fn matches_exact(&self, path: &str) -> bool {
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            if p.matches(path) {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// The path or one of its parent directories matches; `.` never does.
    pub fn matches_or_parent_matches(&self, path: &str) -> bool {
        let path = clean(path);
        if path == "." {
            return false;
        }
        let parents: Vec<&str> = match path.rfind('/') {
            Some(i) => path[..i].split('/').collect(),
            None => Vec::new(),
        };
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let mut hit = p.matches(&path);
            if !hit {
                for i in 1..=parents.len() {
                    if p.matches(&parents[..i].join("/")) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// Like [`Self::matches_or_parent_matches`], with the parent directory's result given
    /// (use `MatchInfo::default()` when it is not known).
    pub fn matches_using_parent_results(
        &self,
        path: &str,
        parent: &MatchInfo,
    ) -> (bool, MatchInfo) {
        let known = !parent.parent_matched.is_empty();
        let mut info = MatchInfo {
            parent_matched: vec![false; self.patterns.len()],
        };
        let mut matched = false;
        for (i, p) in self.patterns.iter().enumerate() {
            let mut hit = known && parent.parent_matched.get(i).copied().unwrap_or(false);
            if !hit {
                if p.exclusion != matched {
                    continue;
                }
                hit = p.matches(path);
                if !hit && !known {
                    if let Some(slash) = path.rfind('/') {
                        let dirs: Vec<&str> = path[..slash].split('/').collect();
                        hit = (1..=dirs.len()).any(|n| p.matches(&dirs[..n].join("/")));
                    }
                }
            }
            info.parent_matched[i] = hit;
            if hit {
                matched = !p.exclusion;
            }
        }
        (matched, info)
    }

    /// Whether a `!` exception (or, for `includes`, an include pattern) could match
    /// something inside directory `dir`, judged the way fsutil does before skipping a
    /// directory: `None` when some pattern has wildcards and no cheap answer exists.
    pub fn may_match_inside(&self, dir: &str, exclusions: bool) -> Option<bool> {
        let relevant: Vec<&Pattern> = self
            .patterns
            .iter()
            .filter(|p| p.exclusion == exclusions)
            .collect();
        if relevant
            .iter()
            .any(|p| without_trailing_glob(&p.cleaned).contains(['*', '[', ']', '?', '^', '\\']))
        {
            return None;
        }
        let dir_slash = format!("{dir}/");
        Some(
            relevant
                .iter()
                .any(|p| format!("{}/", without_trailing_glob(&p.cleaned)).starts_with(&dir_slash)),
        )
    }
}

fn without_trailing_glob(p: &str) -> &str {
    let p = p.strip_suffix("/**").unwrap_or(p);
    p.strip_suffix("/*").unwrap_or(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_match_table() {
        // From Go's filepath match tests.
        let cases: &[(&str, &str, Result<bool, ()>)] = &[
            ("abc", "abc", Ok(true)),
            ("*", "abc", Ok(true)),
            ("*c", "abc", Ok(true)),
            ("a*", "a", Ok(true)),
            ("a*", "abc", Ok(true)),
            ("a*", "ab/c", Ok(false)),
            ("a*/b", "abc/b", Ok(true)),
            ("a*/b", "a/c/b", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Ok(false)),
            ("a*b?c*x", "abxbbxdbxebxczzx", Ok(true)),
            ("a*b?c*x", "abxbbxdbxebxczzy", Ok(false)),
            ("ab[c]", "abc", Ok(true)),
            ("ab[b-d]", "abc", Ok(true)),
            ("ab[e-g]", "abc", Ok(false)),
            ("ab[^c]", "abc", Ok(false)),
            ("ab[^b-d]", "abc", Ok(false)),
            ("ab[^e-g]", "abc", Ok(true)),
            ("a\\*b", "a*b", Ok(true)),
            ("a\\*b", "ab", Ok(false)),
            ("a?b", "a☺b", Ok(true)),
            ("a[^a]b", "a☺b", Ok(true)),
            ("a???b", "a☺b", Ok(false)),
            ("a[^a][^a][^a]b", "a☺b", Ok(false)),
            ("[a-ζ]*", "α", Ok(true)),
            ("*[a-ζ]", "A", Ok(false)),
            ("a?b", "a/b", Ok(false)),
            ("a*b", "a/b", Ok(false)),
            ("[\\]a]", "]", Ok(true)),
            ("[\\-]", "-", Ok(true)),
            ("[x\\-]", "x", Ok(true)),
            ("[x\\-]", "-", Ok(true)),
            ("[x\\-]", "z", Ok(false)),
            ("[\\-x]", "x", Ok(true)),
            ("[\\-x]", "-", Ok(true)),
            ("[\\-x]", "a", Ok(false)),
            ("[]a]", "]", Err(())),
            ("[-]", "-", Err(())),
            ("[x-]", "x", Err(())),
            ("[x-]", "-", Err(())),
            ("[x-]", "z", Err(())),
            ("[-x]", "x", Err(())),
            ("[-x]", "-", Err(())),
            ("[-x]", "a", Err(())),
            ("\\", "a", Err(())),
            ("[a-b-c]", "a", Err(())),
            ("[", "a", Err(())),
            ("[^", "a", Err(())),
            ("[^bc", "a", Err(())),
            ("a[", "a", Err(())),
            ("a[", "ab", Err(())),
            ("a[", "x", Err(())),
            ("a/b[", "x", Err(())),
            ("*x", "xxx", Ok(true)),
        ];
        for (p, s, want) in cases {
            let got = go_match(p, s).map_err(|_| ());
            assert_eq!(&got, want, "go_match({p:?}, {s:?})");
        }
    }

    #[test]
    fn clean_like_go() {
        for (i, o) in [
            ("", "."),
            ("a/c", "a/c"),
            ("a//c", "a/c"),
            ("a/c/.", "a/c"),
            ("a/c/b/..", "a/c"),
            ("/../a/c", "/a/c"),
            ("../../a", "../../a"),
            ("a/../..", ".."),
            ("/", "/"),
            ("./x/", "x"),
            ("abc/def/../../..", ".."),
        ] {
            assert_eq!(clean(i), o, "clean({i:?})");
        }
    }

    #[test]
    fn compile_kinds() {
        let k = |p: &str| Pattern::compile(p);
        assert_eq!(k("**"), Kind::Suffix(String::new()));
        assert_eq!(k("dir/**"), Kind::Prefix("dir/".into()));
        assert_eq!(k("**/dir"), Kind::Suffix("/dir".into()));
        assert_eq!(k("**file"), Kind::Suffix("file".into()));
        assert_eq!(k("abc.def"), Kind::Exact);
        assert!(matches!(k("**/**"), Kind::Tokens(_)));
    }
}
