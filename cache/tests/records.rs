//! The record store: round trips, last_used via mtime, damaged files, SIGKILLed writers,
//! concurrent writers.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use cache::{Cache, CacheKey, Inputs, KeyBuilder, LayerRef, Record};

fn key(n: &str) -> CacheKey {
    KeyBuilder::new("test").field("n", n).finish()
}

fn layer(digest_byte: char, size: u64) -> LayerRef {
    LayerRef {
        digest: format!("sha256:{}", digest_byte.to_string().repeat(64)),
        diff_id: format!("sha256:{}", "d".repeat(64)),
        size,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
    }
}

fn inputs(pairs: &[(&str, &str)]) -> Inputs {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn set_mtime(path: &Path, t: SystemTime) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn record_and_lookup_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("cache")).unwrap();
    let k = key("a");
    assert_eq!(cache.lookup(&k).unwrap(), None);

    let rec = Record {
        key: k,
        layer: Some(layer('a', 1234)),
        inputs: inputs(&[
            ("parent", "0011223344556677"),
            ("arg:X", "8899aabbccddeeff"),
        ]),
        slot: "Dockerfile#0#1".into(),
        created: 1_700_000_000,
        last_used: 1_700_000_000,
    };
    cache.record(rec.clone()).unwrap();
    let got = cache.lookup(&k).unwrap().unwrap();
    assert_eq!(
        Record {
            last_used: rec.last_used,
            ..got.clone()
        },
        rec
    );
    assert!(
        got.last_used >= now_secs() - 5,
        "last_used is now: {}",
        got.last_used
    );

    // An empty diff: no layer.
    let empty = Record::new(key("b"), "Dockerfile#0#2", Inputs::new(), None);
    cache.record(empty.clone()).unwrap();
    assert_eq!(cache.lookup(&empty.key).unwrap().unwrap().layer, None);

    // The file is where the docs say, and is readable JSON with the key as a string.
    let text = fs::read_to_string(cache.record_path(&k)).unwrap();
    assert!(cache
        .record_path(&k)
        .ends_with(format!("records/{}.json", k.hex())));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["key"], k.to_string());
    assert_eq!(v["layer"]["size"], 1234);

    let mut all = cache.records().unwrap();
    all.sort_by_key(|r| r.slot.clone());
    assert_eq!(all.len(), 2);
    assert!(cache.take_warnings().is_empty());
    // Nothing left in tmp/.
    assert_eq!(
        fs::read_dir(dir.path().join("cache/tmp")).unwrap().count(),
        0
    );
}

#[test]
fn lookup_updates_last_used_through_mtime() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let k = key("lru");
    cache
        .record(Record::new(k, "s", Inputs::new(), None))
        .unwrap();
    let path = cache.record_path(&k);
    let before = fs::read(&path).unwrap();
    let old = SystemTime::now() - Duration::from_secs(10 * 86400);
    set_mtime(&path, old);
    let listed = cache.records().unwrap();
    assert!(listed[0].last_used <= now_secs() - 10 * 86400 + 5);

    let hit = cache.lookup(&k).unwrap().unwrap();
    assert!(hit.last_used >= now_secs() - 5);
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    assert!(mtime > SystemTime::now() - Duration::from_secs(5));
    // Touched, not rewritten.
    assert_eq!(fs::read(&path).unwrap(), before);
    assert!(cache.records().unwrap()[0].last_used >= now_secs() - 5);
}

#[test]
fn damaged_and_misplaced_records_are_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let k = key("damaged");
    fs::write(cache.record_path(&k), b"{\"key\": \"sha256:").unwrap();
    assert_eq!(cache.lookup(&k).unwrap(), None);
    let w = cache.take_warnings();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].path, cache.record_path(&k));
    assert!(
        w[0].to_string().contains("not a valid cache record"),
        "{}",
        w[0]
    );

    // A valid record of another key copied under this key's name must not be served.
    let other = key("other");
    cache
        .record(Record::new(other, "s", Inputs::new(), None))
        .unwrap();
    fs::copy(cache.record_path(&other), cache.record_path(&k)).unwrap();
    assert_eq!(cache.lookup(&k).unwrap(), None);
    assert!(cache.take_warnings()[0]
        .problem
        .contains("not of its file name"));
    assert!(cache.lookup(&other).unwrap().is_some());
}

