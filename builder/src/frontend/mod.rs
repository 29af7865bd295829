//! The Dockerfile frontend: text → raw nodes (BuildKit's parser) → typed instructions, plus
//! shell-word expansion. Nothing here touches the filesystem or runs anything.

pub mod diagnostic;
pub mod directives;
pub mod node;
pub mod parser;
pub mod shell;
pub mod span;
pub mod words;

pub use diagnostic::{Diagnostic, ParseError, Severity};
pub use node::Node;
pub use parser::{parse, RawDockerfile};
pub use span::Span;
