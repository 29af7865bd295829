//! Tags in index.json: resolve, tag, untag, list, images; concurrent tagging.

use images::{Error, Kind, MediaType};

use crate::common::{child, r, temp_store, write_test_image};

#[test]
fn tag_resolve_list_untag() {
    let (_d, store) = temp_store();
    let img = write_test_image(&store, b"hi\n", &["hello", "127.0.0.1:5000/team/hello:1.0"]);
    assert_eq!(img.manifest.media_type(), &MediaType::ImageManifest);
    // Resolve by any spelling of the name.
    for name in ["hello", "hello:latest", "docker.io/library/hello:latest"] {
        assert_eq!(
            store.resolve(&r(name)).unwrap().digest(),
            img.manifest.digest()
        );
    }
    assert_eq!(
        store
            .resolve(&r("127.0.0.1:5000/team/hello:1.0"))
            .unwrap()
            .digest(),
        img.manifest.digest()
    );
    // By digest, without a tag.
    let by_digest = r(&format!("whatever@{}", img.manifest.digest()));
    let d = store.resolve(&by_digest).unwrap();
    assert_eq!(d.digest(), img.manifest.digest());
    assert_eq!(Kind::of(d.media_type()), Kind::Manifest);
    // index.json annotations.
    let entry = store.resolve(&r("hello")).unwrap();
    let ann = entry.annotations().clone().unwrap();
    assert_eq!(ann["org.opencontainers.image.ref.name"], "hello:latest");
    assert_eq!(
        ann["io.containerd.image.name"],
        "docker.io/library/hello:latest"
    );
    assert_eq!(
        ann["org.opencontainers.image.created"],
        "2024-01-02T03:04:05Z"
    );
    assert_eq!(entry.platform().as_ref().unwrap().os().to_string(), "linux");

    let list: Vec<String> = store
        .list()
        .unwrap()
        .iter()
        .map(|(r, _)| r.familiar())
        .collect();
    assert_eq!(list, ["127.0.0.1:5000/team/hello:1.0", "hello:latest"]);

    let image = store.image(&r("hello")).unwrap();
    assert_eq!(image.config, img.config);
    assert_eq!(image.manifest.layers(), &vec![img.layer.clone()]);
    assert_eq!(image.id(), image.manifest.config().digest());

    // Tagging again with the same manifest (every rebuild that hits the cache does) leaves
    // index.json as it is: same bytes, same file (no rewrite, no fsync), same tag time.
    let index = store.root().join("index.json");
    let (before, inode) = (
        std::fs::read(&index).unwrap(),
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&index).unwrap()),
    );
    store.tag(&r("hello"), &img.manifest).unwrap();
    assert_eq!(std::fs::read(&index).unwrap(), before);
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&index).unwrap()),
        inode
    );

    // Re-tagging moves the tag; no duplicate entry.
    let other = write_test_image(&store, b"other\n", &[]);
    store.tag(&r("hello"), &other.manifest).unwrap();
    assert_eq!(
        store.resolve(&r("hello")).unwrap().digest(),
        other.manifest.digest()
    );
    assert_eq!(store.list().unwrap().len(), 2);

    let removed = store.untag(&r("hello:latest")).unwrap();
    assert_eq!(removed.digest(), other.manifest.digest());
    let err = store.resolve(&r("hello")).unwrap_err();
    assert!(matches!(err, Error::RefNotFound { .. }));
    assert!(err.to_string().contains("hello:latest"), "{err}");
    assert!(matches!(
        store.untag(&r("hello")).unwrap_err(),
        Error::RefNotFound { .. }
    ));
}

#[test]
fn tagging_rules() {
    let (_d, store) = temp_store();
    let img = write_test_image(&store, b"x", &[]);
    let digest_ref = r(&format!("x@{}", img.manifest.digest()));
    let err = store.tag(&digest_ref, &img.manifest).unwrap_err();
    assert!(err.to_string().contains("digest reference"), "{err}");
    // Refuse to create a dangling ref.
    let mut ghost = img.manifest.clone();
    ghost.set_digest(images::sha256_digest(b"not stored"));
    assert!(matches!(
        store.tag(&r("ghost"), &ghost).unwrap_err(),
        Error::BlobNotFound { .. }
    ));
    // Only manifests and indexes can be tagged.
    assert!(store.tag(&r("layer"), &img.layer).is_err());
    // Layer count must match the config.
    let mut config = img.config.clone();
    config.rootfs.diff_ids.push(img.diff_id.clone());
    assert!(matches!(
        store
            .write_image(&config, std::slice::from_ref(&img.layer), &[])
            .unwrap_err(),
        Error::InvalidImage { .. }
    ));
    // Layers must be in the store.
    let mut missing = img.layer.clone();
    missing.set_digest(images::sha256_digest(b"no layer"));
    assert!(matches!(
        store.write_image(&img.config, &[missing], &[]).unwrap_err(),
        Error::BlobNotFound { .. }
    ));
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn entries_written_by_other_tools_are_understood() {
    let (_d, store) = temp_store();
    let img = write_test_image(&store, b"x", &[]);
    // As `skopeo copy ... oci:ROOT:debian:bookworm` writes it: only a ref name.
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.root().join("index.json")).unwrap()).unwrap();
    index["manifests"] = serde_json::json!([{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": img.manifest.digest().to_string(),
        "size": img.manifest.size(),
        "annotations": {"org.opencontainers.image.ref.name": "debian:bookworm"}
    }]);
    std::fs::write(store.root().join("index.json"), index.to_string()).unwrap();
    assert_eq!(
        store
            .resolve(&r("docker.io/library/debian:bookworm"))
            .unwrap()
            .digest(),
        img.manifest.digest()
    );
    // Re-tagging replaces the foreign entry instead of adding a second one.
    store.tag(&r("debian:bookworm"), &img.manifest).unwrap();
    assert_eq!(store.read_index().unwrap().manifests().len(), 1);
}

fn check_all_tags(store: &images::Store, prefixes: &[&str]) {
    let names: std::collections::HashSet<String> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|(r, _)| r.familiar())
        .collect();
    for p in prefixes {
        for i in 0..50 {
            let want = format!("{p}-{i}:latest");
            assert!(names.contains(&want), "lost tag {want}");
        }
    }
    assert_eq!(names.len(), 1 + 50 * prefixes.len());
}

#[test]
fn concurrent_tagging_from_two_processes_loses_nothing() {
    let (_d, store) = temp_store();
    write_test_image(&store, b"base", &["base"]);
    let mut children: Vec<_> = ["proc-a", "proc-b"]
        .iter()
        .map(|p| {
            child("tag", store.root(), p)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children.drain(..) {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("DONE"),
            "child failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    check_all_tags(&store, &["proc-a", "proc-b"]);
}

#[test]
fn concurrent_tagging_from_two_threads_loses_nothing() {
    let (_d, store) = temp_store();
    let img = write_test_image(&store, b"base", &["base"]);
    std::thread::scope(|s| {
        for p in ["thread-a", "thread-b"] {
            let store = store.clone();
            let target = img.manifest.clone();
            s.spawn(move || {
                for i in 0..50 {
                    store.tag(&r(&format!("{p}-{i}")), &target).unwrap();
                }
            });
        }
    });
    check_all_tags(&store, &["thread-a", "thread-b"]);
}
