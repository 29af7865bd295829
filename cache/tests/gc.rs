//! Pruning: LRU by size, by age, everything; garbage; cache mounts; prune racing lookups.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use cache::{prune, Cache, CacheKey, Inputs, KeyBuilder, LayerRef, Policy, Record};

fn key(n: &str) -> CacheKey {
    KeyBuilder::new("test").field("n", n).finish()
}

fn digest(name: &str) -> String {
    format!("sha256:{}", hex::encode(cache::hash_bytes(name.as_bytes())))
}

fn layer(name: &str, size: u64) -> LayerRef {
    LayerRef {
        digest: digest(name),
        diff_id: digest(&format!("diff-{name}")),
        size,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
    }
}

fn set_mtime(path: &Path, ago: Duration) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - ago)
        .unwrap();
}

const DAY: Duration = Duration::from_secs(86400);

/// Records r0..rN, r0 the least recently used; each (name, layer name, size).
fn populate(cache: &Cache, recs: &[(&str, Option<(&str, u64)>)]) {
    for (i, (name, l)) in recs.iter().enumerate() {
        let k = key(name);
        cache
            .record(Record::new(
                k,
                format!("slot-{name}"),
                Inputs::new(),
                l.map(|(n, s)| layer(n, s)),
            ))
            .unwrap();
        set_mtime(&cache.record_path(&k), DAY * (100 - i as u32));
    }
}

fn removed_names(report: &cache::PruneReport, names: &[&str]) -> Vec<String> {
    report
        .removed
        .iter()
        .map(|r| {
            names
                .iter()
                .find(|n| key(n) == r.key)
                .map(|n| n.to_string())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn keep_storage_evicts_least_recently_used_first() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let names = ["r0", "r1", "r2", "r3", "r4"];
    populate(
        &cache,
        &[
            ("r0", Some(("l0", 100))),
            ("r1", Some(("l1", 100))),
            ("r2", Some(("l2", 100))),
            ("r3", Some(("l3", 100))),
            ("r4", Some(("l4", 100))),
        ],
    );
    // r0 was used a moment ago: it is now the most recent.
    cache.lookup(&key("r0")).unwrap().unwrap();

    let report = prune(
        &cache,
        &Policy {
            keep_storage: Some(250),
            ..Policy::default()
        },
    )
    .unwrap();
    assert_eq!(removed_names(&report, &names), ["r1", "r2", "r3"]);
    assert_eq!(
        report.freed_layers,
        [digest("l1"), digest("l2"), digest("l3")].into()
    );
    assert_eq!(report.freed_bytes, 300);
    assert_eq!((report.kept, report.kept_bytes), (2, 200));
    assert_eq!(
        cache.referenced_layers().unwrap(),
        HashSet::from([digest("l0"), digest("l4")])
    );
    // Their slot entries went with them.
    assert_eq!(report.removed_slots, 3);
    assert!(!cache.slot_path("slot-r1").exists());
    assert!(cache.slot_path("slot-r0").exists());

    // Within the limit: nothing more to do.
    let again = prune(
        &cache,
        &Policy {
            keep_storage: Some(250),
            ..Policy::default()
        },
    )
    .unwrap();
    assert!(again.removed.is_empty());
}

#[test]
fn shared_and_kept_elsewhere_layers_are_counted_once_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let names = ["a", "b", "c", "d", "e"];
    populate(
        &cache,
        &[
            ("a", Some(("shared", 100))), // oldest
            ("b", None),                  // empty diff
            ("c", Some(("shared", 100))),
            ("d", Some(("image", 1000))), // used by a tagged image
            ("e", Some(("own", 100))),
        ],
    );
    // Counted: shared 100 + own 100 (image excluded) = 200.
    let policy = |keep| Policy {
        keep_storage: Some(keep),
        kept_elsewhere: HashSet::from([digest("image")]),
        ..Policy::default()
    };
    let report = prune(&cache, &policy(200)).unwrap();
    assert!(report.removed.is_empty());
    assert_eq!(report.kept_bytes, 200);

    // To get to 100, "shared" must go: a (frees nothing yet), b, c (frees shared).
    let report = prune(&cache, &policy(100)).unwrap();
    assert_eq!(removed_names(&report, &names), ["a", "b", "c"]);
    assert_eq!(report.freed_layers, [digest("shared")].into());
    assert_eq!(report.freed_bytes, 100);
    assert_eq!(report.kept_bytes, 100);
    assert_eq!(
        cache.referenced_layers().unwrap(),
        HashSet::from([digest("image"), digest("own")])
    );
}

#[test]
fn older_than_removes_by_last_use() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let names = ["old", "mid", "new"];
    populate(
        &cache,
        &[
            ("old", Some(("l1", 1))),
            ("mid", Some(("l2", 1))),
            ("new", None),
        ],
    );
    // ages: old 100 days, mid 99 days, new 98 days; then mid is used.
    cache.lookup(&key("mid")).unwrap().unwrap();
    set_mtime(&cache.record_path(&key("new")), DAY * 3);

    let report = prune(
        &cache,
        &Policy {
            older_than: Some(DAY * 7),
            ..Policy::default()
        },
    )
    .unwrap();
    assert_eq!(removed_names(&report, &names), ["old"]);
    assert!(
        report.removed[0].last_used
            < SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                - 99 * 86400
    );
    let report = prune(
        &cache,
        &Policy {
            older_than: Some(DAY * 2),
            ..Policy::default()
        },
    )
    .unwrap();
    assert_eq!(removed_names(&report, &names), ["new"]);
    assert_eq!(cache.records().unwrap().len(), 1);
}

