//! `images::registry` against a real registry: Debian's `docker-registry` (distribution 2.8),
//! started by each test on a free loopback port with its own storage, and killed (that PID
//! only) when the test ends.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use flate2::Compression;
use images::model::{DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST};
use images::registry::{self, Error, PullOptions, PushOptions, Target, UploadMode};
use images::{
    canonical_json, Descriptor, Digest, ImageConfig, ImageIndex, MediaType, Reference, Store,
};
use oci_spec::image::ImageIndexBuilder;
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

// ------------------------------------------------------------------ the registry

#[path = "../../tests/src/registry.rs"]
#[allow(dead_code)] // the end-to-end tests use the rest
mod registry_process;
use registry_process::{free_port, Registry};

/// What these tests ask of the registry beyond the process itself.
trait RegistryExt {
    fn r(&self, repo_tag: &str) -> Reference;
    fn blob_file(&self, digest: &Digest) -> PathBuf;
}

impl RegistryExt for Registry {
    /// A reference into this registry.
    fn r(&self, repo_tag: &str) -> Reference {
        Reference::parse(&format!("{}/{repo_tag}", self.host())).expect("reference")
    }

    /// Where the registry keeps a blob's content.
    fn blob_file(&self, digest: &Digest) -> PathBuf {
        let hex = digest.digest();
        self.storage()
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

// ------------------------------------------------------------------ images

fn temp_store() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path().join("root")).expect("open store");
    (dir, store)
}

/// A gzip layer tar holding `files`, and its diff ID.
fn make_layer(files: &[(&str, &[u8])]) -> (Vec<u8>, Digest) {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).expect("tar");
    }
    let tar = b.into_inner().expect("tar");
    let diff_id = images::sha256_digest(&tar);
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&tar).expect("gzip");
    (gz.finish().expect("gzip"), diff_id)
}

/// Stores layers, then an image made of them, tagged `tag` (if any). Returns the manifest
/// descriptor and the layer descriptors.
fn write_image(
    store: &Store,
    tag: Option<&Reference>,
    layers: &[(Vec<u8>, Digest)],
    arch: Option<&str>,
) -> (Descriptor, Vec<Descriptor>) {
    let mut descs = Vec::new();
    let mut config = ImageConfig {
        created: Some("2024-01-02T03:04:05Z".into()),
        ..ImageConfig::default()
    };
    if let Some(a) = arch {
        config.architecture = a.to_string();
        config.variant = None;
    }
    for (gz, diff_id) in layers {
        let info = store.put_bytes(gz, None).expect("store layer");
        descs.push(info.descriptor(MediaType::ImageLayerGzip));
        config.rootfs.diff_ids.push(diff_id.clone());
    }
    let tags: Vec<Reference> = tag.into_iter().cloned().collect();
    let manifest = store
        .write_image(&config, &descs, &tags)
        .expect("write image");
    (manifest, descs)
}

/// An image of `n` small layers whose content depends on `seed`.
fn small_image(store: &Store, tag: &Reference, seed: &str, n: usize) -> Descriptor {
    let layers: Vec<_> = (0..n)
        .map(|i| {
            let body = format!("{seed} layer {i}\n").repeat(100 + i);
            make_layer(&[(&format!("f{i}.txt"), body.as_bytes())])
        })
        .collect();
    write_image(store, Some(tag), &layers, None).0
}

