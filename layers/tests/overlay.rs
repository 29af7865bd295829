//! A real overlayfs upper dir, diffed in overlay mode, reproduces the merged view both when
//! flattened onto the lower tree and when stacked as snapshots under a new overlay mount.

mod common;

use common::*;
use layers::mount::{mount_overlay, mount_overlay_readonly, umount};
use layers::{
    apply, write_layer, write_tar, ApplyMode, ApplyOptions, Compression, Snapshotter, SourceKind,
    TarOptions, WriteError,
};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn build_lower(l: &Path) {
    fs::write(l.join("change.txt"), b"before").unwrap();
    fs::write(l.join("del.txt"), b"delete me").unwrap();
    fs::write(l.join("keep.txt"), b"untouched").unwrap();
    for d in ["keep", "del/deeper", "replace/sub", "nested/sub"] {
        fs::create_dir_all(l.join(d)).unwrap();
    }
    fs::write(l.join("keep/a"), b"a").unwrap();
    fs::write(l.join("del/x"), b"x").unwrap();
    fs::write(l.join("del/deeper/y"), b"y").unwrap();
    fs::write(l.join("replace/old1"), b"old1").unwrap();
    fs::write(l.join("replace/sub/old2"), b"old2").unwrap();
    fs::write(l.join("nested/sub/file"), b"n").unwrap();
    lchown(&l.join("keep/a"), 1234, 5678);
    set_xattr(&l.join("keep"), "user.tag", b"lower");
    for p in [
        "change.txt",
        "del.txt",
        "keep.txt",
        "keep/a",
        "del/x",
        "nested/sub/file",
    ] {
        set_mtime(&l.join(p), 1_600_000_000);
    }
}

/// The changes a RUN step would make, through the merged view.
fn change(m: &Path) {
    fs::write(m.join("new.txt"), b"brand new").unwrap();
    fs::write(m.join("change.txt"), b"after").unwrap();
    fs::remove_file(m.join("del.txt")).unwrap();
    fs::remove_dir_all(m.join("del")).unwrap();
    // rm -rf + mkdir: overlay makes the new directory opaque.
    fs::remove_dir_all(m.join("replace")).unwrap();
    fs::create_dir(m.join("replace")).unwrap();
    fs::write(m.join("replace/fresh"), b"fresh").unwrap();
    fs::write(m.join("keep/b"), b"b").unwrap();
    fs::write(m.join("nested/sub/added"), b"added").unwrap();
    // A whiteout inside a copied-up directory, and a dir whose xattr changes.
    fs::remove_file(m.join("nested/sub/file")).unwrap();
    set_xattr(&m.join("keep"), "user.tag", b"upper");
}

