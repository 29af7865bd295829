//! Blob writing: digests, verification, cleanup, concurrency.

use std::io::Write;
use std::os::unix::fs::MetadataExt;

use images::{Error, MediaType};

use crate::common::{files_in, temp_store};

#[test]
fn blob_write_computes_the_digest_and_stores_the_content() {
    let (_d, store) = temp_store();
    let mut w = store.blob_writer().unwrap();
    for _ in 0..1000 {
        w.write_all(b"hello blob ").unwrap();
    }
    assert_eq!(w.size(), 11_000);
    let info = w.commit(None).unwrap();
    let expected = images::sha256_digest(&b"hello blob ".repeat(1000));
    assert_eq!(info.digest, expected);
    assert_eq!(info.size, 11_000);
    let path = store.blob_path(&expected).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"hello blob ".repeat(1000));
    assert!(files_in(&store.root().join("ingest")).is_empty());
    // Expected digest given and right: fine.
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"other").unwrap();
    let d = images::sha256_digest(b"other");
    assert_eq!(w.commit(Some(&d)).unwrap().digest, d);
    let desc = store
        .put_bytes(b"x", None)
        .unwrap()
        .descriptor(MediaType::ImageLayer);
    assert_eq!(desc.size(), 1);
}

#[test]
fn wrong_expected_digest_is_an_error_and_leaves_nothing() {
    let (_d, store) = temp_store();
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"actual content").unwrap();
    let wrong = images::sha256_digest(b"something else");
    let err = w.commit(Some(&wrong)).unwrap_err();
    match &err {
        Error::DigestMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &images::sha256_digest(b"actual content"));
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains(&wrong.to_string()), "{err}");
    assert!(files_in(&store.root().join("blobs/sha256")).is_empty());
    assert!(files_in(&store.root().join("ingest")).is_empty());
    // Same through put_bytes and put_reader.
    assert!(store.put_bytes(b"abc", Some(&wrong)).is_err());
    assert!(store.put_reader(&b"abc"[..], Some(&wrong)).is_err());
    assert!(files_in(&store.root().join("blobs/sha256")).is_empty());
    assert!(files_in(&store.root().join("ingest")).is_empty());
}

#[test]
fn drop_without_commit_leaves_nothing() {
    let (_d, store) = temp_store();
    {
        let mut w = store.blob_writer().unwrap();
        w.write_all(&vec![7u8; 1 << 20]).unwrap();
        assert_eq!(files_in(&store.root().join("ingest")).len(), 1);
    }
    assert!(files_in(&store.root().join("ingest")).is_empty());
    assert!(files_in(&store.root().join("blobs/sha256")).is_empty());
}

#[test]
fn an_existing_blob_is_not_rewritten() {
    let (_d, store) = temp_store();
    let a = store.put_bytes(b"same", None).unwrap();
    let path = store.blob_path(&a.digest).unwrap();
    let before = std::fs::metadata(&path).unwrap();
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"same").unwrap();
    let b = w.commit(None).unwrap();
    assert_eq!(a, b);
    let after = std::fs::metadata(&path).unwrap();
    assert_eq!(before.ino(), after.ino());
    assert!(files_in(&store.root().join("ingest")).is_empty());
}

#[test]
fn concurrent_writers_of_the_same_blob() {
    let (_d, store) = temp_store();
    let data: Vec<u8> = (0..(2u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    let expected = images::sha256_digest(&data);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let mut w = store.blob_writer().unwrap();
                    for chunk in data.chunks(4096) {
                        w.write_all(chunk).unwrap();
                    }
                    w.commit(Some(&expected)).unwrap()
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap().digest, expected);
        }
    });
    assert_eq!(files_in(&store.root().join("blobs/sha256")).len(), 1);
    assert!(files_in(&store.root().join("ingest")).is_empty());
    assert_eq!(
        std::fs::read(store.blob_path(&expected).unwrap()).unwrap(),
        data
    );
}

#[test]
fn reading_blobs() {
    let (_d, store) = temp_store();
    let desc = store
        .put_json(
            MediaType::ImageConfig,
            &serde_json::json!({"b": 1, "a": [true]}),
        )
        .unwrap();
    assert_eq!(
        store.read_blob(desc.digest()).unwrap(),
        br#"{"a":[true],"b":1}"#
    );
    let v: serde_json::Value = store.read_json(desc.digest()).unwrap();
    assert_eq!(v["b"], 1);
    let missing = images::sha256_digest(b"missing");
    let err = store.get_blob(&missing).unwrap_err();
    assert!(matches!(err, Error::BlobNotFound { .. }), "{err}");
    assert!(err.to_string().contains(&missing.to_string()));
    let sha512: images::Digest = format!("sha512:{}", "a".repeat(128)).parse().unwrap();
    assert!(matches!(
        store.get_blob(&sha512).unwrap_err(),
        Error::UnsupportedDigest { .. }
    ));
    assert!(!store.has_blob(&missing));
    assert_eq!(store.delete_blob(desc.digest()).unwrap(), 18);
    assert_eq!(store.delete_blob(desc.digest()).unwrap(), 0);
}

#[test]
fn store_layout_files() {
    let (_d, store) = temp_store();
    let layout = std::fs::read_to_string(store.root().join("oci-layout")).unwrap();
    assert_eq!(layout, r#"{"imageLayoutVersion":"1.0.0"}"#);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.root().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["manifests"], serde_json::json!([]));
    // Re-opening an existing store writes nothing.
    let before = std::fs::metadata(store.root().join("index.json"))
        .unwrap()
        .ino();
    images::Store::open(store.root()).unwrap();
    assert_eq!(
        std::fs::metadata(store.root().join("index.json"))
            .unwrap()
            .ino(),
        before
    );
}

#[test]
fn dir_size_counts_files_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
    std::fs::write(dir.path().join("a/one"), vec![0u8; 1000]).unwrap();
    std::fs::write(dir.path().join("a/b/two"), vec![0u8; 24]).unwrap();
    std::fs::hard_link(dir.path().join("a/one"), dir.path().join("a/b/link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("a/sym")).unwrap();
    assert_eq!(images::store::dir_size(dir.path()).unwrap(), 1024);
    assert_eq!(
        images::store::dir_size(&dir.path().join("nope")).unwrap(),
        0
    );
}
