//! Warnings for what BuildKit's checks flag as deprecated or suspicious, and the
//! `# check=skip=…;error=true` directive that silences them or turns them into errors.
//! Checks that need variable values (UndefinedVar, InvalidDefaultArgInFrom) live in the planner.

use super::diagnostic::{Diagnostic, Severity};
use super::instruction::{Instruction, Located};

/// Checks that need only the instructions.
pub fn check(instructions: &[Located]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let upper = instructions
        .iter()
        .filter(|i| i.keyword == i.keyword.to_ascii_uppercase())
        .count();
    let majority_upper = upper * 2 >= instructions.len();
    let mut stage_names: Vec<&str> = Vec::new();
    let mut workdir_absolute = false;
    for located in instructions {
        let span = located.span;
        let kw = &located.keyword;
        let expected = if majority_upper {
            kw.to_ascii_uppercase()
        } else {
            kw.to_ascii_lowercase()
        };
        if *kw != expected {
            out.push(Diagnostic::warning(
                "ConsistentInstructionCasing",
                span,
                format!("instruction {kw:?} should match the case of the other instructions ({expected:?})"),
            ));
        }
        match &located.instruction {
            Instruction::From(from) => {
                workdir_absolute = false;
                if let Some(name) = &from.name {
                    let as_word = located
                        .original
                        .split_whitespace()
                        .rev()
                        .nth(1)
                        .unwrap_or("AS");
                    let from_upper = kw == &kw.to_ascii_uppercase();
                    if from_upper != (as_word == as_word.to_ascii_uppercase()) {
                        out.push(Diagnostic::warning(
                            "FromAsCasing",
                            span,
                            format!("{as_word:?} and {kw:?} keywords' casing do not match"),
                        ));
                    }
                    if stage_names.contains(&name.as_str()) {
                        out.push(Diagnostic::warning(
                            "DuplicateStageName",
                            span,
                            format!("duplicate stage name {name:?}: stage names should be unique"),
                        ));
                    }
                    stage_names.push(name);
                }
            }
            Instruction::Env { legacy: true, .. } | Instruction::Label { legacy: true, .. } => {
                out.push(Diagnostic::warning(
                    "LegacyKeyValueFormat",
                    span,
                    format!("\"{} key=value\" should be used instead of legacy \"{} key value\" format", kw.to_ascii_uppercase(), kw.to_ascii_uppercase()),
                ));
            }
            Instruction::Maintainer { .. } => out.push(Diagnostic::warning(
                "MaintainerDeprecated",
                span,
                "MAINTAINER instruction is deprecated in favor of using label: LABEL org.opencontainers.image.authors=\"…\"",
            )),
            Instruction::Workdir { path } => {
                let absolute = path.starts_with('/') || path.starts_with('$');
                if !absolute && !workdir_absolute {
                    out.push(Diagnostic::warning(
                        "WorkdirRelativePath",
                        span,
                        format!("relative workdir {path:?} can have unexpected results if the base image changes: use an absolute path"),
                    ));
                }
                workdir_absolute |= absolute;
            }
            _ => {}
        }
    }
    out
}

/// Applies `# check=skip=Rule1,Rule2;error=true` (or `skip=all`) to the warnings. With
/// `error=true`, remaining warnings become errors (returned as `Err`).
pub fn apply_check_directive(
    directive: Option<&str>,
    warnings: Vec<Diagnostic>,
) -> Result<Vec<Diagnostic>, Vec<Diagnostic>> {
    let mut skip: Vec<String> = Vec::new();
    let mut error = false;
    for part in directive.unwrap_or("").split(';') {
        match part.trim().split_once('=') {
            Some(("skip", rules)) => skip.extend(rules.split(',').map(|r| r.trim().to_string())),
            Some(("error", v)) => error = v.trim().eq_ignore_ascii_case("true"),
            _ => {}
        }
    }
    let kept: Vec<Diagnostic> = warnings
        .into_iter()
        .filter(|w| {
            !skip
                .iter()
                .any(|s| s == "all" || Some(s.as_str()) == w.rule)
        })
        .collect();
    if error && !kept.is_empty() {
        return Err(kept
            .into_iter()
            .map(|mut d| {
                d.severity = Severity::Error;
                d.message = format!(
                    "{} [{}] (check=error=true)",
                    d.message,
                    d.rule.unwrap_or("")
                );
                d
            })
            .collect());
    }
    Ok(kept)
}