#[test]
fn overlay_diff_flattens_and_stacks_to_the_merged_view() {
    let work = tempfile::tempdir().unwrap();
    let [lower, upper, wdir, merged, flat, stacked] =
        ["lower", "upper", "work", "merged", "flat", "stacked"]
            .map(|n| mkdirs(work.path(), &[n]).remove(0));
    build_lower(&lower);

    // The lower layer as a tar, as a base image layer would be.
    let (lower_digests, lower_blob) = write_layer(
        &lower,
        Vec::new(),
        Compression::GZIP,
        &TarOptions::default(),
    )
    .unwrap();

    mount_overlay(std::slice::from_ref(&lower), &upper, &wdir, &merged).unwrap();
    let guard = MountGuard(merged.clone());
    change(&merged);
    let want = tree(&merged);
    drop(guard);
    assert!(!merged.join("new.txt").exists(), "unmounted");

    // The upper dir really holds overlay whiteouts and an opaque dir.
    let wh = fs::symlink_metadata(upper.join("del.txt")).unwrap();
    assert_eq!(wh.rdev(), 0);
    assert_eq!(
        get_xattr_raw(&upper.join("replace"), "trusted.overlay.opaque"),
        Some(b"y".to_vec())
    );

    let opts = TarOptions {
        source: SourceKind::OverlayUpper,
        source_date_epoch: None,
    };
    let diff_tar = write_tar(&upper, Vec::new(), &opts).unwrap();
    let names = tar_names(&diff_tar);
    for expect in [
        ".wh.del",
        ".wh.del.txt",
        "replace/",
        "replace/.wh..wh..opq",
        "nested/sub/.wh.file",
        "new.txt",
    ] {
        assert!(
            names.contains(&expect.to_string()),
            "{expect} missing from {names:?}"
        );
    }
    let opq_at = names
        .iter()
        .position(|n| n == "replace/.wh..wh..opq")
        .unwrap();
    assert_eq!(
        names[opq_at - 1],
        "replace/",
        "opaque marker right after its directory"
    );

    // Flatten: lower layer, then the diff.
    apply(
        &lower_blob[..],
        &flat,
        &ApplyOptions::new(ApplyMode::Flatten),
    )
    .unwrap();
    let diff_stats = apply(&diff_tar[..], &flat, &ApplyOptions::new(ApplyMode::Flatten)).unwrap();
    assert_same(&want, &tree(&flat));

    // Stacked: each layer alone as a snapshot, overlay-mounted as two lower dirs.
    let snaps = Snapshotter::open(&work.path().join("store")).unwrap();
    let chain = vec![lower_digests.diff_id.clone(), diff_stats.diff_id.clone()];
    snaps.prepare(&chain[..1], &lower_blob[..]).unwrap();
    let top = snaps.prepare(&chain, &diff_tar[..]).unwrap();
    // The snapshot holds overlay-style whiteouts, not .wh. files.
    assert_eq!(fs::symlink_metadata(top.join("del")).unwrap().rdev(), 0);
    assert!(!top.join(".wh.del").exists());
    assert_eq!(
        get_xattr_raw(&top.join("replace"), "trusted.overlay.opaque"),
        Some(b"y".to_vec())
    );

    let lowers = snaps.lower_dirs(&chain).unwrap();
    assert_eq!(lowers[0], top, "top-most first");
    mount_overlay_readonly(&lowers, &stacked).unwrap();
    let guard = MountGuard(stacked.clone());
    let got = tree(&stacked);
    umount(&stacked).unwrap();
    std::mem::forget(guard);
    assert_same(&want, &got);
}

#[test]
fn redirect_and_metacopy_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let upper = work.path().join("upper");
    fs::create_dir_all(upper.join("moved")).unwrap();
    rustix::fs::lsetxattr(
        upper.join("moved"),
        "trusted.overlay.redirect",
        b"/orig",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let opts = TarOptions {
        source: SourceKind::OverlayUpper,
        source_date_epoch: None,
    };
    let err = write_tar(&upper, Vec::new(), &opts).unwrap_err();
    assert!(
        matches!(
            err,
            WriteError::OverlayFeature {
                feature: "redirect_dir",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("moved"), "{err}");

    fs::remove_dir(upper.join("moved")).unwrap();
    fs::write(upper.join("meta"), b"").unwrap();
    rustix::fs::lsetxattr(
        upper.join("meta"),
        "trusted.overlay.metacopy",
        b"",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let err = write_tar(&upper, Vec::new(), &opts).unwrap_err();
    assert!(
        matches!(
            err,
            WriteError::OverlayFeature {
                feature: "metacopy",
                ..
            }
        ),
        "{err}"
    );

    // In plain mode the same tree is just files, and overlay's xattrs are left out.
    let tar = write_tar(&upper, Vec::new(), &TarOptions::default()).unwrap();
    assert!(!tar.windows(15).any(|w| w == b"trusted.overlay"));
}

fn get_xattr_raw(path: &Path, name: &str) -> Option<Vec<u8>> {
    use rustix::buffer::spare_capacity;
    let mut v = Vec::with_capacity(256);
    rustix::fs::lgetxattr(path, name, spare_capacity(&mut v))
        .ok()
        .map(|_| v)
}

fn tar_names(tar: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
        .collect()
}
