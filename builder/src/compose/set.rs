//! `--set SERVICE.KEY=VALUE`: docker buildx bake's overrides, for the keys rbuild supports:
//! `args.NAME`, `target`, `tags`, `cache-from`, `cache-to` (the first `--set` of a list replaces
//! it, the next ones extend it) and `no-cache`. `*` as SERVICE sets every service.

use super::Service;
use anyhow::{anyhow, bail, Result};
use std::collections::{BTreeMap, BTreeSet};

/// Applies `sets` in order.
pub fn apply(services: &mut BTreeMap<String, Service>, sets: &[String]) -> Result<()> {
    let mut replaced = BTreeSet::new();
    for spec in sets {
        let (lhs, value) = spec
            .split_once('=')
            .ok_or_else(|| anyhow!("--set {spec}: expected SERVICE.KEY=VALUE"))?;
        let (who, key) = lhs
            .split_once('.')
            .ok_or_else(|| anyhow!("--set {spec}: expected SERVICE.KEY=VALUE"))?;
        let names: Vec<String> = if who == "*" {
            services.keys().cloned().collect()
        } else if services.contains_key(who) {
            vec![who.to_string()]
        } else {
            bail!(
                "--set {spec}: no service {who:?} to build (services with a build: {})",
                services.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        };
        for name in names {
            let service = services.get_mut(&name).expect("listed above");
            match key {
                "target" => service.target = Some(value.to_string()),
                "tags" | "cache-from" | "cache-to" => {
                    let list = match key {
                        "tags" => &mut service.tags,
                        "cache-from" => &mut service.cache_from,
                        _ => &mut service.cache_to,
                    };
                    if replaced.insert((name, key)) {
                        list.clear();
                    }
                    list.push(value.to_string());
                }
                "no-cache" => {
                    service.no_cache = match value {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => bail!("--set {spec}: no-cache takes true or false"),
                    }
                }
                _ => match key.strip_prefix("args.") {
                    Some(arg) if !arg.is_empty() => {
                        service.args.insert(arg.to_string(), value.to_string());
                    }
                    _ => bail!(
                        "--set {spec}: rbuild supports the keys args.NAME, target, tags, \
                         cache-from, cache-to and no-cache"
                    ),
                },
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services() -> BTreeMap<String, Service> {
        ["a", "b"]
            .into_iter()
            .map(|n| {
                (
                    n.to_string(),
                    Service {
                        context: n.into(),
                        dockerfile: format!("{n}/Dockerfile").into(),
                        args: BTreeMap::from([("K".to_string(), "compose".to_string())]),
                        target: None,
                        tags: vec![format!("{n}:1")],
                        no_cache: false,
                        cache_from: Vec::new(),
                        cache_to: vec![format!("type=local,dest=/c/{n}")],
                    },
                )
            })
            .collect()
    }

    fn set(specs: &[&str]) -> Result<BTreeMap<String, Service>> {
        let mut s = services();
        apply(
            &mut s,
            &specs.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )?;
        Ok(s)
    }

    #[test]
    fn cache_lists_are_replaced_then_extended() {
        let s = set(&[
            "a.cache-to=type=registry,ref=r/a",
            "a.cache-to=type=local,dest=d",
            "*.cache-from=r/x",
        ])
        .unwrap();
        assert_eq!(
            s["a"].cache_to,
            ["type=registry,ref=r/a", "type=local,dest=d"]
        );
        assert_eq!(s["b"].cache_to, ["type=local,dest=/c/b"]);
        assert_eq!(s["a"].cache_from, ["r/x"]);
        assert_eq!(s["b"].cache_from, ["r/x"]);
    }

    #[test]
    fn keys() {
        let s = set(&[
            "a.args.K=x=y",
            "*.args.NEW=n",
            "b.target=prod",
            "a.tags=r/a:2",
            "a.tags=r/a:latest",
            "*.no-cache=true",
        ])
        .unwrap();
        assert_eq!(
            s["a"].args["K"], "x=y",
            "the value is all after the first ="
        );
        assert_eq!(s["b"].args["K"], "compose");
        assert_eq!(s["b"].args["NEW"], "n");
        assert_eq!(s["b"].target.as_deref(), Some("prod"));
        assert_eq!(s["a"].target, None);
        assert_eq!(s["a"].tags, ["r/a:2", "r/a:latest"]);
        assert_eq!(s["b"].tags, ["b:1"]);
        assert!(s["a"].no_cache && s["b"].no_cache);
    }

    #[test]
    fn errors() {
        for (spec, says) in [
            ("a.target", "expected SERVICE.KEY=VALUE"),
            ("target=x", "expected SERVICE.KEY=VALUE"),
            (
                "c.target=x",
                "no service \"c\" to build (services with a build: a, b)",
            ),
            ("a.platform=x", "supports the keys"),
            ("a.args.=x", "supports the keys"),
            ("a.no-cache=maybe", "true or false"),
        ] {
            let e = set(&[spec]).unwrap_err().to_string();
            assert!(e.contains(says), "{spec}: {e}");
        }
    }
}
