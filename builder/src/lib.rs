//! rbuild's builder: the Dockerfile frontend, the build planner, and (later) the executor.

pub mod frontend;
