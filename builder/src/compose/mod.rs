//! The part of a docker compose project that `rbuild bake` builds: each service's `build:`
//! (context, dockerfile, args, target) and `image:` (the tag), read as `docker compose` does.
//!
//! - Files: `-f` in order, later ones overriding earlier ones key by key (args merge by name);
//!   without `-f`, the first of compose.yaml, compose.yml, docker-compose.yaml,
//!   docker-compose.yml in the current directory.
//! - The project directory is the first file's: relative paths and `.env` are taken from it;
//!   the project name is `COMPOSE_PROJECT_NAME`, else the top-level `name:`, else that
//!   directory's name. A service without `image:` is tagged `<project>-<service>`.
//! - Every string is interpolated ([`interpolate`]) from the environment, then `.env`.
//! - Services without `build:` are not built; other keys are not read.

pub mod dotenv;
pub mod interpolate;
pub mod set;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use yaml_serde::Value;

/// Where `docker compose` looks when not given `-f`, in its order.
pub const DEFAULT_FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// What to build for one service, resolved (paths joined, args valued, tags named).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub context: PathBuf,
    pub dockerfile: PathBuf,
    pub args: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub tags: Vec<String>,
    #[serde(rename = "no-cache")]
    pub no_cache: bool,
    /// `build.cache_from` / `cache_to`: `--cache-from` / `--cache-to` specs for this image.
    #[serde(rename = "cache-from")]
    pub cache_from: Vec<String>,
    #[serde(rename = "cache-to")]
    pub cache_to: Vec<String>,
}

#[derive(Debug)]
pub struct Project {
    pub name: String,
    /// The services with a `build:`, by name.
    pub services: BTreeMap<String, Service>,
    /// Services without `build:` (skipped).
    pub without_build: Vec<String>,
    /// Variables used without a value or default (each became an empty string).
    pub unset: Vec<String>,
}

/// A service's keys as one file gives them, before merging.
#[derive(Default)]
struct Partial {
    image: Option<String>,
    build: Option<PartialBuild>,
}

#[derive(Default)]
struct PartialBuild {
    context: Option<String>,
    dockerfile: Option<String>,
    /// `None`: listed without a value, taken from the environment.
    args: BTreeMap<String, Option<String>>,
    target: Option<String>,
    cache_from: Option<Vec<String>>,
    cache_to: Option<Vec<String>>,
}

/// The compose file `docker compose` would use in `dir`.
pub fn default_file(dir: &Path) -> Result<PathBuf> {
    DEFAULT_FILES
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "no compose file in {}: looked for {}; pass -f FILE",
                dir.display(),
                DEFAULT_FILES.join(", ")
            )
        })
}

/// Reads and merges `files` (at least one). `env` is the process environment.
pub fn load(files: &[PathBuf], env: &dyn Fn(&str) -> Option<String>) -> Result<Project> {
    let first = files.first().context("no compose file given")?;
    let dir = first.parent().unwrap_or(Path::new(""));
    let dotenv_path = dir.join(".env");
    let dotenv = match std::fs::read_to_string(&dotenv_path) {
        Ok(text) => {
            dotenv::parse(&text, env).map_err(|e| anyhow!("{}:{e}", dotenv_path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dotenv_path.display())),
    };
    let lookup = |name: &str| env(name).or_else(|| dotenv.get(name).cloned());

    let mut unset = Vec::new();
    let mut merged: BTreeMap<String, Partial> = BTreeMap::new();
    let mut top_name = None;
    for file in files {
        let shown = file.display();
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {shown}"))?;
        let mut doc: Value = yaml_serde::from_str(&text).map_err(|e| anyhow!("{shown}: {e}"))?;
        doc.apply_merge().map_err(|e| anyhow!("{shown}: {e}"))?;
        interpolate_all(&mut doc, "", &lookup, &mut unset).map_err(|e| anyhow!("{shown}: {e}"))?;
        if doc.is_null() {
            continue; // an empty file
        }
        let top = doc
            .as_mapping()
            .ok_or_else(|| anyhow!("{shown}: expected a map at the top"))?;
        if let Some(name) = top.get("name") {
            top_name = Some(scalar(name, "name").map_err(|e| anyhow!("{shown}: {e}"))?);
        }
        let Some(services) = top.get("services") else {
            continue;
        };
        let services = services
            .as_mapping()
            .ok_or_else(|| anyhow!("{shown}: services: expected a map"))?;
        for (name, def) in services {
            let name = name
                .as_str()
                .ok_or_else(|| anyhow!("{shown}: services: a service name is not a string"))?;
            let partial = read_service(name, def).map_err(|e| anyhow!("{shown}: {e}"))?;
            merge(merged.entry(name.to_string()).or_default(), partial);
        }
    }

    let name = match env("COMPOSE_PROJECT_NAME").or(top_name) {
        Some(name) => name,
        None => {
            let abs = std::path::absolute(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            })?;
            let abs = abs.canonicalize().unwrap_or(abs);
            abs.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        }
    };
    let name = project_name(&name).ok_or_else(|| {
        anyhow!("cannot make a project name from {name:?}: set COMPOSE_PROJECT_NAME or name:")
    })?;

    let mut project = Project {
        name,
        services: BTreeMap::new(),
        without_build: Vec::new(),
        unset,
    };
    for (service, partial) in merged {
        let Some(build) = partial.build else {
            project.without_build.push(service);
            continue;
        };
        let context = dir.join(build.context.as_deref().unwrap_or("."));
        let dockerfile = context.join(build.dockerfile.as_deref().unwrap_or("Dockerfile"));
        let args = build
            .args
            .into_iter()
            .filter_map(|(k, v)| match v {
                Some(v) => Some((k, v)),
                // Like compose: no value here and none in the environment leaves it unset.
                None => lookup(&k).map(|v| (k, v)),
            })
            .collect();
        let tag = partial
            .image
            .unwrap_or_else(|| format!("{}-{service}", project.name));
        project.services.insert(
            service,
            Service {
                context,
                dockerfile,
                args,
                target: build.target,
                tags: vec![tag],
                no_cache: false,
                cache_from: build.cache_from.unwrap_or_default(),
                cache_to: build.cache_to.unwrap_or_default(),
            },
        );
    }
    Ok(project)
}

