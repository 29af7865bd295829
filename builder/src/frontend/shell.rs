//! Shell-word expansion for Dockerfile instructions.
//!
//! This reproduces BuildKit's `frontend/dockerfile/shell` lexer (`lex.go`, `NewLex` with
//! `RawQuotes`, `RawEscapes`, `SkipProcessQuotes` and `SkipUnsetEnv` all off), including its
//! quirks, because a Dockerfile must mean the same thing under rbuild as under BuildKit:
//!
//! * `$v`, `${v}`, `${v:-w}`, `${v-w}`, `${v:+w}`, `${v+w}`, `${v:?msg}`, `${v?msg}`;
//!   `${v#p}`, `${v##p}`, `${v%p}`, `${v%%p}`, `${v/p/r}`, `${v//p/r}`. Anything else in braces
//!   is an error. Positional and special parameters (`$1`, `$@`, `${#}`, ...) are never set.
//! * Patterns are BuildKit's shell-to-regex translation: `*` and `?` are wildcards that never
//!   match a newline (Go's `.`), `[...]` has no special meaning, a backslash escapes only `*`,
//!   `?` and `\` (`\}` and `\/` just protect the `${}` syntax; any other `\x` is an "invalid
//!   escape" error) and does so even when the Dockerfile's escape character is a backtick, and
//!   quotes do not make pattern characters literal. `${v/p/r}` replaces the leftmost match with `*` greedy; `${v//p/r}`
//!   follows Go's `Regexp.ReplaceAllString`, so `$0`/`${0}` in the replacement is the matched
//!   text and `$$` is `$`.
//! * Field splitting ([`Lexer::process_words`]) splits the text of unquoted `$` expansions and
//!   unquoted literal whitespace; quoted text and escaped characters never split, and empty
//!   fields (e.g. from `""`) are dropped.
//!
//! Two deliberate divergences, neither reachable by a realistic Dockerfile: variable names are
//! classified with Rust's Unicode tables (Go's `unicode.IsLetter`/`IsDigit` differ for some
//! exotic non-ASCII characters), and `${...}` nesting deeper than [`MAX_NESTING`] is an error
//! instead of unbounded recursion.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;

/// Deepest `${...}` nesting accepted. BuildKit has no limit (Go stacks grow); we recurse on a
/// fixed native stack, and 64 levels need about 300 KiB of it in a debug build.
pub const MAX_NESTING: usize = 64;

/// What Go prints for `string(rune(EOF))`, which BuildKit puts in some error messages.
const EOF_CHAR: char = '\u{FFFD}';
const MISSING_BRACE: &str = "syntax error: missing '}'";

/// Where variables come from.
///
/// Implemented for `[(String, String)]` slices/arrays/`Vec` (the last entry with a name wins,
/// like BuildKit's `BuildEnvs`), `BTreeMap<String, String>`, `HashMap<String, String>` and
/// references to any of these.
pub trait Env {
    /// The value of `name`, or `None` when it is unset (set-but-empty is `Some("")`).
    fn get(&self, name: &str) -> Option<&str>;
}

impl Env for [(String, String)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl<const N: usize> Env for [(String, String); N] {
    fn get(&self, name: &str) -> Option<&str> {
        Env::get(self.as_slice(), name)
    }
}

impl Env for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        Env::get(self.as_slice(), name)
    }
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }
}

impl<S: BuildHasher> Env for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }
}

impl<T: Env + ?Sized> Env for &T {
    fn get(&self, name: &str) -> Option<&str> {
        (**self).get(name)
    }
}

/// A word that could not be expanded. Displays like BuildKit's error:
/// `failed to process "he${X?}": X: is not allowed to be unset`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {}: {reason}", super::node::go_quote(.word))]
pub struct ShellError {
    word: String,
    reason: String,
}

impl ShellError {
    /// The word as given to the lexer.
    pub fn word(&self) -> &str {
        &self.word
    }

    /// What went wrong, without the word (e.g. `syntax error: bad substitution`).
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// BuildKit's shell-word lexer, parameterised by the Dockerfile's escape character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
}

impl Default for Lexer {
    fn default() -> Self {
        Self::new('\\')
    }
}

impl Lexer {
    /// `escape` is `\` by default, `` ` `` when the Dockerfile says `# escape=``.
    pub fn new(escape: char) -> Self {
        Self { escape }
    }

    /// The escape character this lexer was built with.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Expands one word: variable expansion and quote removal, no field splitting
    /// (BuildKit's `ProcessWord`).
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<String, ShellError> {
        self.run(word, env).map(|out| out.text)
    }

    /// Expands and splits a word into fields (BuildKit's `ProcessWords`).
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ShellError> {
        self.run(word, env).map(|out| out.fields.finish())
    }

    /// Like process_word, and also the names of variables referenced but unset (for the
    /// "UndefinedVar" warning). Like BuildKit's `Unmatched` set this includes every lookup that
    /// missed, even in branches whose result was not used (`${SET:-$UNSET}`) and even names
    /// that can never be set (`1`, `@`).
    pub fn process_word_with_unset(
        &self,
        word: &str,
        env: &dyn Env,
    ) -> Result<(String, BTreeSet<String>), ShellError> {
        self.run(word, env).map(|out| (out.text, out.unset))
    }

    fn run(&self, word: &str, env: &dyn Env) -> Result<Outcome, ShellError> {
        let mut expander = Expander {
            sc: Scanner::new(word),
            env,
            escape: self.escape,
            unset: BTreeSet::new(),
            depth: 0,
        };
        match expander.process_until(None, false) {
            Ok((text, fields)) => Ok(Outcome {
                text,
                fields,
                unset: expander.unset,
            }),
            Err(reason) => Err(ShellError {
                word: word.to_owned(),
                reason,
            }),
        }
    }
}

