//! The helper side of multi-process tests: the test binary re-runs itself with
//! `CHILD_MODE` set and only `child_main` selected. Run normally, `child_main` does nothing.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use images::{canonical_json, Store};
use oci_spec::image::{
    ConfigBuilder, Descriptor, ImageConfigurationBuilder, ImageManifestBuilder, MediaType,
};

use crate::common::{r, write_test_image, CHILD_ARG, CHILD_MODE, CHILD_ROOT};

#[test]
fn child_main() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return; // not a helper run
    };
    let root = PathBuf::from(std::env::var_os(CHILD_ROOT).expect("root"));
    let arg = std::env::var(CHILD_ARG).unwrap_or_default();
    match mode.as_str() {
        "digest" => print_digests(),
        "tag" => tag_many(&root, &arg),
        "write-forever" => write_forever(&root),
        "tag-forever" => tag_forever(&root),
        other => panic!("unknown child mode {other}"),
    }
}

/// Documents built with `HashMap`s (whose order is random per process), canonicalized.
pub fn canonical_documents() -> Vec<(&'static str, Vec<u8>)> {
    let labels: HashMap<String, String> = (0..32)
        .map(|i| (format!("label.{i}"), format!("value {i}")))
        .collect();
    let oci_config = ImageConfigurationBuilder::default()
        .architecture("amd64")
        .os("linux")
        .config(
            ConfigBuilder::default()
                .labels(labels.clone())
                .env(vec!["A=1".to_string()])
                .build()
                .expect("config"),
        )
        .build()
        .expect("image configuration");
    let mut our_config = crate::common::test_config(&images::sha256_digest(b"layer"));
    our_config.config.labels = labels.clone().into_iter().collect();
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            2,
            images::sha256_digest(b"{}"),
        ))
        .layers(Vec::new())
        .annotations(labels)
        .build()
        .expect("manifest");
    vec![
        // Control: plain serde_json of the same value, whose order follows the HashMap's.
        (
            "plain-oci-config",
            serde_json::to_vec(&oci_config).expect("encode"),
        ),
        ("oci-config", canonical_json(&oci_config).expect("encode")),
        ("our-config", canonical_json(&our_config).expect("encode")),
        ("manifest", canonical_json(&manifest).expect("encode")),
    ]
}

fn print_digests() {
    for (name, bytes) in canonical_documents() {
        // A newline first: libtest has already printed "test child::child_main ... ".
        println!("\nDIGEST {name} {}", images::sha256_digest(&bytes));
    }
}

/// Tags 50 refs `<prefix>-<i>:latest` to the image tagged `base:latest`.
fn tag_many(root: &std::path::Path, prefix: &str) {
    let store = Store::open(root).expect("open");
    let target = store.resolve(&r("base:latest")).expect("resolve base");
    for i in 0..50 {
        store
            .tag(&r(&format!("{prefix}-{i}:latest")), &target)
            .expect("tag");
    }
    println!("\nDONE");
}

/// Writes one large blob (up to 256 MiB, then waits), so the parent can kill us in the middle
/// of it. Capped so that a parent that never kills us cannot fill the disk.
fn write_forever(root: &std::path::Path) {
    let store = Store::open(root).expect("open");
    let mut w = store.blob_writer().expect("writer");
    let mut chunk = vec![0u8; 64 << 10];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut written = 0u64;
    while written < 256 << 20 {
        for b in chunk.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        w.write_all(&chunk).expect("write");
        written += chunk.len() as u64;
        if written == 1 << 20 {
            println!("\nSTARTED");
            std::io::stdout().flush().expect("flush");
        }
    }
    std::thread::sleep(std::time::Duration::from_secs(600));
    panic!("the parent never killed this helper");
}

/// Writes and tags images in a loop: blobs, manifest, index.json, over and over.
fn tag_forever(root: &std::path::Path) {
    let store = Store::open(root).expect("open");
    for i in 0u64.. {
        let content = format!("iteration {i}\n").repeat(1 + (i as usize % 50) * 100);
        write_test_image(
            &store,
            content.as_bytes(),
            &[&format!("loop:{i}"), "loop:latest"],
        );
        println!("\nTAGGED {i}");
        std::io::stdout().flush().expect("flush");
    }
}
