//! Context checksums and the stat index, on real files.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use cache::checksum::{ChecksumStats, READ_BUFFER};
use cache::{hash_bytes, hash_reader, Checksummer, FileSum};
use rustix::fs::{Timespec, Timestamps, CWD};
use sha2::{Digest, Sha256};

/// Longer than the racy window, so that files written before it are trusted afterwards.
fn settle() {
    std::thread::sleep(Duration::from_millis(120));
}

fn stats(cs: &Checksummer) -> (u64, u64) {
    let ChecksumStats {
        hashed_files,
        reused_files,
        ..
    } = cs.stats();
    (hashed_files, reused_files)
}

fn sum(cs: &Checksummer, root: &Path, rel: &str) -> FileSum {
    cs.checksum(root, Path::new(rel)).unwrap()
}

/// utimensat(2) with explicit times, as `touch -d` does.
fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) {
    let ts = Timestamps {
        last_access: Timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        last_modification: Timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    };
    rustix::fs::utimensat(CWD, path, &ts, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

fn touch(path: &Path) {
    let ts = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        last_modification: Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
    };
    rustix::fs::utimensat(CWD, path, &ts, rustix::fs::AtFlags::empty()).unwrap();
}

fn is_root() -> bool {
    // /proc/self belongs to the effective uid.
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

#[test]
fn touching_keeps_the_checksum_and_unchanged_files_are_not_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::write(ctx.join("a.txt"), "alpha\n").unwrap();
    fs::write(ctx.join("b.txt"), "beta\n").unwrap();
    settle();

    let index = dir.path().join("index.json");
    let cs = Checksummer::open(&index).unwrap();
    let (a, b) = (sum(&cs, &ctx, "a.txt"), sum(&cs, &ctx, "b.txt"));
    assert_eq!(stats(&cs), (2, 0));
    assert_eq!((sum(&cs, &ctx, "a.txt"), sum(&cs, &ctx, "b.txt")), (a, b));
    assert_eq!(stats(&cs), (2, 2), "unchanged files come from the index");

    // Touch a: its stat changed, so it is read once to verify; the checksum stays.
    touch(&ctx.join("a.txt"));
    settle();
    assert_eq!(sum(&cs, &ctx, "a.txt"), a);
    assert_eq!(sum(&cs, &ctx, "b.txt"), b);
    assert_eq!(stats(&cs), (3, 3));
    // ...and from then on served from the index again.
    assert_eq!(sum(&cs, &ctx, "a.txt"), a);
    assert_eq!(stats(&cs), (3, 4));

    // Persisted: a new process reads nothing.
    cs.save().unwrap();
    let cs2 = Checksummer::open(&index).unwrap();
    assert!(cs2.take_warnings().is_empty());
    assert_eq!((sum(&cs2, &ctx, "a.txt"), sum(&cs2, &ctx, "b.txt")), (a, b));
    assert_eq!(stats(&cs2), (0, 2));
    // The tree over the same files reuses them too.
    cs2.checksum_tree(&ctx, Path::new("")).unwrap();
    assert_eq!(stats(&cs2), (0, 4));
}

#[test]
fn same_size_same_mtime_content_change_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    fs::write(&f, "hello world").unwrap();
    settle();
    let cs = Checksummer::open(dir.path().join("index.json")).unwrap();
    let before = sum(&cs, dir.path(), "f");
    assert_eq!(sum(&cs, dir.path(), "f"), before);
    assert_eq!(stats(&cs), (1, 1));

    let md = fs::metadata(&f).unwrap();
    fs::write(&f, "HELLO WORLD").unwrap();
    set_times(
        &f,
        (md.atime(), md.atime_nsec()),
        (md.mtime(), md.mtime_nsec()),
    );
    let md2 = fs::metadata(&f).unwrap();
    assert_eq!(
        (md2.size(), md2.mtime(), md2.mtime_nsec()),
        (md.size(), md.mtime(), md.mtime_nsec())
    );

    let after = sum(&cs, dir.path(), "f");
    assert_ne!(after, before, "ctime betrays the change");
    assert_eq!(stats(&cs), (2, 1));
    let fresh = Checksummer::open(dir.path().join("other.json")).unwrap();
    assert_eq!(sum(&fresh, dir.path(), "f"), after);
}

