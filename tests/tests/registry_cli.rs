//! `rbuild push`, `rbuild pull`, `rbuild build --push` and `FROM` pulling a missing base, as a
//! user runs them, against Debian's real `docker-registry` (and a real Docker engine for the
//! `docker pull` at the end of the interrupted push).

use rbuild_tests::registry::Registry;
use rbuild_tests::{busybox_tar, run_ok, tar_dir, Docker, Scratch};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The manifest digest `rbuild inspect` shows for `image`.
fn manifest_digest(store: &Scratch, image: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&store.ok(&["inspect", image])).unwrap();
    v[0]["Digest"]
        .as_str()
        .expect("inspect shows a Digest")
        .to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn push_all_tags_pull_and_from_pulls_the_base() {
    let reg = Registry::start();
    let host = reg.host();
    let a = Scratch::new();
    let tar = busybox_tar(&a.work);
    let tar = tar.to_str().unwrap();
    a.ok(&["import", tar, &format!("{host}/bb:1")]);
    a.ok(&["tag", &format!("{host}/bb:1"), &format!("{host}/bb:2")]);

    let out = a.run(&["push", "--all-tags", &format!("{host}/bb")]);
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed.lines().count(), 2, "one line per tag: {printed}");
    assert!(reg.catalog().contains("\"bb\""), "{}", reg.catalog());

    // Pushing again moves nothing.
    let again = a.run(&["push", &format!("{host}/bb:1")]);
    assert!(
        stderr(&again).contains("0 blob(s) uploaded (0 B)"),
        "{}",
        stderr(&again)
    );
    // --all-tags wants a repository, not a tag.
    let bad = a
        .rbuild(&["push", "-a", &format!("{host}/bb:1")])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("without a tag"), "{}", stderr(&bad));

    // An empty store pulls it back, same manifest.
    let b = Scratch::new();
    b.ok(&["pull", &format!("{host}/bb:2")]);
    assert_eq!(
        manifest_digest(&b, &format!("{host}/bb:2")),
        manifest_digest(&a, &format!("{host}/bb:2"))
    );

    // An empty store builds FROM the registry's image, then pushes the result.
    let c = Scratch::new();
    std::fs::write(
        c.work.join("Dockerfile"),
        format!("FROM {host}/bb:1\nRUN echo built > /built\n"),
    )
    .unwrap();
    let built = c.run(&["build", "-t", &format!("{host}/app:1"), "--push", "."]);
    assert!(
        stderr(&built).contains("pulling it from"),
        "{}",
        stderr(&built)
    );
    assert!(reg.catalog().contains("\"app\""), "{}", reg.catalog());
    let d = Scratch::new();
    d.ok(&["pull", &format!("{host}/app:1")]);
    assert_eq!(
        manifest_digest(&d, &format!("{host}/app:1")),
        manifest_digest(&c, &format!("{host}/app:1"))
    );

    // A base that is nowhere says what to do.
    std::fs::write(
        c.work.join("Dockerfile"),
        format!("FROM {host}/missing:1\nRUN true\n"),
    )
    .unwrap();
    let failed = c.rbuild(&["build", "."]).output().unwrap();
    assert!(!failed.status.success());
    let err = stderr(&failed);
    assert!(
        err.contains(&format!("{host}/missing:1")) && err.contains("rbuild import"),
        "{err}"
    );
}

/// A tarball of incompressible data, big enough that a push takes a while.
fn big_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("bigroot");
    std::fs::create_dir_all(&root).unwrap();
    run_ok(
        Command::new("dd")
            .args(["if=/dev/urandom", "bs=1M", "count=400", "status=none"])
            .arg(format!("of={}", root.join("noise").display())),
    );
    let tar = dir.join("big.tar");
    tar_dir(&root, &tar);
    std::fs::remove_dir_all(&root).unwrap();
    tar
}

#[test]
fn registry_killed_mid_push_then_the_same_push_completes_and_docker_pulls_it() {
    let mut reg = Registry::start();
    let image = format!("{}/big:1", reg.host());
    let s = Scratch::new();
    let tar = big_rootfs(&s.work);
    s.ok(&["import", tar.to_str().unwrap(), &image]);

    let mut push = s
        .rbuild(&["push", &image])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the registry once the upload has started.
    let deadline = Instant::now() + Duration::from_secs(60);
    while reg.upload_bytes() == 0 {
        assert!(
            Instant::now() < deadline,
            "the upload never started: {}",
            reg.log()
        );
        if let Ok(Some(status)) = push.try_wait() {
            panic!("the push ended ({status}) before it could be interrupted");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    reg.kill();
    let out = push.wait_with_output().unwrap();
    assert!(!out.status.success(), "the push must fail");
    let err = stderr(&out);
    assert!(
        err.contains(&reg.host()) && err.contains("is the registry running"),
        "the error names the registry and what to check: {err}"
    );

    reg.restart();
    let done = s.run(&["push", &image]);
    let digest = stderr(&done)
        .lines()
        .find_map(|l| l.split_once(": digest: ").map(|(_, d)| d.to_string()))
        .expect("push prints the digest");

    let docker = Docker::start();
    let _ = docker.cmd().args(["rmi", "-f", &image]).output();
    run_ok(docker.cmd().args(["pull", &image]));
    let repo_digests = run_ok(docker.cmd().args([
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        &image,
    ]))
    .stdout;
    assert!(
        String::from_utf8_lossy(&repo_digests).contains(&digest),
        "docker pulled the pushed manifest {digest}: {}",
        String::from_utf8_lossy(&repo_digests)
    );
    run_ok(docker.cmd().args(["rmi", &image]));
}
