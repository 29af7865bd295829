//! The snapshotter: chain IDs, idempotent and crash-safe prepare, concurrent prepare, removal,
//! and overlay mounts over many snapshots (past the one-page option limit).

mod common;

use common::*;
use layers::mount::{mount_overlay, mount_overlay_readonly, umount};
use layers::snapshot::SnapshotError;
use layers::{chain_id, chain_ids, write_layer, Compression, Digest, Snapshotter, TarOptions};
use sha2::{Digest as _, Sha256};
use std::fs;
use std::path::{Path, PathBuf};

fn layer_of(files: &[(&str, &str)]) -> (Digest, Vec<u8>) {
    let src = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let p = src.path().join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    let (d, blob) = write_layer(
        src.path(),
        Vec::new(),
        Compression::GZIP,
        &TarOptions::default(),
    )
    .unwrap();
    (d.diff_id, blob)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn chain_id_follows_the_oci_spec() {
    let a: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
    let b: Digest = format!("sha256:{}", "b".repeat(64)).parse().unwrap();
    assert_eq!(chain_id(std::slice::from_ref(&a)), Some(a.clone()));
    let ab = format!("sha256:{}", hex::encode(Sha256::digest(format!("{a} {b}"))));
    assert_eq!(chain_id(&[a.clone(), b.clone()]).unwrap().to_string(), ab);
    let abc = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(format!("{ab} {a}")))
    );
    let ids = chain_ids(&[a.clone(), b, a]);
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[2].to_string(), abc);
    assert_eq!(chain_id(&[]), None);
}

#[test]
fn prepare_twice_gives_one_snapshot() {
    let root = tempfile::tempdir().unwrap();
    let snaps = Snapshotter::open(root.path()).unwrap();
    let (d, blob) = layer_of(&[("etc/os-release", "rbuild")]);
    let fs_dir = snaps.prepare(std::slice::from_ref(&d), &blob[..]).unwrap();
    assert_eq!(
        fs::read_to_string(fs_dir.join("etc/os-release")).unwrap(),
        "rbuild"
    );
    // A marker shows the second prepare did not extract again.
    fs::write(fs_dir.join("marker"), b"").unwrap();
    let again = snaps.prepare(std::slice::from_ref(&d), &blob[..]).unwrap();
    assert_eq!(again, fs_dir);
    assert!(again.join("marker").exists());
    assert_eq!(
        entries(snaps.dir()),
        vec![".locks".to_string(), d.digest().to_string()]
    );
    assert!(snaps.exists(&d));
}

#[test]
fn a_killed_prepare_leaves_nothing_that_blocks_the_next() {
    let root = tempfile::tempdir().unwrap();
    let snaps = Snapshotter::open(root.path()).unwrap();
    let (d, blob) = layer_of(&[("a", "1")]);
    // What a process killed mid-extraction leaves: a half-filled temp dir, for this chain
    // ID and for another one, and a removal cut short.
    let other = "f".repeat(64);
    for dir in [
        format!("tmp-{}", d.digest()),
        format!("tmp-{other}"),
        format!("rm-{other}"),
    ] {
        let tmp = snaps.dir().join(dir).join("fs/half");
        fs::create_dir_all(&tmp).unwrap();
        fs::write(tmp.join("partial"), b"...").unwrap();
    }
    let fs_dir = snaps.prepare(std::slice::from_ref(&d), &blob[..]).unwrap();
    assert_eq!(fs::read(fs_dir.join("a")).unwrap(), b"1");
    assert!(!fs_dir.join("half").exists(), "stale content not reused");
    assert_eq!(
        entries(snaps.dir()),
        vec![".locks".to_string(), d.digest().to_string()]
    );
}

#[test]
fn a_wrong_diff_id_leaves_no_snapshot() {
    let root = tempfile::tempdir().unwrap();
    let snaps = Snapshotter::open(root.path()).unwrap();
    let (_, blob) = layer_of(&[("a", "1")]);
    let (other, _) = layer_of(&[("a", "2")]);
    let err = snaps
        .prepare(std::slice::from_ref(&other), &blob[..])
        .unwrap_err();
    assert!(matches!(err, SnapshotError::DiffIdMismatch { .. }), "{err}");
    assert!(!snaps.exists(&other));
    assert_eq!(entries(snaps.dir()), vec![".locks".to_string()]);
    // A broken layer: the apply error, with the layer named.
    let err = snaps
        .prepare(std::slice::from_ref(&other), &blob[..blob.len() / 2])
        .unwrap_err();
    assert!(err.to_string().contains(&other.to_string()), "{err}");
    assert_eq!(entries(snaps.dir()), vec![".locks".to_string()]);
}