#[test]
fn a_file_changed_just_before_hashing_is_hashed_again() {
    let dir = tempfile::tempdir().unwrap();
    let cs = Checksummer::open(dir.path().join("index.json")).unwrap();
    // The write and the hash must fall within the racy window (50 ms); on a loaded machine
    // they may not, so try a few times.
    let mut checked = false;
    for attempt in 0..5 {
        let name = format!("f{attempt}");
        let start = std::time::Instant::now();
        fs::write(dir.path().join(&name), "v1").unwrap();
        let before = stats(&cs);
        let s = sum(&cs, dir.path(), &name);
        if start.elapsed() >= Duration::from_millis(30) {
            continue;
        }
        // A same-tick rewrite could hide behind equal stat data: the entry is not trusted.
        assert_eq!(sum(&cs, dir.path(), &name), s);
        assert_eq!(stats(&cs), (before.0 + 2, before.1));
        settle();
        sum(&cs, dir.path(), &name);
        assert_eq!(sum(&cs, dir.path(), &name), s);
        assert_eq!(stats(&cs), (before.0 + 3, before.1 + 1));
        checked = true;
        break;
    }
    assert!(
        checked,
        "the machine is too slow to write and hash a file within 30 ms"
    );
}

/// Git's rule, applied when the index is loaded: an entry whose mtime is not older than the
/// index file is hashed again. The per-entry rule would catch these first, so the test edits
/// the saved index (documented JSON) to make the per-entry rule trust every entry.
#[test]
fn entries_not_older_than_the_index_are_not_trusted_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::write(ctx.join("future"), "f").unwrap();
    fs::write(ctx.join("normal"), "n").unwrap();
    let in_an_hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 3600;
    set_times(&ctx.join("future"), (in_an_hour, 0), (in_an_hour, 0));
    settle();

    let index = dir.path().join("index.json");
    let cs = Checksummer::open(&index).unwrap();
    sum(&cs, &ctx, "future");
    sum(&cs, &ctx, "normal");
    cs.save().unwrap();

    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&index).unwrap()).unwrap();
    for (_, e) in v["entries"].as_object_mut().unwrap() {
        e["hashed_ns"] = serde_json::json!((in_an_hour + 3600) as i128 * 1_000_000_000);
    }
    fs::write(&index, serde_json::to_vec(&v).unwrap()).unwrap();

    let cs = Checksummer::open(&index).unwrap();
    sum(&cs, &ctx, "normal");
    assert_eq!(stats(&cs), (0, 1));
    sum(&cs, &ctx, "future");
    assert_eq!(stats(&cs), (1, 1), "an mtime after the index's own is racy");
}

