//! A stage's state while it is built: the image config so far and its layers, and how each
//! step changes them.

use super::Graph;
use super::{config, run, Env};
use crate::frontend::Instruction;
use crate::plan::Step;
use anyhow::{bail, Context, Result};
use cache::key::{self as ck, KeyBuilder};
use cache::{CacheKey, LayerRef, Miss, Record};
use images::{Descriptor, History, ImageConfig, MediaType};
use layers::{write_layer, SourceKind, StepArea, TarOptions};
use std::path::PathBuf;

#[derive(Clone)]
pub struct StageState {
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
    /// CMD was set in this stage (then ENTRYPOINT keeps it; otherwise ENTRYPOINT resets it).
    pub cmd_set: bool,
    /// Cache key of everything so far: each step's key covers its parent's.
    pub key: CacheKey,
    /// Time of the newest step (RFC 3339): history times come from it, so that a build made
    /// entirely of cache hits writes the same config, byte for byte.
    pub time: String,
    /// The cache records of the steps that made this state, its base stages' included: what
    /// `--cache-to` exports.
    pub records: Vec<Record>,
}

/// How a step was satisfied.
pub enum Outcome {
    Ran,
    Cached,
    /// A hit in a `--cache-from` export (named here).
    Imported(String),
}

fn base_key(what: &str, id: &str) -> CacheKey {
    KeyBuilder::new("rbuild.base.v1")
        .field(ck::BASE, format!("{what}:{id}"))
        .finish()
}

impl StageState {
    pub fn scratch(env: &Env) -> Self {
        StageState {
            config: ImageConfig::default(),
            layers: Vec::new(),
            cmd_set: false,
            key: base_key("scratch", ""),
            time: images::model::rfc3339_utc(env.epoch.unwrap_or(0)),
            records: Vec::new(),
        }
    }

    /// A base image from the store, with a snapshot for each of its layers.
    pub fn from_image(env: &Env, name: &str) -> Result<Self> {
        let image = super::base_image(env.store, name)?;
        let diff_ids = &image.config.rootfs.diff_ids;
        if diff_ids.len() != image.manifest.layers().len() {
            bail!(
                "base image {name}: its config lists {} layers, its manifest {}",
                diff_ids.len(),
                image.manifest.layers().len()
            );
        }
        for (i, layer) in image.manifest.layers().iter().enumerate() {
            let chain = &diff_ids[..=i];
            let id = layers::chain_id(chain).expect("non-empty");
            if !env.snapshots.exists(&id) {
                let blob = env.store.get_blob(layer.digest())?;
                env.snapshots
                    .prepare(chain, blob)
                    .with_context(|| format!("unpacking layer {} of {name}", layer.digest()))?;
            }
        }
        let time = image
            .config
            .created
            .clone()
            .unwrap_or_else(|| env.created());
        Ok(StageState {
            key: base_key("image", image.id().as_ref()),
            layers: image.manifest.layers().clone(),
            config: image.config,
            cmd_set: false,
            time,
            records: Vec::new(),
        })
    }

    /// What a new stage does to its base's config: its triggers have run (the planner put
    /// them first), so they are not inherited.
    pub fn begin_stage(&mut self) {
        self.config.config.on_build.clear();
        self.cmd_set = false;
    }

    pub fn lower_dirs(&self, env: &Env) -> Result<Vec<PathBuf>> {
        Ok(env.snapshots.lower_dirs(&self.config.rootfs.diff_ids)?)
    }

    /// Mounts a step's overlay on the area's `merged` dir: the stage so far below, the
    /// area's fresh upper dir on top. Returns the lower dirs.
    pub fn mount_step(&self, env: &Env, area: &StepArea) -> Result<Vec<PathBuf>> {
        let mut lowers = self.lower_dirs(env)?;
        if lowers.is_empty() {
            // overlayfs needs a lower dir; FROM scratch has none.
            let empty = area.merged().with_file_name("empty");
            std::fs::create_dir_all(&empty)?;
            lowers.push(empty);
        }
        layers::mount_overlay(&lowers, &area.upper(), &area.work(), &area.merged())?;
        Ok(lowers)
    }

