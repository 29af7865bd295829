//! The mission end to end: from a clean rbuild store, `make` builds every Inception image with
//! rbuild, pushes them to Debian's docker-registry on 127.0.0.1:5000, and compose pulls them
//! from there and runs the stack; then the stack is checked over 127.0.0.1 only, survives
//! `make down && make up`, and `make fclean` leaves nothing behind.
//!
//! Slow (the whole stack is built and started, apt downloads included) and exclusive: it owns
//! the host's ports 443, 21 and 5000, the containers named after the services and
//! `/home/$LOGIN/data`. It runs against the host's Docker engine, or one `make deps` starts
//! (stopped by its PID at the end).

use rbuild_tests::{bookworm_rootfs, rbuild_bin, run_ok};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const SERVICES: [&str; 8] = [
    "mariadb",
    "redis",
    "wordpress",
    "nginx",
    "ftp",
    "adminer",
    "website",
    "status",
];
const REGISTRY: &str = "127.0.0.1:5000";
const DOCKERD_PID: &str = "/run/rbuild-inception-dockerd.pid";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn env_value(key: &str) -> String {
    let env = std::fs::read_to_string(repo().join("srcs/.env")).unwrap();
    env.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .next_back()
        .unwrap_or_else(|| panic!("srcs/.env has no {key}"))
        .to_string()
}

/// `make TARGET` in the repository, with the test's store; fails the test on error.
struct Make {
    store: PathBuf,
    base_tar: PathBuf,
}

impl Make {
    fn cmd(&self, target: &str) -> Command {
        let mut cmd = Command::new("make");
        cmd.current_dir(repo())
            .arg("--no-print-directory")
            .arg(target)
            .arg(format!("BASE_TAR={}", self.base_tar.display()))
            .arg(format!(
                "RBUILD={}",
                rbuild_bin().to_str().expect("utf-8 path")
            ))
            .env("RBUILD_ROOT", &self.store);
        cmd
    }

