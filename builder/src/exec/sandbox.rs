//! One RUN step in a namespaced chroot. The child unshares mount, pid, uts and ipc namespaces
//! (and net for `--network=none`), adds /proc, a minimal /dev, a read-only /sys and read-only
//! /etc/resolv.conf and /etc/hosts to the step's root (its overlay, mounted by the caller in
//! rbuild's private mount namespace), pivots into it and execs the command as PID 1 of the new
//! pid namespace. Every mount lives in a namespace that dies with rbuild, so none can outlive
//! a step on the host; `PR_SET_PDEATHSIG` chains make the pid namespace die with rbuild too.
//!
//! Process tree: rbuild ─ fork ─▶ A (unshare; waits) ─ fork ─▶ B (PID 1: mounts, exec).
//! A exists because a new pid namespace applies to the children of the caller of unshare.

use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::prctl;
use nix::sys::signal::Signal;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{self, ForkResult, Gid, Pid, Uid};
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Host,
    None,
}

/// An extra mount for `RUN --mount` (cache, secret, bind, tmpfs).
#[derive(Debug, Clone)]
pub enum ExtraMount {
    Bind {
        source: PathBuf,
        target: String,
        readonly: bool,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
}

#[derive(Debug, Clone)]
pub struct Spec {
    /// The step's root: its overlay, mounted by the caller.
    pub root: PathBuf,
    /// Empty: prepare the root and the working directory, run nothing.
    pub argv: Vec<String>,
    /// `KEY=value` strings.
    pub env: Vec<String>,
    /// Absolute path inside the root; created (owned by uid:gid) when missing.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub hostname: String,
    pub network: Network,
    pub mounts: Vec<ExtraMount>,
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot start the build container: {0}")]
    Setup(String),
    #[error("{0}: {1}")]
    Sys(&'static str, nix::Error),
}

/// Paths the sandbox creates in the root when they are missing (mount points). The caller
/// removes the ones that are still empty afterwards, so they never end up in a layer.
pub const MOUNT_POINTS: [&str; 6] = ["proc", "dev", "sys", "etc", "etc/resolv.conf", "etc/hosts"];

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs the command, streaming its merged stdout and stderr to `output`.
pub fn run(spec: &Spec, output: &mut dyn FnMut(&[u8])) -> Result<Exit, SandboxError> {
    let sys = |what| move |e| SandboxError::Sys(what, e);
    let (out_r, out_w) = unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    let (err_r, err_w) = unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    let parent = unistd::getpid();
    // SAFETY: the child only calls async-signal-safe-in-practice syscalls until exec or _exit;
    // rbuild forks before starting threads that hold locks the child would need.
    match unsafe { unistd::fork() }.map_err(sys("fork"))? {
        ForkResult::Child => {
            drop(out_r);
            drop(err_r);
            // The fork copied every descriptor of rbuild, including those other build threads
            // hold open in their steps' mounts; A never execs, so they would stay open for the
            // whole step and keep those mounts busy (EBUSY when their step unmounts).
            close_fds_except(&[out_w.as_raw_fd(), err_w.as_raw_fd()]);
            let code = match intermediate(spec, parent, &out_w, &err_w) {
                Ok(code) => code,
                Err(message) => {
                    let _ = unistd::write(&err_w, message.as_bytes());
                    127
                }
            };
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(out_w);
            drop(err_w);
            let mut out = std::fs::File::from(out_r);
            let mut buf = [0u8; 16384];
            loop {
                match out.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => output(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(SandboxError::Setup(format!("reading output: {e}"))),
                }
            }
            let mut setup_error = String::new();
            let _ = std::fs::File::from(err_r).read_to_string(&mut setup_error);
            let status = wait(child)?;
            if !setup_error.is_empty() {
                return Err(SandboxError::Setup(setup_error));
            }
            Ok(status)
        }
    }
}

/// Closes every descriptor from 3 up but `keep`.
fn close_fds_except(keep: &[RawFd]) {
    let mut keep = keep.to_vec();
    keep.sort_unstable();
    let mut first: u32 = 3;
    for fd in keep.into_iter().map(|fd| fd as u32).filter(|fd| *fd >= 3) {
        if fd > first {
            // SAFETY: closes descriptors only this (single-threaded, forked) process uses.
            unsafe { libc::close_range(first, fd - 1, 0) };
        }
        first = fd + 1;
    }
    // SAFETY: as above.
    unsafe { libc::close_range(first, u32::MAX, 0) };
}

fn wait(child: Pid) -> Result<Exit, SandboxError> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Exit::Code(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(Exit::Signal(sig as i32)),
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(SandboxError::Sys("waitpid", e)),
        }
    }
}

