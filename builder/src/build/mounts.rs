//! `RUN --mount`: what each mount type becomes in the sandbox. Secrets are bind-mounted
//! read-only from the host (or set in the environment) and so never reach a layer, the
//! history or the cache key; bind sources are resolved inside the context or a stage's root.

use super::state::StageState;
use super::Env;
use super::Graph;
use crate::exec::sandbox::ExtraMount;
use crate::frontend::mount::{parse_mount, Mount, MountType, Sharing};
use crate::plan::stage_ref;
use anyhow::{anyhow, bail, Context, Result};
use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// Where a `--secret` comes from.
#[derive(Debug, Clone)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

/// Parses `--secret id=ID,src=PATH` / `id=ID,env=VAR` (Docker's syntax; `source`, `type=file`
/// accepted; `id` alone means the environment variable of that name).
pub fn parse_secret(spec: &str) -> Result<(String, SecretSource)> {
    let mut id = None;
    let mut src = None;
    let mut env = None;
    for field in spec.split(',') {
        match field.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
            Some(("env", v)) => env = Some(v.to_string()),
            Some(("type", "file" | "env")) => {}
            _ => bail!("--secret {spec}: expected id=ID,src=PATH or id=ID,env=VAR"),
        }
    }
    let id = id.ok_or_else(|| anyhow!("--secret {spec}: id= is required"))?;
    let source = match (src, env) {
        (Some(p), None) => SecretSource::File(p),
        (None, Some(v)) => SecretSource::Env(v),
        (None, None) => SecretSource::Env(id.clone()),
        (Some(_), Some(_)) => bail!("--secret {spec}: give src= or env=, not both"),
    };
    Ok((id, source))
}

/// What a RUN's mounts need kept alive until the step ends, and undone after.
#[derive(Default)]
pub struct Prepared {
    pub mounts: Vec<ExtraMount>,
    /// Environment variables from `env=` secrets.
    pub env: Vec<String>,
    /// Read-only views of stages or images, unmounted when the step ends.
    views: Vec<PathBuf>,
    _files: Vec<tempfile::TempPath>,
    _dirs: Vec<tempfile::TempDir>,
    /// Cache mounts in use: prune leaves them alone, `sharing=locked` excludes other steps.
    _locks: Vec<cache::MountGuard>,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        for view in &self.views {
            let _ = super::state::StageState::unmount(view);
        }
    }
}

/// Turns a RUN's `--mount` specs into sandbox mounts.
pub fn prepare(specs: &[String], env: &Env, graph: &Graph) -> Result<Prepared> {
    let mut out = Prepared::default();
    for spec in specs {
        let m = parse_mount(spec, &|v| Ok(v.to_string())).map_err(anyhow::Error::msg)?;
        prepare_one(&m, env, graph, &mut out).with_context(|| format!("--mount={spec}"))?;
    }
    Ok(out)
}

fn prepare_one(m: &Mount, env: &Env, graph: &Graph, out: &mut Prepared) -> Result<()> {
    match m.kind {
        MountType::Tmpfs => out.mounts.push(ExtraMount::Tmpfs {
            target: m.target.clone().unwrap_or_default(),
            size: m.size,
        }),
        MountType::Secret => {
            let id =
                m.id.clone()
                    .or_else(|| {
                        m.target
                            .as_deref()
                            .and_then(|t| Path::new(t).file_name())
                            .map(|n| n.to_string_lossy().into_owned())
                    })
                    .expect("checked by the parser");
            let Some(source) = env.opts.secrets.get(&id) else {
                if m.required {
                    bail!("secret {id} is required: pass --secret id={id},src=FILE");
                }
                return Ok(());
            };
            let file = match source {
                SecretSource::File(p) => {
                    if !p.is_file() {
                        bail!("secret {id}: {} is not a readable file", p.display());
                    }
                    p.clone()
                }
                SecretSource::Env(var) => {
                    let value = std::env::var(var).map_err(|_| {
                        anyhow!("secret {id}: environment variable {var} is not set")
                    })?;
                    let mut f = tempfile::Builder::new()
                        .prefix("rbuild-secret-")
                        .tempfile()?;
                    f.write_all(value.as_bytes())?;
                    let path = f.into_temp_path();
                    let p = path.to_path_buf();
                    out._files.push(path);
                    p
                }
            };
            if let Some(var) = &m.env {
                out.env
                    .push(format!("{var}={}", std::fs::read_to_string(&file)?));
                if m.target.is_none() {
                    return Ok(());
                }
            }
            let target = m
                .target
                .clone()
                .unwrap_or_else(|| format!("/run/secrets/{id}"));
            out.mounts.push(ExtraMount::Bind {
                source: file,
                target,
                readonly: true,
            });
        }
        MountType::Bind => {
            let target = m.target.clone().unwrap_or_default();
            let source_rel = m.source.clone().unwrap_or_else(|| "/".to_string());
            let root = match &m.from {
                None => env
                    .opts
                    .context
                    .canonicalize()
                    .context("the build context")?,
                Some(from) => {
                    let lowers = source_chain(from, env, graph)?;
                    let view = tempfile::Builder::new().prefix("rbuild-view-").tempdir()?;
                    layers::mount_overlay_readonly(&lowers, view.path())?;
                    out.views.push(view.path().to_path_buf());
                    let p = view.path().to_path_buf();
                    out._dirs.push(view);
                    p
                }
            };
            let source = inside(&root, &source_rel)?;
            // A read-write bind of the context would let the step write the user's files:
            // BuildKit gives the step a throwaway copy; we refuse until we do the same.
            if !m.readonly && m.from.is_none() {
                bail!("read-write bind mounts of the context are not supported yet: drop rw");
            }
            out.mounts.push(ExtraMount::Bind {
                source,
                target,
                readonly: m.readonly || m.from.is_some(),
            });
        }
        MountType::Cache => {
            let target = m.target.clone().unwrap_or_default();
            if m.from.is_some() {
                bail!("cache mounts seeded from= a stage are not supported yet");
            }
            let id = m.id.clone().unwrap_or_else(|| target.clone());
            // `private` would hand each concurrent step its own copy; taking turns is the
            // simpler behaviour that still never lets two steps write one cache at once.
            let exclusive = m.sharing != Sharing::Shared;
            let guard = env.cache.lock_mount(&id, exclusive)?;
            let dir = guard.path().to_path_buf();
            let uid = nix::unistd::Uid::from_raw(m.uid.unwrap_or(0));
            let gid = nix::unistd::Gid::from_raw(m.gid.unwrap_or(0));
            nix::unistd::chown(&dir, Some(uid), Some(gid))?;
            std::fs::set_permissions(
                &dir,
                std::os::unix::fs::PermissionsExt::from_mode(m.mode.unwrap_or(0o755)),
            )?;
            out._locks.push(guard);
            out.mounts.push(ExtraMount::Bind {
                source: dir,
                target,
                readonly: m.readonly,
            });
        }
        MountType::Ssh => {
            bail!("ssh mounts are not supported: rbuild has no SSH agent forwarding yet")
        }
    }
    Ok(())
}

