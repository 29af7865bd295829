//! The `rbuild` command line: Docker-compatible flags, one module per command.

mod bake;
mod build;
mod import;
mod parse;
mod prune;
mod registry;
mod session;
mod store;

pub use store::{human_size, open_store};

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
    /// Build the services of a docker compose project, in parallel, and optionally push them.
    Bake(bake::BakeArgs),
    /// Parse a Dockerfile and print its syntax tree and build plan.
    Parse(parse::ParseArgs),
    /// Make an image from a root filesystem tarball.
    Import(import::ImportArgs),
    /// List images in the store.
    #[command(visible_alias = "ls")]
    Images(store::ImagesArgs),
    /// Show images' manifest and config as JSON.
    Inspect(store::RefsArgs),
    /// Show the history of an image.
    History(store::HistoryArgs),
    /// Give an image another name.
    Tag(store::TagArgs),
    /// Remove image names, and the blobs no other name needs.
    Rmi(store::RefsArgs),
    /// Write images to a tar archive (docker load / oci-archive).
    Save(store::SaveArgs),
    /// Show disk usage of the store.
    Du,
    /// Verify every blob digest and every ref in the store.
    Fsck,
    /// Remove build cache, and the blobs and snapshots nothing needs any more.
    Prune(prune::PruneArgs),
    /// Upload an image to a registry (only the blobs it lacks).
    Push(registry::PushArgs),
    /// Download an image from a registry into the store.
    Pull(registry::PullArgs),
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
        Some(Command::Bake(args)) => bake::run(args),
        Some(Command::Import(args)) => import::run(args),
        Some(Command::Images(args)) => store::images(args),
        Some(Command::Inspect(args)) => store::inspect(args),
        Some(Command::History(args)) => store::history(args),
        Some(Command::Tag(args)) => store::tag(args),
        Some(Command::Rmi(args)) => store::rmi(args),
        Some(Command::Save(args)) => store::save(args),
        Some(Command::Du) => store::du(),
        Some(Command::Fsck) => store::fsck(),
        Some(Command::Prune(args)) => prune::run(args),
        Some(Command::Push(args)) => registry::push(args),
        Some(Command::Pull(args)) => registry::pull(args),
        None => build::run(cli.build),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rbuild: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by ": ", skipping a cause whose text the message above it
/// already includes (our error types embed their source in their own message).
pub(crate) fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}
