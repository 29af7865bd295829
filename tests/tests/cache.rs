//! The build cache from the outside: which steps a rebuild reruns, what it says about why, and
//! that an unchanged rebuild adds nothing to the store.

use rbuild_tests::{busybox_tar, rbuild_bin, run_ok};
use std::path::PathBuf;
use std::process::Command;

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Project {
        let dir = tempfile::Builder::new()
            .prefix("rbuild-cache-")
            .tempdir()
            .unwrap();
        let tar = busybox_tar(dir.path());
        let p = Project { dir };
        std::fs::create_dir_all(p.ctx()).unwrap();
        run_ok(&mut p.rbuild(&["import", tar.to_str().unwrap(), "bb:1"]));
        p
    }

    fn ctx(&self) -> PathBuf {
        self.dir.path().join("ctx")
    }

    fn rbuild(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(rbuild_bin());
        cmd.env("RBUILD_ROOT", self.dir.path().join("store"))
            .env_remove("SOURCE_DATE_EPOCH")
            .args(args);
        cmd
    }

    /// Builds; returns (manifest digest, the plain progress log).
    fn build(&self, extra: &[&str]) -> (String, String) {
        let mut args = vec!["build", "--progress", "plain", "-t", "c:1"];
        args.extend_from_slice(extra);
        let ctx = self.ctx();
        args.push(ctx.to_str().unwrap());
        let out = run_ok(&mut self.rbuild(&args));
        (
            String::from_utf8(out.stdout).unwrap().trim().to_string(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    fn blobs(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("store/blobs/sha256"))
            .unwrap()
            .count()
    }
}

/// The outcome of each step line in a plain log: step number → "CACHED" / "DONE" / "not cached: …".
fn outcomes(log: &str) -> Vec<(String, String)> {
    let mut titles = Vec::new();
    for line in log.lines() {
        let Some((num, rest)) = line.split_once(' ') else {
            continue;
        };
        if rest.starts_with('[') {
            titles.push((
                num.to_string(),
                rest.split_once("] ").unwrap().1.to_string(),
                String::new(),
            ));
        } else if let Some(t) = titles.iter_mut().find(|t| t.0 == num) {
            if rest == "CACHED" || rest.starts_with("not cached") {
                t.2 = rest.to_string();
            }
        }
    }
    titles
        .into_iter()
        .filter(|t| !t.2.is_empty())
        .map(|t| (t.1, t.2))
        .collect()
}

const DOCKERFILE: &str = "FROM bb:1\n\
    ARG V=1\n\
    RUN echo first > /first\n\
    RUN --mount=type=bind,source=conf,target=/conf cp -r /conf /copied\n\
    RUN echo v=$V > /v\n\
    WORKDIR /app\n\
    RUN echo last > last\n";

fn write_context(p: &Project) {
    std::fs::write(p.ctx().join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::create_dir_all(p.ctx().join("conf")).unwrap();
    std::fs::write(p.ctx().join("conf/app.conf"), "setting=1\n").unwrap();
}

fn cached(out: &[(String, String)], step: &str) -> bool {
    out.iter()
        .find(|(t, _)| t.contains(step))
        .unwrap_or_else(|| panic!("no step {step} in {out:?}"))
        .1
        == "CACHED"
}

#[test]
fn unchanged_rebuild_is_all_cached_and_adds_no_blob() {
    let p = Project::new();
    write_context(&p);
    let (first, log) = p.build(&[]);
    assert!(
        outcomes(&log)
            .iter()
            .all(|(_, o)| o == "not cached: no earlier build of this step"),
        "{log}"
    );
    let blobs = p.blobs();
    let (second, log) = p.build(&[]);
    let out = outcomes(&log);
    assert_eq!(out.len(), 5, "{log}");
    assert!(out.iter().all(|(_, o)| o == "CACHED"), "{out:?}");
    assert_eq!(p.blobs(), blobs, "no new blob");
    assert_eq!(first, second, "the same image, byte for byte");
}

#[test]
fn touching_a_file_keeps_the_cache_but_a_byte_or_a_mode_does_not() {
    let p = Project::new();
    write_context(&p);
    p.build(&[]);
    let conf = p.ctx().join("conf/app.conf");
    // Touch: a new mtime, the same content.
    run_ok(Command::new("touch").arg("-d").arg("2030-01-01").arg(&conf));
    let (_, log) = p.build(&[]);
    assert!(outcomes(&log).iter().all(|(_, o)| o == "CACHED"), "{log}");

    std::fs::write(&conf, "setting=2\n").unwrap();
    let (_, log) = p.build(&[]);
    let out = outcomes(&log);
    assert!(
        cached(&out, "echo first"),
        "steps before the change stay cached: {out:?}"
    );
    let step = &out.iter().find(|(t, _)| t.contains("cp -r")).unwrap().1;
    assert_eq!(step, "not cached: mount /conf changed");
    assert!(
        !cached(&out, "echo v=") && !cached(&out, "echo last"),
        "every later step reruns: {out:?}"
    );

    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, log) = p.build(&[]);
    assert!(
        !cached(&outcomes(&log), "cp -r"),
        "a mode change reruns the step: {log}"
    );
}

#[test]
fn a_build_arg_reruns_the_steps_that_see_it_and_explains() {
    let p = Project::new();
    write_context(&p);
    p.build(&[]);
    let (_, log) = p.build(&["--build-arg", "V=2"]);
    let out = outcomes(&log);
    let v = &out.iter().find(|(t, _)| t.contains("echo v=")).unwrap().1;
    assert!(v.starts_with("not cached: build arg V changed"), "{out:?}");
    let last = &out.iter().find(|(t, _)| t.contains("echo last")).unwrap().1;
    assert!(last.contains("the previous step was rebuilt"), "{out:?}");
}

#[test]
fn no_cache_reruns_everything_and_instruction_edits_are_named() {
    let p = Project::new();
    write_context(&p);
    p.build(&[]);
    let (_, log) = p.build(&["--no-cache"]);
    assert!(
        outcomes(&log)
            .iter()
            .all(|(_, o)| o == "not cached: --no-cache"),
        "{log}"
    );
    std::fs::write(
        p.ctx().join("Dockerfile"),
        DOCKERFILE.replace("echo last", "echo LAST"),
    )
    .unwrap();
    let (_, log) = p.build(&[]);
    let out = outcomes(&log);
    assert_eq!(
        out.last().unwrap().1,
        "not cached: the instruction changed",
        "{out:?}"
    );
    assert!(cached(&out, "echo first"));
}

#[test]
fn prune_keeps_tagged_images_and_all_drops_the_cache() {
    let p = Project::new();
    write_context(&p);
    p.build(&[]);
    let out = run_ok(&mut p.rbuild(&["prune"]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Deleted 0 cache record(s)"),
        "{out:?}"
    );
    let (_, log) = p.build(&[]);
    assert!(
        outcomes(&log).iter().all(|(_, o)| o == "CACHED"),
        "a plain prune keeps the cache in its limits"
    );
    let out = run_ok(&mut p.rbuild(&["prune", "--all"]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Deleted 5 cache record(s)"),
        "{out:?}"
    );
    let fsck = run_ok(&mut p.rbuild(&["fsck"]));
    assert!(
        String::from_utf8_lossy(&fsck.stdout).contains(": ok"),
        "tagged images are intact"
    );
    run_ok(&mut p.rbuild(&["inspect", "c:1"]));
    let (_, log) = p.build(&[]);
    assert!(
        outcomes(&log)
            .iter()
            .all(|(_, o)| o.starts_with("not cached")),
        "{log}"
    );
    let bad = p
        .rbuild(&["prune", "--filter", "label=x"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("only until=DURATION"));
}

#[test]
fn copy_sources_are_keyed_by_content_not_mtime() {
    let p = Project::new();
    std::fs::create_dir_all(p.ctx().join("conf")).unwrap();
    std::fs::write(p.ctx().join("conf/app.conf"), "a=1\n").unwrap();
    std::fs::write(p.ctx().join("conf/other.conf"), "b=1\n").unwrap();
    std::fs::write(
        p.ctx().join("Dockerfile"),
        "FROM bb:1\nRUN echo before > /before\nCOPY conf/ /etc/app/\nRUN cat /etc/app/app.conf > /seen\n",
    )
    .unwrap();
    p.build(&[]);
    run_ok(Command::new("touch").arg(p.ctx().join("conf/app.conf")));
    let (_, log) = p.build(&[]);
    assert!(
        outcomes(&log).iter().all(|(_, o)| o == "CACHED"),
        "touch keeps every hit: {log}"
    );
    std::fs::write(p.ctx().join("conf/app.conf"), "a=2\n").unwrap();
    let (_, log) = p.build(&[]);
    let out = outcomes(&log);
    assert!(cached(&out, "echo before"));
    let copy = &out.iter().find(|(t, _)| t.starts_with("COPY")).unwrap().1;
    assert_eq!(copy, "not cached: file conf/app.conf changed");
    assert!(!cached(&out, "cat /etc/app"), "{out:?}");
}