    /// Unmounts a step's overlay (or a read-only view) detached: a sandbox of another build
    /// thread forked at that moment holds copies of this process's descriptors (some inside
    /// this mount) until it closes them, which would make a plain unmount fail with EBUSY.
    /// Nobody writes through those copies; the overlay goes with the last of them.
    pub fn unmount(path: &std::path::Path) -> Result<()> {
        Ok(layers::umount_detach(path)?)
    }

    /// WORKDIR, `/` when unset.
    pub fn workdir(&self) -> String {
        match self.config.config.working_dir.as_str() {
            "" => "/".to_string(),
            w => w.to_string(),
        }
    }

    pub fn apply(
        &mut self,
        step: &Step,
        env: &Env,
        progress_id: usize,
        graph: &Graph,
        slot: &str,
    ) -> Result<Outcome> {
        let mut key = KeyBuilder::new("rbuild.step.v1");
        key.push(ck::PARENT, self.key.to_string());
        key.push(ck::INSTRUCTION, serde_json::to_string(&step.instruction)?);
        match &step.instruction {
            Instruction::Run(r) => {
                key.push(ck::PLATFORM, &env.platform);
                for (k, v) in &step.args {
                    key.push(&ck::arg(k), v);
                }
                for (name, value) in super::mounts::key_inputs(&r.mounts, env, graph)? {
                    key.push(&name, value);
                }
                let created_by = run::created_by(self, step, r);
                self.cached_or(
                    env,
                    progress_id,
                    slot,
                    key,
                    created_by,
                    |state, created_by| {
                        run::run(state, step, r, env, progress_id, graph, created_by)
                    },
                )
            }
            Instruction::Workdir { path } => {
                let path = config::workdir(&self.config, path);
                self.config.config.working_dir = path.clone();
                let created_by = format!("WORKDIR {path}");
                self.cached_or(
                    env,
                    progress_id,
                    slot,
                    key,
                    created_by,
                    |state, created_by| run::make_workdir(state, env, created_by),
                )
            }
            Instruction::Copy(c) | Instruction::Add(c) => {
                let add = matches!(step.instruction, Instruction::Add(_));
                for (name, value) in super::copy::key_inputs(c, add, env, graph)? {
                    key.push(&name, value);
                }
                let created_by = super::copy::created_by(c, add);
                self.cached_or(
                    env,
                    progress_id,
                    slot,
                    key,
                    created_by,
                    |state, created_by| super::copy::run(state, c, add, env, graph, created_by),
                )
            }
            other => {
                let created_by = config::apply(self, other);
                self.key = key.finish();
                self.push_history(created_by, true);
                Ok(Outcome::Cached)
            }
        }
    }

    /// A cache hit reuses the recorded layer (and its snapshot); after a local miss, a hit in
    /// a `--cache-from` export is applied the same way (its layer fetched first) and written
    /// to the local cache, so the next build hits locally. A miss says why, runs `exec`, and
    /// records the result once its blob is safely in the store.
    fn cached_or(
        &mut self,
        env: &Env,
        progress_id: usize,
        slot: &str,
        key: KeyBuilder,
        created_by: String,
        exec: impl FnOnce(&mut Self, String) -> Result<Option<LayerRef>>,
    ) -> Result<Outcome> {
        let (key, inputs) = key.into_parts();
        // Held until the record is written: another build reaching this key meanwhile waits,
        // then hits (see cache::steps).
        let mut _step_lock = None;
        if !env.opts.no_cache {
            if self.try_cached(env, slot, &key, &created_by)? {
                return Ok(Outcome::Cached);
            }
            _step_lock = Some(env.cache.lock_step(&key, || {
                env.progress.waiting(progress_id);
            })?);
            if self.try_cached(env, slot, &key, &created_by)? {
                return Ok(Outcome::Cached);
            }
            if let Some((record, from)) = super::share::lookup(env, progress_id, &key) {
                // Slots are per machine: the exporter's says nothing about this build.
                let record = Record {
                    slot: slot.to_string(),
                    ..record
                };
                if self.reuse(env, &record, &created_by)? {
                    env.cache.record(record.clone())?;
                    self.key = key;
                    self.records.push(record);
                    return Ok(Outcome::Imported(from));
                }
            }
        }
        let miss = if env.opts.no_cache {
            Miss::NoCache
        } else {
            env.cache.explain_miss(slot, &inputs)
        };
        env.progress.note(progress_id, &miss.to_string());
        let layer = exec(self, created_by)?;
        let mut record = Record::new(key, slot, inputs, layer);
        record.created = env.now_secs();
        env.cache.record(record.clone())?;
        self.records.push(record);
        self.key = key;
        Ok(Outcome::Ran)
    }

