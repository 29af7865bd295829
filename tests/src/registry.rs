//! A `docker-registry` process of a test's own (Debian's distribution 2.8): started on a free
//! loopback port with its own storage, killed (that PID only) when dropped.
//!
//! Used by the end-to-end tests of this crate and, through `#[path]`, by `images`' registry
//! tests; it only needs std and tempfile.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

const REGISTRY_BIN: &str = "docker-registry";

/// A `docker-registry` process of our own. Dropping it kills exactly its PID.
pub struct Registry {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
    /// Extra config (e.g. an `auth:` section), appended to the minimal one.
    extra_config: String,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with("")
    }

    pub fn start_with(extra_config: &str) -> Registry {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut reg = Registry {
            dir,
            port: free_port(),
            child: None,
            extra_config: extra_config.to_string(),
        };
        reg.spawn();
        reg
    }

    fn spawn(&mut self) {
        let bin = find_registry_binary();
        let data = self.dir.path().join("data");
        fs::create_dir_all(&data).expect("storage dir");
        let config = self.dir.path().join("config.yml");
        let extra = self.extra_config.replace("PORT", &self.port.to_string());
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: \
                 {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{}\n  secret: \
                 rbuild-test-secret\n{extra}",
                data.display(),
                self.port
            ),
        )
        .expect("write config");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "docker-registry exited ({status}) before listening on port {}:\n{}",
                        self.port,
                        self.log()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {} within 20 s:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL to our registry's PID, then reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Same storage, same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data/docker/registry/v2")
    }

    /// Bytes received so far by unfinished uploads, in any repository.
    pub fn upload_bytes(&self) -> u64 {
        fn walk(dir: &Path, in_uploads: bool, total: &mut u64) {
            let Ok(entries) = fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                let Ok(meta) = e.metadata() else { continue };
                if meta.is_dir() {
                    walk(&p, in_uploads || e.file_name() == "_uploads", total);
                } else if in_uploads && e.file_name() == "data" {
                    *total += meta.len();
                }
            }
        }
        let mut total = 0;
        walk(&self.storage().join("repositories"), false, &mut total);
        total
    }

    /// `GET /v2/_catalog`'s body: the repositories the registry holds, as JSON.
    pub fn catalog(&self) -> String {
        use std::io::{Read, Write};
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        write!(
            stream,
            "GET /v2/_catalog HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.host()
        )
        .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(head.contains(" 200 "), "catalog: {head}");
        body.to_string()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The requests of the access log (`"HEAD /v2/... HTTP/1.1" 200`), from byte `from` on.
    pub fn requests_since(&self, from: usize) -> Vec<String> {
        let log = self.log();
        log.get(from..)
            .unwrap_or("")
            .lines()
            .filter_map(|l| {
                let start = l.find("\"")? + 1;
                let rest = &l[start..];
                let end = rest.find(" HTTP/")?;
                let status = rest[end..].split('"').nth(1)?.split_whitespace().next()?;
                Some(format!("{} {status}", &rest[..end]))
            })
            .filter(|req| req.contains(" /v2/"))
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Fails, never skips, when the registry is not installed: CI must install it.
fn find_registry_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
        let p = dir.join(REGISTRY_BIN);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{REGISTRY_BIN}` is not installed; the registry tests need Debian's registry: run \
         `apt-get install docker-registry`"
    );
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}
