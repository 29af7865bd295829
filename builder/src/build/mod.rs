//! The solver: runs a plan's stages in order, each step on top of the previous one's
//! snapshot, and writes the target stage as an image.
//!
//! A step that changes files runs on `overlay(lowerdir = parent chain, upperdir = fresh)`;
//! its upper dir becomes both the layer blob (via `layers::write_layer`) and, by a rename,
//! the snapshot the next step mounts. Config-only steps only edit the image config.

mod config;
mod copy;
mod mounts;
mod progress;
mod run;
mod share;
mod state;

pub use mounts::{parse_secret, SecretSource};
pub use progress::{Progress, ProgressMode};
pub use share::Imports;

use crate::exec::sandbox::{self, Network};
use crate::plan::{Base, BaseImage, Plan, Stage};
use anyhow::{anyhow, bail, Context, Result};
use images::{Reference, Store};
use layers::{Compression, Snapshotter};
use state::{Outcome, StageState};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub dockerfile: PathBuf,
    pub context: PathBuf,
    pub tags: Vec<Reference>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub network: Network,
    pub compression: Compression,
    pub progress: ProgressMode,
    pub iidfile: Option<PathBuf>,
    pub secrets: BTreeMap<String, SecretSource>,
    pub no_cache: bool,
    /// `--cache-from`: exports consulted after a local cache miss, in this order.
    pub cache_from: Vec<cache::share::CacheFrom>,
    /// `--cache-to`: where the build's records and layers are exported after the image.
    pub cache_to: Vec<cache::share::CacheTo>,
}

/// What a build made.
pub struct Built {
    pub manifest: images::Descriptor,
    pub id: images::Digest,
}

/// The plan and the stages built so far, for steps that read other stages.
pub struct Graph<'a> {
    pub plan: &'a Plan,
    pub done: &'a [Option<StageState>],
}

/// Everything a build step needs from the machine.
pub struct Env<'a> {
    pub store: &'a Store,
    pub snapshots: &'a Snapshotter,
    pub opts: &'a BuildOptions,
    pub progress: &'a Progress,
    pub cache: &'a cache::Cache,
    /// The build context, with its .dockerignore.
    pub context: &'a crate::context::Context,
    /// Content checksums of context files, remembered by stat between builds.
    pub checksums: &'a cache::checksum::Checksummer,
    /// `os/arch` being built for; part of every RUN's cache key.
    pub platform: String,
    /// `SOURCE_DATE_EPOCH`, for reproducible layers and times.
    pub epoch: Option<i64>,
    /// The bake service this build is for: it leads every progress label.
    pub service: Option<&'a str>,
    /// The `--cache-from` exports, opened when the build starts.
    pub imported: Imports,
}

/// A `FROM` image: from the store, else pulled from its registry into the store (digests
/// verified), so `FROM 127.0.0.1:5000/base:1` works on an empty store.
pub fn base_image(store: &Store, name: &str) -> Result<images::StoredImage> {
    let reference = Reference::parse(name)?;
    if let Ok(image) = store.image(&reference) {
        return Ok(image);
    }
    eprintln!(
        "{name} is not in the local store: pulling it from {}",
        reference.domain()
    );
    images::registry::pull(store, &reference, &images::registry::PullOptions::default())
        .with_context(|| {
            format!(
                "base image {name} is neither in the local store nor pullable; push it to a \
                 registry you can reach, or import one, e.g. \
                 `mmdebstrap --variant=minbase bookworm - | rbuild import - {name}`"
            )
        })?;
    Ok(store.image(&reference)?)
}

/// The base image's ENV and ONBUILD, for the planner. A base that cannot be had gives
/// nothing here; the stage's FROM step then reports why.
pub fn base_lookup(store: &Store) -> impl Fn(&str) -> Option<BaseImage> + '_ {
    move |name| {
        let image = base_image(store, name).ok()?;
        let env = image
            .config
            .config
            .env
            .iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        Some(BaseImage {
            env,
            onbuild: image.config.config.on_build.clone(),
        })
    }
}