struct Outcome {
    text: String,
    fields: Fields,
    unset: BTreeSet<String>,
}

/// Character cursor with the behaviour of Go's `text/scanner` `Peek`/`Next`, which BuildKit
/// uses: a byte-order mark at the very start of the input is silently skipped.
struct Scanner {
    chars: Vec<char>,
    pos: usize,
}

impl Scanner {
    fn new(s: &str) -> Self {
        let chars: Vec<char> = s.chars().collect();
        let pos = usize::from(chars.first() == Some(&'\u{FEFF}'));
        Self { chars, pos }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }
}

/// Field splitting as BuildKit's `wordsStruct` does it.
#[derive(Default)]
struct Fields {
    current: String,
    done: Vec<String>,
}

impl Fields {
    /// Unquoted text: whitespace ends the current field.
    fn push_char(&mut self, c: char) {
        if c.is_whitespace() {
            if !self.current.is_empty() {
                self.done.push(std::mem::take(&mut self.current));
            }
        } else {
            self.current.push(c);
        }
    }

    fn push_str(&mut self, s: &str) {
        s.chars().for_each(|c| self.push_char(c));
    }

    /// Quoted or escaped text: never splits.
    fn push_raw_char(&mut self, c: char) {
        self.current.push(c);
    }

    fn push_raw_str(&mut self, s: &str) {
        self.current.push_str(s);
    }

    fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}

struct Expander<'a> {
    sc: Scanner,
    env: &'a dyn Env,
    escape: char,
    unset: BTreeSet<String>,
    depth: usize,
}