    /// Looks `key` up in the local cache and applies its record; false on a miss.
    fn try_cached(
        &mut self,
        env: &Env,
        slot: &str,
        key: &CacheKey,
        created_by: &str,
    ) -> Result<bool> {
        match env.cache.lookup_for(slot, key)? {
            Some(record) if self.reuse(env, &record, created_by)? => {
                self.key = *key;
                self.records.push(record);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Applies a cache record; false when its layer blob is gone (then the step runs).
    fn reuse(&mut self, env: &Env, record: &Record, created_by: &str) -> Result<bool> {
        let time = images::model::rfc3339_utc(record.created as i64);
        let Some(layer) = &record.layer else {
            self.time = time;
            self.push_history(created_by.to_string(), true);
            return Ok(true);
        };
        let digest: images::Digest = layer.digest.parse().context("cache record: layer digest")?;
        let diff_id: images::Digest = layer.diff_id.parse().context("cache record: diffID")?;
        if !env.store.has_blob(&digest) {
            return Ok(false);
        }
        let mut chain = self.config.rootfs.diff_ids.clone();
        chain.push(diff_id);
        let id = layers::chain_id(&chain).expect("non-empty");
        if !env.snapshots.exists(&id) {
            env.snapshots
                .prepare(&chain, env.store.get_blob(&digest)?)?;
        }
        self.layers.push(Descriptor::new(
            MediaType::from(layer.media_type.as_str()),
            layer.size,
            digest,
        ));
        self.config.rootfs.diff_ids = chain;
        self.time = time;
        self.push_history(created_by.to_string(), false);
        Ok(true)
    }

    pub fn push_history(&mut self, created_by: String, empty_layer: bool) {
        self.config.history.push(History {
            created: Some(self.time.clone()),
            created_by: Some(created_by),
            comment: Some("buildkit.dockerfile.v0".to_string()),
            empty_layer,
            ..History::default()
        });
    }

    /// Turns a step's upper dir into a layer blob and a snapshot, or records an empty layer
    /// when the step changed nothing.
    pub fn commit(
        &mut self,
        area: &StepArea,
        env: &Env,
        created_by: String,
    ) -> Result<Option<LayerRef>> {
        self.time = images::model::rfc3339_utc(env.now_secs() as i64);
        let upper = area.upper();
        let empty = std::fs::read_dir(&upper)?.next().is_none();
        if empty {
            self.push_history(created_by, true);
            return Ok(None);
        }
        let opts = TarOptions {
            source: SourceKind::OverlayUpper,
            source_date_epoch: env.epoch,
        };
        let (digests, blob) = write_layer(
            &upper,
            env.store.blob_writer()?,
            env.opts.compression,
            &opts,
        )
        .context("cannot write the step's layer")?;
        let info = blob.commit(Some(&digests.digest))?;
        let mut chain = self.config.rootfs.diff_ids.clone();
        chain.push(digests.diff_id.clone());
        env.snapshots.adopt(&chain, &upper)?;
        self.layers
            .push(info.descriptor(digests.media_type.clone()));
        self.config.rootfs.diff_ids = chain;
        self.push_history(created_by, false);
        Ok(Some(LayerRef {
            digest: info.digest.to_string(),
            diff_id: digests.diff_id.to_string(),
            size: info.size,
            media_type: digests.media_type.to_string(),
        }))
    }
}
