//! `rbuild bake`: builds the services of a docker compose project in one process, one thread
//! per service, sharing the store, snapshots, cache and checksums (so identical steps run
//! once), with the progress of all of them together; then optionally pushes the images.

use super::build::RunFlags;
use super::error_chain;
use super::session::Session;
use crate::build::{BuildOptions, Built, Progress};
use crate::compose::{self, Service};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use images::Reference;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct BakeArgs {
    /// Compose file; repeat to merge several, later ones overriding. Default: compose.yaml,
    /// compose.yml, docker-compose.yaml or docker-compose.yml in the current directory.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Override a service's build: SERVICE.args.NAME=V, SERVICE.target=STAGE, SERVICE.tags=REF,
    /// SERVICE.cache-from=SPEC, SERVICE.cache-to=SPEC (for lists, the first replaces, more add),
    /// SERVICE.no-cache=true. `*` as SERVICE means every service.
    #[arg(long = "set", value_name = "SERVICE.KEY=VALUE")]
    pub set: Vec<String>,
    /// Print the resolved build definitions as JSON and build nothing.
    #[arg(long)]
    pub print: bool,
    /// Once every build succeeded, push each image's tags to its registry.
    #[arg(long)]
    pub push: bool,
    #[command(flatten)]
    pub run: RunFlags,
    /// Services to build (default: every service with a `build:`).
    #[arg(value_name = "SERVICE")]
    pub services: Vec<String>,
}

pub fn run(args: BakeArgs) -> Result<ExitCode> {
    let files = if args.files.is_empty() {
        vec![compose::default_file(Path::new("."))?]
    } else {
        args.files.clone()
    };
    let mut project = compose::load(&files, &|name| std::env::var(name).ok())?;
    for name in &project.unset {
        eprintln!("warning: the {name:?} variable is not set; it defaults to a blank string");
    }
    compose::set::apply(&mut project.services, &args.set)?;
    let selected = select(&project, &args.services)?;
    if args.print {
        let doc = serde_json::json!({
            "group": {"default": {"targets": selected.keys().collect::<Vec<_>>()}},
            "target": selected,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }

    let jobs = selected
        .iter()
        .map(|(name, service)| Ok((name.as_str(), options(&args.run, service)?)))
        .collect::<Result<Vec<(&str, BuildOptions)>>>()?;
    let session = Session::open()?;
    let progress = Progress::new(args.run.progress);
    let results: Vec<(&str, Result<Built>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(name, opts)| {
                let (session, progress) = (&session, &progress);
                (
                    *name,
                    scope.spawn(move || session.build(opts, Some(name), progress)),
                )
            })
            .collect();
        handles
            .into_iter()
            .map(|(name, h)| {
                let result = h
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("its build thread panicked")));
                (name, result)
            })
            .collect()
    });
    session.finish()?;

    let mut failed = Vec::new();
    for ((name, result), (_, opts)) in results.iter().zip(&jobs) {
        match result {
            Ok(built) => {
                for tag in &opts.tags {
                    eprintln!("{name}: naming to {} done", tag.familiar());
                }
                println!("{name} {}", built.manifest.digest());
            }
            // Dockerfile diagnostics are already rendered, with file and line.
            Err(e) if e.is::<crate::frontend::ParseError>() => {
                eprintln!("{name}: {e}");
                failed.push(*name);
            }
            Err(e) => {
                eprintln!("{name}: error: {}", error_chain(e));
                failed.push(*name);
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} services failed: {}",
            failed.len(),
            jobs.len(),
            failed.join(", ")
        );
    }
    if args.push {
        push(&session, &jobs)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The named services (all with a `build:` when none is named), checked.
fn select(project: &compose::Project, names: &[String]) -> Result<BTreeMap<String, Service>> {
    if names.is_empty() {
        if project.services.is_empty() {
            bail!("no service of project {} has a build section", project.name);
        }
        return Ok(project.services.clone());
    }
    let mut out = BTreeMap::new();
    for name in names {
        match project.services.get(name) {
            Some(service) => {
                out.insert(name.clone(), service.clone());
            }
            None if project.without_build.contains(name) => {
                bail!("service {name} has no build section: nothing to build")
            }
            None => bail!(
                "no such service: {name} (services with a build: {})",
                project
                    .services
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    Ok(out)
}

fn options(run: &RunFlags, service: &Service) -> Result<BuildOptions> {
    let tags = service
        .tags
        .iter()
        .map(|t| Reference::parse(t).with_context(|| format!("image name {t:?}")))
        .collect::<Result<Vec<_>>>()?;
    let mut opts = run.options(service.dockerfile.clone(), service.context.clone(), tags)?;
    opts.build_args = service.args.clone();
    opts.target = service.target.clone();
    opts.no_cache |= service.no_cache;
    opts.cache_from = service
        .cache_from
        .iter()
        .map(|s| cache::share::CacheFrom::parse(s))
        .collect::<Result<_, _>>()?;
    opts.cache_to = service
        .cache_to
        .iter()
        .map(|s| cache::share::CacheTo::parse(s))
        .collect::<Result<_, _>>()?;
    Ok(opts)
}

/// Pushes every tag of every built image; reports each, fails after trying them all.
fn push(session: &Session, jobs: &[(&str, BuildOptions)]) -> Result<()> {
    let mut failed = Vec::new();
    for (name, opts) in jobs {
        for tag in &opts.tags {
            let shown = tag.familiar();
            if let Err(e) = super::registry::push_one(&session.store, tag) {
                eprintln!("{name}: cannot push {shown}: {}", error_chain(&e));
                failed.push(shown);
            }
        }
    }
    if !failed.is_empty() {
        bail!("push failed for {}", failed.join(", "));
    }
    Ok(())
}