/// Compose's normalisation: lower case, only `a-z0-9_-`, starting with a letter or digit.
fn project_name(raw: &str) -> Option<String> {
    let name: String = raw
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    let name = name.trim_start_matches(['_', '-']).to_string();
    (!name.is_empty()).then_some(name)
}

fn interpolate_all(
    value: &mut Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<String>,
) -> Result<()> {
    let child = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::String(s) => {
            *s = interpolate::interpolate(s, lookup, unset).map_err(|e| anyhow!("{path}: {e}"))?
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_all(item, &child(&i.to_string()), lookup, unset)?;
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let key = key
                    .as_str()
                    .map_or_else(|| format!("{key:?}"), str::to_string);
                interpolate_all(item, &child(&key), lookup, unset)?;
            }
        }
        Value::Tagged(tagged) => interpolate_all(&mut tagged.value, path, lookup, unset)?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

fn read_service(name: &str, def: &Value) -> Result<Partial> {
    let at = format!("services.{name}");
    if def.is_null() {
        return Ok(Partial::default());
    }
    let def = def
        .as_mapping()
        .ok_or_else(|| anyhow!("{at}: expected a map"))?;
    let mut partial = Partial::default();
    if let Some(image) = def.get("image") {
        partial.image = Some(scalar(image, &format!("{at}.image"))?);
    }
    let Some(build) = def.get("build") else {
        return Ok(partial);
    };
    let at = format!("{at}.build");
    let mut out = PartialBuild::default();
    match build {
        Value::String(context) => out.context = Some(context.clone()),
        Value::Mapping(map) => {
            let field = |key: &str| -> Result<Option<String>> {
                map.get(key)
                    .map(|v| scalar(v, &format!("{at}.{key}")))
                    .transpose()
            };
            out.context = field("context")?;
            out.dockerfile = field("dockerfile")?;
            out.target = field("target")?;
            if let Some(args) = map.get("args") {
                out.args = read_args(args, &format!("{at}.args"))?;
            }
            for (key, list) in [
                ("cache_from", &mut out.cache_from),
                ("cache_to", &mut out.cache_to),
            ] {
                if let Some(v) = map.get(key) {
                    *list = Some(read_list(v, &format!("{at}.{key}"))?);
                }
            }
        }
        _ => bail!("{at}: expected a string (the context) or a map"),
    }
    partial.build = Some(out);
    Ok(partial)
}

