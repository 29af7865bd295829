//! Helpers shared by the integration tests: temp stores, real gzip layers, child processes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flate2::write::GzEncoder;
use flate2::Compression;
use images::model::{EmptyObject, HealthConfig, History};
use images::{Descriptor, Digest, ImageConfig, MediaType, Reference, Store};
use tempfile::TempDir;

/// Env var that turns a run of the test binary into a helper process (see `child.rs`).
pub const CHILD_MODE: &str = "IMAGES_TEST_CHILD_MODE";
/// The store root the helper works on.
pub const CHILD_ROOT: &str = "IMAGES_TEST_CHILD_ROOT";
/// A free-form argument for the helper.
pub const CHILD_ARG: &str = "IMAGES_TEST_CHILD_ARG";

pub fn temp_store() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let store = Store::open(dir.path().join("root")).expect("open the store");
    (dir, store)
}

pub fn r(s: &str) -> Reference {
    Reference::parse(s).expect("valid reference")
}

/// A gzip-compressed layer tar holding `files`, and its diff ID (sha256 of the plain tar).
pub fn make_layer(files: &[(&str, &[u8])]) -> (Vec<u8>, Digest) {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).expect("append to tar");
    }
    let tar = b.into_inner().expect("finish tar");
    let diff_id = images::sha256_digest(&tar);
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&tar).expect("gzip");
    (gz.finish().expect("gzip"), diff_id)
}

/// What `write_test_image` wrote.
pub struct TestImage {
    pub manifest: Descriptor,
    pub layer: Descriptor,
    pub diff_id: Digest,
    pub config: ImageConfig,
}

/// A config that uses Docker's extensions, so tools must carry them.
pub fn test_config(diff_id: &Digest) -> ImageConfig {
    let mut c = ImageConfig {
        created: Some("2024-01-02T03:04:05Z".into()),
        ..ImageConfig::default()
    };
    c.config.env = vec!["PATH=/usr/bin:/bin".into(), "GREETING=hello".into()];
    c.config.cmd = Some(vec!["/bin/cat".into(), "/hello.txt".into()]);
    c.config.working_dir = "/".into();
    c.config
        .exposed_ports
        .insert("8080/tcp".into(), EmptyObject {});
    c.config
        .labels
        .insert("org.example.test".into(), "yes".into());
    c.config.shell = vec!["/bin/sh".into(), "-ec".into()];
    c.config.on_build = vec!["RUN echo child".into()];
    c.config.healthcheck = Some(HealthConfig {
        test: vec!["CMD-SHELL".into(), "test -f /hello.txt".into()],
        interval: 30_000_000_000,
        timeout: 3_000_000_000,
        start_period: 5_000_000_000,
        start_interval: 1_000_000_000,
        retries: 3,
    });
    c.rootfs.diff_ids = vec![diff_id.clone()];
    c.history = vec![History {
        created: c.created.clone(),
        created_by: Some("COPY hello.txt / # buildkit".into()),
        comment: Some("buildkit.dockerfile.v0".into()),
        ..History::default()
    }];
    c
}

/// Writes a one-layer image with `content` in `/hello.txt` and tags it with `tags`.
pub fn write_test_image(store: &Store, content: &[u8], tags: &[&str]) -> TestImage {
    let (gz, diff_id) = make_layer(&[("hello.txt", content)]);
    let mut w = store.blob_writer().expect("blob writer");
    w.write_all(&gz).expect("write layer");
    let layer = w
        .commit(None)
        .expect("commit layer")
        .descriptor(MediaType::ImageLayerGzip);
    let config = test_config(&diff_id);
    let tags: Vec<Reference> = tags.iter().map(|t| r(t)).collect();
    let manifest = store
        .write_image(&config, std::slice::from_ref(&layer), &tags)
        .expect("write image");
    TestImage {
        manifest,
        layer,
        diff_id,
        config,
    }
}

/// Fails (does not skip) when an external tool is missing: CI must install it.
pub fn require_tool(name: &str) -> PathBuf {
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{name}` is not installed; these tests need it: run `apt-get install skopeo umoci`");
}

/// Runs a command, panicking with its output if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A command that re-runs this test binary as helper `mode` on the store at `root`.
pub fn child(mode: &str, root: &Path, arg: &str) -> Command {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = Command::new(exe);
    cmd.args([
        "child::child_main",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_MODE, mode)
    .env(CHILD_ROOT, root)
    .env(CHILD_ARG, arg);
    cmd
}

/// Problems that need repair (everything but leftovers and stray files).
pub fn serious(problems: &[images::Problem]) -> Vec<String> {
    problems
        .iter()
        .filter(|p| !p.is_harmless())
        .map(|p| p.to_string())
        .collect()
}

/// Files directly in `dir` (empty if it does not exist).
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.expect("dir entry").path()).collect(),
        Err(_) => Vec::new(),
    }
}