#[test]
fn mode_owner_xattr_and_symlink_target_are_part_of_the_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let f = root.join("f");
    fs::write(&f, "content").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
    let cs = Checksummer::open(root.join("index.json")).unwrap();
    let base = sum(&cs, root, "f");

    fs::set_permissions(&f, fs::Permissions::from_mode(0o755)).unwrap();
    let exec = sum(&cs, root, "f");
    assert_ne!(exec, base, "mode");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(sum(&cs, root, "f"), base, "no timestamps in the sum");

    if is_root() {
        let md = fs::metadata(&f).unwrap();
        std::os::unix::fs::chown(&f, Some(1234), None).unwrap();
        let uid = sum(&cs, root, "f");
        assert_ne!(uid, base, "uid");
        std::os::unix::fs::chown(&f, Some(md.uid()), Some(4321)).unwrap();
        let gid = sum(&cs, root, "f");
        assert_ne!(gid, base, "gid");
        assert_ne!(gid, uid);
        std::os::unix::fs::chown(&f, Some(md.uid()), Some(md.gid())).unwrap();
        assert_eq!(sum(&cs, root, "f"), base);
    } else {
        eprintln!("not root: owner changes not tested");
    }

    rustix::fs::setxattr(
        &f,
        "user.rbuild.test",
        b"1",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let x1 = sum(&cs, root, "f");
    assert_ne!(x1, base, "xattr added");
    rustix::fs::setxattr(
        &f,
        "user.rbuild.test",
        b"2",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let x2 = sum(&cs, root, "f");
    assert_ne!(x2, x1, "xattr value");
    rustix::fs::removexattr(&f, "user.rbuild.test").unwrap();
    assert_eq!(sum(&cs, root, "f"), base);

    std::os::unix::fs::symlink("target-a", root.join("link")).unwrap();
    let la = sum(&cs, root, "link");
    fs::remove_file(root.join("link")).unwrap();
    std::os::unix::fs::symlink("target-b", root.join("link")).unwrap();
    let lb = sum(&cs, root, "link");
    assert_ne!(la, lb, "symlink target");
    // A symlink is not followed: pointing it at f does not make it f.
    fs::remove_file(root.join("link")).unwrap();
    std::os::unix::fs::symlink("f", root.join("link")).unwrap();
    assert_ne!(sum(&cs, root, "link"), base);
}

/// The documented layout, computed here without the crate.
#[test]
fn checksum_layout_is_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::write(root.join("f"), "some content").unwrap();
    std::os::unix::fs::symlink("some/target", root.join("l")).unwrap();
    let cs = Checksummer::open(root.join("index.json")).unwrap();

    let header = |h: &mut Sha256, kind: u8, md: &fs::Metadata| {
        h.update(b"rbuild.filesum.v1\0");
        h.update([kind]);
        h.update(md.mode().to_be_bytes());
        h.update(md.uid().to_be_bytes());
        h.update(md.gid().to_be_bytes());
        h.update(0u32.to_be_bytes()); // no xattrs
    };
    let md = fs::symlink_metadata(root.join("f")).unwrap();
    let mut h = Sha256::new();
    header(&mut h, b'f', &md);
    h.update(12u64.to_be_bytes());
    h.update(b"some content");
    let f_sum = h.finalize();
    assert_eq!(sum(&cs, root, "f").as_bytes()[..], f_sum[..]);

    let md = fs::symlink_metadata(root.join("l")).unwrap();
    let mut h = Sha256::new();
    header(&mut h, b'l', &md);
    h.update(11u32.to_be_bytes());
    h.update(b"some/target");
    let l_sum = h.finalize();
    assert_eq!(sum(&cs, root, "l").as_bytes()[..], l_sum[..]);

    // A directory holding both.
    fs::create_dir(root.join("d")).unwrap();
    fs::rename(root.join("f"), root.join("d/f")).unwrap();
    fs::rename(root.join("l"), root.join("d/l")).unwrap();
    let md = fs::symlink_metadata(root.join("d")).unwrap();
    let mut h = Sha256::new();
    header(&mut h, b'd', &md);
    h.update(2u64.to_be_bytes());
    for (name, s) in [("f", &f_sum), ("l", &l_sum)] {
        h.update((name.len() as u32).to_be_bytes());
        h.update(name.as_bytes());
        h.update(s);
    }
    assert_eq!(
        cs.checksum_tree(root, Path::new("d")).unwrap().as_bytes()[..],
        h.finalize()[..]
    );
    // A directory's own checksum is its metadata only: a change inside shows in the tree's.
    let own = sum(&cs, root, "d");
    let tree = cs.checksum_tree(root, Path::new("./d")).unwrap();
    assert_ne!(own, tree);
    std::fs::write(root.join("d/f"), b"changed inside").unwrap();
    assert_eq!(sum(&cs, root, "d"), own);
    assert_ne!(cs.checksum_tree(root, Path::new("d")).unwrap(), tree);

    let s = sum(&cs, root, "d/f");
    assert_eq!(s.to_string().parse::<FileSum>().unwrap(), s);
    assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
}

