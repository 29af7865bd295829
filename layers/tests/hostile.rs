//! Hand-made hostile layers. Each is refused with a clear error or, where the rules make it
//! harmless, applied inside the root; in every case nothing is written outside the target.
//!
//! The target sits alone inside a sentinel directory; after each apply the sentinel must hold
//! only the target, and /etc/passwd must be unchanged.

mod common;

use common::*;
use layers::{apply, ApplyError, ApplyMode, ApplyOptions, Refusal};
use sha2::{Digest, Sha256};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tar::EntryType;

struct Sandbox {
    _dir: tempfile::TempDir,
    sentinel: PathBuf,
    target: PathBuf,
    passwd: (String, u64, u32, i64),
    etc: (u32, i64),
}

fn passwd_state() -> (String, u64, u32, i64) {
    let md = fs::metadata("/etc/passwd").unwrap();
    let sum = hex::encode(Sha256::digest(fs::read("/etc/passwd").unwrap()));
    (sum, md.nlink(), md.mode(), md.mtime())
}

fn etc_state() -> (u32, i64) {
    let md = fs::metadata("/etc").unwrap();
    (md.mode(), md.mtime())
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sentinel = dir.path().join("sentinel");
        let target = sentinel.join("target");
        fs::create_dir_all(&target).unwrap();
        Self {
            _dir: dir,
            sentinel,
            target,
            passwd: passwd_state(),
            etc: etc_state(),
        }
    }

    fn apply_with(
        &self,
        tar: &[u8],
        opts: &ApplyOptions,
    ) -> Result<layers::ApplyStats, ApplyError> {
        let r = apply(tar, &self.target, opts);
        self.assert_contained();
        r
    }

    fn apply(&self, tar: &[u8]) -> Result<layers::ApplyStats, ApplyError> {
        self.apply_with(tar, &ApplyOptions::new(ApplyMode::Flatten))
    }

    fn refused(&self, tar: &[u8]) -> Refusal {
        let err = self.apply(tar).expect_err("hostile layer must be refused");
        let msg = err.to_string();
        assert!(msg.contains("refused"), "clear message: {msg}");
        err.refusal()
            .cloned()
            .unwrap_or_else(|| panic!("not a refusal: {err:?}"))
    }

    fn assert_contained(&self) {
        let names: Vec<_> = fs::read_dir(&self.sentinel)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("target")],
            "wrote beside the target"
        );
        assert_eq!(passwd_state(), self.passwd, "/etc/passwd changed");
        assert_eq!(etc_state(), self.etc, "/etc changed");
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.target.join(rel)
    }
}

fn is_symlink(p: &Path) -> bool {
    fs::symlink_metadata(p)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false)
}

#[test]
fn dotdot_names_are_refused() {
    let s = Sandbox::new();
    for name in [
        "../evil",
        "a/../../evil",
        "./../evil",
        "a/b/../../../evil",
        "..",
    ] {
        let tar = RawTar::new().file(name, b"pwned").finish();
        assert_eq!(s.refused(&tar), Refusal::DotDot, "{name}");
    }
    // `..` inside a directory name that stays inside is refused all the same.
    let tar = RawTar::new().dir("a/", 0o755).file("a/../b", b"x").finish();
    assert_eq!(s.refused(&tar), Refusal::DotDot);
    assert!(!s.p("b").exists());
}

#[test]
fn absolute_names_land_inside_the_root() {
    let s = Sandbox::new();
    let tar = RawTar::new()
        .file("/rbuild-abs-test/evil", b"inside")
        .file("//./rbuild-abs-test/two", b"inside too")
        .finish();
    s.apply(&tar).unwrap();
    assert_eq!(fs::read(s.p("rbuild-abs-test/evil")).unwrap(), b"inside");
    assert_eq!(fs::read(s.p("rbuild-abs-test/two")).unwrap(), b"inside too");
    assert!(!Path::new("/rbuild-abs-test").exists());
}

