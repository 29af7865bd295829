//! A stage's state while it is built: the image config so far and its layers, and how each
//! step changes them.

use super::{config, run, Env};
use crate::frontend::Instruction;
use crate::plan::{Plan, Step};
use anyhow::{anyhow, bail, Context, Result};
use images::{Descriptor, History, ImageConfig, Reference};
use layers::{write_layer, SourceKind, StepArea, TarOptions};
use std::path::PathBuf;

#[derive(Clone)]
pub struct StageState {
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
    /// CMD was set in this stage (then ENTRYPOINT keeps it; otherwise ENTRYPOINT resets it).
    pub cmd_set: bool,
}

impl StageState {
    pub fn scratch() -> Self {
        StageState {
            config: ImageConfig::default(),
            layers: Vec::new(),
            cmd_set: false,
        }
    }

    /// A base image from the store, with a snapshot for each of its layers.
    pub fn from_image(env: &Env, name: &str) -> Result<Self> {
        let reference = Reference::parse(name)?;
        let image = env.store.image(&reference).map_err(|e| {
            anyhow!(
                "base image {name} is not in the local store ({e}); import one, e.g. \
                 `mmdebstrap --variant=minbase bookworm - | rbuild import - {name}`"
            )
        })?;
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
        Ok(StageState {
            layers: image.manifest.layers().clone(),
            config: image.config,
            cmd_set: false,
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

    pub fn apply(
        &mut self,
        step: &Step,
        env: &Env,
        progress_id: usize,
        plan: &Plan,
        done: &[Option<StageState>],
    ) -> Result<()> {
        match &step.instruction {
            Instruction::Run(r) => run::run(self, step, r, env, progress_id, plan, done),
            Instruction::Workdir { path } => {
                let path = config::workdir(&self.config, path);
                self.config.config.working_dir = path.clone();
                run::make_workdir(self, env, &format!("WORKDIR {path}"))
            }
            Instruction::Copy(_) | Instruction::Add(_) => {
                bail!("COPY and ADD are not implemented yet in rbuild build")
            }
            other => {
                let created_by = config::apply(self, other);
                self.push_history(env, created_by, true);
                Ok(())
            }
        }
    }

    pub fn push_history(&mut self, env: &Env, created_by: String, empty_layer: bool) {
        self.config.history.push(History {
            created: Some(env.created()),
            created_by: Some(created_by),
            comment: Some("buildkit.dockerfile.v0".to_string()),
            empty_layer,
            ..History::default()
        });
    }

    /// Turns a step's upper dir into a layer blob and a snapshot, or records an empty layer
    /// when the step changed nothing.
    pub fn commit(&mut self, area: &StepArea, env: &Env, created_by: String) -> Result<()> {
        let upper = area.upper();
        let empty = std::fs::read_dir(&upper)?.next().is_none();
        if empty {
            self.push_history(env, created_by, true);
            return Ok(());
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
        self.push_history(env, created_by, false);
        Ok(())
    }
}
