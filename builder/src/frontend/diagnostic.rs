//! Errors and warnings about a Dockerfile, each tied to a place in it, rendered the way a
//! person can act on: `Dockerfile:12:5: message`, then the offending line with a caret.

use super::span::Span;
use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// BuildKit's check name for warnings (`LegacyKeyValueFormat`...), none for hard errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'static str>,
    pub message: String,
    pub span: Span,
}

impl Diagnostic {
    pub fn error(span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            rule: None,
            message: message.into(),
            span,
        }
    }

    pub fn warning(rule: &'static str, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            rule: Some(rule),
            message: message.into(),
            span,
        }
    }

    /// `file:line:col: [warning: ]message`, then the source lines of the span with a caret.
    pub fn render(&self, file: &str, source: &str) -> String {
        let Span {
            start_line,
            start_col,
            end_line,
        } = self.span;
        let place = if start_line == 0 {
            file.to_string()
        } else {
            format!("{file}:{start_line}:{start_col}")
        };
        let mut out = match self.severity {
            Severity::Error => format!("{place}: {}", self.message),
            Severity::Warning => format!(
                "{place}: warning: {} [{}]",
                self.message,
                self.rule.unwrap_or("")
            ),
        };
        if start_line == 0 {
            return out;
        }
        let last = end_line.clamp(start_line, start_line + 5);
        let width = last.to_string().len();
        for (i, text) in source
            .lines()
            .enumerate()
            .skip(start_line - 1)
            .take(last + 1 - start_line)
        {
            out.push_str(&format!(
                "\n {:>width$} | {}",
                i + 1,
                text.trim_end_matches('\r')
            ));
            if i + 1 == start_line && start_col > 0 {
                let pad: String = text
                    .chars()
                    .take(start_col - 1)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                out.push_str(&format!("\n {:>width$} | {pad}^", ""));
            }
        }
        out
    }
}

/// All the errors found in one Dockerfile, each reported once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub file: String,
    pub source: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rendered: Vec<String> = self
            .diagnostics
            .iter()
            .map(|d| d.render(&self.file, &self.source))
            .collect();
        f.write_str(&rendered.join("\n"))
    }
}

impl std::error::Error for ParseError {}
