//! `apply(write(tree))` reproduces a tree with every file type bit for bit.

mod common;

use common::*;
use layers::{apply, write_layer, ApplyMode, ApplyOptions, Compression, SourceKind, TarOptions};
use rustix::fs::FileType;
use std::ffi::OsStr;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const EPOCH: i64 = 1_700_000_000;
const OLD: i64 = 1_500_000_000;
const GIB: u64 = 1 << 30;

/// `security.capability` v2 granting cap_net_raw (bit 13) effective+permitted.
fn cap_net_raw() -> Vec<u8> {
    [0x0200_0001u32, 1 << 13, 0, 0, 0]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
}

fn build(root: &Path) {
    let p = |s: &str| root.join(s);
    fs::write(p("file.txt"), b"hello layers\n").unwrap();
    lchown(&p("file.txt"), 1234, 5678);
    set_mtime(&p("file.txt"), OLD);
    fs::write(p("empty"), b"").unwrap();

    // 1 GiB apparent, two small data extents.
    let mut f = fs::File::create(p("sparse.img")).unwrap();
    f.write_all(b"head").unwrap();
    f.seek(SeekFrom::Start(GIB / 2)).unwrap();
    f.write_all(b"middle").unwrap();
    f.set_len(GIB).unwrap();
    drop(f);

    std::os::unix::fs::symlink("file.txt", p("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", p("dangling")).unwrap();
    lchown(&p("dangling"), 42, 43);

    fs::create_dir(p("sub")).unwrap();
    fs::write(p("hard1"), b"linked content").unwrap();
    fs::hard_link(p("hard1"), p("sub/hard2")).unwrap();

    fs::create_dir(p("sticky")).unwrap();
    chmod(&p("sticky"), 0o1777);
    fs::create_dir(p("setgid")).unwrap();
    fs::write(p("setgid/inside"), b"x").unwrap();
    lchown(&p("setgid"), 1234, 5678);
    chmod(&p("setgid"), 0o2750);

    fs::write(p("suid"), b"#!/bin/sh\n").unwrap();
    lchown(&p("suid"), 0, 0);
    chmod(&p("suid"), 0o4755);

    fs::write(p("caps"), b"binary").unwrap();
    set_xattr(&p("caps"), "user.comment", b"a value\0with nul");
    set_xattr(&p("caps"), "security.capability", &cap_net_raw());
    fs::create_dir(p("xdir")).unwrap();
    set_xattr(&p("xdir"), "user.dirattr", b"1");
    fs::write(p("xdir/child"), b"c").unwrap();

    mknod(&p("fifo"), FileType::Fifo, 0, 0);
    mknod(&p("null"), FileType::CharacterDevice, 1, 3);
    mknod(&p("loop0"), FileType::BlockDevice, 7, 0);
    lchown(&p("null"), 0, 5);
    chmod(&p("null"), 0o666);
    let _sock = std::os::unix::net::UnixListener::bind(p("socket")).unwrap();

    // Long names: > 100 bytes of path, and > 255 bytes (two 200-byte components).
    let d60 = "d".repeat(60);
    fs::create_dir(p(&d60)).unwrap();
    fs::write(p(&format!("{d60}/{}", "f".repeat(60))), b"long1").unwrap();
    let a200 = "a".repeat(200);
    fs::create_dir(p(&a200)).unwrap();
    let deep = format!("{a200}/{}", "b".repeat(200));
    fs::write(p(&deep), b"long2").unwrap();
    // A hardlink whose first path is long, and a symlink with a long target.
    fs::hard_link(p(&deep), p("short-link-to-deep")).unwrap();
    std::os::unix::fs::symlink(&deep, p("long-target")).unwrap();

    // Non-UTF-8 names.
    let latin1 = root.join(OsStr::from_bytes(b"caf\xe9"));
    fs::write(&latin1, b"latin-1").unwrap();
    let weird_dir = root.join(OsStr::from_bytes(b"\xff\xfe dir"));
    fs::create_dir(&weird_dir).unwrap();
    fs::write(weird_dir.join(OsStr::from_bytes(b"\x80")), b"x").unwrap();

    // An id past the ustar field (PAX uid/gid).
    fs::write(p("bigid"), b"big").unwrap();
    lchown(&p("bigid"), 3_000_000, 4_000_000);

    set_mtime(&p("sub"), OLD);
    set_mtime(&p("link"), OLD);
}

fn vm_hwm_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn expected(src: &Path) -> Tree {
    let mut t = tree(src);
    t.nodes.retain(|_, n| n.kind != 's');
    for n in t.nodes.values_mut() {
        n.mtime = n.mtime.min(EPOCH);
    }
    t
}

fn round_trip(compression: Compression) {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    build(&src);

    let opts = TarOptions {
        source: SourceKind::Plain,
        source_date_epoch: Some(EPOCH),
    };
    let (digests, blob) = write_layer(&src, Vec::new(), compression, &opts).unwrap();
    assert_eq!(digests.size, blob.len() as u64);
    // 1 GiB of holes compresses to almost nothing; the writer streamed it.
    if compression != Compression::None {
        assert!(blob.len() < 16 << 20, "blob is {} bytes", blob.len());
    }

    let dst = work.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let stats = apply(&blob[..], &dst, &ApplyOptions::new(ApplyMode::Flatten)).unwrap();
    assert_eq!(stats.diff_id, digests.diff_id);

    assert_same(&expected(&src), &tree(&dst));
    assert!(!dst.join("socket").exists(), "sockets are skipped");
    // Holes stayed holes on the way in.
    let md = fs::metadata(dst.join("sparse.img")).unwrap();
    assert_eq!(md.len(), GIB);
    assert!(
        md.blocks() * 512 < 16 << 20,
        "sparse file took {} blocks",
        md.blocks()
    );
    assert_eq!(
        get_xattr(&dst.join("caps"), "security.capability").unwrap(),
        cap_net_raw()
    );
}

#[test]
fn round_trip_gzip_every_file_type() {
    round_trip(Compression::GZIP);
    // The 1 GiB sparse file went through in a fixed buffer, not in memory.
    assert!(vm_hwm_kib() < 512 * 1024, "peak RSS {} KiB", vm_hwm_kib());
}

#[test]
fn round_trip_zstd_every_file_type() {
    round_trip(Compression::ZSTD);
}

#[test]
fn tar_is_sorted_numeric_and_pax() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::create_dir(src.join("b")).unwrap();
    fs::write(src.join("b/z"), b"1").unwrap();
    fs::write(src.join("b-"), b"1").unwrap();
    fs::write(src.join("a"), b"1").unwrap();
    fs::write(src.join("B"), b"1").unwrap();
    let long = "n".repeat(150);
    fs::write(src.join(&long), b"1").unwrap();
    lchown(&src.join("a"), 1234, 5678);
    let tar = layers::write_tar(&src, Vec::new(), &TarOptions::default()).unwrap();

    let mut archive = tar::Archive::new(&tar[..]);
    let mut names = Vec::new();
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        assert_eq!(h.username_bytes(), Some(&b""[..]), "no uname");
        assert_eq!(h.groupname_bytes(), Some(&b""[..]), "no gname");
        if e.path_bytes().as_ref() == b"a" {
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (1234, 5678));
        }
        names.push(String::from_utf8(e.path_bytes().into_owned()).unwrap());
    }
    // Depth-first, each directory's names in byte order, directories before their contents.
    assert_eq!(names, vec!["B", "a", "b/", "b/z", "b-", long.as_str()]);
    // Two zero blocks end the archive, nothing after.
    assert_eq!(tar.len() % 512, 0);
    assert!(tar[tar.len() - 1024..].iter().all(|&b| b == 0));
}