/// `args:` as a map (`K: V`, `K:` without value) or a list (`K=V`, `K`).
fn read_args(args: &Value, at: &str) -> Result<BTreeMap<String, Option<String>>> {
    match args {
        Value::Mapping(map) => map
            .iter()
            .map(|(k, v)| {
                let k = k
                    .as_str()
                    .ok_or_else(|| anyhow!("{at}: a key is not a string"))?;
                let v = match v {
                    Value::Null => None,
                    v => Some(scalar(v, &format!("{at}.{k}"))?),
                };
                Ok((k.to_string(), v))
            })
            .collect(),
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let item = scalar(item, &format!("{at}.{i}"))?;
                Ok(match item.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (item, None),
                })
            })
            .collect(),
        _ => bail!("{at}: expected a map or a list"),
    }
}

/// A list of strings.
fn read_list(value: &Value, at: &str) -> Result<Vec<String>> {
    match value {
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| scalar(item, &format!("{at}.{i}")))
            .collect(),
        _ => bail!("{at}: expected a list"),
    }
}

/// A string, number or boolean, as text (compose accepts `VERSION: 2`).
fn scalar(value: &Value, at: &str) -> Result<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => bail!("{at}: expected a string"),
    }
}

/// Later files override earlier ones key by key; args merge by name.
fn merge(into: &mut Partial, later: Partial) {
    if later.image.is_some() {
        into.image = later.image;
    }
    let Some(later) = later.build else { return };
    let build = into.build.get_or_insert_with(PartialBuild::default);
    build.context = later.context.or(build.context.take());
    build.dockerfile = later.dockerfile.or(build.dockerfile.take());
    build.target = later.target.or(build.target.take());
    build.cache_from = later.cache_from.or(build.cache_from.take());
    build.cache_to = later.cache_to.or(build.cache_to.take());
    build.args.extend(later.args);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn reads_merges_and_interpolates() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("My_Proj");
        std::fs::create_dir(&dir).unwrap();
        write(&dir, ".env", "TAG=7\nFROM_DOTENV=dot\n");
        let base = write(
            &dir,
            "compose.yaml",
            "services:\n  web:\n    build:\n      context: web\n      args:\n        A: 1\n        \
             B: ${FROM_DOTENV}\n        E:\n    image: reg/web:${TAG}\n  api:\n    build: ./api\n  \
             db:\n    image: postgres\n",
        );
        let over = write(
            &dir,
            "override.yml",
            "services:\n  web:\n    build:\n      dockerfile: Web.Dockerfile\n      target: prod\n      \
             args: [\"B=over\", C=$$x, E]\n",
        );
        let env = |name: &str| match name {
            "TAG" => Some("8".to_string()),
            "E" => Some("from-env".to_string()),
            _ => None,
        };
        let project = load(&[base, over], &env).unwrap();
        assert_eq!(project.name, "my_proj");
        assert_eq!(project.without_build, ["db"]);
        let web = &project.services["web"];
        assert_eq!(web.context, dir.join("web"));
        assert_eq!(web.dockerfile, dir.join("web/Web.Dockerfile"));
        assert_eq!(web.target.as_deref(), Some("prod"));
        assert_eq!(web.tags, ["reg/web:8"], "the environment beats .env");
        let args: Vec<(&str, &str)> = web
            .args
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            args,
            [("A", "1"), ("B", "over"), ("C", "$x"), ("E", "from-env")]
        );
        let api = &project.services["api"];
        assert_eq!(api.dockerfile, dir.join("./api/Dockerfile"));
        assert_eq!(api.tags, ["my_proj-api"]);
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let file = write(
            tmp.path(),
            "docker-compose.yml",
            "services:\n  nginx:\n    build:\n      args: 3\n",
        );
        let e = load(std::slice::from_ref(&file), &|_| None).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: services.nginx.build.args: expected a map or a list",
                file.display()
            )
        );
        write(
            tmp.path(),
            "docker-compose.yml",
            "services:\n  nginx:\n    image: ${NEED:?set NEED}\n",
        );
        let e = load(std::slice::from_ref(&file), &|_| None).unwrap_err();
        assert!(
            e.to_string().ends_with(
                "services.nginx.image: required variable NEED is missing a value: set NEED"
            ),
            "{e}"
        );
        write(tmp.path(), "docker-compose.yml", "services: [\n");
        let e = load(std::slice::from_ref(&file), &|_| None).unwrap_err();
        assert!(e.to_string().contains("docker-compose.yml: "), "{e}");
    }

    #[test]
    fn default_file_follows_compose_order() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(default_file(tmp.path()).is_err());
        write(tmp.path(), "docker-compose.yml", "");
        write(tmp.path(), "compose.yml", "");
        assert_eq!(
            default_file(tmp.path()).unwrap(),
            tmp.path().join("compose.yml")
        );
    }
}