/// Runs the stages the target needs and writes the image.
pub fn build(plan: &Plan, dockerfile_name: &str, env: &Env) -> Result<Built> {
    share::import(env);
    let mut done: Vec<Option<StageState>> = vec![None; plan.stages.len()];
    let mut pending: Vec<usize> = plan.order.clone();
    // In waves: every stage whose dependencies are built runs now, side by side.
    while !pending.is_empty() {
        let (ready, later): (Vec<usize>, Vec<usize>) = pending
            .iter()
            .partition(|&&i| plan.stages[i].deps.iter().all(|d| done[*d].is_some()));
        let results: Vec<(usize, Result<StageState>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = ready
                .iter()
                .map(|&i| {
                    let done = &done;
                    scope.spawn(move || {
                        (
                            i,
                            run_stage(plan, &plan.stages[i], done, dockerfile_name, env),
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a stage thread panicked"))
                .collect()
        });
        for (i, result) in results {
            done[i] = Some(result?);
        }
        pending = later;
    }
    let target = done[plan.target].take().expect("the target stage ran");
    let mut config = target.config.clone();
    // The newest step's time: a build of cache hits makes the very same config.
    config.created = Some(target.time.clone());
    let manifest = env
        .store
        .write_image(&config, &target.layers, &env.opts.tags)
        .context("cannot write the image to the store")?;
    let id = manifest_config_digest(env.store, &manifest)?;
    share::export(env, &target, &done)?;
    Ok(Built { manifest, id })
}

fn manifest_config_digest(store: &Store, manifest: &images::Descriptor) -> Result<images::Digest> {
    let m: images::ImageManifest = store.read_json(manifest.digest())?;
    Ok(m.config().digest().clone())
}

fn run_stage(
    plan: &Plan,
    stage: &Stage,
    done: &[Option<StageState>],
    dockerfile_name: &str,
    env: &Env,
) -> Result<StageState> {
    let total = stage.steps.len() + 1;
    let stage_label = match (&stage.name, env.service) {
        (Some(name), _) => Some(name.clone()),
        // `[nginx 2/6]`: a service's only stage needs no name.
        (None, Some(_)) if plan.stages.len() == 1 => None,
        (None, _) => Some(format!("stage-{}", stage.index)),
    };
    let prefix: Vec<&str> = env
        .service
        .into_iter()
        .chain(stage_label.as_deref())
        .collect();
    let label = |i: usize| format!("{} {i}/{total}", prefix.join(" "));
    let mut state = match &stage.base {
        Base::Scratch => StageState::scratch(env),
        Base::Stage(i) => done[*i]
            .clone()
            .ok_or_else(|| anyhow!("stage {i} did not run"))?,
        Base::Image(name) => {
            let id = env
                .progress
                .start(env.service, &label(1), &format!("FROM {name}"));
            let state = StageState::from_image(env, name)?;
            env.progress.done(id);
            state
        }
    };
    state.begin_stage();
    let stage_name = stage
        .name
        .clone()
        .unwrap_or_else(|| stage.index.to_string());
    for (i, step) in stage.steps.iter().enumerate() {
        let title = step.original.clone();
        let id = env.progress.start(env.service, &label(i + 2), &title);
        let slot = format!("{dockerfile_name}#{stage_name}#{i}");
        match state.apply(step, env, id, &Graph { plan, done }, &slot) {
            Ok(Outcome::Cached) if step_runs(step) => env.progress.cached(id),
            Ok(Outcome::Imported(from)) => env.progress.cached_from(id, &from),
            Ok(_) => env.progress.done(id),
            Err(e) => {
                env.progress.fail(id);
                return Err(e.context(format!(
                    "{dockerfile_name}:{}: {}",
                    step.span.start_line, title
                )));
            }
        }
    }
    Ok(state)
}

/// Steps that execute (and so can be cache hits), as opposed to config-only ones.
fn step_runs(step: &crate::plan::Step) -> bool {
    use crate::frontend::Instruction;
    matches!(
        step.instruction,
        Instruction::Run(_)
            | Instruction::Workdir { .. }
            | Instruction::Copy(_)
            | Instruction::Add(_)
    )
}

impl Env<'_> {
    /// Now, or `SOURCE_DATE_EPOCH` when set, in seconds.
    pub fn now_secs(&self) -> u64 {
        match self.epoch {
            Some(secs) => secs.max(0) as u64,
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// RFC 3339 time for history and `created`: `SOURCE_DATE_EPOCH` when set.
    pub fn created(&self) -> String {
        match self.epoch {
            Some(secs) => images::model::rfc3339_utc(secs),
            None => images::model::now_rfc3339(),
        }
    }
}

/// Opens the store and the snapshotter and enters rbuild's private mount namespace.
pub fn prepare_machine() -> Result<(Store, Snapshotter)> {
    if !nix::unistd::geteuid().is_root() {
        bail!("rbuild build needs root for now (namespaces and overlay mounts): run it with sudo");
    }
    sandbox::enter_private_mount_namespace()?;
    let store = crate::cli::open_store()?;
    let snapshots = Snapshotter::open(store.root())?;
    snapshots.clean_stale()?;
    Ok((store, snapshots))
}