#[test]
fn symlink_to_etc_then_a_file_through_it_stays_inside() {
    // Chroot semantics: /etc seen from the layer is the root's etc.
    let s = Sandbox::new();
    let tar = RawTar::new()
        .symlink("etc_link", "/etc")
        .file("etc_link/passwd", b"root::0:0::/:/bin/sh\n")
        .finish();
    s.apply(&tar).unwrap();
    assert_eq!(
        fs::read(s.p("etc/passwd")).unwrap(),
        b"root::0:0::/:/bin/sh\n"
    );
    assert!(is_symlink(&s.p("etc_link")));
}

#[test]
fn symlink_up_and_out_then_through_it_is_refused() {
    let s = Sandbox::new();
    let tar = RawTar::new()
        .symlink("up", "../../..")
        .file("up/escaped", b"x")
        .finish();
    assert_eq!(
        s.refused(&tar),
        Refusal::Escape {
            symlink: "up".into()
        }
    );
    // Deeper: a relative link that climbs one level too many.
    let tar = RawTar::new()
        .dir("a/", 0o755)
        .symlink("a/l", "../../sentinel")
        .file("a/l/x", b"x")
        .finish();
    assert_eq!(
        s.refused(&tar),
        Refusal::Escape {
            symlink: "a/l".into()
        }
    );
}

#[test]
fn symlink_chain_escaping_is_refused() {
    let s = Sandbox::new();
    let tar = RawTar::new()
        .symlink("b", "../..")
        .symlink("a", "b")
        .file("a/x", b"x")
        .finish();
    assert_eq!(
        s.refused(&tar),
        Refusal::Escape {
            symlink: "b".into()
        }
    );
    let tar = RawTar::new()
        .symlink("p", "q")
        .symlink("q", "p")
        .file("p/x", b"x")
        .finish();
    assert_eq!(s.refused(&tar), Refusal::SymlinkLoop);
}

#[test]
fn hardlink_to_etc_passwd_is_refused() {
    let s = Sandbox::new();
    let tar = RawTar::new().hardlink("pw", "/etc/passwd").finish();
    assert_eq!(
        s.refused(&tar),
        Refusal::LinkTargetMissing {
            target: "/etc/passwd".into()
        }
    );
    // And through a symlink to /etc, even though that resolves inside the root.
    let tar = RawTar::new()
        .symlink("e", "/etc")
        .hardlink("pw", "e/passwd")
        .finish();
    assert_eq!(
        s.refused(&tar),
        Refusal::LinkThroughSymlink {
            target: "e/passwd".into(),
            symlink: "e".into()
        }
    );
}

#[test]
fn hardlink_outside_or_to_a_directory_is_refused() {
    let s = Sandbox::new();
    let tar = RawTar::new().hardlink("x", "../outside").finish();
    assert_eq!(
        s.refused(&tar),
        Refusal::LinkTargetDotDot {
            target: "../outside".into()
        }
    );
    let tar = RawTar::new().dir("d/", 0o755).hardlink("x", "d").finish();
    assert_eq!(
        s.refused(&tar),
        Refusal::LinkTargetIsDirectory { target: "d".into() }
    );
}

#[test]
fn overwriting_a_hardlink_does_not_write_through_it() {
    let s = Sandbox::new();
    let tar = RawTar::new()
        .file("orig", b"original")
        .hardlink("alias", "orig")
        .file("alias", b"replaced")
        .finish();
    s.apply(&tar).unwrap();
    assert_eq!(fs::read(s.p("orig")).unwrap(), b"original");
    assert_eq!(fs::read(s.p("alias")).unwrap(), b"replaced");
}

#[test]
fn whiteouts_of_dot_and_dotdot_are_refused() {
    let s = Sandbox::new();
    for name in [".wh..", ".wh...", "sub/.wh..", ".wh."] {
        let tar = RawTar::new().dir("sub/", 0o755).file(name, b"").finish();
        assert_eq!(s.refused(&tar), Refusal::BadWhiteout, "{name}");
    }
    // `.wh....` names "..." which is an ordinary name: harmless, nothing there to remove.
    let tar = RawTar::new().file(".wh....", b"").finish();
    s.apply(&tar).unwrap();
    // AUFS bookkeeping names are ignored.
    let tar = RawTar::new().file(".wh..wh.plnk", b"").finish();
    s.apply(&tar).unwrap();
    assert!(!s.p(".wh..wh.plnk").exists());
}