impl<'a> Expander<'a> {
    fn lookup(&mut self, name: &str) -> Option<&'a str> {
        let env: &'a dyn Env = self.env;
        let value = env.get(name);
        if value.is_none() {
            self.unset.insert(name.to_owned());
        }
        value
    }

    /// Reads up to (and consumes) `stop`, or to the end of input when `stop` is `None`.
    /// `raw_escapes` keeps escape characters in the output: pattern operands need them so the
    /// pattern compiler can tell `\*` from `*`.
    fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Fields), String> {
        let mut text = String::new();
        let mut fields = Fields::default();
        while let Some(ch) = self.sc.peek() {
            if Some(ch) == stop {
                self.sc.next();
                return Ok((text, fields));
            }
            match ch {
                '$' => {
                    let value = self.process_dollar()?;
                    text.push_str(&value);
                    fields.push_str(&value);
                }
                '\'' => {
                    let value = self.process_single_quote()?;
                    text.push_str(&value);
                    fields.push_raw_str(&value);
                }
                '"' => {
                    let value = self.process_double_quote(raw_escapes)?;
                    text.push_str(&value);
                    fields.push_raw_str(&value);
                }
                _ => {
                    self.sc.next();
                    if ch == self.escape {
                        if raw_escapes {
                            fields.push_raw_char(ch);
                            text.push(ch);
                        }
                        // A trailing escape character is dropped.
                        let Some(escaped) = self.sc.next() else { break };
                        fields.push_raw_char(escaped);
                        text.push(escaped);
                    } else {
                        fields.push_char(ch);
                        text.push(ch);
                    }
                }
            }
        }
        match stop {
            Some(stop) => Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            )),
            None => Ok((text, fields)),
        }
    }

    /// `'...'`: everything literal, no escapes at all.
    fn process_single_quote(&mut self) -> Result<String, String> {
        self.sc.next();
        let mut text = String::new();
        loop {
            match self.sc.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .to_owned(),
                    )
                }
                Some('\'') => return Ok(text),
                Some(c) => text.push(c),
            }
        }
    }

    /// `"..."`: `$` expands; the escape character only escapes `"`, `$` and itself and is kept
    /// literally before anything else.
    fn process_double_quote(&mut self, raw_escapes: bool) -> Result<String, String> {
        self.sc.next();
        let mut text = String::new();
        loop {
            match self.sc.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .to_owned(),
                    )
                }
                Some('"') => {
                    self.sc.next();
                    return Ok(text);
                }
                Some('$') => text.push_str(&self.process_dollar()?),
                Some(mut ch) => {
                    self.sc.next();
                    if ch == self.escape {
                        if raw_escapes {
                            text.push(ch);
                        }
                        match self.sc.peek() {
                            // BuildKit drops it and then fails on the missing quote.
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.escape => {
                                self.sc.next();
                                ch = next;
                            }
                            Some(_) => {}
                        }
                    }
                    text.push(ch);
                }
            }
        }
    }

    fn process_dollar(&mut self) -> Result<String, String> {
        self.sc.next();
        if self.sc.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(self.lookup(&name).unwrap_or_default().to_owned());
        }
        self.sc.next();
        match self.sc.peek() {
            None => return Err(MISSING_BRACE.to_owned()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".to_owned()),
            Some(_) => {}
        }
        if self.depth >= MAX_NESTING {
            return Err(format!(
                "syntax error: substitutions nested more than {MAX_NESTING} deep"
            ));
        }
        self.depth += 1;
        let result = self.process_braced();
        self.depth -= 1;
        result
    }

    /// The inside of `${...}`, after the `{`.
    fn process_braced(&mut self) -> Result<String, String> {
        let name = self.process_name();
        let ch = self.sc.next();
        let mut modifier = String::from(ch.unwrap_or(EOF_CHAR));
        match ch {
            Some('}') => Ok(self.lookup(&name).unwrap_or_default().to_owned()),
            // BuildKit falls through from `:` to the operator handling whatever the next
            // character is, so `${v:#p}` is `${v#p}` and `${v:}x}` reads up to the second `}`.
            Some(':' | '+' | '-' | '?' | '#' | '%') => {
                let (null_is_unset, op) = if ch == Some(':') {
                    let op = self.sc.next();
                    modifier.push(op.unwrap_or(EOF_CHAR));
                    (true, op)
                } else {
                    (false, ch)
                };
                let raw_escapes = matches!(op, Some('#' | '%'));
                let word = self.word_until('}', raw_escapes, MISSING_BRACE)?;
                let value = self.lookup(&name);
                let unset_or_null = match value {
                    None => true,
                    Some(v) => null_is_unset && v.is_empty(),
                };
                match op {
                    Some('-') if unset_or_null => Ok(word),
                    Some('-') => Ok(value.unwrap_or_default().to_owned()),
                    Some('+') if unset_or_null => Ok(String::new()),
                    Some('+') => Ok(word),
                    Some('?') => match value {
                        Some(v) if !unset_or_null => Ok(v.to_owned()),
                        _ => {
                            let message = if !word.is_empty() {
                                word.as_str()
                            } else if value.is_none() {
                                "is not allowed to be unset"
                            } else {
                                "is not allowed to be empty"
                            };
                            Err(format!("{name}: {message}"))
                        }
                    },
                    Some(op @ ('#' | '%')) => {
                        // The operand is checked after expansion, so `${v#$P}` with P="#x" is
                        // a longest match for "x".
                        let (pattern, greedy) = match word.strip_prefix(op) {
                            Some(rest) => (rest, true),
                            None => (word.as_str(), false),
                        };
                        let value = value.unwrap_or_default();
                        if op == '%' {
                            trim_suffix(pattern, value, greedy)
                        } else {
                            trim_prefix(pattern, value, greedy)
                        }
                    }
                    _ => Err(unsupported_modifier(&modifier)),
                }
            }
            Some('/') => {
                let replace_all = self.sc.peek() == Some('/');
                if replace_all {
                    self.sc.next();
                }
                let pattern = self.word_until('/', true, "syntax error: missing '/' in ${}")?;
                let replacement = self.word_until('}', true, MISSING_BRACE)?;
                let value = self.lookup(&name).unwrap_or_default();
                let re = Pattern::compile(&pattern, true)
                    .map_err(|err| invalid_pattern(&pattern, &err))?;
                let chars: Vec<char> = value.chars().collect();
                if replace_all {
                    Ok(re.replace_all(&chars, &replacement))
                } else if let Some((start, end)) = re.find_at(&chars, 0, false) {
                    let mut out: String = chars[..start].iter().collect();
                    out.push_str(&replacement);
                    out.extend(&chars[end..]);
                    Ok(out)
                } else {
                    Ok(value.to_owned())
                }
            }
            _ => Err(unsupported_modifier(&modifier)),
        }
    }

    /// An operand of `${...}`, up to `stop`. Running out of input reports `eof_message` instead
    /// of whatever the inner scan said, as BuildKit does.
    fn word_until(
        &mut self,
        stop: char,
        raw_escapes: bool,
        eof_message: &str,
    ) -> Result<String, String> {
        match self.process_until(Some(stop), raw_escapes) {
            Ok((word, _)) => Ok(word),
            Err(_) if self.sc.peek().is_none() => Err(eof_message.to_owned()),
            Err(err) => Err(err),
        }
    }

    /// A variable name: a run of digits, one special-parameter character, or a run of letters,
    /// digits and `_`. May be empty.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.sc.peek() {
            if name.is_empty() && is_go_digit(ch) {
                while let Some(d) = self.sc.peek().filter(|&d| is_go_digit(d)) {
                    self.sc.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.sc.next();
                return ch.to_string();
            }
            if !is_go_letter(ch) && !is_go_digit(ch) && ch != '_' {
                break;
            }
            self.sc.next();
            name.push(ch);
        }
        name
    }
}

fn unsupported_modifier(modifier: &str) -> String {
    format!("unsupported modifier ({modifier}) in substitution")
}

fn invalid_pattern(pattern: &str, err: &str) -> String {
    format!("invalid pattern ({pattern}) in substitution: {err}")
}

/// POSIX special parameters; `0` never gets here because digits are read first.
fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// Go's `unicode.IsLetter` (categories L*): exact for ASCII; elsewhere Rust's `Alphabetic`
/// minus the letter-numbers, which is close but not identical.
fn is_go_letter(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphabetic()
    } else {
        c.is_alphabetic() && !c.is_numeric()
    }
}

/// Go's `unicode.IsDigit` (category Nd): exact for Latin-1; elsewhere Rust's `Numeric` minus
/// the letter-numbers, which still counts other numbers such as `①`.
fn is_go_digit(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_digit()
    } else if (c as u32) < 0x100 {
        false
    } else {
        c.is_numeric() && !c.is_alphabetic()
    }
}

/// `%#` operands: remove the shortest (longest when `greedy`) prefix of `value` matching
/// `pattern`.
fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let re = Pattern::compile(pattern, greedy).map_err(|err| invalid_pattern(pattern, &err))?;
    let chars: Vec<char> = value.chars().collect();
    Ok(match re.find_at(&chars, 0, true) {
        Some((_, end)) => chars[end..].iter().collect(),
        None => value.to_owned(),
    })
}

/// Suffix trimming is prefix trimming of the reversed value with the reversed pattern, exactly
/// as BuildKit does it (so an invalid pattern is reported reversed, too).
fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let reversed_value: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed_value, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

