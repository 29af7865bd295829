//! The `rbuild` command line: Docker-compatible flags, one module per command.

mod build;
mod parse;

use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "rbuild",
    version,
    about = "A daemonless container image builder for plain Dockerfiles",
    long_about = "rbuild builds OCI images from Dockerfiles without a daemon, the way BuildKit's \
        dockerfile:1 frontend reads them. `rbuild -f DIR/Dockerfile` is `rbuild build -f DIR/Dockerfile`.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    build: build::BuildArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from a Dockerfile (the default command).
    Build(build::BuildArgs),
    /// Parse a Dockerfile and print its syntax tree and build plan.
    Parse(parse::ParseArgs),
}

/// `--build-arg` values: `K=V`, or `K` alone to take the value from the environment (like docker).
#[derive(Args, Clone, Debug, Default)]
pub struct VarArgs {
    /// Set a build-time variable (K=V, or K to take it from the environment).
    #[arg(long = "build-arg", value_name = "K[=V]")]
    pub build_args: Vec<String>,
    /// Build this stage and the stages it needs, not the last one.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
}

impl VarArgs {
    pub fn build_args(&self) -> std::collections::BTreeMap<String, String> {
        self.build_args
            .iter()
            .filter_map(|a| match a.split_once('=') {
                Some((k, v)) => Some((k.to_string(), v.to_string())),
                None => std::env::var(a).ok().map(|v| (a.clone(), v)),
            })
            .collect()
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Parse(args)) => parse::run(args),
        Some(Command::Build(args)) => build::run(args),
        None => build::run(cli.build),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rbuild: {e:#}");
            ExitCode::FAILURE
        }
    }
}