/// Writes a `size`-byte layer (an uncompressed gzip stream around a tar of one file of
/// incompressible bytes) straight into the store, never holding it in memory.
fn big_layer(store: &Store, size: usize, seed: u64) -> (Descriptor, Digest) {
    struct Tee<W: Write> {
        inner: W,
        hasher: Sha256,
    }
    impl<W: Write> Write for Tee<W> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = self.inner.write(buf)?;
            self.hasher.update(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush()
        }
    }
    /// A 1 MiB pseudo-random block, repeated: incompressible enough, and cheap to make.
    struct Pattern {
        block: Vec<u8>,
        pos: usize,
        left: usize,
    }
    impl Read for Pattern {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.left).min(self.block.len() - self.pos);
            buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
            self.pos = (self.pos + n) % self.block.len();
            self.left -= n;
            Ok(n)
        }
    }
    let mut x = seed | 1;
    let block: Vec<u8> = (0..(1 << 17))
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    let writer = store.blob_writer().expect("blob writer");
    let tee = Tee {
        inner: GzEncoder::new(writer, Compression::none()),
        hasher: Sha256::new(),
    };
    let mut tar = tar::Builder::new(tee);
    let mut h = tar::Header::new_gnu();
    h.set_size(size as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    let data = Pattern {
        block,
        pos: 0,
        left: size,
    };
    tar.append_data(&mut h, "big.bin", data).expect("tar");
    let tee = tar.into_inner().expect("tar");
    let diff_id = images::model::digest_from_sha256(tee.hasher.finalize().into());
    let info = tee
        .inner
        .finish()
        .expect("gzip")
        .commit(None)
        .expect("commit");
    (info.descriptor(MediaType::ImageLayerGzip), diff_id)
}

/// An image: a small layer and a big one.
fn big_image(store: &Store, tag: &Reference, size: usize) -> Descriptor {
    let (big, big_diff) = big_layer(store, size, 0x5eed);
    let (small_gz, small_diff) = make_layer(&[("etc/hello", b"hello\n")]);
    let small = store.put_bytes(&small_gz, None).expect("small layer");
    let config = ImageConfig {
        created: Some("2024-01-02T03:04:05Z".into()),
        rootfs: images::RootFs {
            diff_ids: vec![small_diff, big_diff],
            ..images::RootFs::default()
        },
        ..ImageConfig::default()
    };
    store
        .write_image(
            &config,
            &[small.descriptor(MediaType::ImageLayerGzip), big],
            std::slice::from_ref(tag),
        )
        .expect("write image")
}

/// Every blob the image at `reference` uses in `a` is in `b` with the same bytes.
fn assert_same_image(a: &Store, b: &Store, reference: &Reference) {
    let da = a.resolve(reference).expect("resolve in source");
    let db = b.resolve(reference).expect("resolve in destination");
    assert_eq!(da.digest(), db.digest(), "manifest digest");
    let img = b.image(reference).expect("image in destination");
    let mut blobs = vec![db.digest().clone(), img.manifest.config().digest().clone()];
    blobs.extend(img.manifest.layers().iter().map(|l| l.digest().clone()));
    for d in blobs {
        let pa = a.blob_path(&d).expect("path");
        let pb = b.blob_path(&d).expect("path");
        assert_eq!(file_sha256(&pb), d, "{d} verifies in the destination");
        assert_eq!(
            fs::metadata(&pa).expect("source blob").len(),
            fs::metadata(&pb).expect("destination blob").len()
        );
    }
    assert_clean(b);
}

fn file_sha256(path: &Path) -> Digest {
    let mut f = fs::File::open(path).expect("open blob");
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h).expect("hash blob");
    images::model::digest_from_sha256(h.finalize().into())
}

/// `fsck` finds nothing at all (not even leftovers in `ingest/`).
fn assert_clean(store: &Store) {
    let problems = store.fsck().expect("fsck");
    assert!(problems.is_empty(), "fsck: {problems:#?}");
}

