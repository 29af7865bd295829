//! `rbuild bake` from the outside: a compose project read as docker compose reads it, its
//! services built in parallel in one process (identical steps once), a failing service, and a
//! push to a real registry.

use rbuild_tests::registry::Registry;
use rbuild_tests::{busybox_tar, rbuild_bin, run_ok};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

/// A temp dir with a store holding `bb:1` (busybox) and a compose project under `proj/`.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Project {
        let dir = tempfile::Builder::new()
            .prefix("rbuild-bake-")
            .tempdir()
            .unwrap();
        let tar = busybox_tar(dir.path());
        let p = Project { dir };
        std::fs::create_dir_all(p.proj()).unwrap();
        run_ok(&mut p.rbuild(&["import", tar.to_str().unwrap(), "bb:1"]));
        p
    }

    fn proj(&self) -> PathBuf {
        self.dir.path().join("proj")
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Writes `proj/REL`, making its directory.
    fn file(&self, rel: &str, text: &str) {
        let path = self.proj().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// rbuild run in the project directory with its own store.
    fn rbuild(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(rbuild_bin());
        cmd.current_dir(self.dir.path())
            .env("RBUILD_ROOT", self.store())
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("COMPOSE_PROJECT_NAME")
            .args(args);
        cmd
    }

    fn bake(&self, args: &[&str]) -> Output {
        let mut all = vec!["bake", "-f", "proj/compose.yaml", "--progress", "plain"];
        all.extend_from_slice(args);
        self.rbuild(&all).output().unwrap()
    }

    fn inspect(&self, image: &str) -> Value {
        let out = run_ok(&mut self.rbuild(&["inspect", image]));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0].clone()
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "{}", text(&out));
    out
}