/// Reverses a pattern but keeps each `\x` pair in order (`a\*c` → `c\*a`).
fn reverse_pattern(pattern: &str) -> String {
    let src: Vec<char> = pattern.chars().collect();
    let mut out = src.clone();
    let mut i = 0;
    while i < src.len() {
        let at = src.len() - 1 - i;
        match src.get(i + 1) {
            Some(&next) if src[i] == '\\' => {
                // i + 1 < len, so at >= 1.
                out[at - 1] = '\\';
                out[at] = next;
                i += 2;
            }
            _ => {
                out[at] = src[i];
                i += 1;
            }
        }
    }
    out.into_iter().collect()
}

/// One instruction of the tiny regex program BuildKit's patterns compile to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inst {
    Char(char),
    /// Go's `.` without the `s` flag.
    AnyNotNl,
    /// Try the first target, then the second (priority order).
    Split(usize, usize),
    Jmp(usize),
    Match,
}

/// A compiled shell pattern with Go `regexp` leftmost-first semantics, run as a Pike VM so
/// matching is linear in the value length whatever the pattern.
#[derive(Debug)]
struct Pattern {
    prog: Vec<Inst>,
}

impl Pattern {
    /// BuildKit's `convertShellPatternToRegex`, minus the `^` (see `find_at`'s `anchored`).
    fn compile(pattern: &str, greedy: bool) -> Result<Self, String> {
        let mut chars = pattern.chars().peekable();
        // BuildKit reads the pattern with a fresh text/scanner, which drops a leading BOM.
        chars.next_if_eq(&'\u{FEFF}');
        let mut prog = Vec::new();
        while let Some(c) = chars.next() {
            match c {
                '*' => {
                    let at = prog.len();
                    let (body, out) = (at + 1, at + 3);
                    prog.push(if greedy {
                        Inst::Split(body, out)
                    } else {
                        Inst::Split(out, body)
                    });
                    prog.push(Inst::AnyNotNl);
                    prog.push(Inst::Jmp(at));
                }
                '?' => prog.push(Inst::AnyNotNl),
                '\\' => {
                    // `\}` and `\/` only protect ${} syntax; the next char is then literal.
                    if matches!(chars.peek(), Some('}' | '/')) {
                        continue;
                    }
                    match chars.next() {
                        Some(e @ ('*' | '?' | '\\')) => prog.push(Inst::Char(e)),
                        other => {
                            return Err(format!("invalid escape '\\{}'", other.unwrap_or(EOF_CHAR)))
                        }
                    }
                }
                c => prog.push(Inst::Char(c)),
            }
        }
        prog.push(Inst::Match);
        Ok(Self { prog })
    }

    /// Leftmost-first match (as Go's `regexp`) starting at or after `from`, or exactly at
    /// `from` when `anchored`. Positions are char indices into `text`.
    fn find_at(&self, text: &[char], from: usize, anchored: bool) -> Option<(usize, usize)> {
        let mut vm = Vm {
            prog: &self.prog,
            marks: vec![0; self.prog.len()],
            stack: Vec::new(),
        };
        // Threads are (pc, match start), highest priority first.
        let mut current: Vec<(usize, usize)> = Vec::new();
        let mut next: Vec<(usize, usize)> = Vec::new();
        let mut generation = 1u64;
        let mut matched = None;
        let mut pos = from;
        loop {
            if current.is_empty() && (matched.is_some() || (anchored && pos != from)) {
                break;
            }
            if matched.is_none() && (!anchored || pos == from) {
                // A match starting here ranks below every match that started earlier.
                vm.add(&mut current, generation, 0, pos);
            }
            let c = text.get(pos).copied();
            let next_generation = generation + 1;
            next.clear();
            for &(pc, start) in &current {
                match self.prog.get(pc) {
                    Some(Inst::Match) => {
                        // Everything after this thread has lower priority: drop it.
                        matched = Some((start, pos));
                        break;
                    }
                    Some(&Inst::Char(want)) if c == Some(want) => {
                        vm.add(&mut next, next_generation, pc + 1, start);
                    }
                    Some(Inst::AnyNotNl) if c.is_some_and(|c| c != '\n') => {
                        vm.add(&mut next, next_generation, pc + 1, start);
                    }
                    _ => {}
                }
            }
            if c.is_none() {
                break;
            }
            std::mem::swap(&mut current, &mut next);
            generation = next_generation;
            pos += 1;
        }
        matched
    }

    /// Go's `Regexp.ReplaceAllString`, including its handling of empty matches and its `$`
    /// template syntax in the replacement.
    fn replace_all(&self, text: &[char], template: &str) -> String {
        let template: Vec<char> = template.chars().collect();
        let mut out = String::new();
        let mut last_end = 0;
        let mut search = 0;
        while search <= text.len() {
            let Some((start, end)) = self.find_at(text, search, false) else {
                break;
            };
            out.extend(&text[last_end..start]);
            // No replacement for an empty match right after the previous match.
            if end > last_end || start == 0 {
                expand_template(&mut out, &template, &text[start..end]);
            }
            last_end = end;
            let width = usize::from(search < text.len());
            if search + width > end {
                search += width;
            } else if search + 1 > end {
                search += 1;
            } else {
                search = end;
            }
        }
        out.extend(&text[last_end..]);
        out
    }
}

struct Vm<'p> {
    prog: &'p [Inst],
    /// `marks[pc] == generation` when pc is already on the list being built.
    marks: Vec<u64>,
    stack: Vec<usize>,
}