#[test]
fn tree_checksum_follows_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    fs::create_dir_all(ctx.join("conf/sub")).unwrap();
    fs::write(ctx.join("conf/nginx.conf"), "worker_processes 1;").unwrap();
    fs::write(ctx.join("conf/sub/a"), "a").unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM debian").unwrap();
    settle();
    let cs = Checksummer::open(dir.path().join("index.json")).unwrap();
    let tree = |cs: &Checksummer| cs.checksum_tree(&ctx, Path::new("")).unwrap();
    let t0 = tree(&cs);
    assert_eq!(tree(&cs), t0);
    assert_eq!(stats(&cs), (3, 3));

    fs::write(ctx.join("conf/sub/a"), "b").unwrap();
    let t1 = tree(&cs);
    assert_ne!(t1, t0, "nested content");
    fs::rename(ctx.join("conf/sub/a"), ctx.join("conf/sub/c")).unwrap();
    let t2 = tree(&cs);
    assert_ne!(t2, t1, "rename");
    fs::create_dir(ctx.join("empty")).unwrap();
    let t3 = tree(&cs);
    assert_ne!(t3, t2, "empty directory");
    fs::set_permissions(ctx.join("conf/sub"), fs::Permissions::from_mode(0o700)).unwrap();
    assert_ne!(tree(&cs), t3, "directory mode");
    // The conf/ subtree alone.
    let c = cs.checksum_tree(&ctx, Path::new("conf")).unwrap();
    assert_ne!(c, tree(&cs));
}

#[test]
fn special_files_are_not_opened() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    rustix::fs::mknodat(
        CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let cs = Checksummer::open(dir.path().join("index.json")).unwrap();
    // Opening a fifo for reading would block with no writer: this returns at once.
    let s = sum(&cs, dir.path(), "fifo");
    fs::set_permissions(&fifo, fs::Permissions::from_mode(0o600)).unwrap();
    assert_ne!(sum(&cs, dir.path(), "fifo"), s);
    assert_eq!(stats(&cs), (0, 0));
}

#[test]
fn paths_must_stay_inside_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let cs = Checksummer::open(dir.path().join("index.json")).unwrap();
    for bad in ["../etc/passwd", "a/../../x", "/etc/passwd"] {
        let err = cs.checksum(dir.path(), Path::new(bad)).unwrap_err();
        assert!(
            matches!(err, cache::Error::InvalidPath { .. }),
            "{bad}: {err}"
        );
    }
    let err = cs.checksum(dir.path(), Path::new("missing")).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn a_damaged_index_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("index.json");
    fs::write(&index, b"{\"version\":1,\"entries\":{\"/x\":").unwrap();
    fs::write(dir.path().join("f"), "x").unwrap();
    let cs = Checksummer::open(&index).unwrap();
    let w = cs.take_warnings();
    assert_eq!(w.len(), 1);
    assert!(w[0].problem.contains("damaged checksum index"), "{}", w[0]);
    sum(&cs, dir.path(), "f");
    cs.save().unwrap();
    let cs = Checksummer::open(&index).unwrap();
    assert!(cs.take_warnings().is_empty());
    // A missing index is no problem either.
    let cs = Checksummer::open(dir.path().join("none/index.json")).unwrap();
    assert!(cs.take_warnings().is_empty());
    sum(&cs, dir.path(), "f");
    cs.save().unwrap();
    assert!(dir.path().join("none/index.json").is_file());
}