#[test]
fn whiteouts_never_go_through_symlinks() {
    let s = Sandbox::new();
    fs::create_dir(s.p("real")).unwrap();
    fs::write(s.p("real/keep"), b"k").unwrap();
    let tar = RawTar::new()
        .symlink("l", "real")
        .file("l/.wh.keep", b"")
        .finish();
    assert_eq!(
        s.refused(&tar),
        Refusal::WhiteoutThroughSymlink {
            symlink: "l".into()
        }
    );
    assert!(s.p("real/keep").exists());
    let tar = RawTar::new()
        .symlink("root", "/")
        .file("root/.wh.real", b"")
        .finish();
    assert_eq!(
        s.refused(&tar),
        Refusal::WhiteoutThroughSymlink {
            symlink: "root".into()
        }
    );
    assert!(s.p("real/keep").exists());
}

#[test]
fn opaque_marker_in_a_symlinked_dir_is_refused() {
    let s = Sandbox::new();
    fs::create_dir(s.p("etc")).unwrap();
    fs::write(s.p("etc/hosts"), b"h").unwrap();
    for target in ["/etc", "etc", "../.."] {
        let tar = RawTar::new()
            .symlink("d", target)
            .file("d/.wh..wh..opq", b"")
            .finish();
        assert_eq!(
            s.refused(&tar),
            Refusal::WhiteoutThroughSymlink {
                symlink: "d".into()
            },
            "{target}"
        );
        assert!(s.p("etc/hosts").exists());
    }
    // Same in OverlayLower mode, where the marker would become an xattr.
    let lower = ApplyOptions::new(ApplyMode::OverlayLower);
    let tar = RawTar::new()
        .symlink("o", "/etc")
        .file("o/.wh..wh..opq", b"")
        .finish();
    let err = s.apply_with(&tar, &lower).unwrap_err();
    assert_eq!(
        err.refusal(),
        Some(&Refusal::WhiteoutThroughSymlink {
            symlink: "o".into()
        })
    );
}

#[test]
fn opaque_whiteout_removes_only_lower_entries() {
    let s = Sandbox::new();
    fs::create_dir_all(s.p("d/lowerdir")).unwrap();
    fs::write(s.p("d/lower"), b"l").unwrap();
    fs::write(s.p("d/lowerdir/x"), b"x").unwrap();
    // This layer's own entries come before the marker (not the usual order) and survive it.
    let tar = RawTar::new()
        .dir("d/", 0o755)
        .file("d/mine", b"m")
        .file("d/lowerdir/mine2", b"m2")
        .file("d/.wh..wh..opq", b"")
        .finish();
    s.apply(&tar).unwrap();
    assert!(s.p("d/mine").exists());
    assert!(s.p("d/lowerdir/mine2").exists(), "this layer's file kept");
    assert!(
        !s.p("d/lowerdir/x").exists(),
        "the lower file beside it removed"
    );
    assert!(!s.p("d/lower").exists());
}

#[test]
fn huge_extension_headers_are_refused_before_reading() {
    let s = Sandbox::new();
    // A declared 1 GiB PAX header with no data behind it: refused on the size alone.
    let mut t = RawTar::new();
    let h = t.header(EntryType::XHeader, b"PaxHeaders.0/x", b"", 1 << 30, 0o644);
    let tar = t.push_header(&h).finish();
    assert_eq!(
        s.refused(&tar),
        Refusal::ExtensionHeadersTooBig { limit: 1 << 20 }
    );
    // A real one, 1.5 MiB of records.
    let big = pax_record(b"comment", &vec![b'x'; 3 << 19]);
    let tar = RawTar::new().pax(&big).file("f", b"").finish();
    assert_eq!(
        s.refused(&tar),
        Refusal::ExtensionHeadersTooBig { limit: 1 << 20 }
    );
    // Many small ones before one entry add up.
    let mut t = RawTar::new();
    let rec = pax_record(b"comment", &vec![b'x'; 100_000]);
    for _ in 0..11 {
        t.pax(&rec);
    }
    let tar = t.file("f", b"").finish();
    assert_eq!(
        s.refused(&tar),
        Refusal::ExtensionHeadersTooBig { limit: 1 << 20 }
    );
    // A GNU long name of 2 MiB.
    let mut t = RawTar::new();
    let h = t.header(
        EntryType::GNULongName,
        b"././@LongLink",
        b"",
        2 << 20,
        0o644,
    );
    let tar = t
        .push_header(&h)
        .data(&vec![b'n'; 2 << 20])
        .file("f", b"")
        .finish();
    assert_eq!(
        s.refused(&tar),
        Refusal::ExtensionHeadersTooBig { limit: 1 << 20 }
    );
}

