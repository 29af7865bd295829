//! Same image as Docker: every case under `fixtures/build/` is built by rbuild and by
//! `DOCKER_BUILDKIT=1 docker build` from the same busybox base, and the two images' config
//! fields and exported file trees must match (timestamps aside).

use rbuild_tests::{busybox_tar, rbuild_bin, run_ok, Docker};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Debian's docker client (20.10) speaks BuildKit without the buildx plugin that newer
/// clients need; prefer it when both are installed.
fn docker_client() -> &'static str {
    if Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    }
}

fn docker(engine: &Docker) -> Command {
    let mut cmd = engine.cmd();
    let mut real = Command::new(docker_client());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => real.env(k, v),
            None => real.env_remove(k),
        };
    }
    let _ = &mut cmd;
    real
}

/// path → (kind, mode, uid, gid, size, content sha or link target)
type Tree = BTreeMap<String, String>;

fn export_tree(engine: &Docker, image: &str) -> Tree {
    let id =
        String::from_utf8(run_ok(docker(engine).args(["create", image, "true"])).stdout).unwrap();
    let id = id.trim().to_string();
    let mut child = docker(engine)
        .args(["export", &id])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut tree = Tree::new();
    let mut archive = tar::Archive::new(child.stdout.take().unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        // docker export adds these for every container.
        if [
            ".dockerenv",
            "dev/",
            "proc/",
            "sys/",
            "etc/hosts",
            "etc/hostname",
            "etc/resolv.conf",
            "etc/mtab",
        ]
        .iter()
        .any(|p| path == *p || path.starts_with(p))
        {
            continue;
        }
        let h = entry.header().clone();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        let what = match h.entry_type() {
            tar::EntryType::Symlink => format!("-> {}", h.link_name().unwrap().unwrap().display()),
            tar::EntryType::Link => {
                format!("hardlink {}", h.link_name().unwrap().unwrap().display())
            }
            _ => {
                use std::hash::{Hash, Hasher};
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                content.hash(&mut hasher);
                format!("{:016x}", hasher.finish())
            }
        };
        tree.insert(
            path,
            format!(
                "{:?} {:o} {}:{} {} {what}",
                h.entry_type(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                content.len()
            ),
        );
    }
    child.wait().unwrap();
    run_ok(docker(engine).args(["rm", &id]));
    tree
}

fn config(engine: &Docker, image: &str) -> serde_json::Value {
    let out =
        run_ok(docker(engine).args(["image", "inspect", "--format", "{{json .Config}}", image]));
    let mut c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Fields only one builder sets, with no meaning for the image.
    for k in [
        "Hostname",
        "Domainname",
        "AttachStdin",
        "AttachStdout",
        "AttachStderr",
        "Tty",
        "OpenStdin",
        "StdinOnce",
        "Image",
        "ArgsEscaped",
    ] {
        c.as_object_mut().unwrap().remove(k);
    }
    c
}

/// Every difference between the two trees, readable.
fn tree_diff(a: &Tree, b: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("only rbuild: {k} {v}")),
            Some(w) if w != v => out.push(format!("{k}: rbuild {v} / docker {w}")),
            _ => {}
        }
    }
    for (k, w) in b {
        if !a.contains_key(k) {
            out.push(format!("only docker: {k} {w}"));
        }
    }
    out
}

#[test]
fn fixtures_build_like_docker_buildkit() {
    let engine = Docker::start();
    let dir = tempfile::Builder::new()
        .prefix("rbuild-compare-")
        .tempdir()
        .unwrap();
    let store = dir.path().join("store");
    let rbuild = |args: &[&str]| {
        let mut cmd = Command::new(rbuild_bin());
        cmd.env("RBUILD_ROOT", &store)
            .env_remove("SOURCE_DATE_EPOCH")
            .args(args);
        cmd
    };
    // One busybox base for both builders.
    let tar = busybox_tar(dir.path());
    run_ok(&mut rbuild(&["import", tar.to_str().unwrap(), "bb:1"]));
    let mut save = rbuild(&["save", "bb:1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    run_ok(
        docker(&engine)
            .arg("load")
            .stdin(save.stdout.take().unwrap()),
    );
    assert!(save.wait().unwrap().success());

    let cases_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/build");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&cases_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let rb_tag = format!("rbuild-compare/{name}:rb");
        let dk_tag = format!("rbuild-compare/{name}:dk");
        run_ok(&mut rbuild(&[
            "build",
            "--progress",
            "plain",
            "-t",
            &rb_tag,
            case.to_str().unwrap(),
        ]));
        let mut save = rbuild(&["save", &rb_tag])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        run_ok(
            docker(&engine)
                .arg("load")
                .stdin(save.stdout.take().unwrap()),
        );
        assert!(save.wait().unwrap().success());
        run_ok(
            docker(&engine)
                .env("DOCKER_BUILDKIT", "1")
                .args(["build", "--network", "none", "-t", &dk_tag])
                .arg(case),
        );
        let (rc, dc) = (config(&engine, &rb_tag), config(&engine, &dk_tag));
        if rc != dc {
            failures.push(format!(
                "{name}: config differs\n rbuild: {rc}\n docker: {dc}"
            ));
        }
        let diff = tree_diff(
            &export_tree(&engine, &rb_tag),
            &export_tree(&engine, &dk_tag),
        );
        if !diff.is_empty() {
            failures.push(format!(
                "{name}: file trees differ:\n  {}",
                diff.join("\n  ")
            ));
        }
        run_ok(docker(&engine).args(["rmi", &rb_tag, &dk_tag]));
    }
    let _ = run_ok(docker(&engine).args(["rmi", "bb:1"]));
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from Docker:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
