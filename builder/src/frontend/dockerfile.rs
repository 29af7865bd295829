//! A parsed Dockerfile: typed instructions, directives and warnings, or every error found.

use super::diagnostic::{Diagnostic, ParseError};
use super::directives::Directives;
use super::instruction::{from_node, Instruction, Located};
use super::{lint, parser};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Dockerfile {
    pub file: String,
    #[serde(skip)]
    pub source: String,
    pub directives: Directives,
    pub instructions: Vec<Located>,
    pub warnings: Vec<Diagnostic>,
}

impl Dockerfile {
    pub fn escape(&self) -> char {
        self.directives.escape
    }
}

/// Parses and checks a Dockerfile; on failure every problem found is reported, each once.
pub fn parse_dockerfile(file: &str, source: &str) -> Result<Dockerfile, ParseError> {
    let raw = parser::parse(file, source)?;
    let mut errors = Vec::new();
    let mut instructions = Vec::new();
    for node in &raw.nodes {
        match from_node(node) {
            Ok(i) => instructions.push(i),
            Err(message) => errors.push(Diagnostic::error(node.span, message)),
        }
    }
    if let Some(first) = instructions
        .iter()
        .find(|i| !matches!(i.instruction, Instruction::Arg { .. }))
    {
        if !matches!(first.instruction, Instruction::From(_)) {
            errors.push(Diagnostic::error(
                first.span,
                format!(
                    "{} is not allowed before the first FROM: only ARG may come before it",
                    first.keyword.to_ascii_uppercase()
                ),
            ));
        }
    } else if errors.is_empty() {
        let span = instructions.last().map(|i| i.span).unwrap_or_default();
        errors.push(Diagnostic::error(
            span,
            "no build stage: the Dockerfile needs a FROM instruction",
        ));
    }
    if !errors.is_empty() {
        errors.sort_by_key(|d| d.span.start_line);
        return Err(ParseError {
            file: file.to_string(),
            source: source.to_string(),
            diagnostics: errors,
        });
    }
    let mut warnings = raw.warnings;
    warnings.extend(lint::check(&instructions));
    warnings.sort_by_key(|d| d.span.start_line);
    Ok(Dockerfile {
        file: file.to_string(),
        source: source.to_string(),
        directives: raw.directives,
        instructions,
        warnings,
    })
}
