//! Miss explanations: every case, through a real cache, and the exact wording.

use std::fs;

use cache::explain::diff;
use cache::{key, Cache, Change, Inputs, KeyBuilder, Miss, Record};

/// A step as the builder would key it.
fn step(fields: &[(&str, &str)]) -> (cache::CacheKey, Inputs) {
    let mut kb = KeyBuilder::new("rbuild.step.v1");
    for (n, v) in fields {
        kb.push(n, v);
    }
    kb.into_parts()
}

const SLOT: &str = "srcs/requirements/nginx/Dockerfile#0#3";

fn with_previous(fields: &[(&str, &str)]) -> (tempfile::TempDir, Cache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let (k, inputs) = step(fields);
    cache.record(Record::new(k, SLOT, inputs, None)).unwrap();
    (dir, cache)
}

const BASE: &[(&str, &str)] = &[
    ("parent", "sha256:p1"),
    ("instruction", "COPY conf/ /etc/nginx/"),
    ("arg:VERSION", "1.25"),
    ("platform", "linux/amd64"),
    ("file:conf/nginx.conf", "sha256:n1"),
    ("file:conf/mime.types", "sha256:m1"),
];

fn changed(over: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = BASE
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    for (n, val) in over {
        match v.iter_mut().find(|(k, _)| k == n) {
            Some(e) => e.1 = val.to_string(),
            None => v.push((n.to_string(), val.to_string())),
        }
    }
    v
}

fn explain(cache: &Cache, fields: &[(String, String)]) -> Miss {
    let f: Vec<(&str, &str)> = fields
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let (k, inputs) = step(&f);
    assert!(cache.lookup(&k).unwrap().is_none(), "the test wants a miss");
    cache.explain_miss(SLOT, &inputs)
}

#[test]
fn no_previous_build() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let (_, inputs) = step(BASE);
    let miss = cache.explain_miss(SLOT, &inputs);
    assert_eq!(miss, Miss::NoPreviousBuild);
    assert_eq!(
        miss.to_string(),
        "not cached: no earlier build of this step"
    );
}

#[test]
fn no_cache() {
    assert_eq!(Miss::NoCache.to_string(), "not cached: --no-cache");
}

#[test]
fn a_changed_file_is_named() {
    let (_d, cache) = with_previous(BASE);
    let miss = explain(&cache, &changed(&[("file:conf/nginx.conf", "sha256:n2")]));
    assert_eq!(
        miss,
        Miss::Changed(vec![Change::Modified("file:conf/nginx.conf".into())])
    );
    assert_eq!(miss.to_string(), "not cached: file conf/nginx.conf changed");
}

#[test]
fn a_changed_build_arg_is_named() {
    let (_d, cache) = with_previous(BASE);
    let miss = explain(&cache, &changed(&[("arg:VERSION", "1.27")]));
    assert_eq!(miss.to_string(), "not cached: build arg VERSION changed");
}

#[test]
fn only_the_parent_changed() {
    let (_d, cache) = with_previous(BASE);
    let miss = explain(&cache, &changed(&[("parent", "sha256:p2")]));
    assert_eq!(
        miss.to_string(),
        "not cached: the previous step was rebuilt"
    );
}

#[test]
fn the_step_s_own_reasons_come_first() {
    let (_d, cache) = with_previous(BASE);
    let miss = explain(
        &cache,
        &changed(&[
            ("parent", "sha256:p2"),
            ("instruction", "COPY conf/ /etc/"),
            ("arg:NEW", "1"),
        ]),
    );
    assert_eq!(
        miss.to_string(),
        "not cached: the instruction changed; build arg NEW added; the previous step was rebuilt"
    );
    // A new base image says it all: the first step's parent is not repeated.
    let miss = explain(
        &cache,
        &changed(&[("parent", "sha256:p3"), ("base", "sha256:c2")]),
    );
    assert_eq!(miss.to_string(), "not cached: the base image changed");
}