#[test]
fn lookup_for_points_the_slot_at_the_key_used() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let (ka, kb) = (key("A"), key("B"));
    cache
        .record(Record::new(ka, "slot", inputs(&[("arg:V", "aaaa")]), None))
        .unwrap();
    cache
        .record(Record::new(kb, "slot", inputs(&[("arg:V", "bbbb")]), None))
        .unwrap();
    // Explained against the last one recorded (B)...
    let now = inputs(&[("arg:V", "aaaa"), ("file:x", "1")]);
    assert_eq!(
        cache.explain_miss("slot", &now).to_string(),
        "not cached: build arg V changed; file x added"
    );
    // ...until A is used again.
    assert!(cache.lookup_for("slot", &ka).unwrap().is_some());
    assert_eq!(
        cache.explain_miss("slot", &now).to_string(),
        "not cached: file x added"
    );
    let slot_text = fs::read_to_string(cache.slot_path("slot")).unwrap();
    assert!(slot_text.contains(&ka.to_string()));
    // A miss leaves the slot alone.
    assert!(cache.lookup_for("slot", &key("C")).unwrap().is_none());
    assert!(fs::read_to_string(cache.slot_path("slot"))
        .unwrap()
        .contains(&ka.to_string()));
}

#[test]
fn concurrent_writers_of_one_key_leave_one_complete_record() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let k = key("same");
    std::thread::scope(|s| {
        for t in 0..4 {
            let cache = &cache;
            s.spawn(move || {
                for i in 0..50 {
                    let marker = format!("{t}-{i}");
                    let ins: Inputs = (0..50)
                        .map(|j| (format!("file:{j}"), marker.clone()))
                        .collect();
                    cache.record(Record::new(k, "slot", ins, None)).unwrap();
                    let got = cache.lookup(&k).unwrap().unwrap();
                    let first = got.inputs.values().next().unwrap().clone();
                    assert!(got.inputs.values().all(|v| *v == first));
                }
            });
        }
    });
    assert!(cache.take_warnings().is_empty());
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
}

/// The body of the SIGKILLed writer: records generation after generation of one key, each
/// with many inputs all holding the generation number, so that a mix would show.
#[test]
fn sigkill_child_writer() {
    let Some(dir) = std::env::var_os("CACHE_TEST_WRITER_DIR") else {
        return;
    };
    let cache = Cache::open(dir).unwrap();
    let k = key("killed");
    for generation in 0u64.. {
        let ins: Inputs = (0..3000)
            .map(|j| {
                (
                    format!("file:dir/file-{j:05}"),
                    format!("{generation:016x}"),
                )
            })
            .collect();
        cache
            .record(Record::new(k, "slot", ins, Some(layer('e', generation))))
            .unwrap();
    }
}

/// A record is consistent if all its inputs carry one generation, the layer's size too.
fn check_consistent(rec: &Record) -> u64 {
    assert_eq!(rec.key, key("killed"));
    let values: BTreeMap<_, _> = rec.inputs.values().map(|v| (v.clone(), ())).collect();
    assert_eq!(values.len(), 1, "a record mixing generations: {values:?}");
    assert_eq!(rec.inputs.len(), 3000);
    let generation = u64::from_str_radix(values.keys().next().unwrap(), 16).unwrap();
    assert_eq!(rec.layer.as_ref().unwrap().size, generation);
    generation
}

#[test]
fn a_sigkilled_writer_never_leaves_a_partial_record() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let k = key("killed");
    // Generation "initial" = the old record every reader may see.
    let initial: Inputs = (0..3000)
        .map(|j| {
            (
                format!("file:dir/file-{j:05}"),
                format!("{:016x}", u64::MAX),
            )
        })
        .collect();
    cache
        .record(Record::new(k, "slot", initial, Some(layer('e', u64::MAX))))
        .unwrap();

    let mut progressed = 0;
    for round in 0..12u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "sigkill_child_writer", "--nocapture"])
            .env("CACHE_TEST_WRITER_DIR", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Read while the child writes: every read is the old or a new complete record.
        let deadline = std::time::Instant::now() + Duration::from_millis(30 + (round * 37) % 150);
        while std::time::Instant::now() < deadline {
            let rec = cache
                .lookup(&k)
                .unwrap()
                .expect("the record never disappears");
            check_consistent(&rec);
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let text = fs::read(cache.record_path(&k)).unwrap();
        let rec: Record = serde_json::from_slice(&text).expect("the file parses after a kill");
        if check_consistent(&rec) != u64::MAX {
            progressed += 1;
        }
        assert!(cache.take_warnings().is_empty());
    }
    assert!(
        progressed > 0,
        "the child never got to write: the test proves nothing"
    );
    // Whatever the kills left in tmp/ is garbage that prune removes.
    let report = cache::prune(&cache, &cache::Policy::default()).unwrap();
    eprintln!("temp files left by kills: {}", report.removed_temp_files);
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    check_consistent(&cache.lookup(&k).unwrap().unwrap());
}