#[test]
fn hash_helpers() {
    let expected: [u8; 32] = Sha256::digest(b"abc").into();
    assert_eq!(hash_bytes(b"abc"), expected);

    /// A reader that records the largest read it was asked for.
    struct Probe {
        left: u64,
        max_request: usize,
        reads: u64,
    }
    impl Read for Probe {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.max_request = self.max_request.max(buf.len());
            self.reads += 1;
            let n = (buf.len() as u64).min(self.left) as usize;
            buf[..n].fill(7);
            self.left -= n as u64;
            Ok(n)
        }
    }
    let mut probe = Probe {
        left: 10 << 20,
        max_request: 0,
        reads: 0,
    };
    let (digest, n) = hash_reader(&mut probe).unwrap();
    assert_eq!(n, 10 << 20);
    assert_eq!(
        digest,
        <[u8; 32]>::from(Sha256::digest(vec![7u8; 10 << 20]))
    );
    assert!(probe.max_request <= READ_BUFFER);
    assert!(probe.reads >= (10 << 20) / READ_BUFFER as u64);
}

fn status_kib(field: &str) -> u64 {
    let s = fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Child side of `a_50mb_file_is_streamed`: reset the peak RSS, checksum, report the peak.
#[test]
fn streaming_child() {
    let Some(root) = std::env::var_os("CACHE_TEST_STREAM_ROOT") else {
        return;
    };
    let cs = Checksummer::open(Path::new(&root).join("index.json")).unwrap();
    // "5" resets VmHWM to the current RSS (Linux ≥ 4.0).
    fs::write("/proc/self/clear_refs", "5").unwrap();
    let base = status_kib("VmRSS:");
    let s = sum(&cs, Path::new(&root), "big");
    let peak = status_kib("VmHWM:");
    println!(
        "SUM={s} PEAK_GROWTH_KIB={} HASHED={}",
        peak.saturating_sub(base),
        cs.stats().hashed_bytes
    );
}

#[test]
fn a_50mb_file_is_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    let size: u64 = 50 << 20;
    {
        let mut f = fs::File::create(&big).unwrap();
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..50 {
            for b in chunk.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&chunk).unwrap();
        }
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "streaming_child", "--nocapture"])
        .env("CACHE_TEST_STREAM_ROOT", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("SUM="))
        .unwrap_or_else(|| {
            panic!(
                "child failed: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap()
            .to_string()
    };
    let growth: u64 = field("PEAK_GROWTH_KIB=").parse().unwrap();
    assert_eq!(field("HASHED=").parse::<u64>().unwrap(), size);
    assert!(
        growth < 8 * 1024,
        "peak RSS grew by {growth} KiB while hashing 50 MiB"
    );
    eprintln!("peak RSS growth while hashing 50 MiB: {growth} KiB");

    // Same sum here, by the documented layout, streaming too.
    let md = fs::metadata(&big).unwrap();
    let mut h = Sha256::new();
    h.update(b"rbuild.filesum.v1\0f");
    h.update(md.mode().to_be_bytes());
    h.update(md.uid().to_be_bytes());
    h.update(md.gid().to_be_bytes());
    h.update(0u32.to_be_bytes());
    h.update(size.to_be_bytes());
    let mut f = fs::File::open(&big).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let expected = FileSum::from_bytes(h.finalize().into());
    assert_eq!(field("SUM="), expected.to_string());
}

/// The race the racy rule exists for: a rewrite within the same timestamp tick as the hashed
/// version leaves size, mtime and ctime all equal. The checksum must still be the new one.
#[test]
fn same_tick_rewrites_are_never_served_stale() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    let cs = Checksummer::open(dir.path().join("index.json")).unwrap();
    let mut same_tick = 0;
    for i in 0..300u32 {
        let v1 = format!("{:08}", i * 2);
        let v2 = format!("{:08}", i * 2 + 1);
        fs::write(&f, &v1).unwrap();
        let md1 = fs::metadata(&f).unwrap();
        let s1 = sum(&cs, dir.path(), "f");
        fs::write(&f, &v2).unwrap();
        set_times(
            &f,
            (md1.atime(), md1.atime_nsec()),
            (md1.mtime(), md1.mtime_nsec()),
        );
        let md2 = fs::metadata(&f).unwrap();
        if (md2.ctime(), md2.ctime_nsec()) == (md1.ctime(), md1.ctime_nsec()) {
            same_tick += 1;
        }
        let s2 = sum(&cs, dir.path(), "f");
        let fresh = Checksummer::open(dir.path().join("fresh.json")).unwrap();
        assert_eq!(s2, sum(&fresh, dir.path(), "f"), "iteration {i}");
        assert_ne!(s1, s2);
    }
    eprintln!("same-tick rewrites (indistinguishable by stat): {same_tick}/300");
}

