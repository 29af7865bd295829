//! rbuild's builder: the Dockerfile frontend, the build planner, and (later) the executor.

pub mod build;
pub mod cli;
pub mod compose;
pub mod context;
pub mod exec;
pub mod frontend;
pub mod plan;