#[test]
fn concurrent_prepares_extract_once() {
    let root = tempfile::tempdir().unwrap();
    let snaps = Snapshotter::open(root.path()).unwrap();
    let files: Vec<(String, String)> = (0..300)
        .map(|i| (format!("d{}/f{i}", i % 7), i.to_string()))
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let (d, blob) = layer_of(&refs);
    let results: Vec<PathBuf> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| snaps.prepare(std::slice::from_ref(&d), &blob[..]).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        entries(snaps.dir()),
        vec![".locks".to_string(), d.digest().to_string()]
    );
    assert_eq!(fs::read(results[0].join("d3/f10")).unwrap(), b"10");
}

#[test]
fn lower_dirs_remove_and_a_step_mount() {
    let root = tempfile::tempdir().unwrap();
    let snaps = Snapshotter::open(root.path()).unwrap();
    let (d0, b0) = layer_of(&[("base", "0"), ("shadowed", "from 0")]);
    let (d1, b1) = layer_of(&[("second", "1"), ("shadowed", "from 1")]);
    let chain = vec![d0.clone(), d1.clone()];
    assert!(matches!(
        snaps.lower_dirs(&chain),
        Err(SnapshotError::NotFound(_))
    ));
    snaps.prepare(&chain[..1], &b0[..]).unwrap();
    snaps.prepare(&chain, &b1[..]).unwrap();
    let lowers = snaps.lower_dirs(&chain).unwrap();
    let top_id = chain_id(&chain).unwrap();
    assert_eq!(
        lowers,
        vec![snaps.fs_path(&top_id).unwrap(), snaps.fs_path(&d0).unwrap()]
    );

    // A build step: lowers + a fresh upper; its diff is exactly the upper dir.
    let step = tempfile::tempdir().unwrap();
    let [upper, work, merged] =
        ["upper", "work", "merged"].map(|n| mkdirs(step.path(), &[n]).remove(0));
    mount_overlay(&lowers, &upper, &work, &merged).unwrap();
    let guard = MountGuard(merged.clone());
    assert_eq!(
        fs::read_to_string(merged.join("shadowed")).unwrap(),
        "from 1"
    );
    assert_eq!(fs::read_to_string(merged.join("base")).unwrap(), "0");
    fs::write(merged.join("step-output"), b"ran").unwrap();
    umount(&merged).unwrap();
    std::mem::forget(guard);
    assert_eq!(entries(&upper), vec!["step-output".to_string()]);
    assert!(
        !snaps.fs_path(&top_id).unwrap().join("step-output").exists(),
        "snapshots untouched"
    );

    assert!(snaps.remove(&top_id).unwrap());
    assert!(!snaps.exists(&top_id));
    assert!(!snaps.remove(&top_id).unwrap());
    assert!(snaps.exists(&d0));
    assert_eq!(
        entries(snaps.dir()),
        vec![".locks".to_string(), d0.digest().to_string()]
    );
}

#[test]
fn mounting_more_lower_dirs_than_fit_one_page() {
    // 70 lower dirs with long paths: over 4096 bytes of options, so the `lowerdir+` path.
    let base = tempfile::tempdir().unwrap();
    let long = "x".repeat(80);
    let lowers: Vec<PathBuf> = (0..70)
        .map(|i| {
            let p = base.path().join(format!("{long}-{i:03}"));
            fs::create_dir(&p).unwrap();
            fs::write(p.join(format!("layer-{i}")), i.to_string()).unwrap();
            fs::write(p.join("top"), i.to_string()).unwrap();
            p
        })
        .collect();
    let total: usize = lowers.iter().map(|p| p.as_os_str().len() + 1).sum();
    assert!(total > 4096, "{total}");
    let merged = base.path().join("merged");
    fs::create_dir(&merged).unwrap();
    mount_overlay_readonly(&lowers, &merged).unwrap();
    let guard = MountGuard(merged.clone());
    assert_eq!(
        fs::read_to_string(merged.join("top")).unwrap(),
        "0",
        "first lower is top-most"
    );
    for i in 0..70 {
        assert!(merged.join(format!("layer-{i}")).exists(), "layer {i}");
    }
    umount(&merged).unwrap();
    std::mem::forget(guard);

    // Separators in a path also take the `lowerdir+` path rather than being mis-split.
    let odd = [
        base.path().join("odd:name,1"),
        base.path().join("odd:name,2"),
    ];
    for (i, p) in odd.iter().enumerate() {
        fs::create_dir(p).unwrap();
        fs::write(p.join("which"), i.to_string()).unwrap();
    }
    mount_overlay_readonly(&odd, &merged).unwrap();
    let guard = MountGuard(merged.clone());
    assert_eq!(fs::read_to_string(merged.join("which")).unwrap(), "0");
    umount(&merged).unwrap();
    std::mem::forget(guard);

    let err = mount_overlay_readonly(&[], &merged).unwrap_err();
    assert!(err.to_string().contains("at least one lower dir"));
}
