//! The Dockerfile frontend: text → raw nodes (BuildKit's parser) → typed instructions, plus
//! shell-word expansion. Nothing here touches the filesystem or runs anything.

pub mod diagnostic;
pub mod directives;
pub mod dockerfile;
pub mod flags;
pub mod instruction;
pub mod lint;
pub mod mount;
pub mod node;
pub mod parser;
pub mod shell;
pub mod span;
pub mod words;

pub use diagnostic::{Diagnostic, ParseError, Severity};
pub use dockerfile::{parse_dockerfile, Dockerfile};
pub use instruction::{Instruction, Located};
pub use node::Node;
pub use parser::{parse, RawDockerfile};
pub use span::Span;
