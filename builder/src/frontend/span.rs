//! Source positions. Lines and columns are 1-based, like every editor and BuildKit's errors.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Span {
    pub start_line: usize,
    /// Column of the instruction's first character on `start_line`.
    pub start_col: usize,
    pub end_line: usize,
}

impl Span {
    pub fn line(line: usize, col: usize) -> Self {
        Span {
            start_line: line,
            start_col: col,
            end_line: line,
        }
    }
}
