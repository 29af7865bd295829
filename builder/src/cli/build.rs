//! `rbuild build` (and bare `rbuild`): Docker's flags and defaults, then the solver.

use super::session::Session;
use super::VarArgs;
use crate::build::{self, BuildOptions, Progress, ProgressMode};
use crate::exec::sandbox::Network;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use images::Reference;
use layers::Compression;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum NetworkArg {
    /// The host's network (the Debian mirror must be reachable).
    #[default]
    Host,
    /// No network but loopback.
    None,
    /// Same as host.
    Default,
}

#[derive(Args, Clone, Debug, Default)]
pub struct BuildArgs {
    /// Name of the Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<String>,
    /// Name and optionally a tag (name:tag); may be repeated. Default: the Dockerfile's
    /// directory name, `:latest`.
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    #[command(flatten)]
    pub vars: VarArgs,
    #[command(flatten)]
    pub run: RunFlags,
    /// Also write the image as an archive: type=docker,dest=FILE (for docker load) or
    /// type=oci,dest=FILE.
    #[arg(short = 'o', long = "output", value_name = "type=docker|oci,dest=FILE")]
    pub output: Option<String>,
    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Push the image's tags to their registries once built.
    #[arg(long)]
    pub push: bool,
    /// Import build cache: type=registry,ref=NAME:TAG (or just NAME:TAG), or
    /// type=local,src=DIR[,tag=T]; may be repeated. Used after a local miss; a cache that
    /// cannot be read is a warning.
    #[arg(long = "cache-from", value_name = "type=registry,ref=REF")]
    pub cache_from: Vec<String>,
    /// Export build cache: type=registry,ref=NAME:TAG[,mode=min|max] or
    /// type=local,dest=DIR[,tag=T][,mode=min|max]; may be repeated. mode=min (the default)
    /// exports the final image's steps, mode=max every stage's.
    #[arg(long = "cache-to", value_name = "type=registry,ref=REF[,mode=max]")]
    pub cache_to: Vec<String>,
    /// The build context directory (default: the Dockerfile's directory).
    pub context: Option<PathBuf>,
}

/// How steps run and show: the flags `rbuild build` and `rbuild bake` share.
#[derive(Args, Clone, Debug, Default)]
pub struct RunFlags {
    /// Do not use the build cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Network for RUN steps that do not say (`RUN --network=…`).
    #[arg(long, value_enum, default_value_t)]
    pub network: NetworkArg,
    /// How to show progress.
    #[arg(long, value_enum, default_value_t)]
    pub progress: ProgressMode,
    /// Layer compression.
    #[arg(long, default_value = "gzip", value_name = "gzip|zstd")]
    pub compression: Option<Compression>,
    /// Expose a secret to RUN --mount=type=secret: id=ID,src=PATH or id=ID,env=VAR.
    #[arg(long = "secret", value_name = "id=ID,src=PATH")]
    pub secrets: Vec<String>,
}

impl RunFlags {
    /// Options for building `dockerfile` in `context` as `tags`, without build args or target.
    pub fn options(
        &self,
        dockerfile: PathBuf,
        context: PathBuf,
        tags: Vec<Reference>,
    ) -> Result<BuildOptions> {
        Ok(BuildOptions {
            dockerfile,
            context,
            tags,
            build_args: Default::default(),
            target: None,
            network: match self.network {
                NetworkArg::None => Network::None,
                NetworkArg::Host | NetworkArg::Default => Network::Host,
            },
            compression: self.compression.unwrap_or_default(),
            progress: self.progress,
            iidfile: None,
            cache_from: Vec::new(),
            cache_to: Vec::new(),
            no_cache: self.no_cache,
            secrets: self
                .secrets
                .iter()
                .map(|s| build::parse_secret(s))
                .collect::<Result<_>>()?,
        })
    }
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

/// `srcs/requirements/nginx/Dockerfile` → `nginx:latest`.
fn default_tag(dockerfile: &Path) -> Result<Reference> {
    let dir = dockerfile
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .canonicalize()
        .with_context(|| format!("cannot resolve the directory of {}", dockerfile.display()))?;
    let name: String = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_else(|| "image".into())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    Reference::parse(&format!("{}:latest", name.trim_matches(['.', '_', '-'])))
        .with_context(|| format!("no usable image name from {}: pass -t NAME", dir.display()))
}

/// `-o type=docker,dest=FILE` / `type=oci,dest=FILE` (Docker's syntax).
fn parse_output(spec: &str) -> Result<(images::Format, PathBuf)> {
    let mut format = None;
    let mut dest = None;
    for field in spec.split(',') {
        match field.split_once('=') {
            Some(("type", "docker")) => format = Some(images::Format::Docker),
            Some(("type", "oci")) => format = Some(images::Format::Oci),
            Some(("dest", d)) => dest = Some(PathBuf::from(d)),
            _ => anyhow::bail!("-o {spec}: expected type=docker|oci,dest=FILE"),
        }
    }
    match (format, dest) {
        (Some(f), Some(d)) => Ok((f, d)),
        _ => anyhow::bail!("-o {spec}: expected type=docker|oci,dest=FILE"),
    }
}

pub fn run(args: BuildArgs) -> Result<ExitCode> {
    let output = args.output.as_deref().map(parse_output).transpose()?;
    let (file, context) = args.resolve();
    let tags = if args.tags.is_empty() {
        vec![default_tag(&file)?]
    } else {
        args.tags
            .iter()
            .map(|t| Reference::parse(t))
            .collect::<Result<Vec<_>, _>>()?
    };
    let opts = BuildOptions {
        build_args: args.vars.build_args(),
        target: args.vars.target.clone(),
        iidfile: args.iidfile.clone(),
        cache_from: args
            .cache_from
            .iter()
            .map(|s| cache::share::CacheFrom::parse(s))
            .collect::<Result<_, _>>()?,
        cache_to: args
            .cache_to
            .iter()
            .map(|s| cache::share::CacheTo::parse(s))
            .collect::<Result<_, _>>()?,
        ..args.run.options(file, context, tags.clone())?
    };
    let session = Session::open()?;
    let progress = Progress::new(opts.progress);
    let built = match session.build(&opts, None, &progress) {
        Err(e) if e.is::<crate::frontend::ParseError>() => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
        result => result?,
    };
    session.finish()?;
    for tag in &tags {
        eprintln!("naming to {} done", tag.familiar());
    }
    if let Some((format, dest)) = &output {
        images::archive::save_to_path(&session.store, &tags, dest, *format)
            .with_context(|| format!("cannot write {}", dest.display()))?;
        eprintln!("exported to {}", dest.display());
    }
    if let Some(path) = &opts.iidfile {
        std::fs::write(path, built.id.to_string())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.push {
        for tag in &tags {
            super::registry::push_one(&session.store, tag)?;
        }
    }
    println!("{}", built.manifest.digest());
    Ok(ExitCode::SUCCESS)
}
