//! Crash safety: a writer SIGKILLed at any point leaves no partial blob and no dangling ref.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use images::{Problem, Store};

use crate::common::{child, files_in, r, serious, temp_store, write_test_image};

/// Starts helper `mode` and waits until it prints a line starting with `marker`.
/// The caller kills and reaps the child (`kill`).
#[allow(clippy::zombie_processes)]
fn start_until(
    store: &Store,
    mode: &str,
    marker: &str,
) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut c = child(mode, store.root(), "")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(c.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).unwrap_or(0);
        if n == 0 {
            let status = c.wait();
            panic!("helper {mode} exited ({status:?}) before printing {marker}");
        }
        if line.starts_with(marker) {
            return (c, out);
        }
    }
}

fn kill(mut c: Child) {
    c.kill().unwrap(); // SIGKILL: no destructor, no cleanup runs in the child
    c.wait().unwrap();
}

#[test]
fn killed_while_writing_a_large_blob() {
    let (_d, store) = temp_store();
    let (c, _out) = start_until(&store, "write-forever", "STARTED");
    std::thread::sleep(Duration::from_millis(150));
    kill(c);

    assert!(
        files_in(&store.root().join("blobs/sha256")).is_empty(),
        "a partial blob reached blobs/"
    );
    store.read_index().unwrap();
    let problems = store.fsck().unwrap();
    assert!(serious(&problems).is_empty(), "{problems:?}");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(matches!(problems[0], Problem::LeftoverIngest { size, .. } if size >= 1 << 20));
    assert!(problems[0].to_string().contains("harmless"));
    // The dead writer's lock is gone, so the leftover can be cleaned; a live one is kept.
    let mut live = store.blob_writer().unwrap();
    std::io::Write::write_all(&mut live, b"in progress").unwrap();
    assert_eq!(store.clean_ingest(Duration::ZERO).unwrap(), 1);
    assert_eq!(files_in(&store.root().join("ingest")).len(), 1);
    assert!(store.fsck().unwrap().is_empty());
    live.commit(None).unwrap();
    assert!(store.fsck().unwrap().is_empty());
}

#[test]
fn killed_while_writing_and_tagging_images() {
    let (_d, store) = temp_store();
    let mut total_tagged = 0;
    for delay_ms in [0u64, 7, 23, 61, 120, 200] {
        let (c, mut out) = start_until(&store, "tag-forever", "running");
        std::thread::sleep(Duration::from_millis(delay_ms));
        kill(c);
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut rest);
        total_tagged += rest.lines().filter(|l| l.starts_with("TAGGED")).count();

        // index.json is always complete JSON, and every ref leads to a whole image.
        let index = store.read_index().unwrap();
        let problems = store.fsck().unwrap();
        assert!(
            serious(&problems).is_empty(),
            "after {delay_ms} ms: {problems:?}"
        );
        for (reference, _) in store.list().unwrap() {
            let img = store.image(&reference).unwrap();
            for layer in img.manifest.layers() {
                assert!(store.has_blob(layer.digest()));
            }
        }
        assert_eq!(
            index.manifests().len(),
            store.list().unwrap().len(),
            "unnamed entries in index.json"
        );
    }
    // The killed processes' locks were released: tagging still works.
    write_test_image(&store, b"after", &["after:crash"]);
    assert!(store.resolve(&r("after:crash")).is_ok());
    assert!(total_tagged > 0, "the helper never got to tag anything");
    store.clean_ingest(Duration::ZERO).unwrap();
    assert!(store.fsck().unwrap().is_empty());
}