#[test]
fn long_lists_collapse() {
    let mut prev: Vec<(String, String)> = BASE
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    for i in 0..15 {
        prev.push((format!("file:src/f{i:02}.c"), "old".into()));
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let p: Vec<(&str, &str)> = prev.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let (k, inputs) = step(&p);
    cache.record(Record::new(k, SLOT, inputs, None)).unwrap();

    // 15 changed.
    let now: Vec<(String, String)> = prev
        .iter()
        .map(|(n, v)| {
            if n.starts_with("file:src/") {
                (n.clone(), "new".into())
            } else {
                (n.clone(), v.clone())
            }
        })
        .collect();
    assert_eq!(
        explain(&cache, &now).to_string(),
        "not cached: 15 files changed: src/f00.c, src/f01.c, src/f02.c and 12 more"
    );
    // Exactly 3: listed, no "more".
    let now: Vec<(String, String)> = prev
        .iter()
        .map(|(n, v)| {
            let hit = ["file:src/f03.c", "file:src/f07.c", "file:src/f11.c"].contains(&n.as_str());
            (n.clone(), if hit { "new".into() } else { v.clone() })
        })
        .collect();
    assert_eq!(
        explain(&cache, &now).to_string(),
        "not cached: 3 files changed: src/f03.c, src/f07.c, src/f11.c"
    );
    // Removed and added, with two args.
    let mut now: Vec<(String, String)> = prev
        .iter()
        .filter(|(n, _)| !n.starts_with("file:src/f1"))
        .cloned()
        .collect();
    now.push(("file:src/new.c".into(), "x".into()));
    now.push(("arg:A".into(), "1".into()));
    now.push(("arg:B".into(), "1".into()));
    assert_eq!(
        explain(&cache, &now).to_string(),
        "not cached: 2 build args added: A, B; file src/new.c added; \
         5 files removed: src/f10.c, src/f11.c, src/f12.c and 2 more"
    );
}

#[test]
fn other_categories() {
    let (_d, cache) = with_previous(&[
        ("parent", "p"),
        ("instruction", "RUN make"),
        ("platform", "linux/amd64"),
        ("mount:/src", "a"),
        ("files", "x"),
        ("custom", "1"),
    ]);
    let miss = explain(
        &cache,
        &[
            ("parent".into(), "p".into()),
            ("instruction".into(), "RUN make".into()),
            ("platform".into(), "linux/arm64".into()),
            ("mount:/src".into(), "b".into()),
            ("files".into(), "y".into()),
            ("custom".into(), "2".into()),
        ],
    );
    assert_eq!(
        miss.to_string(),
        "not cached: the target platform changed; the copied files changed; mount /src changed; \
         input custom changed"
    );
}

#[test]
fn record_pruned() {
    let (_d, cache) = with_previous(BASE);
    let (k, _) = step(BASE);
    fs::remove_file(cache.record_path(&k)).unwrap();
    let miss = explain(&cache, &changed(&[("arg:VERSION", "2")]));
    assert_eq!(miss, Miss::RecordMissing);
    assert_eq!(
        miss.to_string(),
        "not cached: the earlier build of this step was pruned from the cache"
    );
}

#[test]
fn key_changed_but_no_input() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let (k, inputs) = step(BASE);
    cache
        .record(Record::new(k, SLOT, inputs.clone(), None))
        .unwrap();
    // Same inputs under a new key domain.
    let mut kb = KeyBuilder::new("rbuild.step.v2");
    for (n, v) in BASE {
        kb.push(n, v);
    }
    let (k2, inputs2) = kb.into_parts();
    assert_ne!(k, k2);
    assert_eq!(inputs, inputs2);
    assert_eq!(
        cache.explain_miss(SLOT, &inputs2).to_string(),
        "not cached: the cache key changed but no recorded input did (a different rbuild version?)"
    );
}

#[test]
fn control_characters_are_quoted() {
    let prev: Inputs = [(key::file("a\nb"), "1".to_string())].into();
    let now: Inputs = [(key::file("a\nb"), "2".to_string())].into();
    assert_eq!(
        Miss::Changed(diff(&prev, &now)).to_string(),
        "not cached: file \"a\\nb\" changed"
    );
}

#[test]
fn diff_is_sorted_and_complete() {
    let prev: Inputs = [("a", "1"), ("b", "1"), ("d", "1")]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
    let now: Inputs = [("b", "2"), ("c", "1"), ("d", "1")]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
    assert_eq!(
        diff(&prev, &now),
        vec![
            Change::Removed("a".into()),
            Change::Modified("b".into()),
            Change::Added("c".into())
        ]
    );
    assert_eq!(
        serde_json::to_string(&Miss::Changed(vec![Change::Modified("arg:X".into())])).unwrap(),
        r#"{"reason":"changed","changes":[{"change":"modified","input":"arg:X"}]}"#
    );
}