#[test]
fn all_removes_records_and_idle_mounts_only_then() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    populate(&cache, &[("a", Some(("l", 5))), ("b", None)]);
    let apt = cache.mount_dir("apt").unwrap();
    fs::write(apt.join("pkg.deb"), "x").unwrap();
    let busy = cache.lock_mount("go-build", true).unwrap();
    fs::write(busy.path().join("obj"), "y").unwrap();
    // A hostile id stays inside mounts/.
    let odd = cache.mount_dir("../../etc").unwrap();
    assert!(odd.starts_with(dir.path().join("mounts")));

    // Without all, mounts stay.
    let report = prune(
        &cache,
        &Policy {
            older_than: Some(Duration::ZERO),
            ..Policy::default()
        },
    )
    .unwrap();
    assert_eq!(report.removed.len(), 2);
    assert!(apt.join("pkg.deb").exists());
    assert!(report.removed_mounts.is_empty());

    populate(&cache, &[("c", None)]);
    let report = prune(
        &cache,
        &Policy {
            all: true,
            ..Policy::default()
        },
    )
    .unwrap();
    assert_eq!(report.removed.len(), 1);
    assert_eq!(report.kept, 0);
    let mut removed = report.removed_mounts.clone();
    removed.sort();
    assert_eq!(removed, ["../../etc", "apt"]);
    assert_eq!(report.busy_mounts, ["go-build"]);
    assert!(!apt.exists());
    assert!(busy.path().join("obj").exists(), "a mount in use is kept");
    drop(busy);
    let report = prune(
        &cache,
        &Policy {
            all: true,
            ..Policy::default()
        },
    )
    .unwrap();
    assert_eq!(report.removed_mounts, ["go-build"]);
    // Usable again afterwards.
    let again = cache.lock_mount("go-build", false).unwrap();
    assert!(again.path().is_dir());
    assert!(!again.is_exclusive());
}

#[test]
fn a_waiting_mount_user_survives_the_mount_being_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    // Play prune's part by hand, deterministically: hold the mount's lock exclusively, let a
    // user queue on it, remove the whole mount (lock file included), then release.
    let held = cache.lock_mount("m", true).unwrap();
    let mount_root = held.path().parent().unwrap().to_path_buf();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let g = cache.lock_mount("m", true).unwrap();
            fs::write(g.path().join("f"), "z").unwrap();
            assert!(g.path().join("f").is_file());
        });
        std::thread::sleep(Duration::from_millis(100));
        fs::remove_dir_all(&mount_root).unwrap();
        drop(held);
        // The waiter got a lock on the deleted file, noticed, and started over.
        waiter.join().unwrap();
    });
    assert!(mount_root.join("data/f").is_file());
    assert!(mount_root.join("lock").is_file());
}

#[test]
fn garbage_goes_whatever_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    populate(&cache, &[("a", None)]);
    fs::write(dir.path().join("tmp/123-0-deadbeef.json"), "half").unwrap();
    let bad = dir
        .path()
        .join("records")
        .join(format!("{}.json", "0".repeat(64)));
    fs::write(&bad, "{").unwrap();
    // A slot pointing at a record that is gone.
    cache
        .record(Record::new(key("gone"), "slot-gone", Inputs::new(), None))
        .unwrap();
    fs::remove_file(cache.record_path(&key("gone"))).unwrap();

    let report = prune(&cache, &Policy::default()).unwrap();
    assert_eq!(report.removed_temp_files, 1);
    assert_eq!(report.removed_damaged, std::slice::from_ref(&bad));
    assert_eq!(report.removed_slots, 1);
    assert!(report.removed.is_empty());
    assert_eq!(report.kept, 1);
    assert!(!bad.exists());
    assert!(cache.slot_path("slot-a").exists());
    // Reported in the report, not again as warnings.
    assert!(cache.take_warnings().is_empty());
}

#[test]
fn prune_racing_lookups_and_records_never_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let keys: Vec<CacheKey> = (0..20).map(|i| key(&format!("k{i}"))).collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let mut workers = Vec::new();
        for t in 0..3 {
            let (cache, keys, stop) = (&cache, &keys, &stop);
            workers.push(s.spawn(move || {
                let mut i = t;
                let mut hits = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let k = keys[i % keys.len()];
                    match cache.lookup(&k).unwrap() {
                        Some(r) => {
                            assert_eq!(r.key, k);
                            assert_eq!(r.layer.as_ref().unwrap().size, 42);
                            hits += 1;
                        }
                        None => {
                            let l = layer(&format!("l{i}"), 42);
                            cache
                                .record(Record::new(k, format!("s{i}"), Inputs::new(), Some(l)))
                                .unwrap();
                        }
                    }
                    i += 1;
                }
                (hits, i - t)
            }));
        }
        let mut prunes = 0;
        let deadline = std::time::Instant::now() + Duration::from_millis(800);
        while std::time::Instant::now() < deadline {
            let policy = if prunes % 2 == 0 {
                Policy {
                    all: true,
                    ..Policy::default()
                }
            } else {
                Policy {
                    keep_storage: Some(42 * 5),
                    ..Policy::default()
                }
            };
            prune(&cache, &policy).unwrap();
            cache.referenced_layers().unwrap();
            prunes += 1;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (hits, ops) = workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        eprintln!("{prunes} prunes, {ops} lookups ({hits} hits) and records");
        assert!(prunes > 5, "prune starved: {prunes}");
        assert!(hits > 5 && ops > 50, "lookups starved: {ops} ({hits} hits)");
    });
    assert!(
        cache.take_warnings().is_empty(),
        "{:?}",
        cache.take_warnings()
    );
}