fn env_of(image: &Value) -> Vec<String> {
    image["Config"]["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn layer_digests(image: &Value) -> Vec<String> {
    image["Manifest"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn compose_file_env_args_target_and_set_resolve_and_take_effect() {
    let p = Project::new();
    p.file(
        "compose.yaml",
        "name: ignored-when-env-sets-it\n\
         services:\n\
         \x20 one:\n\
         \x20   image: bake-one:${TAG}\n\
         \x20   build:\n\
         \x20     context: one\n\
         \x20     args:\n\
         \x20       GREETING: ${GREETING}\n\
         \x20       EXTRA: ${MISSING:-fallback}\n\
         \x20       PRICE: $$5\n\
         \x20 two:\n\
         \x20   image: bake-two:1\n\
         \x20   build:\n\
         \x20     context: ./two\n\
         \x20     target: dev\n\
         \x20     args:\n\
         \x20       - LIST_ARG=listed\n\
         \x20       - FROM_ENV\n\
         \x20 three:\n\
         \x20   build: three\n\
         \x20 db:\n\
         \x20   image: postgres:16\n",
    );
    p.file(
        ".env",
        "# beside compose.yaml\nGREETING=\"hello from dotenv\"\nTAG=7 # inline comment\n",
    );
    p.file(
        "one/Dockerfile",
        "FROM bb:1\nARG GREETING\nARG EXTRA\nARG PRICE\nENV GREETING=$GREETING EXTRA=$EXTRA PRICE=$PRICE\n",
    );
    p.file(
        "two/Dockerfile",
        "FROM bb:1 AS dev\nENV STAGE=dev\n\
         FROM bb:1 AS prod\nARG LIST_ARG\nARG FROM_ENV\nENV STAGE=prod LIST_ARG=$LIST_ARG FROM_ENV=$FROM_ENV\n",
    );
    p.file("three/Dockerfile", "FROM bb:1\nENV THREE=3\n");

    let print = |args: &[&str]| -> Value {
        let mut all = vec!["bake", "-f", "proj/compose.yaml", "--print"];
        all.extend_from_slice(args);
        let out = run_ok(
            p.rbuild(&all)
                .env("FROM_ENV", "from the environment")
                .env("COMPOSE_PROJECT_NAME", "Proj"),
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let doc = print(&[]);
    assert_eq!(
        doc["group"]["default"]["targets"],
        serde_json::json!(["one", "three", "two"]),
        "db has no build: skipped; {doc}"
    );
    let one = &doc["target"]["one"];
    assert_eq!(
        one["args"],
        serde_json::json!({"GREETING": "hello from dotenv", "EXTRA": "fallback", "PRICE": "$5"})
    );
    assert_eq!(one["tags"], serde_json::json!(["bake-one:7"]));
    assert_eq!(one["context"], "proj/one");
    assert_eq!(one["dockerfile"], "proj/one/Dockerfile");
    let two = &doc["target"]["two"];
    assert_eq!(two["target"], "dev");
    assert_eq!(
        two["args"],
        serde_json::json!({"LIST_ARG": "listed", "FROM_ENV": "from the environment"})
    );
    let three = &doc["target"]["three"];
    assert_eq!(three["context"], "proj/three");
    assert_eq!(
        three["tags"],
        serde_json::json!(["proj-three"]),
        "no image: <project>-<service>"
    );

    let doc = print(&[
        "--set",
        "two.target=prod",
        "--set",
        "*.args.EXTRA=set",
        "--set",
        "one.tags=bake-one:x",
        "--set",
        "one.tags=bake-one:y",
        "--set",
        "one.no-cache=true",
        "one",
        "two",
    ]);
    assert_eq!(
        doc["group"]["default"]["targets"],
        serde_json::json!(["one", "two"])
    );
    assert_eq!(doc["target"]["two"]["target"], "prod");
    assert_eq!(doc["target"]["two"]["args"]["EXTRA"], "set");
    assert_eq!(doc["target"]["one"]["args"]["EXTRA"], "set");
    assert_eq!(
        doc["target"]["one"]["tags"],
        serde_json::json!(["bake-one:x", "bake-one:y"])
    );
    assert_eq!(doc["target"]["one"]["no-cache"], true);
    assert_eq!(doc["target"]["two"]["no-cache"], false);

    // Mistakes a person can act on.
    let out = p.bake(&["--print", "nope"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no such service: nope (services with a build: one, three, two)"),
        "{}",
        text(&out)
    );
    let out = p.bake(&["--print", "db"]);
    assert!(text(&out).contains("service db has no build section"));

    // A real build of two services: the args and the target took effect.
    let out = ok(p
        .rbuild(&[
            "bake",
            "-f",
            "proj/compose.yaml",
            "--progress",
            "plain",
            "--set",
            "two.target=prod",
            "one",
            "two",
        ])
        .env("FROM_ENV", "from the environment")
        .output()
        .unwrap());
    let log = text(&out);
    assert!(log.contains("[one 1/5] FROM bb:1"), "{log}");
    assert!(log.contains("[two prod "), "{log}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.starts_with("one sha256:")),
        "{log}"
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("two sha256:")),
        "{log}"
    );
    let env = env_of(&p.inspect("bake-one:7"));
    for want in ["GREETING=hello from dotenv", "EXTRA=fallback", "PRICE=$5"] {
        assert!(env.iter().any(|e| e == want), "{want} in {env:?}");
    }
    let env = env_of(&p.inspect("bake-two:1"));
    for want in [
        "STAGE=prod",
        "LIST_ARG=listed",
        "FROM_ENV=from the environment",
    ] {
        assert!(env.iter().any(|e| e == want), "{want} in {env:?}");
    }
    // three was not asked for.
    assert!(!p
        .rbuild(&["inspect", "proj-three"])
        .output()
        .unwrap()
        .status
        .success());
}

/// Both services start with the same step, which appends a line to a shared cache mount (and
/// takes a second, so that both builds reach it together): it must run once.
#[test]
fn identical_first_steps_run_once_across_services() {
    let p = Project::new();
    p.file(
        "compose.yaml",
        "services:\n  a:\n    image: same-a:1\n    build: a\n  b:\n    image: same-b:1\n    build: b\n",
    );
    let shared = "FROM bb:1\n\
        RUN --mount=type=cache,target=/c,sharing=shared echo x >> /c/count && sleep 1 && echo shared > /shared\n";
    p.file("a/Dockerfile", &format!("{shared}RUN echo a > /a\n"));
    p.file("b/Dockerfile", &format!("{shared}RUN echo b > /b\n"));
    let out = ok(p.bake(&[]));

    let mounts = p.store().join("cache/mounts");
    let counts: Vec<String> = std::fs::read_dir(&mounts)
        .unwrap()
        .map(|e| e.unwrap().path().join("data/count"))
        .filter(|f| f.exists())
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    assert_eq!(counts, ["x\n"], "the shared step ran once\n{}", text(&out));
    let (a, b) = (
        layer_digests(&p.inspect("same-a:1")),
        layer_digests(&p.inspect("same-b:1")),
    );
    assert_eq!(a.len(), 3);
    assert_eq!(a[..2], b[..2], "the base and the shared step's layer");
    assert_ne!(a[2], b[2]);
}

/// The same for two rbuild processes: the step lock is a flock, so it excludes processes too.
#[test]
fn identical_steps_run_once_across_processes() {
    let p = Project::new();
    for name in ["x", "y"] {
        p.file(
            &format!("{name}/Dockerfile"),
            &format!(
                "FROM bb:1\n\
                 RUN --mount=type=cache,target=/c,sharing=shared echo x >> /c/count && sleep 1\n\
                 RUN echo {name} > /{name}\n"
            ),
        );
    }
    let children: Vec<_> = ["x", "y"]
        .iter()
        .map(|name| {
            let ctx = p.proj().join(name);
            p.rbuild(&["build", "--progress", "plain", "-t", &format!("{name}:1")])
                .arg(ctx)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let logs: Vec<String> = children
        .into_iter()
        .map(|c| text(&ok(c.wait_with_output().unwrap())))
        .collect();
    let counts: Vec<String> = std::fs::read_dir(p.store().join("cache/mounts"))
        .unwrap()
        .map(|e| e.unwrap().path().join("data/count"))
        .filter(|f| f.exists())
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    assert_eq!(counts, ["x\n"], "{logs:#?}");
}

/// Each service's RUN waits for a file the other one's RUN writes: built one after the other,
/// the first would give up after its 60 s wait.
#[test]
fn services_build_in_parallel() {
    let p = Project::new();
    p.file(
        "compose.yaml",
        "services:\n  p:\n    image: par-p:1\n    build: p\n  q:\n    image: par-q:1\n    build: q\n",
    );
    let waits_for = |me: &str, other: &str| {
        format!(
            "FROM bb:1\n\
             RUN --mount=type=cache,target=/c,sharing=shared touch /c/{me} && i=0 && \
             while [ ! -e /c/{other} ]; do i=$((i+1)); if [ $i -gt 600 ]; then echo {other} never came; exit 1; fi; sleep 0.1; done && \
             echo {me} saw {other} > /{me}\n"
        )
    };
    p.file("p/Dockerfile", &waits_for("p", "q"));
    p.file("q/Dockerfile", &waits_for("q", "p"));
    ok(p.bake(&[]));
    p.inspect("par-p:1");
    p.inspect("par-q:1");
}

#[test]
fn a_failing_service_fails_bake_and_the_others_still_build() {
    let p = Project::new();
    p.file(
        "compose.yaml",
        "services:\n  bad:\n    image: bad:1\n    build: bad\n  good:\n    image: good:1\n    build: good\n",
    );
    p.file(
        "bad/Dockerfile",
        "FROM bb:1\nRUN echo about to fail && exit 3\n",
    );
    p.file(
        "good/Dockerfile",
        "FROM bb:1\nRUN sleep 1 && echo ok > /ok\nRUN echo more > /more\n",
    );
    let out = p.bake(&[]);
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("1 of 2 services failed: bad"), "{log}");
    assert!(log.contains("bad: error: "), "{log}");
    assert!(log.contains("exit 3"), "{log}");
    assert_eq!(layer_digests(&p.inspect("good:1")).len(), 3, "{log}");
    assert!(!p
        .rbuild(&["inspect", "bad:1"])
        .output()
        .unwrap()
        .status
        .success());
}

#[test]
fn push_sends_every_image_to_the_registry() {
    let registry = Registry::start();
    let p = Project::new();
    p.file(
        "compose.yaml",
        "services:\n  a:\n    image: ${REG}/bake/a:1\n    build: a\n  b:\n    image: ${REG}/bake/b:1\n    build: b\n",
    );
    p.file("a/Dockerfile", "FROM bb:1\nRUN echo a > /a\n");
    p.file("b/Dockerfile", "FROM bb:1\nRUN echo b > /b\n");
    let out = ok(p
        .rbuild(&[
            "bake",
            "-f",
            "proj/compose.yaml",
            "--progress",
            "plain",
            "--push",
        ])
        .env("REG", registry.host())
        .output()
        .unwrap());
    let log = text(&out);
    assert!(log.contains("blob(s) uploaded"), "{log}");
    let catalog = registry.catalog();
    let catalog: Value = serde_json::from_str(&catalog).unwrap();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["bake/a", "bake/b"]),
        "{log}"
    );

    // A registry that is gone: the push fails, naming it.
    let host = registry.host();
    drop(registry);
    let out = p
        .rbuild(&["bake", "-f", "proj/compose.yaml", "--push", "a"])
        .env("REG", &host)
        .output()
        .unwrap();
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains(&format!("cannot push {host}/bake/a:1")),
        "{log}"
    );
}
