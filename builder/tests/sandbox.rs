//! The RUN sandbox against the real kernel (as root): namespaces, mounts, credentials, and an
//! overlay root whose upper dir ends up holding exactly the step's changes.

use builder::exec::sandbox::{self, Exit, ExtraMount, Network, Spec};
use std::path::{Path, PathBuf};

/// A root with a static busybox and the applets the tests use.
fn busybox_root(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    assert!(
        Path::new("/bin/busybox").exists(),
        "apt-get install busybox-static (make test installs it)"
    );
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "echo", "cat", "ls", "id", "hostname", "ps", "mount", "touch", "rm", "mkdir",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    root
}

fn spec(root: PathBuf, script: &str) -> Spec {
    Spec {
        root,
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        groups: vec![],
        hostname: "rbuild-test".into(),
        network: Network::Host,
        mounts: vec![],
    }
}

fn run(spec: &Spec) -> (Exit, String) {
    let mut out = Vec::new();
    let exit = sandbox::run(spec, &mut |b| out.extend_from_slice(b)).expect("sandbox runs");
    (exit, String::from_utf8_lossy(&out).into_owned())
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("rbuild-sandbox-")
        .tempdir()
        .unwrap()
}

fn host_mounts_mention(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(path.to_str().unwrap())
}

#[test]
fn runs_as_pid_1_with_own_hostname_and_sees_no_host_process() {
    let dir = tempdir();
    let root = busybox_root(dir.path());
    let (exit, out) = run(&spec(
        root.clone(),
        "echo pid=$$; hostname; ls /proc | grep -c '^[0-9]'; exit 3",
    ));
    assert_eq!(exit, Exit::Code(3));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pid=1");
    assert_eq!(lines[1], "rbuild-test");
    let visible: usize = lines[2].parse().unwrap();
    assert!(
        visible <= 3,
        "only the step's own processes are visible, saw {visible}"
    );
    assert!(!host_mounts_mention(&root), "no mount is left on the host");
}

#[test]
fn dev_proc_sys_and_readonly_host_files() {
    let dir = tempdir();
    let root = busybox_root(dir.path());
    let script = "echo x > /dev/null && head -c 4 /dev/urandom | wc -c; \
                  cat /proc/self/status | grep -c ^Pid; \
                  touch /sys/x 2>/dev/null || echo sys-ro; \
                  (echo 1 >> /etc/resolv.conf) 2>/dev/null || echo resolv-ro; \
                  ls /dev/pts/ptmx /dev/shm >/dev/null && echo pts-shm";
    let mut s = spec(root, script);
    for applet in ["head", "wc", "grep"] {
        std::os::unix::fs::symlink("busybox", s.root.join("bin").join(applet)).unwrap();
    }
    s.env.push("HOME=/".into());
    let (exit, out) = run(&s);
    assert_eq!(exit, Exit::Code(0), "{out}");
    assert_eq!(out, "4\n1\nsys-ro\nresolv-ro\npts-shm\n");
}

#[test]
fn user_switch_and_network_none() {
    let dir = tempdir();
    let root = busybox_root(dir.path());
    let mut s = spec(
        root,
        "id -u; id -g; id -G; cat /proc/net/dev | tail -n +3 | cut -d: -f1",
    );
    for applet in ["tail", "cut"] {
        std::os::unix::fs::symlink("busybox", dir.path().join("rootfs/bin").join(applet)).unwrap();
    }
    s.uid = 1234;
    s.gid = 5678;
    s.groups = vec![5678, 42];
    s.network = Network::None;
    let (exit, out) = run(&s);
    assert_eq!(exit, Exit::Code(0), "{out}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines, ["1234", "5678", "5678 42", "lo"]);
}

#[test]
fn missing_program_is_a_setup_error_and_missing_cwd_is_created() {
    let dir = tempdir();
    let root = busybox_root(dir.path());
    let mut s = spec(root, "");
    s.argv = vec!["no-such-tool".into()];
    let err = sandbox::run(&s, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("executable file not found in $PATH"), "{err}");
    s.argv = vec!["/bin/sh".into(), "-c".into(), "pwd".into()];
    s.cwd = "/tmp/made/here".into();
    let (exit, out) = run(&s);
    assert_eq!(
        (exit, out.as_str()),
        (Exit::Code(0), "/tmp/made/here\n"),
        "a missing cwd is created"
    );
}

#[test]
fn overlay_upper_holds_only_the_steps_changes() {
    let dir = tempdir();
    let lower = busybox_root(dir.path());
    std::fs::write(lower.join("tmp/old"), "old").unwrap();
    let (upper, work, target) = (
        dir.path().join("upper"),
        dir.path().join("work"),
        dir.path().join("merged"),
    );
    for d in [&upper, &work, &target] {
        std::fs::create_dir(d).unwrap();
    }
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    // As rbuild does: the overlay is mounted in a private mount namespace (this thread's).
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .unwrap();
    layers::mount_overlay(std::slice::from_ref(&lower), &upper, &work, &target).unwrap();
    let mut s = spec(
        target.clone(),
        "echo new > /tmp/new && rm /tmp/old && echo cached > /var/cache/apt/x && ls /mnt/tmpfs",
    );
    s.mounts = vec![
        ExtraMount::Bind {
            source: cache.clone(),
            target: "/var/cache/apt".into(),
            readonly: false,
        },
        ExtraMount::Tmpfs {
            target: "/mnt/tmpfs".into(),
            size: Some(1 << 20),
        },
    ];
    let (exit, out) = run(&s);
    assert_eq!(exit, Exit::Code(0), "{out}");
    layers::umount(&target).unwrap();
    assert_eq!(
        std::fs::read_to_string(cache.join("x")).unwrap(),
        "cached\n",
        "cache mount is the host dir"
    );
    sandbox::remove_created_mount_points(&upper, &[lower], &["/var/cache/apt", "/mnt/tmpfs"]);
    let mut entries: Vec<String> = walk(&upper);
    entries.sort();
    assert_eq!(
        entries,
        ["tmp", "tmp/new", "tmp/old"],
        "only the step's changes remain"
    );
    let old = std::fs::symlink_metadata(upper.join("tmp/old")).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(
        old.file_type().is_char_device(),
        "the deletion is an overlay whiteout"
    );
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    out
}