#[test]
fn duplicates_later_wins_and_replaces_directories() {
    let s = Sandbox::new();
    let tar = RawTar::new()
        .dir("d/", 0o755)
        .file("d/x", b"x")
        .file("d", b"now a file")
        .file("f", b"first")
        .file("f", b"second")
        .file("g", b"a file")
        .dir("g/", 0o700)
        .file("g/inside", b"i")
        .finish();
    s.apply(&tar).unwrap();
    assert_eq!(fs::read(s.p("d")).unwrap(), b"now a file");
    assert_eq!(fs::read(s.p("f")).unwrap(), b"second");
    assert!(s.p("g").is_dir());
    assert_eq!(fs::metadata(s.p("g")).unwrap().mode() & 0o7777, 0o700);
    assert_eq!(fs::read(s.p("g/inside")).unwrap(), b"i");
}

#[test]
fn directory_replaced_by_a_symlink_gets_no_metadata_through_it() {
    // Directory metadata is applied last; by then "d" is a symlink to /etc.
    let s = Sandbox::new();
    let tar = RawTar::new().dir("d/", 0o777).symlink("d", "/etc").finish();
    s.apply(&tar).unwrap();
    assert!(is_symlink(&s.p("d")));
    let tar = RawTar::new()
        .dir("u/", 0o777)
        .symlink("u", "../..")
        .finish();
    s.apply(&tar).unwrap();
}

#[test]
fn device_nodes_need_root() {
    let s = Sandbox::new();
    let mut unprivileged = ApplyOptions::new(ApplyMode::Flatten);
    unprivileged.allow_devices = false; // what a non-root euid gets by default
    for kind in [EntryType::Char, EntryType::Block] {
        let tar = RawTar::new().device(kind, "sda", 8, 0).finish();
        let err = s.apply_with(&tar, &unprivileged).unwrap_err();
        assert_eq!(err.refusal(), Some(&Refusal::DeviceNotAllowed));
    }
    assert!(!s.p("sda").exists());
    // Fifos are fine without root.
    let tar = RawTar::new().device(EntryType::Fifo, "pipe", 0, 0).finish();
    s.apply_with(&tar, &unprivileged).unwrap();
}

#[test]
fn a_file_replacing_a_symlink_to_outside_replaces_the_link() {
    let s = Sandbox::new();
    let tar = RawTar::new()
        .symlink("evil", "/etc/passwd")
        .file("evil", b"pwned")
        .symlink("evil2", "../../../../../../etc/passwd")
        .file("evil2", b"pwned")
        .finish();
    s.apply(&tar).unwrap();
    assert_eq!(fs::read(s.p("evil")).unwrap(), b"pwned");
    assert!(!is_symlink(&s.p("evil")));
    assert!(!is_symlink(&s.p("evil2")));
}

#[test]
fn files_under_a_file_and_nul_names_are_refused() {
    let s = Sandbox::new();
    let tar = RawTar::new().file("f", b"x").file("f/x", b"y").finish();
    assert_eq!(
        s.refused(&tar),
        Refusal::NotADirectory { parent: "f".into() }
    );
    let tar = RawTar::new()
        .pax(&pax_record(b"path", b"a\0b"))
        .file("ignored", b"")
        .finish();
    assert_eq!(s.refused(&tar), Refusal::NulByte);
}