/// What a RUN's mounts add to its cache key: the content it binds (a context checksum, or the
/// key of the stage it binds from). Secrets and caches add nothing: their content must not
/// decide, or be recorded by, the cache.
pub fn key_inputs(specs: &[String], env: &Env, graph: &Graph) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for spec in specs {
        let m = parse_mount(spec, &|v| Ok(v.to_string())).map_err(anyhow::Error::msg)?;
        if m.kind != MountType::Bind {
            continue;
        }
        let name = cache::key::mount(m.target.as_deref().unwrap_or(""));
        let value = match &m.from {
            None => {
                let root = env
                    .opts
                    .context
                    .canonicalize()
                    .context("the build context")?;
                let source = inside(&root, m.source.as_deref().unwrap_or("/"))?;
                let rel = source.strip_prefix(&root).expect("inside the context");
                env.checksums
                    .checksum_tree(&root, rel)
                    .with_context(|| format!("--mount={spec}"))?
                    .to_string()
            }
            Some(from) => {
                let names: Vec<Option<String>> =
                    graph.plan.stages.iter().map(|s| s.name.clone()).collect();
                match stage_ref(&names, from) {
                    Some(i) => graph.done[i]
                        .as_ref()
                        .ok_or_else(|| anyhow!("stage {from} has not been built"))?
                        .key
                        .to_string(),
                    None => StageState::from_image(env, from)?.key.to_string(),
                }
            }
        };
        out.push((name, value));
    }
    Ok(out)
}

/// The lower dirs of a stage (by name or index) or an image in the store.
fn source_chain(from: &str, env: &Env, graph: &Graph) -> Result<Vec<PathBuf>> {
    let names: Vec<Option<String>> = graph.plan.stages.iter().map(|s| s.name.clone()).collect();
    let state = match stage_ref(&names, from) {
        Some(i) => graph.done[i]
            .clone()
            .ok_or_else(|| anyhow!("stage {from} has not been built"))?,
        None => StageState::from_image(env, from)?,
    };
    let lowers = state.lower_dirs(env)?;
    if lowers.is_empty() {
        bail!("{from} has no files");
    }
    Ok(lowers)
}

/// `rel` under `root`, refusing anything that resolves outside it (through `..` or symlinks).
fn inside(root: &Path, rel: &str) -> Result<PathBuf> {
    let mut path = root.to_path_buf();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(p) => path.push(p),
            Component::ParentDir if path != root => {
                path.pop();
            }
            _ => {}
        }
    }
    let real = path
        .canonicalize()
        .with_context(|| format!("mount source {rel} does not exist"))?;
    if !real.starts_with(root) {
        bail!("mount source {rel} points outside its root");
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_specs() {
        assert!(
            matches!(parse_secret("id=a,src=/x").unwrap(), (id, SecretSource::File(p)) if id == "a" && p == Path::new("/x"))
        );
        assert!(
            matches!(parse_secret("id=tok,env=TOKEN").unwrap().1, SecretSource::Env(v) if v == "TOKEN")
        );
        assert!(
            matches!(parse_secret("id=TOKEN").unwrap().1, SecretSource::Env(v) if v == "TOKEN")
        );
        assert!(parse_secret("src=/x").is_err());
        assert!(parse_secret("id=a,src=/x,env=Y").is_err());
    }
}