/// Process A: new namespaces, then forks PID 1 of the new pid namespace and relays its status.
fn intermediate(spec: &Spec, parent: Pid, out: &OwnedFd, err: &OwnedFd) -> Result<i32, String> {
    die_with_parent(parent)?;
    unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if spec.network == Network::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).map_err(|e| format!("unshare namespaces: {e}"))?;
    // B cannot see A's pid from inside its namespace; A holding this pipe open is its sign
    // of life.
    let (alive_r, alive_w) = unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: as above; single-threaded child.
    match unsafe { unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(alive_w);
            let message = match init(spec, &alive_r, out) {
                Ok(never) => match never {},
                Err(m) => m,
            };
            let _ = unistd::write(err, message.as_bytes());
            // SAFETY: leaving the forked child.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => match wait(child).map_err(|e| e.to_string())? {
            Exit::Code(c) => Ok(c),
            Exit::Signal(s) => Ok(128 + s),
        },
    }
}

const PARENT_GONE: &str = "rbuild exited while the step was starting";

fn die_with_parent(parent: Pid) -> Result<(), String> {
    prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("prctl: {e}"))?;
    // The parent may have died before the prctl took effect.
    if unistd::getppid() != parent {
        return Err(PARENT_GONE.into());
    }
    Ok(())
}

/// Like `die_with_parent`, for a parent outside our pid namespace: its end of `alive` closes
/// when it dies.
fn die_with_parent_outside(alive: &OwnedFd) -> Result<(), String> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("prctl: {e}"))?;
    let mut fds = [PollFd::new(
        std::os::fd::AsFd::as_fd(alive),
        PollFlags::POLLIN,
    )];
    poll(&mut fds, PollTimeout::ZERO).map_err(|e| format!("poll: {e}"))?;
    if fds[0]
        .revents()
        .is_some_and(|r| r.contains(PollFlags::POLLHUP))
    {
        return Err(PARENT_GONE.into());
    }
    Ok(())
}

enum Never {}