    fn run(&self, target: &str) -> Output {
        eprintln!("== make {target}");
        run_ok(&mut self.cmd(target))
    }
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn engine_answers() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn curl(args: &[&str]) -> Output {
    let domain = env_value("DOMAIN_NAME");
    Command::new("curl")
        .args(["-sk", "--max-time", "15", "--resolve"])
        .arg(format!("{domain}:443:127.0.0.1"))
        .args(args)
        .output()
        .unwrap()
}

fn home_page() -> String {
    stdout(&curl(&[&format!("https://{}/", env_value("DOMAIN_NAME"))]))
}

fn wait_healthy() {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let unhealthy: Vec<&str> = SERVICES
            .iter()
            .copied()
            .filter(|c| {
                stdout(&docker(&["inspect", "-f", "{{.State.Health.Status}}", c])).trim()
                    != "healthy"
            })
            .collect();
        if unhealthy.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not healthy after 300 s: {unhealthy:?}\n{}",
            stdout(&docker(&["ps", "-a"]))
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// A post written through WordPress (so into MariaDB), its title unique to this run.
fn create_post(title: &str) {
    let out = docker(&[
        "exec",
        "wordpress",
        "php",
        "-r",
        r#"$_SERVER["HTTP_HOST"] = getenv("DOMAIN_NAME");
           require "/var/www/html/wp-load.php";
           $id = wp_insert_post(array("post_title" => $argv[1], "post_status" => "publish",
               "post_content" => "Written before make down."), true);
           if (is_wp_error($id)) { echo $id->get_error_message(); exit(1); }
           echo $id;"#,
        title,
    ]);
    assert!(out.status.success(), "wp_insert_post: {out:?}");
}

/// Pids recorded by the Makefile that are still alive.
fn alive(pid_file: &Path) -> Option<String> {
    let pid = std::fs::read_to_string(pid_file).ok()?;
    let pid = pid.trim().to_string();
    Path::new("/proc").join(&pid).exists().then_some(pid)
}

#[test]
fn make_builds_pushes_and_compose_runs_the_stack_from_the_registry() {
    let had_engine = engine_answers();
    let dir = tempfile::Builder::new()
        .prefix("rbuild-inception-")
        .tempdir()
        .unwrap();
    let make = Make {
        store: dir.path().join("store"),
        base_tar: bookworm_rootfs(),
    };
    let data = PathBuf::from(format!("/home/{}/data", env_value("LOGIN")));

    // A clean slate: the engine, then no stack, no image of the stack's names, no registry.
    make.run("deps");
    let _ = make.cmd("fclean").output();
    for s in SERVICES {
        let _ = docker(&["rmi", "-f", &format!("{REGISTRY}/{s}:1.0")]);
    }

    // The main job, from an empty store.
    make.run("all");
    wait_healthy();

    // Compose pulled every image from our registry: the docker engine's requests in its
    // access log (the tag resolved by HEAD or GET, then blobs fetched).
    let registry_log = std::fs::read_to_string(data.join("registry/registry.log")).unwrap();
    for s in SERVICES {
        let by_docker = |what: &str| {
            registry_log
                .lines()
                .any(|l| l.contains(what) && l.contains("\" 200 ") && l.contains("\"docker/"))
        };
        let pulled = by_docker(&format!(" /v2/{s}/manifests/1.0 HTTP/1.1\""))
            && by_docker(&format!("\"GET /v2/{s}/blobs/sha256:"));
        assert!(pulled, "docker did not pull {s} from the registry");
    }

    // The stack's own checks: title, TLS 1.2/1.3 only, no port 80, the first post, two users,
    // Redis ping and object cache, FTP, Adminer, the static site, status, root refused.
    let checks = Command::new("bash")
        .arg(repo().join("srcs/check.sh"))
        .env("SECRETS", repo().join("secrets"))
        .output()
        .unwrap();
    let report = stdout(&checks);
    eprintln!("{report}");
    assert!(checks.status.success(), "srcs/check.sh failed:\n{report}");
    for must in [
        "ok    home page answers 200 with the site title",
        "ok    TLS 1.1 refused",
        "ok    nothing answers on port 80",
        "ok    the first post (in MariaDB) is on the home page",
        "ok    redis-cli -h redis ping from wordpress",
        "ok    WordPress object cache connected to Redis",
        "ok    FTP login lists the WordPress files",
        "ok    Adminer login page through nginx",
        "ok    static site through nginx",
    ] {
        assert!(report.contains(must), "missing check {must:?}:\n{report}");
    }

    // Pushing the already-pushed stack uploads nothing.
    let again = run_ok(
        Command::new(rbuild_bin())
            .current_dir(repo())
            .env("RBUILD_ROOT", &make.store)
            .args(["bake", "-f", "srcs/docker-compose.yml", "--push"]),
    );
    let err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(
        err.matches("0 blob(s) uploaded (0 B)").count(),
        SERVICES.len(),
        "a second push must upload 0 bytes for every image:\n{err}"
    );

    // Cache sharing: store A exports every service's cache to the registry; an empty store B,
    // with only the base image (pulled from the registry), imports it: every step is a hit,
    // no RUN executes, and the images are the same, digest for digest.
    let rbuild = |store: &Path, args: &[&str]| {
        run_ok(
            Command::new(rbuild_bin())
                .current_dir(repo())
                .env("RBUILD_ROOT", store)
                .args(args),
        )
    };
    let sets = |what: &str, extra: &str| -> Vec<String> {
        SERVICES
            .iter()
            .flat_map(|s| {
                [
                    "--set".to_string(),
                    format!("{s}.{what}=type=registry,ref={REGISTRY}/cache/{s}:1.0{extra}"),
                ]
            })
            .collect()
    };
    let bake = [
        "bake",
        "-f",
        "srcs/docker-compose.yml",
        "--progress",
        "plain",
    ];
    let export: Vec<String> = bake
        .iter()
        .map(|a| a.to_string())
        .chain(sets("cache-to", ",mode=max"))
        .collect();
    rbuild(
        &make.store,
        &export.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let base = format!("{REGISTRY}/debian:bookworm");
    rbuild(&make.store, &["tag", "debian:bookworm", &base]);
    rbuild(&make.store, &["push", &base]);
    let store_b = dir.path().join("store-b");
    rbuild(&store_b, &["pull", &base]);
    rbuild(&store_b, &["tag", &base, "debian:bookworm"]);
    let import: Vec<String> = bake
        .iter()
        .map(|a| a.to_string())
        .chain(sets("cache-from", ""))
        .collect();
    let built_b = rbuild(
        &store_b,
        &import.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let log = String::from_utf8_lossy(&built_b.stderr);
    assert!(
        !log.contains("not cached") && log.contains("CACHED (from"),
        "store B must hit every step from the imported cache:\n{log}"
    );
    for s in SERVICES {
        let image = format!("{REGISTRY}/{s}:1.0");
        let digest = |store: &Path| -> String {
            let out = rbuild(store, &["inspect", &image]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            v[0]["Digest"].as_str().unwrap().to_string()
        };
        assert_eq!(
            digest(&make.store),
            digest(&store_b),
            "{image} differs on store B"
        );
    }

    // A post survives make down && make up.
    let title = format!("Persistence {}", std::process::id());
    create_post(&title);
    make.run("down");
    make.run("up");
    wait_healthy();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !home_page().contains(&title) {
        assert!(
            Instant::now() < deadline,
            "the post {title:?} is gone after make down && make up"
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    // fclean leaves no container, image, volume, data dir or registry process.
    let registry_pid = alive(&data.join("registry/registry.pid")).expect("registry running");
    make.run("fclean");
    let containers = stdout(&docker(&["ps", "-a", "--format", "{{.Names}}"]));
    for s in SERVICES {
        assert!(
            !containers.lines().any(|c| c == s),
            "container {s} left: {containers}"
        );
    }
    let images = stdout(&docker(&["images", "--format", "{{.Repository}}"]));
    assert!(!images.contains(REGISTRY), "images left: {images}");
    let volumes = stdout(&docker(&["volume", "ls", "--format", "{{.Name}}"]));
    assert!(
        !volumes.contains("mariadb_data") && !volumes.contains("wordpress_files"),
        "volumes left: {volumes}"
    );
    assert!(!data.exists(), "{} left", data.display());
    assert!(
        !Path::new("/proc").join(&registry_pid).exists(),
        "registry process {registry_pid} left"
    );
    assert!(std::net::TcpStream::connect(REGISTRY).is_err());

    // Stop the engine `make deps` started for this test, by its PID.
    if !had_engine {
        if let Some(pid) = alive(Path::new(DOCKERD_PID)) {
            let _ = Command::new("kill").arg(&pid).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Path::new("/proc").join(&pid).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = std::fs::remove_file(DOCKERD_PID);
        }
    }
}
