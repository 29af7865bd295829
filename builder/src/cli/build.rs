//! `rbuild build` (and bare `rbuild`): for now, parse and plan; execution comes next.

use super::parse::{load, read_dockerfile};
use super::VarArgs;
use anyhow::{bail, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Clone, Debug, Default)]
pub struct BuildArgs {
    /// Name of the Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<String>,
    /// Name and optionally a tag (name:tag); may be repeated.
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    #[command(flatten)]
    pub vars: VarArgs,
    /// Do not use the build cache.
    #[arg(long)]
    pub no_cache: bool,
    /// The build context directory (default: the Dockerfile's directory).
    pub context: Option<PathBuf>,
}

impl BuildArgs {
    /// Docker's defaults: the context is the Dockerfile's directory when not given, and the
    /// Dockerfile is CONTEXT/Dockerfile when `-f` is not given.
    pub fn resolve(&self) -> (PathBuf, PathBuf) {
        match (&self.file, &self.context) {
            (Some(f), Some(c)) => (PathBuf::from(f), c.clone()),
            (Some(f), None) => {
                let f = PathBuf::from(f);
                let dir = f
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                (f.clone(), dir.to_path_buf())
            }
            (None, Some(c)) => (c.join("Dockerfile"), c.clone()),
            (None, None) => (PathBuf::from("Dockerfile"), PathBuf::from(".")),
        }
    }
}

pub fn run(args: BuildArgs) -> Result<ExitCode> {
    let (file, _context) = args.resolve();
    let name = file.display().to_string();
    let source = read_dockerfile(&name)?;
    let loaded = match load(&name, &source, &args.vars) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    eprint!("{}", loaded.render_warnings());
    let plan = &loaded.plan;
    let steps: usize = plan.order.iter().map(|&i| plan.stages[i].steps.len()).sum();
    bail!(
        "{name}: planned {} stage(s), {steps} step(s); executing builds is not implemented yet \
         (`rbuild parse -f {name}` prints the plan)",
        plan.order.len()
    )
}