fn ingest_files(store: &Store) -> Vec<PathBuf> {
    fs::read_dir(store.root().join("ingest"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

// ------------------------------------------------------------------ child processes

/// Env var that makes `child_helper` do something (it does nothing in a normal run).
const CHILD_ENV: &str = "RBUILD_REGISTRY_TEST_CHILD";

/// Peak resident memory of this process so far, in KiB.
fn vm_hwm_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// Run in a child process (see `in_child`): one push or pull, measured.
#[test]
fn child_helper() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let root = std::env::var("CHILD_STORE").expect("CHILD_STORE");
    let reference = Reference::parse(&std::env::var("CHILD_REF").expect("CHILD_REF")).expect("ref");
    let store = Store::open(root).expect("store");
    let before = vm_hwm_kib();
    let start = Instant::now();
    let bytes = match mode.as_str() {
        "push" => {
            let opts = PushOptions {
                upload_mode: match std::env::var("CHILD_UPLOAD").as_deref() {
                    Ok("chunked") => UploadMode::Chunked,
                    _ => UploadMode::Monolithic,
                },
                ..PushOptions::default()
            };
            registry::push(&store, &reference, &opts)
                .expect("push")
                .uploaded_bytes
        }
        "pull" => {
            registry::pull(&store, &reference, &PullOptions::default())
                .expect("pull")
                .downloaded_bytes
        }
        other => panic!("unknown child mode {other}"),
    };
    let secs = start.elapsed().as_secs_f64();
    let after = vm_hwm_kib();
    // A newline first: libtest has already printed "test child_helper ... ".
    println!("\nMEASURED {before} {after} {bytes} {secs}");
}

/// What a child push or pull measured.
struct Measured {
    hwm_before_kib: u64,
    hwm_after_kib: u64,
    bytes: u64,
    secs: f64,
}

impl Measured {
    fn growth_mib(&self) -> f64 {
        (self.hwm_after_kib.saturating_sub(self.hwm_before_kib)) as f64 / 1024.0
    }
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs
    }
}

fn in_child(mode: &str, store: &Store, reference: &Reference) -> Measured {
    in_child_with(mode, store, reference, UploadMode::default())
}

fn in_child_with(mode: &str, store: &Store, reference: &Reference, upload: UploadMode) -> Measured {
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .args(["child_helper", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .env("CHILD_STORE", store.root())
        .env("CHILD_REF", reference.to_string())
        .env(
            "CHILD_UPLOAD",
            match upload {
                UploadMode::Chunked => "chunked",
                UploadMode::Monolithic => "monolithic",
            },
        )
        .stderr(Stdio::inherit())
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child {mode} failed: {stdout}");
    let line = BufReader::new(stdout.as_bytes())
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("MEASURED "))
        .unwrap_or_else(|| panic!("no MEASURED line from the child: {stdout}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    Measured {
        hwm_before_kib: f[1].parse().expect("number"),
        hwm_after_kib: f[2].parse().expect("number"),
        bytes: f[3].parse().expect("number"),
        secs: f[4].parse().expect("number"),
    }
}

// ------------------------------------------------------------------ tests

#[test]
fn push_then_pull_into_an_empty_store() {
    let reg = Registry::start();
    let (_a, src) = temp_store();
    let r = reg.r("nginx:1.0");
    let desc = small_image(&src, &r, "roundtrip", 3);
    let img = src.image(&r).expect("image");
    let blob_bytes: u64 =
        img.manifest.config().size() + img.manifest.layers().iter().map(|l| l.size()).sum::<u64>();

    let pushed = registry::push(&src, &r, &PushOptions::default()).expect("push");
    assert_eq!(pushed.manifest_digest, *desc.digest());
    assert_eq!(pushed.uploaded_blobs, 4, "{pushed:?}");
    assert_eq!(pushed.skipped_blobs, 0);
    assert_eq!(pushed.uploaded_manifests, 1);
    assert_eq!(pushed.uploaded_bytes, blob_bytes + desc.size());
    // The registry stores exactly our bytes.
    for l in img.manifest.layers() {
        assert_eq!(file_sha256(&reg.blob_file(l.digest())), *l.digest());
    }

    let (_b, dst) = temp_store();
    let pulled = registry::pull(&dst, &r, &PullOptions::default()).expect("pull");
    assert_eq!(pulled.manifest_digest, *desc.digest());
    assert_eq!(pulled.index_digest, None);
    assert_eq!(pulled.downloaded_blobs, 4);
    assert_eq!(pulled.downloaded_bytes, blob_bytes + desc.size());
    assert_eq!(pulled.tagged.as_ref(), Some(&r));
    assert_same_image(&src, &dst, &r);
    assert_eq!(dst.image(&r).expect("image").config, img.config);

    // By digest: the same image, and no tag written.
    let (_c, by_digest) = temp_store();
    let pinned = Reference::parse(&format!("{}/nginx@{}", reg.host(), desc.digest())).expect("ref");
    let pulled = registry::pull(&by_digest, &pinned, &PullOptions::default()).expect("by digest");
    assert_eq!(pulled.manifest_digest, *desc.digest());
    assert_eq!(pulled.tagged, None);
    assert!(by_digest.list().expect("list").is_empty());
    by_digest.image(&pinned).expect("image by digest");

    // Pulling again downloads nothing but the manifest.
    let again = registry::pull(&dst, &r, &PullOptions::default()).expect("pull again");
    assert_eq!(again.downloaded_blobs, 0);
    assert_eq!(again.skipped_blobs, 4);
    assert_eq!(again.downloaded_bytes, desc.size());
}

#[test]
fn pushing_again_uploads_nothing_and_only_asks() {
    let reg = Registry::start();
    let (_a, src) = temp_store();
    let r = reg.r("app/web:2");
    small_image(&src, &r, "again", 2);
    registry::push(&src, &r, &PushOptions::default()).expect("first push");

    let log_len = reg.log().len();
    let second = registry::push(&src, &r, &PushOptions::default()).expect("second push");
    assert_eq!(second.uploaded_bytes, 0, "{second:?}");
    assert_eq!(second.uploaded_blobs, 0);
    assert_eq!(second.mounted_blobs, 0);
    assert_eq!(second.uploaded_manifests, 0);
    assert_eq!(second.skipped_blobs, 3);
    // The registry saw HEADs (and the API check), nothing that writes.
    let requests = reg.requests_since(log_len);
    assert!(!requests.is_empty(), "no request logged:\n{}", reg.log());
    for req in &requests {
        assert!(
            req.starts_with("HEAD ") || req.starts_with("GET /v2/ "),
            "unexpected request on a second push: {req}\nall: {requests:#?}"
        );
    }
    assert_eq!(
        requests.iter().filter(|r| r.starts_with("HEAD ")).count(),
        4,
        "3 blob HEADs and 1 manifest HEAD: {requests:#?}"
    );
}

#[test]
fn big_layer_pushes_with_bounded_memory() {
    let (_a, src) = temp_store();
    let size = 40 << 20;
    // One registry per upload mode, so that the second push cannot mount from the first.
    for mode in [UploadMode::Monolithic, UploadMode::Chunked] {
        let reg = Registry::start();
        let r = reg.r("big:1");
        match src.resolve(&Reference::parse("big:1").expect("ref")) {
            Ok(desc) => src.tag(&r, &desc).expect("tag"),
            Err(_) => {
                let desc = big_image(&src, &r, size);
                src.tag(&Reference::parse("big:1").expect("ref"), &desc)
                    .expect("tag");
            }
        }
        let push = in_child_with("push", &src, &r, mode);
        eprintln!(
            "{mode:?} push of {} bytes: {:.1} MB/s, peak RSS +{:.1} MiB",
            push.bytes,
            push.mb_per_s(),
            push.growth_mib()
        );
        assert!(push.bytes > size as u64, "the big layer was uploaded");
        assert!(
            push.growth_mib() < 64.0,
            "peak RSS grew by {:.1} MiB during the {mode:?} push of a 40 MiB layer",
            push.growth_mib()
        );

        let (_b, dst) = temp_store();
        let pull = in_child("pull", &dst, &r);
        eprintln!(
            "pull of {} bytes: {:.1} MB/s, peak RSS +{:.1} MiB",
            pull.bytes,
            pull.mb_per_s(),
            pull.growth_mib()
        );
        assert!(
            pull.growth_mib() < 64.0,
            "peak RSS grew by {:.1} MiB during the pull",
            pull.growth_mib()
        );
        assert_same_image(&src, &dst, &r);
    }
}

#[test]
fn registry_killed_mid_push_then_restarted() {
    let mut reg = Registry::start();
    let (_a, src) = temp_store();
    let r = reg.r("interrupted:1");
    let big_size = 96 << 20;
    big_image(&src, &r, big_size);

    let (store, reference) = (src.clone(), r.clone());
    let push =
        std::thread::spawn(move || registry::push(&store, &reference, &PushOptions::default()));
    let deadline = Instant::now() + Duration::from_secs(120);
    while reg.upload_bytes() < 8 << 20 {
        assert!(
            !push.is_finished(),
            "the push ended before the registry could be killed"
        );
        assert!(Instant::now() < deadline, "the big upload never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    reg.kill();
    let err = push
        .join()
        .expect("push thread")
        .expect_err("a push to a registry killed mid-upload fails");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(
        matches!(err, Error::Unreachable { tries: 3, .. }),
        "{err:?}"
    );
    assert!(msg.contains(&reg.host()), "names the registry: {msg}");
    assert!(msg.contains("interrupted"), "names the repository: {msg}");
    assert!(
        msg.contains("is the registry running"),
        "says what to do: {msg}"
    );

    reg.restart();
    let report = registry::push(&src, &r, &PushOptions::default()).expect("push after restart");
    assert!(report.uploaded_bytes >= big_size as u64, "{report:?}");
    let (_b, dst) = temp_store();
    registry::pull(&dst, &r, &PullOptions::default()).expect("pull after restart");
    assert_same_image(&src, &dst, &r);
}

#[test]
fn pull_of_a_missing_tag_is_a_clear_error() {
    let reg = Registry::start();
    let (_a, src) = temp_store();
    let r = reg.r("present:1.0");
    small_image(&src, &r, "missing", 1);
    registry::push(&src, &r, &PushOptions::default()).expect("push");

    let (_b, dst) = temp_store();
    let missing = reg.r("present:2.0");
    let err = registry::pull(&dst, &missing, &PullOptions::default()).expect_err("no such tag");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert!(msg.contains("manifest 2.0"), "{msg}");
    assert!(msg.contains("repository present"), "{msg}");
    assert!(msg.contains(&reg.host()), "{msg}");
    assert!(dst.resolve(&missing).is_err(), "nothing was tagged");

    let err = registry::pull(&dst, &reg.r("never-pushed:1"), &PullOptions::default())
        .expect_err("no such repository");
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert!(dst.list().expect("list").is_empty());
}

#[test]
fn corrupted_blob_fails_verification_and_stores_nothing() {
    let reg = Registry::start();
    let (_a, src) = temp_store();
    let r = reg.r("tampered:1");
    small_image(&src, &r, "tamper", 2);
    registry::push(&src, &r, &PushOptions::default()).expect("push");
    let layer = src.image(&r).expect("image").manifest.layers()[1].clone();

    // Flip one byte of the registry's copy (same size, so only the digest tells).
    let file = reg.blob_file(layer.digest());
    let mut data = fs::read(&file).expect("registry blob");
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    fs::write(&file, &data).expect("tamper");

    let (_b, dst) = temp_store();
    let err = registry::pull(&dst, &r, &PullOptions::default()).expect_err("corrupt blob");
    let msg = err.to_string();
    eprintln!("{msg}");
    match &err {
        Error::DigestMismatch { at, expected, .. } => {
            assert_eq!(at.target, Target::Blob(layer.digest().clone()));
            assert_eq!(expected, &layer.digest().to_string());
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(
        msg.contains(&reg.host()) && msg.contains("tampered"),
        "{msg}"
    );
    assert!(
        !dst.has_blob(layer.digest()),
        "the corrupt blob was not stored"
    );
    assert!(ingest_files(&dst).is_empty(), "{:?}", ingest_files(&dst));
    assert!(dst.resolve(&r).is_err(), "nothing was tagged");
    let serious: Vec<_> = dst
        .fsck()
        .expect("fsck")
        .into_iter()
        .filter(|p| !p.is_harmless())
        .collect();
    assert!(serious.is_empty(), "{serious:?}");
}

#[test]
fn cross_repo_mount_and_fallback_to_upload() {
    let reg = Registry::start();
    let (_a, src) = temp_store();
    let shared = make_layer(&[("shared.txt", b"in both a and b\n")]);
    let unpushed = make_layer(&[("c.txt", b"tagged locally in c, never pushed\n")]);
    let own = make_layer(&[("b.txt", b"only in b\n")]);
    let (a, b, c) = (reg.r("a:1"), reg.r("b:1"), reg.r("c:1"));
    write_image(&src, Some(&a), std::slice::from_ref(&shared), None);
    write_image(&src, Some(&c), std::slice::from_ref(&unpushed), None);
    let (_, b_layers) = write_image(&src, Some(&b), &[shared, unpushed, own], None);
    registry::push(&src, &a, &PushOptions::default()).expect("push a");

    let log_len = reg.log().len();
    let report = registry::push(&src, &b, &PushOptions::default()).expect("push b");
    // The shared layer is mounted from a; c's layer is not in the registry, so its mount
    // fails and it is uploaded, like b's own layer and config.
    assert_eq!(report.mounted_blobs, 1, "{report:?}");
    assert_eq!(report.uploaded_blobs, 3, "{report:?}");
    assert_eq!(report.skipped_blobs, 0, "{report:?}");
    let requests = reg.requests_since(log_len);
    let mount = format!("mount={}&from=a", b_layers[0].digest()).replace(':', "%3A");
    assert!(
        requests
            .iter()
            .any(|q| q.contains(&mount) && q.ends_with(" 201")),
        "{requests:#?}"
    );
    assert!(
        requests.iter().any(|q| q.contains("&from=c ")),
        "a mount from c was tried: {requests:#?}"
    );

    let (_b, dst) = temp_store();
    registry::pull(&dst, &b, &PullOptions::default()).expect("pull b");
    assert_same_image(&src, &dst, &b);
}

#[test]
fn multi_platform_index_pulls_this_platform_only() {
    let reg = Registry::start();
    let (_a, src) = temp_store();
    let (host_os, host_arch, _) = images::model::host_platform();
    let other_arch = if host_arch == "s390x" {
        "riscv64"
    } else {
        "s390x"
    };
    let (host_m, _) = write_image(
        &src,
        None,
        &[make_layer(&[("arch", host_arch.as_bytes())])],
        None,
    );
    let (other_m, other_layers) = write_image(
        &src,
        None,
        &[make_layer(&[("arch", other_arch.as_bytes())])],
        Some(other_arch),
    );
    assert!(host_m.platform().is_some() && other_m.platform().is_some());
    let index: ImageIndex = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![other_m.clone(), host_m.clone()])
        .build()
        .expect("index");
    let index_desc = src
        .put_json(MediaType::ImageIndex, &index)
        .expect("store index");
    let r = reg.r("multi:1");
    src.tag(&r, &index_desc).expect("tag index");

    let pushed = registry::push(&src, &r, &PushOptions::default()).expect("push index");
    assert_eq!(pushed.manifest_digest, *index_desc.digest());
    assert_eq!(pushed.uploaded_manifests, 3, "two platforms and the index");
    assert_eq!(pushed.uploaded_blobs, 4, "two configs, two layers");

    let (_b, dst) = temp_store();
    let pulled = registry::pull(&dst, &r, &PullOptions::default()).expect("pull index");
    assert_eq!(pulled.index_digest.as_ref(), Some(index_desc.digest()));
    assert_eq!(pulled.manifest_digest, *host_m.digest());
    let platform = pulled.descriptor.platform().clone().expect("platform");
    assert_eq!(platform.os().to_string(), host_os);
    assert_eq!(platform.architecture().to_string(), host_arch);
    assert_eq!(dst.resolve(&r).expect("ref").digest(), host_m.digest());
    assert!(
        !dst.has_blob(other_layers[0].digest()),
        "other platform not pulled"
    );
    dst.image(&r).expect("image");
    assert_clean(&dst);
}

#[test]
fn docker_schema2_media_types_round_trip() {
    let reg = Registry::start();
    let (_a, src) = temp_store();
    let (gz, diff_id) = make_layer(&[("docker.txt", b"docker media types\n")]);
    let layer = src.put_bytes(&gz, None).expect("layer");
    let mut config = ImageConfig::default();
    config.rootfs.diff_ids.push(diff_id);
    let config_bytes = canonical_json(&config).expect("config json");
    let config_info = src.put_bytes(&config_bytes, None).expect("config");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {
            "mediaType": DOCKER_CONFIG,
            "size": config_info.size,
            "digest": config_info.digest.to_string(),
        },
        "layers": [{
            "mediaType": DOCKER_LAYER_GZIP,
            "size": layer.size,
            "digest": layer.digest.to_string(),
        }],
    });
    let body = serde_json::to_vec_pretty(&manifest).expect("manifest json");
    let m = src.put_bytes(&body, None).expect("manifest");
    let desc = m.descriptor(MediaType::Other(DOCKER_MANIFEST.into()));
    let r = reg.r("dockerish:1");
    src.tag(&r, &desc).expect("tag");

    let pushed = registry::push(&src, &r, &PushOptions::default()).expect("push");
    assert_eq!(pushed.manifest_digest, m.digest);
    let (_b, dst) = temp_store();
    let pulled = registry::pull(&dst, &r, &PullOptions::default()).expect("pull");
    assert_eq!(pulled.manifest_digest, m.digest);
    assert_eq!(
        pulled.descriptor.media_type(),
        &MediaType::Other(DOCKER_MANIFEST.into())
    );
    assert_same_image(&src, &dst, &r);
    assert_eq!(dst.image(&r).expect("image").config, config);
}

#[test]
fn unreachable_registry_is_named_after_retries() {
    let (_a, dst) = temp_store();
    let port = free_port(); // nothing listens there
    let r = Reference::parse(&format!("127.0.0.1:{port}/ghost:1")).expect("ref");
    let start = Instant::now();
    let err = registry::pull(&dst, &r, &PullOptions::default()).expect_err("nothing listens");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(
        matches!(err, Error::Unreachable { tries: 3, .. }),
        "{err:?}"
    );
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    // Two waits: 0.5 s and 1 s.
    assert!(
        start.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        start.elapsed()
    );

    // A pushed image that is not in the store is a store error, before any request.
    let err = registry::push(&dst, &r, &PushOptions::default()).expect_err("no such image");
    assert!(
        matches!(err, Error::Store(images::Error::RefNotFound { .. })),
        "{err:?}"
    );
}

#[test]
fn unauthorized_says_docker_login() {
    // distribution's "silly" auth answers every anonymous request with a 401 Bearer
    // challenge, whose token endpoint does not exist: no credentials can pass.
    let reg = Registry::start_with(
        "auth:\n  silly:\n    realm: http://127.0.0.1:PORT/token\n    service: rbuild-test\n",
    );
    let (_a, src) = temp_store();
    let r = reg.r("private:1");
    small_image(&src, &r, "auth", 1);
    let err = registry::push(&src, &r, &PushOptions::default()).expect_err("401");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(
        matches!(err, Error::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert!(msg.starts_with("401 unauthorized"), "{msg}");
    assert!(
        msg.contains(&format!("docker login {}", reg.host())),
        "{msg}"
    );
    assert!(msg.contains("~/.docker/config.json"), "{msg}");
}

/// Not a test: throughput and memory of a 256 MiB layer, for the README.
/// `cargo test --release -p images --test registry -- --ignored --nocapture throughput`
#[test]
#[ignore]
fn throughput_256mib() {
    let (_a, src) = temp_store();
    let local = Reference::parse("throughput:1").expect("ref");
    let desc = big_image(&src, &local, 256 << 20);
    for mode in [UploadMode::Monolithic, UploadMode::Chunked] {
        let reg = Registry::start();
        let r = reg.r("throughput:1");
        src.tag(&r, &desc).expect("tag");
        let push = in_child_with("push", &src, &r, mode);
        let (_b, dst) = temp_store();
        let pull = in_child("pull", &dst, &r);
        for (what, m) in [
            (format!("{mode:?} push"), &push),
            ("pull".to_string(), &pull),
        ] {
            eprintln!(
                "{what}: {} bytes in {:.2} s = {:.1} MB/s, peak RSS {:.1} MiB (+{:.1} MiB)",
                m.bytes,
                m.secs,
                m.mb_per_s(),
                m.hwm_after_kib as f64 / 1024.0,
                m.growth_mib()
            );
        }
        assert_same_image(&src, &dst, &r);
    }
}
