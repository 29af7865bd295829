//! `--cache-from` and `--cache-to` in a build: the exports opened before the first step (a
//! step consults them after a local miss, see `StageState::cached_or`), and the records
//! written out once the image is stored.
//!
//! A cache that cannot be imported (unreachable registry, missing ref or directory) is a
//! warning and the build goes on without it, as with BuildKit; a failed export fails the
//! command (after the image is stored) unless the value says `ignore-error=true`.

use std::sync::OnceLock;

use anyhow::{Context, Result};
use cache::share::{self, CacheTo, Imported, Mode};
use cache::Record;
use images::registry::{PushOptions, RegistryOptions};

use super::state::StageState;
use super::Env;
use crate::cli::human_size;

/// The `--cache-from` exports of a build, in the order given; empty until [`import`].
#[derive(Default)]
pub struct Imports(OnceLock<Vec<Imported>>);

impl Imports {
    pub fn list(&self) -> &[Imported] {
        self.0.get().map_or(&[], Vec::as_slice)
    }
}

/// Opens every `--cache-from` (manifest and config only; layers come when a step hits).
/// Skipped under `--no-cache`, which BuildKit also applies to imported caches.
pub fn import(env: &Env) {
    if env.opts.no_cache || env.opts.cache_from.is_empty() || env.imported.0.get().is_some() {
        return;
    }
    let mut list = Vec::new();
    for from in &env.opts.cache_from {
        let id = env.progress.start(
            env.service,
            "cache",
            &format!("importing cache from {}", from.location),
        );
        match Imported::open(from, &RegistryOptions::default()) {
            Ok(imported) => {
                let mut text = format!(
                    "{} records, {} layers (layers are pulled when a step uses them)",
                    imported.len(),
                    imported.layers()
                );
                if imported.skipped() > 0 {
                    text.push_str(&format!(
                        "; {} records skipped: the manifest does not list their layer",
                        imported.skipped()
                    ));
                }
                env.progress.note(id, &text);
                list.push(imported);
            }
            Err(e) => env
                .progress
                .note(id, &format!("WARNING: {e}; building without this cache")),
        }
        env.progress.done(id);
    }
    let _ = env.imported.0.set(list);
}

/// A local miss looked up in the imports: the first that has `key`, with its layer fetched
/// into the store. `Ok(None)` if none has it, or fetching failed (a warning; the step runs).
pub fn lookup(env: &Env, progress_id: usize, key: &cache::CacheKey) -> Option<(Record, String)> {
    for imported in env.imported.list() {
        let Some(record) = imported.get(key) else {
            continue;
        };
        if let Some(layer) = &record.layer {
            match imported.fetch_layer(env.store, layer) {
                Ok(0) => {}
                Ok(n) => env.progress.note(
                    progress_id,
                    &format!(
                        "pulled layer {} ({}) from {}",
                        layer.digest,
                        human_size(n),
                        imported.location()
                    ),
                ),
                Err(e) => {
                    env.progress
                        .note(progress_id, &format!("WARNING: {e}; the step runs instead"));
                    continue;
                }
            }
        }
        return Some((record.clone(), imported.location().to_string()));
    }
    None
}

/// Writes every `--cache-to`: the records of `target` (min) or of every stage built (max).
pub fn export(env: &Env, target: &StageState, done: &[Option<StageState>]) -> Result<()> {
    let stages: Vec<&[Record]> = done
        .iter()
        .flatten()
        .map(|s| s.records.as_slice())
        .collect();
    for to in &env.opts.cache_to {
        export_one(env, to, &target.records, &stages)?;
    }
    Ok(())
}

fn export_one(env: &Env, to: &CacheTo, target: &[Record], stages: &[&[Record]]) -> Result<()> {
    let mode = match to.mode {
        Mode::Min => "min",
        Mode::Max => "max",
    };
    let id = env.progress.start(
        env.service,
        "cache",
        &format!("exporting cache to {} (mode={mode})", to.location),
    );
    let records = share::select(to.mode, target, stages);
    match share::export(env.store, &records, to, &PushOptions::default()) {
        Ok(r) => {
            env.progress.note(
                id,
                &format!(
                    "{} records, {} layers: {} blobs sent ({}), {} already there; manifest {}",
                    r.records,
                    r.layers,
                    r.sent_blobs,
                    human_size(r.sent_bytes),
                    r.skipped_blobs,
                    r.manifest
                ),
            );
            env.progress.done(id);
            Ok(())
        }
        Err(e) if to.ignore_error => {
            env.progress
                .note(id, &format!("WARNING: {e} (ignore-error=true)"));
            env.progress.done(id);
            Ok(())
        }
        Err(e) => {
            env.progress.fail(id);
            Err(e).context("the image is stored, but exporting its build cache failed")
        }
    }
}