impl Vm<'_> {
    /// Adds the thread at `pc` and everything reachable through jumps, in priority order,
    /// skipping pcs a higher-priority thread already holds. Iterative: patterns of thousands of
    /// `*` must not recurse.
    fn add(&mut self, list: &mut Vec<(usize, usize)>, generation: u64, pc: usize, start: usize) {
        self.stack.push(pc);
        while let Some(pc) = self.stack.pop() {
            let Some(mark) = self.marks.get_mut(pc) else {
                continue;
            };
            if *mark == generation {
                continue;
            }
            *mark = generation;
            match self.prog.get(pc) {
                Some(&Inst::Jmp(to)) => self.stack.push(to),
                Some(&Inst::Split(first, second)) => {
                    self.stack.push(second);
                    self.stack.push(first);
                }
                _ => list.push((pc, start)),
            }
        }
    }
}

/// Go's `Regexp.expand` for a regex without capture groups: `$$` is `$`, `$0`/`${0}` is the
/// match, any other well-formed `$name`/`${name}` is empty, a malformed `$` stays literal.
fn expand_template(out: &mut String, template: &[char], matched: &[char]) {
    let mut i = 0;
    while let Some(&c) = template.get(i) {
        i += 1;
        if c != '$' {
            out.push(c);
            continue;
        }
        if template.get(i) == Some(&'$') {
            out.push('$');
            i += 1;
            continue;
        }
        match template_reference(&template[i..]) {
            Some((is_whole_match, consumed)) => {
                if is_whole_match {
                    out.extend(matched);
                }
                i += consumed;
            }
            None => out.push('$'),
        }
    }
}

