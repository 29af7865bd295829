//! Shared helpers for the end-to-end tests in `tests/tests/`: the rbuild binary, a Docker
//! engine of the test's own (started on a private socket, stopped by its PID), and a Debian
//! bookworm rootfs tarball made once by mmdebstrap and kept in a cache directory.

pub mod registry;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The workspace's `target/<profile>/rbuild`, brought up to date once per test process:
/// `cargo test -p rbuild-tests` alone would otherwise run a stale binary.
pub fn rbuild_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> → target/<profile>/rbuild
        let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
        let target_dir = profile_dir.parent().expect("target dir");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args([
            "build",
            "-q",
            "-p",
            "builder",
            "--bin",
            "rbuild",
            "--target-dir",
        ])
        .arg(target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p builder failed");
        profile_dir.join("rbuild")
    })
    .clone()
}

/// A store of the test's own (`RBUILD_ROOT`) with a work dir beside it, removed when dropped,
/// and `rbuild` commands on them.
pub struct Scratch {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub work: PathBuf,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("rbuild-test-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().join("store");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).expect("work dir");
        Scratch {
            root,
            work,
            _dir: dir,
        }
    }

    /// `rbuild ARGS` on this store, in the work dir.
    pub fn rbuild(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(rbuild_bin());
        cmd.env("RBUILD_ROOT", &self.root)
            .current_dir(&self.work)
            .args(args);
        cmd
    }

    /// Runs it, failing the test unless it succeeds.
    pub fn run(&self, args: &[&str]) -> Output {
        run_ok(&mut self.rbuild(args))
    }

    /// Its stdout, failing the test unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> String {
        String::from_utf8(self.run(args).stdout).expect("utf-8 output")
    }

    /// Runs it, failing the test unless it exits with 1.
    pub fn fails(&self, args: &[&str]) -> Output {
        let out = self.rbuild(args).output().expect("run rbuild");
        assert_eq!(out.status.code(), Some(1), "{args:?} should fail: {out:?}");
        out
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

/// `tar -C DIR -cf TAR .`
pub fn tar_dir(dir: &Path, tar: &Path) {
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(dir)
            .arg("-cf")
            .arg(tar)
            .arg("."),
    );
}

/// Runs a command, failing the test with its output when it does not succeed.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Fails with an install hint when a required host tool is missing (never skips silently).
pub fn require_tool(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{tool} is missing: apt-get install {package} (make test installs it)"
    );
}

/// A small base image for build tests, as a tarball at `DIR/bb.tar`: a static busybox with
/// every applet in /bin, /tmp (1777) and an /etc/passwd with root.
pub fn busybox_tar(dir: &Path) -> PathBuf {
    require_tool("busybox", "busybox-static");
    let root = dir.join("bbroot");
    for d in ["bin", "etc", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::set_permissions(
        root.join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let applets = run_ok(Command::new("/bin/busybox").arg("--list")).stdout;
    for applet in String::from_utf8(applets).unwrap().lines() {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    let tar = dir.join("bb.tar");
    tar_dir(&root, &tar);
    tar
}

/// A directory that survives between test runs, for slow-to-make inputs.
pub fn cache_dir() -> PathBuf {
    let dir = std::env::var_os("RBUILD_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/rbuild-tests"));
    std::fs::create_dir_all(&dir).expect("create test cache dir");
    dir
}

/// `mmdebstrap --variant=minbase bookworm` as a tarball, made once and cached.
pub fn bookworm_rootfs() -> PathBuf {
    let tar = cache_dir().join("bookworm-minbase.tar");
    if tar.exists() {
        return tar;
    }
    require_tool("mmdebstrap", "mmdebstrap");
    // mmdebstrap picks its output format from the name too: keep `.tar` last.
    let partial = tar.with_extension("partial.tar");
    run_ok(
        Command::new("mmdebstrap")
            .args(["--variant=minbase", "--format=tar", "--quiet", "bookworm"])
            .arg(&partial),
    );
    std::fs::rename(&partial, &tar).expect("rename rootfs tarball");
    tar
}

/// A Docker engine for one test: the host's if one answers, else a dockerd of our own on a
/// private socket and data root, stopped (by its PID) when dropped.
pub struct Docker {
    host: Option<String>,
    child: Option<Child>,
}

impl Docker {
    /// `RBUILD_TEST_OWN_DOCKERD=1` starts our own engine even when the host runs one.
    pub fn start() -> Docker {
        require_tool("docker", "docker.io");
        require_tool("dockerd", "docker.io");
        let host_engine = std::env::var_os("RBUILD_TEST_OWN_DOCKERD").is_none()
            && Command::new("docker")
                .arg("info")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        if host_engine {
            return Docker {
                host: None,
                child: None,
            };
        }
        let root = cache_dir().join("docker");
        let sock = root.join("docker.sock");
        std::fs::create_dir_all(&root).unwrap();
        let _ = std::fs::remove_file(&sock);
        let log = std::fs::File::create(root.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(format!("unix://{}", sock.display()))
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("dockerd.pid"))
            // Nothing shared with an engine the host may run: no bridge, no iptables rules,
            // our own containerd namespace. The tests run containers with --network none.
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .args([
                "--containerd-namespace=rbuild-test",
                "--containerd-plugins-namespace=rbuild-test-plugins",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let docker = Docker {
            host: Some(format!("unix://{}", sock.display())),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if docker
                .cmd()
                .arg("info")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
            {
                return docker;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let log = std::fs::read_to_string(root.join("dockerd.log")).unwrap_or_default();
        panic!("dockerd did not answer within 60 s; its log:\n{log}");
    }

    /// A `docker` client command talking to this engine.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new("docker");
        if let Some(host) = &self.host {
            cmd.env("DOCKER_HOST", host);
        }
        cmd
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // SIGTERM lets dockerd unmount and clean up; it must be our own child.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
