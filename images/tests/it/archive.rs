//! docker-archive and oci-archive: structure, determinism, and skopeo reading them.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::Command;

use images::archive::{save, save_with_mtime, Format};

use crate::common::{r, require_tool, run_ok, temp_store, write_test_image, TestImage};

/// Path → (content, header) of every entry.
fn entries(tar_bytes: &[u8]) -> Vec<(String, Vec<u8>, u64, u64, u32)> {
    let mut a = tar::Archive::new(tar_bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let h = e.header().clone();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (
                path,
                data,
                h.mtime().unwrap(),
                h.uid().unwrap(),
                h.mode().unwrap(),
            )
        })
        .collect()
}

fn file<'a>(ents: &'a [(String, Vec<u8>, u64, u64, u32)], path: &str) -> &'a [u8] {
    &ents
        .iter()
        .find(|e| e.0 == path)
        .unwrap_or_else(|| panic!("no {path}"))
        .1
}

fn two_images() -> (tempfile::TempDir, images::Store, TestImage, TestImage) {
    let (d, store) = temp_store();
    let a = write_test_image(
        &store,
        b"image a\n",
        &["hello", "127.0.0.1:5000/team/hello:1.0"],
    );
    let b = write_test_image(&store, b"image b\n", &["other:2"]);
    (d, store, a, b)
}

#[test]
fn docker_archive_layout() {
    let (_d, store, a, b) = two_images();
    let refs = [r("hello"), r("127.0.0.1:5000/team/hello:1.0"), r("other:2")];
    let out = save_with_mtime(&store, &refs, Vec::new(), Format::Docker, 0).unwrap();
    let ents = entries(&out);
    let paths: Vec<&str> = ents.iter().map(|e| e.0.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "entries are sorted");
    assert!(ents.iter().all(|e| e.2 == 0 && e.3 == 0), "mtime 0, uid 0");

    let manifest: serde_json::Value = serde_json::from_slice(file(&ents, "manifest.json")).unwrap();
    let hex = |d: &images::Digest| format!("blobs/sha256/{}", d.digest());
    let a_config = store
        .image(&r("hello"))
        .unwrap()
        .manifest
        .config()
        .digest()
        .clone();
    assert_eq!(
        manifest,
        serde_json::json!([
            {"Config": hex(&a_config),
             "RepoTags": ["hello:latest", "127.0.0.1:5000/team/hello:1.0"],
             "Layers": [hex(a.layer.digest())]},
            {"Config": hex(store.image(&r("other:2")).unwrap().manifest.config().digest()),
             "RepoTags": ["other:2"],
             "Layers": [hex(b.layer.digest())]},
        ])
    );
    // Docker's field order in manifest.json.
    let text = String::from_utf8(file(&ents, "manifest.json").to_vec()).unwrap();
    assert!(
        text.find("Config") < text.find("RepoTags") && text.find("RepoTags") < text.find("Layers")
    );
    // Every named blob is in the tar, with the right content.
    for path in [
        hex(&a_config),
        hex(a.layer.digest()),
        hex(a.manifest.digest()),
    ] {
        let data = file(&ents, &path);
        assert_eq!(
            format!("blobs/sha256/{}", images::sha256_digest(data).digest()),
            path
        );
    }
    let repos: serde_json::Value = serde_json::from_slice(file(&ents, "repositories")).unwrap();
    assert_eq!(repos["hello"]["latest"], a.layer.digest().digest());
    assert_eq!(
        repos["127.0.0.1:5000/team/hello"]["1.0"],
        a.layer.digest().digest()
    );
    // It is also an OCI layout.
    assert_eq!(
        file(&ents, "oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index: serde_json::Value = serde_json::from_slice(file(&ents, "index.json")).unwrap();
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        names,
        ["hello:latest", "127.0.0.1:5000/team/hello:1.0", "other:2"]
    );
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        "docker.io/library/hello:latest"
    );
}

