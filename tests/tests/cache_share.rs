//! Build-cache sharing between machines (`--cache-to` / `--cache-from`): two stores, A and B,
//! stand for two machines with the same base image, and a real `docker-registry` (or a local
//! directory) sits between them.
//!
//! Whether a RUN executed on B is read from a host-visible probe: every RUN appends to a file
//! in a cache mount, which lives under the store (`cache/mounts/…/data`), so a RUN that runs
//! on B leaves a file in B's store; nothing else writes there.

use rbuild_tests::registry::{free_port, Registry};
use rbuild_tests::{busybox_tar, rbuild_bin, run_ok};
use std::path::PathBuf;
use std::process::{Command, Output};

/// Records of A's steps get this time; B never runs a step at it, so an image equal to A's
/// proves that imported records kept their `created`.
const A_EPOCH: &str = "1600000000";

const DOCKERFILE: &str = "FROM bb:1 AS build\n\
    RUN --mount=type=cache,target=/count echo build-1 >> /count/log && echo one > /one\n\
    COPY src/ /src/\n\
    RUN --mount=type=cache,target=/count echo build-2 >> /count/log && cat /src/a.txt /src/b.txt > /joined\n\
    WORKDIR /out\n\
    RUN --mount=type=cache,target=/count echo build-3 >> /count/log && cp /joined /out/result\n\
    \n\
    FROM bb:1\n\
    ENV X=1\n\
    COPY --from=build /out/result /result\n\
    COPY app.conf /etc/app.conf\n\
    RUN --mount=type=cache,target=/count echo final-1 >> /count/log && cat /etc/app.conf /result > /seen\n";

/// Steps that execute (CACHED or not), per stage.
const BUILD_STEPS: usize = 5;
const FINAL_STEPS: usize = 3;

/// One "machine": a store holding `bb:1` and a build context of its own.
struct Machine {
    dir: tempfile::TempDir,
}

impl Machine {
    /// Two machines whose `bb:1` is the same image (the same tarball, the same
    /// SOURCE_DATE_EPOCH).
    fn pair() -> (Machine, Machine) {
        let a = Machine::with_base(None);
        let b = Machine::with_base(Some(&a.dir.path().join("bb.tar")));
        assert_eq!(a.layers("bb:1"), b.layers("bb:1"), "the same base image");
        (a, b)
    }

    fn new() -> Machine {
        Machine::with_base(None)
    }

