//! What every build of one rbuild process shares: the store, the snapshotter, the build cache
//! and the context checksum index, opened once. `rbuild build` builds one image with it,
//! `rbuild bake` one per service, in parallel threads.

use super::parse::{load_with, read_dockerfile};
use crate::build::{self, BuildOptions, Built, Env, Progress};
use crate::plan::PlanOptions;
use anyhow::{Context, Result};
use images::Store;
use layers::Snapshotter;

pub struct Session {
    pub store: Store,
    snapshots: Snapshotter,
    cache: cache::Cache,
    checksums: cache::Checksummer,
}

impl Session {
    /// Needs root: enters rbuild's private mount namespace (see `build::prepare_machine`).
    pub fn open() -> Result<Session> {
        let (store, snapshots) = build::prepare_machine()?;
        let cache = cache::Cache::open(store.root().join("cache"))?;
        let checksums = cache::Checksummer::open(store.root().join("cache/context-index.json"))?;
        Ok(Session {
            store,
            snapshots,
            cache,
            checksums,
        })
    }

    /// Reads, plans and builds `opts.dockerfile` into an image tagged `opts.tags`. `service`
    /// names the build in the progress shared with others (bake). A Dockerfile that does not
    /// parse or plan fails with a [`crate::frontend::ParseError`] (its rendered diagnostics).
    pub fn build(
        &self,
        opts: &BuildOptions,
        service: Option<&str>,
        progress: &Progress,
    ) -> Result<Built> {
        let name = opts.dockerfile.display().to_string();
        let source = read_dockerfile(&name)?;
        let plan_opts = PlanOptions {
            build_args: opts.build_args.clone(),
            target: opts.target.clone(),
            ..PlanOptions::default()
        };
        let loaded = load_with(&name, &source, &plan_opts, &build::base_lookup(&self.store))?;
        eprint!("{}", loaded.render_warnings());
        let context =
            crate::context::Context::open(&opts.context, &opts.dockerfile).with_context(|| {
                format!("cannot use {} as the build context", opts.context.display())
            })?;
        let env = Env {
            store: &self.store,
            snapshots: &self.snapshots,
            opts,
            progress,
            cache: &self.cache,
            checksums: &self.checksums,
            context: &context,
            platform: crate::plan::host_platform(),
            epoch: images::archive::source_date_epoch().map(|s| s as i64),
            service,
            imported: build::Imports::default(),
        };
        build::build(&loaded.plan, &name, &env)
    }

    /// Keeps the context checksums for the next process.
    pub fn finish(&self) -> Result<()> {
        Ok(self.checksums.save()?)
    }
}