/// Process B, PID 1 of the new pid namespace: builds the root, drops to the user, execs.
fn init(spec: &Spec, alive: &OwnedFd, out: &OwnedFd) -> Result<Never, String> {
    die_with_parent_outside(alive)?;
    let e = |what: &str| {
        let what = what.to_string();
        move |err: nix::Error| format!("{what}: {err}")
    };
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(e("make mounts private"))?;
    let root = spec.root.clone();
    // Bound onto itself so that it is a mount point pivot_root accepts, whatever it is.
    mount(
        Some(&root),
        &root,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(e("bind the root"))?;
    for p in MOUNT_POINTS {
        let path = root.join(p);
        if std::fs::symlink_metadata(&path).is_err() {
            if p.contains('.') || p.ends_with("hosts") {
                std::fs::write(&path, b"").map_err(|err| format!("create /{p}: {err}"))?;
            } else {
                std::fs::create_dir(&path).map_err(|err| format!("create /{p}: {err}"))?;
            }
        }
    }
    let nosuid_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    mount(
        Some("proc"),
        &root.join("proc"),
        Some("proc"),
        nosuid_noexec,
        None::<&str>,
    )
    .map_err(e("mount /proc"))?;
    mount(
        Some("sysfs"),
        &root.join("sys"),
        Some("sysfs"),
        nosuid_noexec | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(e("mount /sys"))?;
    make_dev(&root.join("dev"))?;
    for file in ["resolv.conf", "hosts"] {
        let host = Path::new("/etc").join(file);
        if host.exists() {
            bind_readonly(&host, &root.join("etc").join(file))?;
        }
    }
    for m in &spec.mounts {
        extra_mount(&root, m)?;
    }
    // pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only ours.
    unistd::chdir(&root).map_err(e("chdir to the root"))?;
    nix::unistd::pivot_root(".", ".").map_err(e("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(e("detach the old root"))?;
    unistd::chdir("/").map_err(e("chdir /"))?;
    nix::unistd::sethostname(&spec.hostname).map_err(e("sethostname"))?;
    // Created here, inside the image root, so an image symlink can never redirect it.
    make_cwd(&spec.cwd, spec.uid, spec.gid)?;
    unistd::chdir(spec.cwd.as_str())
        .map_err(|err| format!("working directory {}: {err}", spec.cwd))?;
    if spec.argv.is_empty() {
        // Only the root was wanted (WORKDIR's directory): done.
        // SAFETY: leaving the forked child.
        unsafe { libc::_exit(0) }
    }

    let devnull = nix::fcntl::open("/dev/null", OFlag::O_RDONLY, Mode::empty())
        .map_err(e("open /dev/null"))?;
    unistd::dup2_stdin(&devnull).map_err(e("dup2"))?;
    unistd::dup2_stdout(out).map_err(e("dup2"))?;
    unistd::dup2_stderr(out).map_err(e("dup2"))?;

    let groups: Vec<Gid> = spec.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    unistd::setgroups(&groups).map_err(e("setgroups"))?;
    let (gid, uid) = (Gid::from_raw(spec.gid), Uid::from_raw(spec.uid));
    unistd::setresgid(gid, gid, gid).map_err(e("setgid"))?;
    unistd::setresuid(uid, uid, uid).map_err(e("setuid"))?;

    let program = find_program(&spec.argv, &spec.env)?;
    let argv = cstrings(&spec.argv)?;
    let env = cstrings(&spec.env)?;
    // ETXTBSY: a sibling thread's forked child can hold a write descriptor to a freshly
    // written binary until that child execs; it clears within milliseconds.
    let mut attempts = 0;
    loop {
        let err = unistd::execve(&program, &argv, &env).unwrap_err();
        attempts += 1;
        if err != nix::Error::ETXTBSY || attempts == 50 {
            return Err(format!("cannot run {:?}: {err}", spec.argv[0]));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `mkdir -p` of the working directory; new directories belong to the step's user, as
/// BuildKit's WORKDIR does.
fn make_cwd(cwd: &str, uid: u32, gid: u32) -> Result<(), String> {
    let mut path = PathBuf::from("/");
    for part in Path::new(cwd).components().skip(1) {
        path.push(part);
        match std::fs::create_dir(&path) {
            Ok(()) => {
                unistd::chown(&path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                    .map_err(|err| format!("chown {}: {err}", path.display()))?;
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(format!("working directory {cwd}: {err}")),
        }
    }
    Ok(())
}

/// Moves rbuild into a mount namespace of its own with private propagation, so every mount it
/// makes (step overlays, read-only views of stages) disappears when it exits, however it
/// exits. Must run before any thread starts: a namespace change applies to the calling thread.
pub fn enter_private_mount_namespace() -> Result<(), SandboxError> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| SandboxError::Sys("unshare(CLONE_NEWNS)", e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| SandboxError::Sys("make mounts private", e))
}

fn bind_readonly(source: &Path, target: &Path) -> Result<(), String> {
    let e =
        |what: &'static str| move |err: nix::Error| format!("{what} {}: {err}", target.display());
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(e("bind"))?;
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(e("remount read-only"))
}

/// A tmpfs /dev with the usual nodes, pts, shm and the /proc/self/fd links.
fn make_dev(dev: &Path) -> Result<(), String> {
    let e = |what: &'static str| move |err: nix::Error| format!("{what}: {err}");
    mount(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .map_err(e("mount /dev"))?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        mknod(
            &dev.join(name),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(|err| format!("mknod /dev/{name}: {err}"))?;
        // mknod honours the umask; the nodes must be world-usable.
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            &dev.join(name),
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(e("chmod device"))?;
    }
    for dir in ["pts", "shm"] {
        std::fs::create_dir(dev.join(dir)).map_err(|err| format!("mkdir /dev/{dir}: {err}"))?;
    }
    mount(
        Some("devpts"),
        &dev.join("pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(e("mount /dev/pts"))?;
    mount(
        Some("shm"),
        &dev.join("shm"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(e("mount /dev/shm"))?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link))
            .map_err(|err| format!("/dev/{link}: {err}"))?;
    }
    Ok(())
}

fn extra_mount(root: &Path, m: &ExtraMount) -> Result<(), String> {
    let target_of = |t: &str| root.join(t.trim_start_matches('/'));
    match m {
        ExtraMount::Bind {
            source,
            target,
            readonly,
        } => {
            let dest = target_of(target);
            if std::fs::symlink_metadata(&dest).is_err() {
                if source.is_dir() {
                    std::fs::create_dir_all(&dest)
                } else {
                    dest.parent()
                        .map_or(Ok(()), std::fs::create_dir_all)
                        .and_then(|_| std::fs::write(&dest, b""))
                }
                .map_err(|err| format!("create mount point {target}: {err}"))?;
            }
            if *readonly {
                bind_readonly(source, &dest)
            } else {
                mount(
                    Some(source.as_path()),
                    &dest,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|err| format!("bind {target}: {err}"))
            }
        }
        ExtraMount::Tmpfs { target, size } => {
            let dest = target_of(target);
            std::fs::create_dir_all(&dest)
                .map_err(|err| format!("create mount point {target}: {err}"))?;
            let opts = size.map(|s| format!("size={s}"));
            mount(
                Some("tmpfs"),
                &dest,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                opts.as_deref(),
            )
            .map_err(|err| format!("mount tmpfs {target}: {err}"))
        }
    }
}

/// `argv[0]` itself when it has a slash, else the first match on the container's PATH.
fn find_program(argv: &[String], env: &[String]) -> Result<CString, String> {
    let name = argv.first().ok_or("empty command")?;
    if name.contains('/') {
        return CString::new(name.as_bytes()).map_err(|_| format!("{name:?} contains a NUL byte"));
    }
    let path = env
        .iter()
        .rev()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name);
        if nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok()
            && candidate.is_file()
        {
            return CString::new(candidate.as_os_str().as_bytes())
                .map_err(|_| "NUL in path".to_string());
        }
    }
    Err(format!(
        "{name:?}: executable file not found in $PATH ({path})"
    ))
}

fn cstrings(items: &[String]) -> Result<Vec<CString>, String> {
    items
        .iter()
        .map(|s| CString::new(s.as_bytes()).map_err(|_| format!("{s:?} contains a NUL byte")))
        .collect()
}

/// Removes from an upper dir the mount points the sandbox created (still empty, and absent
/// from every lower layer), so they never reach a layer.
pub fn remove_created_mount_points(upper: &Path, lowers: &[PathBuf], extra: &[&str]) {
    let mut candidates: Vec<String> = MOUNT_POINTS.iter().map(|p| p.to_string()).collect();
    for t in extra {
        // The target and every parent the mount may have created.
        let mut p = t.trim_matches('/').to_string();
        while !p.is_empty() {
            candidates.push(p.clone());
            p = p
                .rsplit_once('/')
                .map(|(a, _)| a.to_string())
                .unwrap_or_default();
        }
    }
    // Deepest first, so a parent is empty once its created children are gone.
    candidates.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    candidates.dedup();
    for rel in candidates {
        if lowers
            .iter()
            .any(|l| std::fs::symlink_metadata(l.join(&rel)).is_ok())
        {
            continue;
        }
        let path = upper.join(&rel);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir(&path); // fails, as wanted, when not empty
            }
            Ok(m) if m.is_file() && m.len() == 0 => {
                let _ = std::fs::remove_file(&path);
            }
            _ => {}
        }
    }
}