    fn with_base(tar: Option<&std::path::Path>) -> Machine {
        let dir = tempfile::Builder::new()
            .prefix("rbuild-share-")
            .tempdir()
            .unwrap();
        let tar = tar
            .map(|t| t.to_path_buf())
            .unwrap_or_else(|| busybox_tar(dir.path()));
        let m = Machine { dir };
        run_ok(
            m.rbuild(&["import", tar.to_str().unwrap(), "bb:1"])
                .env("SOURCE_DATE_EPOCH", "1500000000"),
        );
        let ctx = m.ctx();
        std::fs::create_dir_all(ctx.join("src")).unwrap();
        std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
        std::fs::write(ctx.join("src/a.txt"), "a\n").unwrap();
        std::fs::write(ctx.join("src/b.txt"), "b\n").unwrap();
        std::fs::write(ctx.join("app.conf"), "setting=1\n").unwrap();
        m
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn ctx(&self) -> PathBuf {
        self.dir.path().join("ctx")
    }

    fn rbuild(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(rbuild_bin());
        cmd.env("RBUILD_ROOT", self.store())
            .env_remove("SOURCE_DATE_EPOCH")
            .args(args);
        cmd
    }

    fn try_build(&self, extra: &[&str], epoch: Option<&str>) -> Output {
        let mut args = vec!["build", "--progress", "plain", "-t", "c:1"];
        args.extend_from_slice(extra);
        let ctx = self.ctx();
        args.push(ctx.to_str().unwrap());
        let mut cmd = self.rbuild(&args);
        if let Some(e) = epoch {
            cmd.env("SOURCE_DATE_EPOCH", e);
        }
        cmd.output().unwrap()
    }

    /// Builds; returns (manifest digest, plain progress log).
    fn build(&self, extra: &[&str], epoch: Option<&str>) -> (String, String) {
        let out = self.try_build(extra, epoch);
        assert!(
            out.status.success(),
            "build failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap().trim().to_string(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    /// What the RUN steps of this machine appended to their cache mount (all of them).
    fn runs(&self) -> String {
        let mut out = String::new();
        let mounts = self.store().join("cache/mounts");
        for entry in std::fs::read_dir(&mounts).into_iter().flatten().flatten() {
            if let Ok(text) = std::fs::read_to_string(entry.path().join("data/log")) {
                out.push_str(&text);
            }
        }
        out
    }

    fn layers(&self, tag: &str) -> Vec<String> {
        let store = images::Store::open(self.store()).unwrap();
        let image = store
            .image(&images::Reference::parse(tag).unwrap())
            .unwrap();
        image
            .manifest
            .layers()
            .iter()
            .map(|l| l.digest().to_string())
            .collect()
    }
}

/// Step title → outcome (`CACHED`, `CACHED (from …)`, `not cached: …`) from a plain log, for
/// the steps that execute.
fn outcomes(log: &str) -> Vec<(String, String)> {
    let mut steps: Vec<(String, String, String)> = Vec::new();
    for line in log.lines() {
        let Some((num, rest)) = line.split_once(' ') else {
            continue;
        };
        if rest.starts_with('[') {
            let title = rest.split_once("] ").unwrap().1.to_string();
            steps.push((num.to_string(), title, String::new()));
        } else if let Some(s) = steps.iter_mut().find(|s| s.0 == num) {
            if rest.starts_with("CACHED") || rest.starts_with("not cached") {
                s.2 = rest.to_string();
            }
        }
    }
    steps
        .into_iter()
        .filter(|s| !s.2.is_empty())
        .map(|s| (s.1, s.2))
        .collect()
}

fn outcome<'a>(out: &'a [(String, String)], step: &str) -> &'a str {
    &out.iter()
        .find(|(t, _)| t.contains(step))
        .unwrap_or_else(|| panic!("no step {step} in {out:?}"))
        .1
}

#[test]
fn registry_cache_hits_every_step_on_a_fresh_store_without_running() {
    let registry = Registry::start();
    let cache_ref = format!("{}/cache:t", registry.host());
    let (a, b) = Machine::pair();

    let (digest_a, log) = a.build(
        &[
            "--cache-to",
            &format!("type=registry,ref={cache_ref},mode=max"),
        ],
        Some(A_EPOCH),
    );
    assert_eq!(
        a.runs().lines().count(),
        4,
        "the probe sees A's RUNs: {}",
        a.runs()
    );
    assert!(
        log.contains(&format!("exporting cache to {cache_ref} (mode=max)"))
            && log.contains("8 records, 8 layers: 9 blobs sent"),
        "{log}"
    );

    let (digest_b, log) = b.build(
        &["--cache-from", &format!("type=registry,ref={cache_ref}")],
        None,
    );
    let out = outcomes(&log);
    assert_eq!(out.len(), BUILD_STEPS + FINAL_STEPS, "{log}");
    let expected = format!("CACHED (from {cache_ref})");
    assert!(out.iter().all(|(_, o)| *o == expected), "{out:?}");
    assert_eq!(b.runs(), "", "no RUN executed on B:\n{log}");
    assert_eq!(digest_a, digest_b, "the same image, history times included");

    // The hits were written to B's own cache: the next build needs no registry.
    let mut registry = registry;
    registry.kill();
    let (again, log) = b.build(&[], None);
    assert!(outcomes(&log).iter().all(|(_, o)| o == "CACHED"), "{log}");
    assert_eq!(again, digest_a);
}

#[test]
fn mode_min_exports_only_the_final_image_steps() {
    let registry = Registry::start();
    let cache_ref = format!("{}/cache:min", registry.host());
    let (a, b) = Machine::pair();
    let (_, log) = a.build(
        &["--cache-to", &format!("type=registry,ref={cache_ref}")],
        None,
    );
    assert!(
        log.contains("(mode=min)") && log.contains("3 records"),
        "{log}"
    );
    let (_, log) = b.build(&["--cache-from", &cache_ref], None);
    let out = outcomes(&log);
    // The stage the final image copies from is not exported: it runs on B, and since keys
    // do not depend on where a step ran, the final stage's steps then hit.
    for step in [
        "echo build-1",
        "COPY src/",
        "echo build-2",
        "WORKDIR",
        "build-3",
    ] {
        assert!(outcome(&out, step).starts_with("not cached"), "{out:?}");
    }
    for step in ["COPY --from", "COPY app.conf", "final-1"] {
        assert_eq!(outcome(&out, step), format!("CACHED (from {cache_ref})"));
    }
    assert_eq!(b.runs(), "build-1\nbuild-2\nbuild-3\n");
}

#[test]
fn only_the_layers_a_build_needs_are_pulled() {
    let registry = Registry::start();
    let cache_ref = format!("{}/cache:t", registry.host());
    let (a, b) = Machine::pair();
    a.build(
        &[
            "--cache-to",
            &format!("type=registry,ref={cache_ref},mode=max"),
        ],
        None,
    );
    let base = a.layers("bb:1");
    let all = a.layers("c:1");

    let from = registry.log().len();
    let (_, log) = b.build(&["--cache-from", &cache_ref, "--target", "build"], None);
    let requests = registry.requests_since(from);
    let out = outcomes(&log);
    assert_eq!(out.len(), BUILD_STEPS, "{log}");
    assert!(
        out.iter().all(|(_, o)| o.starts_with("CACHED (from")),
        "{out:?}"
    );
    let needed: Vec<String> = b
        .layers("c:1")
        .into_iter()
        .filter(|l| !base.contains(l))
        .collect();
    assert_eq!(
        needed.len(),
        BUILD_STEPS,
        "each step of the build stage made a layer"
    );
    let pulled: Vec<&String> = requests
        .iter()
        .filter(|r| r.starts_with("GET /v2/cache/blobs/"))
        .collect();
    for layer in &needed {
        assert!(
            pulled.iter().any(|r| r.contains(layer.as_str())),
            "{layer} of the build stage was pulled: {requests:?}"
        );
    }
    // The final stage's own layers (not in the build stage's image) were not fetched, and
    // neither was anything but the config and the needed layers.
    let unneeded: Vec<&String> = all
        .iter()
        .filter(|l| !base.contains(l) && !needed.contains(l))
        .collect();
    assert_eq!(unneeded.len(), 3, "{all:?}");
    for layer in unneeded {
        assert!(
            !requests.iter().any(|r| r.contains(layer.as_str())),
            "{layer} is not needed by --target build but was requested: {requests:?}"
        );
    }
    // One login for the import and one for all its layer fetches, not a session per layer.
    // (oci-client probes /v2/ before each request to a registry that issues no token.)
    let probes = requests
        .iter()
        .filter(|r| r.starts_with("GET /v2/ "))
        .count();
    let sessions = 2;
    let manifests = 1;
    assert!(
        probes <= sessions + manifests + pulled.len(),
        "{probes} probes: {requests:?}"
    );
    assert_eq!(
        pulled.len(),
        needed.len() + 1,
        "the config and the needed layers: {pulled:?}"
    );
}

#[test]
fn local_directory_cache_round_trips() {
    let (a, b) = Machine::pair();
    let dir = a.dir.path().join("shared-cache");
    let dir_s = dir.to_str().unwrap().to_string();
    let (digest_a, _) = a.build(
        &["--cache-to", &format!("type=local,dest={dir_s},mode=max")],
        Some(A_EPOCH),
    );
    // A plain OCI layout: skopeo reads the export under the ref name `latest`.
    let raw =
        run_ok(Command::new("skopeo").args(["inspect", "--raw", &format!("oci:{dir_s}:latest")]));
    let raw = String::from_utf8(raw.stdout).unwrap();
    assert!(
        raw.contains(r#""artifactType":"application/vnd.rbuild.cache.config.v1+json""#),
        "{raw}"
    );
    assert!(
        std::fs::read_dir(dir.join("ingest"))
            .unwrap()
            .next()
            .is_none(),
        "no temp file left"
    );

    let (digest_b, log) = b.build(&["--cache-from", &format!("type=local,src={dir_s}")], None);
    let out = outcomes(&log);
    assert_eq!(out.len(), BUILD_STEPS + FINAL_STEPS, "{log}");
    let expected = format!("CACHED (from {dir_s})");
    assert!(out.iter().all(|(_, o)| *o == expected), "{out:?}");
    assert_eq!(b.runs(), "", "no RUN executed on B");
    assert_eq!(digest_a, digest_b);

    // A second export to the same directory replaces the entry and copies no blob again.
    let (_, log) = a.build(
        &["--cache-to", &format!("type=local,dest={dir_s},mode=max")],
        None,
    );
    assert!(
        log.contains("0 blobs sent") && log.contains("9 already there"),
        "{log}"
    );
}

#[test]
fn a_cache_that_cannot_be_read_is_a_warning() {
    let registry = Registry::start();
    let m = Machine::new();
    let missing = format!("{}/nothing:here", registry.host());
    let down = format!("127.0.0.1:{}/cache:t", free_port());
    let no_dir = m.dir.path().join("no-such-cache");
    let (_, log) = m.build(
        &[
            "--cache-from",
            &missing,
            "--cache-from",
            &format!("type=registry,ref={down}"),
            "--cache-from",
            &format!("type=local,src={}", no_dir.display()),
        ],
        None,
    );
    for (what, hint) in [
        (missing.as_str(), "not found"),
        (down.as_str(), "cannot reach registry"),
        (no_dir.to_str().unwrap(), "no OCI layout there"),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains("WARNING") && l.contains(what))
            .unwrap_or_else(|| panic!("no warning about {what}:\n{log}"));
        assert!(
            line.contains(hint) && line.contains("building without this cache"),
            "{line}"
        );
    }
    assert!(
        !no_dir.exists(),
        "reading a cache directory never creates it"
    );
    assert!(
        outcomes(&log)
            .iter()
            .all(|(_, o)| o.starts_with("not cached")),
        "{log}"
    );
}

#[test]
fn an_edit_on_b_misses_from_that_step_on() {
    let registry = Registry::start();
    let cache_ref = format!("{}/cache:t", registry.host());
    let (a, b) = Machine::pair();
    a.build(
        &[
            "--cache-to",
            &format!("type=registry,ref={cache_ref},mode=max"),
        ],
        None,
    );
    std::fs::write(b.ctx().join("src/b.txt"), "b, edited on B\n").unwrap();
    let (_, log) = b.build(&["--cache-from", &cache_ref], None);
    let out = outcomes(&log);
    assert_eq!(
        outcome(&out, "echo build-1"),
        format!("CACHED (from {cache_ref})")
    );
    assert_eq!(
        outcome(&out, "COPY src/"),
        "not cached: no earlier build of this step"
    );
    for step in [
        "echo build-2",
        "WORKDIR",
        "build-3",
        "COPY --from",
        "COPY app.conf",
        "final-1",
    ] {
        assert!(
            outcome(&out, step).starts_with("not cached"),
            "{step}: {out:?}"
        );
    }
    assert_eq!(b.runs(), "build-2\nbuild-3\nfinal-1\n");
}

#[test]
fn a_failed_export_fails_the_build_after_the_image_is_stored() {
    let mut registry = Registry::start();
    let cache_ref = format!("{}/cache:t", registry.host());
    registry.kill();
    let m = Machine::new();
    let out = m.try_build(
        &["--cache-to", &format!("type=registry,ref={cache_ref}")],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the image is stored, but exporting its build cache failed")
            && stderr.contains(&format!("cannot reach registry {}", registry.host())),
        "{stderr}"
    );
    run_ok(&mut m.rbuild(&["inspect", "c:1"]));
    // ignore-error=true turns it into a warning.
    let out = m.try_build(
        &[
            "--cache-to",
            &format!("type=registry,ref={cache_ref},ignore-error=true"),
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("WARNING"),
        "{stderr}"
    );
}

#[test]
fn a_layer_the_registry_lost_makes_that_step_run_with_a_warning() {
    let registry = Registry::start();
    let cache_ref = format!("{}/cache:t", registry.host());
    let (a, b) = Machine::pair();
    a.build(
        &[
            "--cache-to",
            &format!("type=registry,ref={cache_ref},mode=max"),
        ],
        None,
    );
    // The last layer of A's image is the final RUN's. Without its data the registry answers
    // 404 for it (no blob descriptor cache is configured).
    let lost = a.layers("c:1").pop().unwrap();
    let hex = lost.strip_prefix("sha256:").unwrap();
    let data = registry
        .storage()
        .join("blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    std::fs::remove_file(&data).unwrap();

    let (_, log) = b.build(&["--cache-from", &cache_ref], None);
    let out = outcomes(&log);
    assert!(
        outcome(&out, "final-1").starts_with("not cached"),
        "{out:?}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("WARNING") && l.contains(&lost) && l.contains("the step runs")),
        "{log}"
    );
    assert_eq!(b.runs(), "final-1\n", "only that step ran");
    let fsck = run_ok(&mut b.rbuild(&["fsck"]));
    assert!(
        String::from_utf8_lossy(&fsck.stdout).contains(": ok"),
        "no partial blob left: {fsck:?}"
    );
}