#[test]
fn archives_are_deterministic() {
    let (_d, store, _a, _b) = two_images();
    let refs = [r("other:2"), r("hello")];
    for format in [Format::Docker, Format::Oci] {
        let one = save_with_mtime(&store, &refs, Vec::new(), format, 1_700_000_000).unwrap();
        let two = save_with_mtime(&store, &refs, Vec::new(), format, 1_700_000_000).unwrap();
        assert_eq!(one, two);
        assert!(entries(&one).iter().all(|e| e.2 == 1_700_000_000));
    }
    assert!(save(&store, &[], Vec::new(), Format::Oci).is_err());
    assert!(save(&store, &[r("missing")], Vec::new(), Format::Oci).is_err());
}

#[test]
fn a_corrupt_blob_fails_the_save() {
    let (_d, store, a, _b) = two_images();
    let path = store.blob_path(a.layer.digest()).unwrap();
    let mut data = std::fs::read(&path).unwrap();
    data[5] ^= 1;
    std::fs::write(&path, data).unwrap();
    let err = save(&store, &[r("hello")], Vec::new(), Format::Docker).unwrap_err();
    assert!(matches!(err, images::Error::DigestMismatch { .. }), "{err}");
}

fn skopeo_json(args: &[&str]) -> serde_json::Value {
    let skopeo = require_tool("skopeo");
    let out = run_ok(Command::new(skopeo).args(args));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn skopeo_reads_docker_archives() {
    let (d, store, a, b) = two_images();
    let path = d.path().join("images.tar");
    let f = std::fs::File::create(&path).unwrap();
    save(&store, &[r("hello"), r("other:2")], f, Format::Docker).unwrap();
    let p = path.display().to_string();

    // docker-archive: reports layers by diff ID (it serves them uncompressed).
    let v = skopeo_json(&["inspect", &format!("docker-archive:{p}:hello:latest")]);
    assert_eq!(v["Layers"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["Layers"][0], a.diff_id.to_string(), "{v}");
    assert_eq!(v["Labels"]["org.example.test"], "yes");
    let c = skopeo_json(&[
        "inspect",
        "--config",
        "--raw",
        &format!("docker-archive:{p}:other:2"),
    ]);
    assert_eq!(c["rootfs"]["diff_ids"][0], b.diff_id.to_string());
    assert_eq!(c["config"]["Healthcheck"]["Retries"], 3);

    // Copying out of it decompresses and verifies every layer against its diff ID.
    let layout = d.path().join("copied");
    let skopeo = require_tool("skopeo");
    run_ok(Command::new(&skopeo).args([
        "copy",
        &format!("docker-archive:{p}:hello:latest"),
        &format!("oci:{}:copied", layout.display()),
    ]));
    // The same tar is an OCI layout too.
    let v = skopeo_json(&["inspect", &format!("oci-archive:{p}:other:2")]);
    assert_eq!(v["Digest"], b.manifest.digest().to_string());
}

#[test]
fn skopeo_reads_oci_archives() {
    let (d, store, a, b) = two_images();
    let single = d.path().join("single.tar");
    save(
        &store,
        &[r("hello")],
        std::fs::File::create(&single).unwrap(),
        Format::Oci,
    )
    .unwrap();
    let v = skopeo_json(&["inspect", &format!("oci-archive:{}", single.display())]);
    assert_eq!(v["Digest"], a.manifest.digest().to_string());
    assert_eq!(
        v["Layers"],
        serde_json::json!([a.layer.digest().to_string()])
    );

    let multi = d.path().join("multi.tar");
    save(
        &store,
        &[r("hello"), r("other:2")],
        std::fs::File::create(&multi).unwrap(),
        Format::Oci,
    )
    .unwrap();
    let v = skopeo_json(&[
        "inspect",
        &format!("oci-archive:{}:other:2", multi.display()),
    ]);
    assert_eq!(v["Digest"], b.manifest.digest().to_string());
    assert_eq!(
        v["Layers"],
        serde_json::json!([b.layer.digest().to_string()])
    );
    let names: BTreeMap<String, ()> = entries(&std::fs::read(&multi).unwrap())
        .into_iter()
        .map(|e| (e.0, ()))
        .collect();
    assert!(!names.contains_key("manifest.json"));
}