#[test]
fn overlay_xattrs_in_a_layer_are_not_restored() {
    let s = Sandbox::new();
    let tar = RawTar::new()
        .pax(
            &[
                pax_record(b"SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
                pax_record(b"SCHILY.xattr.user.ok", b"1"),
            ]
            .concat(),
        )
        .dir("d/", 0o755)
        .finish();
    s.apply(&tar).unwrap();
    assert_eq!(get_xattr(&s.p("d"), "user.ok"), Some(b"1".to_vec()));
    let mut v = Vec::with_capacity(64);
    assert!(rustix::fs::lgetxattr(
        s.p("d"),
        "trusted.overlay.redirect",
        rustix::buffer::spare_capacity(&mut v)
    )
    .is_err());
}

#[test]
fn malformed_archives_are_refused_with_an_offset() {
    let s = Sandbox::new();
    let mut tar = RawTar::new().file("a", b"x").finish();
    tar[0] = b'b'; // checksum no longer matches
    let err = s.apply(&tar).unwrap_err();
    assert!(
        matches!(err, ApplyError::Malformed { offset: 0, .. }),
        "{err}"
    );

    let tar = RawTar::new().file("a", &vec![1u8; 5000]).finish();
    let err = s.apply(&tar[..2048]).unwrap_err();
    assert!(matches!(err, ApplyError::Malformed { .. }), "{err}");
    assert!(err.to_string().contains("\"a\""), "{err}");

    let mut t = RawTar::new();
    let h = t.header(EntryType::GNUSparse, b"sparse", b"", 0, 0o644);
    let err = s.apply(&t.push_header(&h).finish()).unwrap_err();
    assert!(matches!(err, ApplyError::Unsupported { .. }), "{err}");
}

#[test]
fn overlay_lower_whiteouts_are_char_devices_and_opaque_xattrs() {
    let s = Sandbox::new();
    let tar = RawTar::new()
        .dir("d/", 0o755)
        .file("d/.wh..wh..opq", b"")
        .file("d/.wh.gone", b"")
        .file(".wh.replaced", b"")
        .dir("replaced/", 0o755)
        .finish();
    s.apply_with(&tar, &ApplyOptions::new(ApplyMode::OverlayLower))
        .unwrap();
    let wh = fs::symlink_metadata(s.p("d/gone")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &wh.file_type()
    ));
    assert_eq!(wh.rdev(), 0);
    let opaque = |p: &Path| {
        let mut v = Vec::with_capacity(8);
        rustix::fs::lgetxattr(
            p,
            "trusted.overlay.opaque",
            rustix::buffer::spare_capacity(&mut v),
        )
        .ok()
        .map(|_| v)
    };
    assert_eq!(opaque(&s.p("d")), Some(b"y".to_vec()));
    // A directory replacing a whiteout of its own layer hides the lower one: opaque.
    assert_eq!(opaque(&s.p("replaced")), Some(b"y".to_vec()));
}

#[test]
fn very_deep_paths_do_not_exhaust_file_descriptors() {
    // 1500 levels: more than the default 1024-fd soft limit if resolution kept one per level.
    let s = Sandbox::new();
    let deep = vec!["a"; 1500].join("/");
    let tar = RawTar::new()
        .pax(&pax_record(b"path", format!("{deep}/leaf").as_bytes()))
        .file("ignored", b"deep")
        .pax(&pax_record(b"path", format!("{deep}/../x").as_bytes()))
        .file("ignored", b"")
        .finish();
    assert_eq!(s.refused(&tar), Refusal::DotDot);
    let tar = RawTar::new()
        .pax(&pax_record(b"path", format!("{deep}/leaf").as_bytes()))
        .file("ignored", b"deep")
        .finish();
    s.apply(&tar).unwrap();
    let mut fd = rustix::fs::open(
        &s.target,
        rustix::fs::OFlags::PATH,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    for _ in 0..1500 {
        fd = rustix::fs::openat(
            &fd,
            "a",
            rustix::fs::OFlags::PATH,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
    }
    let leaf = rustix::fs::statat(&fd, "leaf", rustix::fs::AtFlags::empty()).unwrap();
    assert_eq!(leaf.st_size, 4);
    drop(fd);
    std::process::Command::new("rm")
        .arg("-rf")
        .arg(&s.target)
        .status()
        .unwrap();
}