/// Parses the `name` or `{name}` after a `$` in a replacement template. Returns whether it names
/// group 0 and how many chars it used, or `None` when malformed.
fn template_reference(s: &[char]) -> Option<(bool, usize)> {
    let brace = s.first() == Some(&'{');
    let body = if brace { &s[1..] } else { s };
    let len = body
        .iter()
        .take_while(|&&c| is_go_letter(c) || is_go_digit(c) || c == '_')
        .count();
    if len == 0 {
        return None;
    }
    let mut consumed = len;
    if brace {
        if body.get(len) != Some(&'}') {
            return None;
        }
        consumed += 2;
    }
    // Only group 0 exists; "00" and "0x" are names (leading zero / non-digit), not numbers.
    Some((len == 1 && body[0] == '0', consumed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn word(input: &str, pairs: &[(&str, &str)]) -> Result<String, ShellError> {
        Lexer::default().process_word(input, &env(pairs))
    }

    fn ok(input: &str, pairs: &[(&str, &str)]) -> String {
        match word(input, pairs) {
            Ok(w) => w,
            Err(e) => panic!("{input:?}: unexpected error: {e}"),
        }
    }

    fn unset_of(input: &str, pairs: &[(&str, &str)]) -> Vec<String> {
        match Lexer::default().process_word_with_unset(input, &env(pairs)) {
            Ok((_, unset)) => unset.into_iter().collect(),
            Err(e) => panic!("{input:?}: unexpected error: {e}"),
        }
    }

    // Expected values in this test come from BuildKit's lex_test.go, TestProcessWithMatches
    // (pattern rows) and TestShellParserMandatoryEnvVars.
    #[test]
    fn buildkit_pattern_table() {
        type Case = (
            &'static str,
            &'static [(&'static str, &'static str)],
            &'static str,
        );
        let cases: &[Case] = &[
            // special characters in regular expressions; `}` must be escaped
            (
                r"${FOO#()[]{\}^$.\*\?|\\}",
                &[("FOO", r"()[]{}^$.*?|\x")],
                "x",
            ),
            (r"${FOO%%\**}", &[("FOO", "xx**")], "xx"),
            ("${FOO#*x*y}", &[("FOO", "xxyy")], "y"),
            ("${FOO#*}", &[("FOO", "xxyy")], "xxyy"),
            ("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "x")], "xyy"),
            ("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "")], "xxyy"),
            ("${FOO#}", &[("FOO", "xxyy")], "xxyy"),
            ("${FOO##*x}", &[("FOO", "xxyy")], "yy"),
            ("${FOO##}", &[("FOO", "xxyy")], "xxyy"),
            (r"${FOO#?\?}", &[("FOO", "???y")], "?y"),
            ("${ABC:-.}${FOO%x}${ABC:-.}", &[("FOO", "xxyy")], ".xxyy."),
            (r"${FOO%%\**\*}", &[("FOO", "a***yy*")], "a"),
            ("${FOO%}", &[("FOO", "xxyy")], "xxyy"),
            ("${FOO%%$BAR}", &[("FOO", "xxyy"), ("BAR", "")], "xxyy"),
            (
                "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
                &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", r"\*/")],
                "/foo.*/*.txt - /foo..*.txt",
            ),
            (
                "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
                &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")],
                "/tmp/bar.txt - /bar.txt",
            ),
            (
                "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
                &[
                    ("FOO", "/a/foo/b/c.txt"),
                    ("NEEDLE", "/?/"),
                    ("REPLACEMENT", "/"),
                ],
                "/foo/b/c.txt - /foo/c.txt",
            ),
            (
                "${FOO/$NEEDLE/$REPLACEMENT}",
                &[
                    ("FOO", "http://google.de"),
                    ("NEEDLE", "http://"),
                    ("REPLACEMENT", "https://"),
                ],
                "https://google.de",
            ),
            // escaped separator characters
            (
                r"${FOO//\//\/}",
                &[("FOO", "/tmp/foo.txt")],
                r"\/tmp\/foo.txt",
            ),
            ("${FOO/$BAR/ww}", &[("FOO", "xxyy"), ("BAR", "")], "wwxxyy"),
            ("${FOO///}", &[("FOO", "xxyy")], "xxyy"),
            ("${FOO///}", &[], ""),
            // plain forms from the same table
            (
                "${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}",
                &[("FOO", "xxx"), ("BAR", "")],
                "xxx  ccc",
            ),
            (
                "${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}",
                &[("FOO", "xxx"), ("BAR", "")],
                "xxx bbb ccc",
            ),
            (
                "${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}",
                &[("FOO", "xxx"), ("BAR", "")],
                "aaa bbb ",
            ),
            (
                "${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}",
                &[("FOO", "xxx"), ("BAR", "")],
                "aaa  ",
            ),
            ("${BAR?bbb}", &[("FOO", "xxx"), ("BAR", "")], ""),
            (
                "${VAR:?message here$ARG}",
                &[("VAR", "plain"), ("ARG", "x")],
                "plain",
            ),
            ("${VAR?message here$ARG}", &[("VAR", ""), ("ARG", "x")], ""),
        ];
        for (input, pairs, expected) in cases {
            assert_eq!(ok(input, pairs), *expected, "input {input:?}");
        }
        for (input, pairs) in [
            ("${FOO//ww}", &[("FOO", "xxyy")][..]),
            ("${FOO//}", &[("FOO", "xxyy")]),
            ("${BAZ?ccc}", &[("FOO", "xxx")]),
            ("${BAR:?bbb}", &[("BAR", "")]),
            ("${BAZ:?}", &[]),
            ("${FOO=aaa}", &[("FOO", "xxx")]),
            ("${FOO=:aaa}", &[("FOO", "xxx")]),
            ("${FOO=}", &[]),
        ] {
            assert!(word(input, pairs).is_err(), "{input:?} should fail");
        }
        // The custom message is the expanded operand.
        for pairs in [&[("VAR", ""), ("ARG", "x")][..], &[("ARG", "x")]] {
            let err = word("${VAR:?message here$ARG}", pairs).unwrap_err();
            assert!(err.to_string().contains("message herex"), "{err}");
        }
        let err = word("${VAR?message here$ARG}", &[("ARG", "x")]).unwrap_err();
        assert_eq!(err.reason(), "VAR: message herex");
    }

    // lex_test.go, TestProcessWithMatchesPlatform.
    #[test]
    fn buildkit_release_filename() {
        let release = "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz";
        let base = [("VERSION", "v1.2.3"), ("TARGETOS", "linux")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            ok(release, &pairs)
        };
        assert_eq!(
            with(&[("TARGETARCH", "arm"), ("TARGETVARIANT", "v7")]),
            "something-v1.2.3.linux-arm-v7.tar.gz"
        );
        assert_eq!(
            with(&[("TARGETARCH", "arm64"), ("TARGETVARIANT", "")]),
            "something-v1.2.3.linux-arm64.tar.gz"
        );
        assert_eq!(
            with(&[("TARGETARCH", "arm64")]),
            "something-v1.2.3.linux-arm64.tar.gz"
        );
    }

    // lex_test.go, TestConvertShellPatternToRegex (valid and invalid patterns) and
    // TestReversePattern.
    #[test]
    fn buildkit_pattern_helpers() {
        for invalid in ["\\", "\\x", "\\\\\\"] {
            assert!(Pattern::compile(invalid, true).is_err(), "{invalid:?}");
        }
        for valid in ["*", "?", "\\*", "(()[]{\\}^$.\\*\\?|\\\\"] {
            assert!(Pattern::compile(valid, true).is_ok(), "{valid:?}");
        }
        for (pattern, reversed) in [
            ("a\\*c", "c\\*a"),
            ("\\\\\\ab", "b\\a\\\\"),
            ("ab\\", "\\ba"),
            ("👽\\🚀🖖", "🖖\\🚀👽"),
            ("\\\\b", "b\\\\"),
        ] {
            assert_eq!(reverse_pattern(pattern), reversed, "{pattern:?}");
        }
    }

    // Our own cases for what BuildKit's tables leave out; expected values follow lex.go's
    // translation (wildcards, shortest/longest, brackets literal, anchoring).
    #[test]
    fn pattern_forms() {
        let v = &[("V", "abc.tar.gz"), ("P", "/usr/local/bin"), ("B", "a[b]c")][..];
        let cases = [
            ("${V#*.}", "tar.gz"),
            ("${V##*.}", "gz"),
            ("${V%.*}", "abc.tar"),
            ("${V%%.*}", "abc"),
            ("${V#?}", "bc.tar.gz"),
            ("${V##???}", ".tar.gz"),
            ("${V%??}", "abc.tar."),
            ("${V#x*}", "abc.tar.gz"), // no match: unchanged
            ("${V#bc}", "abc.tar.gz"), // prefix must match at the start
            ("${V%ta}", "abc.tar.gz"), // suffix must match at the end
            ("${V%gz}", "abc.tar."),
            ("${V/.}", "${V/.}"), // placeholder, replaced below
            ("${V/./-}", "abc-tar.gz"),
            ("${V//./-}", "abc-tar-gz"),
            ("${V/*./}", "gz"), // `*` is greedy in replacements
            ("${V//?/x}", "xxxxxxxxxx"),
            ("${V/#a/x}", "abc.tar.gz"), // no `#`/`%` anchors: literal `#a` not found
            ("${P//\\//:}", ":usr:local:bin"),
            ("${P#/*/}", "local/bin"),
            ("${P##/*/}", "bin"),
            ("${P%/*}", "/usr/local"),
            ("${P%%/l*}", "/usr"),
            // `[...]` is not a bracket expression in BuildKit: it matches literally.
            ("${V#[a-z]}", "abc.tar.gz"),
            ("${B#a[b]}", "c"),
            ("${B/[b]/-}", "a-c"),
            // escaped pattern characters
            ("${U#\\*}", ""),
            // quotes do not protect pattern characters
            ("${V#'*'.}", "tar.gz"),
            // empty patterns change nothing
            (
                "${V#}${V%}${V##}${V%%}",
                "abc.tar.gzabc.tar.gzabc.tar.gzabc.tar.gz",
            ),
            // unset variables behave as empty
            ("${U#*}${U%%x}${U/a/b}${U//a/b}", ""),
            // `:` falls through to the operator that follows it
            ("${V:#abc}", ".tar.gz"),
            ("${V:%%.*}", "abc"),
        ];
        for (input, expected) in cases {
            if input == "${V/.}" {
                // `${v/p}` without a replacement runs out of input looking for the `/`.
                assert!(word(input, v).is_err());
                continue;
            }
            assert_eq!(ok(input, v), expected, "input {input:?}");
        }
        let stars = &[("S", "a*b?c\\d")][..];
        assert_eq!(ok("${S#a\\*}", stars), "b?c\\d");
        assert_eq!(ok("${S%\\\\d}", stars), "a*b?c");
        assert_eq!(ok("${S/\\?/!}", stars), "a*b!c\\d");
        assert_eq!(ok("${S%%\\**}", stars), "a");
        // wildcards never match a newline (Go's `.`)
        let nl = &[("N", "a\nb")][..];
        assert_eq!(ok("${N#*}", nl), "a\nb");
        assert_eq!(ok("${N##*}", nl), "\nb");
        assert_eq!(ok("${N#a?}", nl), "a\nb");
        // bad escapes are errors, reported with the pattern (reversed for `%`)
        let err = word("${V#a\\x}", v).unwrap_err();
        assert_eq!(
            err.reason(),
            "invalid pattern (a\\x) in substitution: invalid escape '\\x'"
        );
        let err = word("${V%a\\x}", v).unwrap_err();
        assert_eq!(
            err.reason(),
            "invalid pattern (\\xa) in substitution: invalid escape '\\x'"
        );
        assert!(word("${V/a\\b/c}", v).is_err());
        // a `#` at the start of the *expanded* operand also selects the longest match
        assert_eq!(ok("${V#$H}", &[("V", "a.b.c"), ("H", "#*.")]), "c");
    }

    // Go's ReplaceAllString semantics for `//`: empty matches, `$0`, `$$`, other `$` names.
    #[test]
    fn replace_all_details() {
        let v = &[("V", "abc"), ("R", "<$0>"), ("D", "$$"), ("N", "[$1${x}$]")][..];
        assert_eq!(ok("${V//b/$R}", v), "a<b>c");
        // Quoting only hides `${0}` from the lexer; the regex template still expands it.
        assert_eq!(ok("${V//b/'<${0}>'}", v), "a<b>c");
        assert_eq!(ok("${V//b/$D}", v), "a$c");
        assert_eq!(ok("${V//b/$N}", v), "a[$]c");
        assert_eq!(ok("${V/b/$R}", v), "a<$0>c"); // single replacement is literal
        assert_eq!(ok("${V//x*/-}", v), "abc");
        assert_eq!(ok("${V///-}", v), "-a-b-c-");
        assert_eq!(ok("${V//*/-}", v), "-");
    }

    #[test]
    fn backtick_escape() {
        let lex = Lexer::new('`');
        let e = env(&[("X", "x y"), ("P", "a*b")]);
        let w = |s: &str| lex.process_word(s, &e).unwrap();
        assert_eq!(w("a`$X"), "a$X");
        assert_eq!(w("C:\\dir\\$X"), "C:\\dir\\x y");
        assert_eq!(w("\"`\"q`\"\""), "\"q\"");
        assert_eq!(w("\"a`b\""), "a`b");
        assert_eq!(w("\"a``b\""), "a`b");
        assert_eq!(w("x`"), "x");
        // In patterns the backtick is kept and is a literal; the backslash still escapes.
        assert_eq!(w("${P#a`*}"), "a*b");
        assert_eq!(w("${P#a\\*}"), "b");
        assert_eq!(
            lex.process_words("$X` z` `$X", &e).unwrap(),
            vec!["x", "y z $X"]
        );
    }

    #[test]
    fn unset_tracking() {
        // From lex_test.go TestProcessWithMatches (the `unmatched` column).
        assert_eq!(unset_of("x ${UNUSED}", &[("DUMMY", "dummy")]), ["UNUSED"]);
        assert_eq!(unset_of("x ${FOO}", &[("FOO", "y")]), Vec::<String>::new());
        assert_eq!(
            unset_of(
                "${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}",
                &[("FOO", "xxx"), ("BAR", "")]
            ),
            ["BAZ"]
        );
        assert_eq!(
            unset_of("${ABC:-.}${FOO%x}${ABC:-.}", &[("FOO", "xxyy")]),
            ["ABC"]
        );
        assert_eq!(unset_of("${FOO///}", &[]), ["FOO"]);
        // Lookups in unused branches and special parameters count too.
        assert_eq!(
            unset_of("${SET:-$A}${SET:+$B}$1$@${C#$D}", &[("SET", "1")]),
            ["1", "@", "A", "B", "C", "D"]
        );
        let (text, unset) = Lexer::default()
            .process_word_with_unset("$HOME/$X", &env(&[("HOME", "/root")]))
            .unwrap();
        assert_eq!(text, "/root/");
        assert_eq!(unset.into_iter().collect::<Vec<_>>(), ["X"]);
    }

    #[test]
    fn env_sources() {
        let lex = Lexer::default();
        let list = env(&[("A", "1"), ("A", "2")]);
        assert_eq!(lex.process_word("$A", &list).unwrap(), "2");
        assert_eq!(lex.process_word("$A", &list.as_slice()).unwrap(), "2");
        let array = [("A".to_string(), "3".to_string())];
        assert_eq!(lex.process_word("$A", &array).unwrap(), "3");
        let btree: BTreeMap<String, String> = list.iter().cloned().collect();
        assert_eq!(lex.process_word("$A", &btree).unwrap(), "2");
        let hash: HashMap<String, String> = list.iter().cloned().collect();
        assert_eq!(lex.process_word("$A", &hash).unwrap(), "2");
    }

    #[test]
    fn error_messages() {
        let reason = |s: &str| word(s, &[("E", "")]).unwrap_err().reason().to_owned();
        assert_eq!(reason("${}"), "syntax error: bad substitution");
        assert_eq!(reason("${"), "syntax error: missing '}'");
        assert_eq!(reason("${X:-a"), "syntax error: missing '}'");
        assert_eq!(reason("${.}"), "unsupported modifier (.) in substitution");
        assert_eq!(
            reason("${X:Y}"),
            "unsupported modifier (:Y) in substitution"
        );
        assert_eq!(
            reason("${X:=a}"),
            "unsupported modifier (:=) in substitution"
        );
        assert_eq!(
            reason("${X"),
            "unsupported modifier (\u{FFFD}) in substitution"
        );
        assert_eq!(reason("${X?}"), "X: is not allowed to be unset");
        assert_eq!(reason("${E:?}"), "E: is not allowed to be empty");
        assert_eq!(reason("${X/a"), "syntax error: missing '/' in ${}");
        assert_eq!(
            reason("'a"),
            "unexpected end of statement while looking for matching single-quote"
        );
        assert_eq!(
            reason("\"a"),
            "unexpected end of statement while looking for matching double-quote"
        );
        assert_eq!(reason("${X:-${}x}"), "syntax error: bad substitution");
        let err = word("a\"b\tc\u{1}${X?}", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to process \"a\\\"b\\tc\\x01${X?}\": X: is not allowed to be unset"
        );
        assert_eq!(err.word(), "a\"b\tc\u{1}${X?}");
    }

    #[test]
    fn odd_corners() {
        // text/scanner drops a leading byte-order mark
        assert_eq!(ok("\u{FEFF}$A", &[("A", "a")]), "a");
        assert_eq!(ok("x\u{FEFF}", &[]), "x\u{FEFF}");
        // `${v:}...}` reads on to the next `}` and then rejects the modifier
        assert!(word("${A:}x}", &[("A", "a")]).is_err());
        // an unquoted default is split even if it was quoted inside the braces
        let lex = Lexer::default();
        assert_eq!(
            lex.process_words("${U:-\"a b\"}", &env(&[])).unwrap(),
            ["a", "b"]
        );
        assert_eq!(
            lex.process_words("\"\" '' x \"\"", &env(&[])).unwrap(),
            ["x"]
        );
        // Digit names are read greedily and are ordinary lookups.
        assert_eq!(ok("$0$00$007x", &[("0", "zero")]), "zerox");
        assert_eq!(ok("$1x${10}", &[("10", "ten")]), "xten");
    }

    #[test]
    fn nesting_limit() {
        let depth = MAX_NESTING - 1;
        let nested = format!("{}x{}", "${U:-".repeat(depth), "}".repeat(depth));
        assert_eq!(ok(&nested, &[]), "x");
        // Far deeper than any stack could take by recursion: an error, not a crash.
        let deep = format!("{}x{}", "${U:-".repeat(100_000), "}".repeat(100_000));
        assert!(word(&deep, &[]).is_err());
        let quoted = "\"${U:-".repeat(100_000);
        assert!(word(&quoted, &[]).is_err());
    }

    #[test]
    fn long_inputs_stay_fast() {
        let value = "ab".repeat(20_000);
        let e = env(&[("V", &value)]);
        let lex = Lexer::default();
        let pattern = format!("${{V//{}a/x}}", "*".repeat(20));
        assert_eq!(lex.process_word(&pattern, &e).unwrap(), "xb");
        assert_eq!(lex.process_word("${V%%*b*a*b}", &e).unwrap(), "");
        assert_eq!(lex.process_word("${V//?/}", &e).unwrap(), "");
    }

    /// xorshift64*: deterministic, dependency-free.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn never_panics_on_random_input() {
        const BIASED: &[u8] = b"${}:-+?#%/\\'\"*[]`@!0123 \tabcXYZ_";
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let e = env(&[
            ("a", "x y"),
            ("b", ""),
            ("X", "a*b?c"),
            ("Y", "#*"),
            ("Z", "$0$$"),
        ]);
        let lexers = [Lexer::new('\\'), Lexer::new('`')];
        for i in 0..20_000 {
            let len = rng.below(40);
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.below(8) == 0 {
                        rng.next() as u8
                    } else {
                        BIASED[rng.below(BIASED.len())]
                    }
                })
                .collect();
            let input = String::from_utf8_lossy(&bytes);
            let lex = lexers[i % 2];
            let one = lex.process_word(&input, &e);
            let many = lex.process_words(&input, &e);
            let with_unset = lex.process_word_with_unset(&input, &e);
            // All three run the same scan, so they must agree on success.
            assert_eq!(one.is_ok(), many.is_ok(), "{input:?}");
            assert_eq!(one.ok(), with_unset.ok().map(|(w, _)| w), "{input:?}");
        }
    }
}