/// A mounted ext4 image with whole-second timestamps (128-byte inodes); unmounted on drop.
struct CoarseFs {
    mnt: tempfile::TempDir,
    _img: tempfile::TempDir,
}

impl CoarseFs {
    fn mount() -> Result<CoarseFs, String> {
        if !is_root() {
            return Err("not root".into());
        }
        let img = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mnt = tempfile::tempdir().map_err(|e| e.to_string())?;
        let file = img.path().join("fs.img");
        fs::File::create(&file)
            .and_then(|f| f.set_len(16 << 20))
            .map_err(|e| e.to_string())?;
        let run = |cmd: &str, args: &[&std::ffi::OsStr]| -> Result<(), String> {
            let out = std::process::Command::new(cmd)
                .args(args)
                .output()
                .map_err(|e| format!("{cmd}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!("{cmd}: {}", String::from_utf8_lossy(&out.stderr)))
            }
        };
        run(
            "mkfs.ext4",
            &[
                "-q".as_ref(),
                "-I".as_ref(),
                "128".as_ref(),
                file.as_os_str(),
            ],
        )?;
        run(
            "mount",
            &[
                "-o".as_ref(),
                "loop".as_ref(),
                file.as_os_str(),
                mnt.path().as_os_str(),
            ],
        )?;
        Ok(CoarseFs { mnt, _img: img })
    }
}

impl Drop for CoarseFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.mnt.path())
            .status();
    }
}

/// On a filesystem with whole-second timestamps, a rewrite in the same second is invisible to
/// stat; the racy rule must still never serve the old checksum, and must trust the entry once
/// the second is well past.
#[test]
fn coarse_timestamps_same_second_rewrites() {
    let coarse = match CoarseFs::mount() {
        Ok(c) => c,
        Err(why) => {
            eprintln!("skipped: cannot mount a coarse-timestamp filesystem ({why})");
            return;
        }
    };
    let root = coarse.mnt.path();
    let f = root.join("f");
    let index = tempfile::tempdir().unwrap();
    let cs = Checksummer::open(index.path().join("index.json")).unwrap();
    let mut invisible = 0;
    for i in 0..30u32 {
        fs::write(&f, format!("{:08}", i * 2)).unwrap();
        let md1 = fs::metadata(&f).unwrap();
        assert_eq!(
            (md1.mtime_nsec(), md1.ctime_nsec()),
            (0, 0),
            "whole-second timestamps"
        );
        let s1 = sum(&cs, root, "f");
        fs::write(&f, format!("{:08}", i * 2 + 1)).unwrap();
        let md2 = fs::metadata(&f).unwrap();
        if (md2.mtime(), md2.ctime(), md2.size()) == (md1.mtime(), md1.ctime(), md1.size()) {
            invisible += 1;
        }
        let s2 = sum(&cs, root, "f");
        assert_ne!(s1, s2, "iteration {i}: the old checksum was served");
    }
    assert!(
        invisible > 0,
        "no same-second rewrite happened: the test proves nothing"
    );
    eprintln!("rewrites invisible to stat: {invisible}/30");

    // Once the last change is more than the coarse window old, the entry is trusted.
    let ctime = fs::metadata(&f).unwrap().ctime();
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        < ctime as f64 + 2.1
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (hashed, _) = stats(&cs);
    let s = sum(&cs, root, "f");
    assert_eq!(sum(&cs, root, "f"), s);
    assert_eq!(stats(&cs).0, hashed + 1, "hashed once more, then trusted");
    drop(cs);
}
