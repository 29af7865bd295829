//! COPY and ADD steps: the copy engine writes into the step's overlay (mounted in rbuild's
//! own mount namespace); `--from` sources are read through a read-only view of that stage or
//! image. The cache key covers the content of every selected context file, not its mtime.

use super::state::StageState;
use super::{Env, Graph};
use crate::exec::copy::{copy, CopyRequest, Source};
use crate::frontend::instruction::Copy;
use crate::plan::stage_ref;
use anyhow::{anyhow, Context as _, Result};
use cache::key as ck;
use cache::LayerRef;

/// What a COPY/ADD's sources add to its cache key.
pub fn key_inputs(c: &Copy, add: bool, env: &Env, graph: &Graph) -> Result<Vec<(String, String)>> {
    let req = CopyRequest::from_instruction(c, add);
    let mut out = Vec::new();
    match &c.from {
        None => {
            let sources = req.file_sources();
            if !sources.is_empty() {
                let selection = env.context.select(&sources, &req.select_options())?;
                let root = env.context.root().path();
                for path in selection.paths() {
                    let sum = env
                        .checksums
                        .checksum(root, &path)
                        .with_context(|| format!("checksum of {}", path.display()))?;
                    out.push((ck::file(&path.to_string_lossy()), sum.to_string()));
                }
            }
        }
        Some(from) => out.push((
            "from".to_string(),
            source_state(from, env, graph)?.key.to_string(),
        )),
    }
    // A URL's content is only known by fetching it: without --checksum, ADD fetches every time.
    if add
        && c.checksum.is_none()
        && c.sources
            .iter()
            .any(|s| s.starts_with("http://") || s.starts_with("https://"))
    {
        out.push((
            "url-fetch".to_string(),
            format!("{:?}", std::time::SystemTime::now()),
        ));
    }
    Ok(out)
}

fn source_state(from: &str, env: &Env, graph: &Graph) -> Result<StageState> {
    let names: Vec<Option<String>> = graph.plan.stages.iter().map(|s| s.name.clone()).collect();
    match stage_ref(&names, from) {
        Some(i) => graph.done[i]
            .clone()
            .ok_or_else(|| anyhow!("stage {from} has not been built")),
        None => StageState::from_image(env, from),
    }
}

/// BuildKit's history line: `COPY [--from=x] src... dest # buildkit`.
pub fn created_by(c: &Copy, add: bool) -> String {
    let mut words = vec![if add { "ADD" } else { "COPY" }.to_string()];
    if let Some(from) = &c.from {
        words.push(format!("--from={from}"));
    }
    words.extend(c.sources.iter().cloned());
    words.push(c.dest.clone());
    format!("{} # buildkit", words.join(" "))
}

pub fn run(
    state: &mut StageState,
    c: &Copy,
    add: bool,
    env: &Env,
    graph: &Graph,
    created_by: String,
) -> Result<Option<LayerRef>> {
    let mut req = CopyRequest::from_instruction(c, add);
    req.mtime = env.epoch;
    let area = env.snapshots.step_area()?;
    state.mount_step(env, &area)?;
    let merged = area.merged();
    let workdir = state.workdir();
    let result = match &c.from {
        None => {
            copy(&req, Source::Context(env.context), &merged, &workdir).map_err(anyhow::Error::from)
        }
        Some(from) => (|| {
            let source_lowers = source_state(from, env, graph)?.lower_dirs(env)?;
            let view = tempfile::Builder::new().prefix("rbuild-from-").tempdir()?;
            if source_lowers.is_empty() {
                // An empty stage (FROM scratch, nothing added): its root is an empty dir.
                return copy(
                    &req,
                    Source::Root {
                        root: view.path(),
                        name: from,
                    },
                    &merged,
                    &workdir,
                )
                .map_err(anyhow::Error::from);
            }
            layers::mount_overlay_readonly(&source_lowers, view.path())?;
            let copied = copy(
                &req,
                Source::Root {
                    root: view.path(),
                    name: from,
                },
                &merged,
                &workdir,
            );
            StageState::unmount(view.path())?;
            copied.map_err(anyhow::Error::from)
        })(),
    };
    StageState::unmount(&merged)?;
    result?;
    state.commit(&area, env, created_by)
}
