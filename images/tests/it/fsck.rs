//! fsck, usage and garbage-collection candidates.

use images::{Kind, Problem};

use crate::common::{r, temp_store, write_test_image};

#[test]
fn healthy_store_has_no_problems() {
    let (_d, store) = temp_store();
    write_test_image(&store, b"one", &["one"]);
    write_test_image(&store, b"two", &["two", "two:extra"]);
    assert_eq!(store.fsck().unwrap(), Vec::<Problem>::new());
}

#[test]
fn a_corrupt_byte_is_reported() {
    let (_d, store) = temp_store();
    let img = write_test_image(&store, b"content", &["img"]);
    let path = store.blob_path(img.layer.digest()).unwrap();
    let mut data = std::fs::read(&path).unwrap();
    data[10] ^= 0xff;
    std::fs::write(&path, &data).unwrap();
    let problems = store.fsck().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    match &problems[0] {
        Problem::CorruptBlob { digest, .. } => assert_eq!(digest, img.layer.digest()),
        other => panic!("unexpected {other}"),
    }
    assert!(!problems[0].is_harmless());
    assert!(problems[0].to_string().contains("corrupt blob"));
}

#[test]
fn a_deleted_layer_is_a_dangling_ref() {
    let (_d, store) = temp_store();
    let img = write_test_image(&store, b"content", &["img:1"]);
    std::fs::remove_file(store.blob_path(img.layer.digest()).unwrap()).unwrap();
    let problems = store.fsck().unwrap();
    assert_eq!(
        problems,
        vec![Problem::DanglingRef {
            reference: "img:1".into(),
            missing: img.layer.digest().clone(),
            kind: Kind::Layer,
        }]
    );
    assert!(problems[0].to_string().contains("layer"));
    // A deleted manifest too.
    std::fs::remove_file(store.blob_path(img.manifest.digest()).unwrap()).unwrap();
    let problems = store.fsck().unwrap();
    assert!(problems.iter().any(|p| matches!(
        p,
        Problem::DanglingRef {
            kind: Kind::Manifest,
            ..
        }
    )));
}

#[test]
fn broken_index_and_stray_files() {
    let (_d, store) = temp_store();
    std::fs::write(store.root().join("blobs/sha256/not-a-digest"), b"x").unwrap();
    let problems = store.fsck().unwrap();
    assert!(
        matches!(&problems[..], [Problem::StrayFile { .. }]),
        "{problems:?}"
    );
    assert!(problems[0].is_harmless());
    std::fs::write(store.root().join("index.json"), b"{\"schemaVer").unwrap();
    let problems = store.fsck().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, Problem::BadIndex { .. })),
        "{problems:?}"
    );
}

#[test]
fn usage_and_gc_candidates() {
    let (_d, store) = temp_store();
    let keep = write_test_image(&store, b"keep", &["keep"]);
    let drop = write_test_image(&store, b"drop me", &["drop"]);
    let u = store.usage().unwrap();
    assert_eq!(u.refs, 2);
    assert_eq!(u.manifests.count, 2);
    assert_eq!(u.configs.count, 2);
    assert_eq!(u.layers.count, 2);
    assert_eq!(u.unreferenced.count, 0);
    assert_eq!(u.total.count, 6);
    assert_eq!(
        u.total.bytes,
        images::store::dir_size(&store.root().join("blobs")).unwrap()
    );
    assert!(store.gc_candidates().unwrap().is_empty());

    store.untag(&r("drop")).unwrap();
    let candidates = store.gc_candidates().unwrap();
    let digests: Vec<_> = candidates.iter().map(|c| c.digest.clone()).collect();
    assert_eq!(digests.len(), 3);
    assert!(digests.contains(drop.manifest.digest()));
    assert!(digests.contains(drop.layer.digest()));
    assert!(!digests.contains(keep.layer.digest()));
    for c in &candidates {
        store.delete_blob(&c.digest).unwrap();
    }
    assert!(store.fsck().unwrap().is_empty());
    assert!(store.image(&r("keep")).is_ok());
    assert_eq!(store.usage().unwrap().total.count, 3);
}

#[test]
fn prune_frees_unreferenced_blobs_but_keeps_what_it_is_told() {
    let (_d, store) = temp_store();
    let keep = write_test_image(&store, b"keep", &["keep"]);
    let cached = write_test_image(&store, b"cached layer", &["cached"]);
    let dropped = write_test_image(&store, b"dropped", &["dropped"]);
    store.untag(&r("cached")).unwrap();
    store.untag(&r("dropped")).unwrap();
    // Too young: nothing goes.
    let none = store
        .prune(std::time::Duration::from_secs(3600), &Default::default())
        .unwrap();
    assert_eq!(none.count, 0);
    let keep_set = std::collections::HashSet::from([cached.layer.digest().clone()]);
    let freed = store.prune(std::time::Duration::ZERO, &keep_set).unwrap();
    assert_eq!(freed.count, 5, "2 manifests, 2 configs, 1 layer");
    assert!(store.has_blob(cached.layer.digest()));
    assert!(!store.has_blob(dropped.layer.digest()));
    assert!(store.has_blob(keep.layer.digest()));
    assert!(store.fsck().unwrap().is_empty());
    assert_eq!(store.image(&r("keep")).unwrap().size(), {
        let i = store.image(&r("keep")).unwrap();
        i.descriptor.size() + i.manifest.config().size() + keep.layer.size()
    });
}
