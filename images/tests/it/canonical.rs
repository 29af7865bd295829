//! Canonical JSON: the same document gives the same digest in every process.

use std::collections::BTreeMap;

use crate::child::canonical_documents;
use crate::common::{child, run_ok};

fn digests_from(stdout: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("DIGEST "))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn config_digest_is_stable_across_processes() {
    let mut here: BTreeMap<String, String> = canonical_documents()
        .into_iter()
        .map(|(k, v)| (k.to_string(), images::sha256_digest(&v).to_string()))
        .collect();
    let mut plain = vec![here.remove("plain-oci-config").unwrap()];
    assert_eq!(here.len(), 3);
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let out = run_ok(&mut child("digest", dir.path(), ""));
        let mut theirs = digests_from(&out.stdout);
        plain.push(theirs.remove("plain-oci-config").unwrap());
        assert_eq!(theirs, here, "a child process got other digests");
    }
    // The control shows why canonical JSON is needed: without it, 32 labels in a HashMap
    // serialize in a different order in each process.
    plain.sort();
    plain.dedup();
    assert!(
        plain.len() > 1,
        "plain serde_json happened to be stable: {plain:?}"
    );
}

#[test]
fn canonical_output_is_sorted_compact_and_repeatable() {
    let canonical = || -> Vec<(&'static str, Vec<u8>)> {
        canonical_documents()
            .into_iter()
            .filter(|(n, _)| !n.starts_with("plain"))
            .collect()
    };
    let first = canonical();
    // Each call builds fresh HashMaps (fresh random iteration order): same bytes anyway.
    for _ in 0..10 {
        assert_eq!(canonical(), first);
    }
    for (name, bytes) in first {
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            !text.contains('\n') && !text.contains(": "),
            "{name}: {text}"
        );
        // The 32 labels appear in bytewise-sorted key order in the text itself.
        let mut keys: Vec<String> = (0..32).map(|i| format!("\"label.{i}\"")).collect();
        keys.sort();
        let positions: Vec<usize> = keys
            .iter()
            .map(|k| text.find(k.as_str()).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{name}: {text}");
    }
}
