//! `rbuild build` on a busybox base, checked from the outside: the image's config, and its
//! layers applied with the layers crate. Also what a failing or killed build leaves behind.

use rbuild_tests::{busybox_tar, rbuild_bin, run_ok};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    /// A store holding `bb:1`, a static busybox with its applets, /tmp and an /etc/passwd.
    fn new() -> Project {
        let dir = tempfile::Builder::new()
            .prefix("rbuild-build-")
            .tempdir()
            .unwrap();
        let tar = busybox_tar(dir.path());
        let p = Project { dir };
        run_ok(&mut p.rbuild(&["import", tar.to_str().unwrap(), "bb:1"]));
        p
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn rbuild(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(rbuild_bin());
        cmd.env("RBUILD_ROOT", self.store())
            .env_remove("SOURCE_DATE_EPOCH")
            .current_dir(self.dir.path())
            .args(args);
        cmd
    }

    fn build(&self, dockerfile: &str, tag: &str, extra: &[&str]) -> Output {
        let ctx = self.dir.path().join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        let mut args = vec!["build", "--progress", "plain", "-t", tag];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        self.rbuild(&args).output().unwrap()
    }

    fn build_ok(&self, dockerfile: &str, tag: &str) -> Output {
        let out = self.build(dockerfile, tag, &[]);
        assert!(
            out.status.success(),
            "build failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn image(&self, tag: &str) -> images::StoredImage {
        let store = images::Store::open(self.store()).unwrap();
        store
            .image(&images::Reference::parse(tag).unwrap())
            .unwrap()
    }

    /// The image's filesystem, from its layer blobs.
    fn unpack(&self, tag: &str) -> PathBuf {
        let image = self.image(tag);
        let store = images::Store::open(self.store()).unwrap();
        let out = self
            .dir
            .path()
            .join(format!("unpacked-{}", tag.replace([':', '/'], "_")));
        std::fs::create_dir_all(&out).unwrap();
        for layer in image.manifest.layers() {
            let blob = store.get_blob(layer.digest()).unwrap();
            layers::apply(
                blob,
                &out,
                &layers::ApplyOptions::new(layers::ApplyMode::Flatten),
            )
            .unwrap();
        }
        out
    }
}

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn run_env_args_workdir_user_and_config() {
    let p = Project::new();
    let df = r#"FROM bb:1
ARG A=from-arg
ENV E=from-env
RUN echo "$A $E $(hostname)" > /out.txt
WORKDIR /w/x
RUN pwd > here
USER 1234:5678
WORKDIR /home/u
RUN id -u > uid && id -g >> uid
LABEL a=b
EXPOSE 8080 53/udp
VOLUME /data
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=5s CMD true
CMD ["sh"]
ENTRYPOINT ["/bin/env"]
"#;
    p.build_ok(df, "t:1");
    let fs = p.unpack("t:1");
    assert_eq!(read(&fs, "out.txt"), "from-arg from-env rbuild\n");
    assert_eq!(read(&fs, "w/x/here"), "/w/x\n");
    assert_eq!(read(&fs, "home/u/uid"), "1234\n5678\n");
    use std::os::unix::fs::MetadataExt;
    let home = std::fs::metadata(fs.join("home/u")).unwrap();
    assert_eq!(
        (home.uid(), home.gid()),
        (1234, 5678),
        "WORKDIR belongs to USER"
    );
    for absent in ["proc", "sys", "dev", "etc/hosts", "etc/resolv.conf"] {
        assert!(!fs.join(absent).exists(), "{absent} must not reach a layer");
    }
    let c = p.image("t:1").config;
    assert_eq!(c.config.user, "1234:5678");
    assert_eq!(c.config.working_dir, "/home/u");
    assert!(c.config.env.contains(&"E=from-env".to_string()));
    assert!(
        !c.config.env.iter().any(|e| e.starts_with("A=")),
        "ARGs are not in the image"
    );
    assert_eq!(c.config.labels["a"], "b");
    assert!(
        c.config.exposed_ports.contains_key("8080/tcp")
            && c.config.exposed_ports.contains_key("53/udp")
    );
    assert!(c.config.volumes.contains_key("/data"));
    assert_eq!(c.config.stop_signal, "SIGQUIT");
    let hc = c.config.healthcheck.as_ref().unwrap();
    assert_eq!(
        (hc.test.as_slice(), hc.interval),
        (
            &["CMD-SHELL".to_string(), "true".to_string()][..],
            5_000_000_000
        )
    );
    assert_eq!(
        c.config.entrypoint.as_deref(),
        Some(&["/bin/env".to_string()][..])
    );
    assert_eq!(
        c.config.cmd.as_deref(),
        Some(&["sh".to_string()][..]),
        "CMD set in this stage survives ENTRYPOINT"
    );
    let runs: Vec<&str> = c
        .history
        .iter()
        .filter_map(|h| h.created_by.as_deref())
        .filter(|b| b.starts_with("RUN"))
        .collect();
    assert_eq!(
        runs[0],
        r#"RUN |1 A=from-arg /bin/sh -c echo "$A $E $(hostname)" > /out.txt # buildkit"#
    );
    assert_eq!(
        c.rootfs.diff_ids.len(),
        p.image("t:1").manifest.layers().len()
    );
}

#[test]
fn heredocs_shebang_and_network_none() {
    let p = Project::new();
    let df = "FROM bb:1\nRUN <<EOF\necho one > /1\necho two >> /1\nEOF\nRUN <<EOF\n#!/bin/sh\necho script $0 > /2\nEOF\nRUN cat <<A > /3\nbody $HOME\nA\nRUN --network=none cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' > /4\n";
    p.build_ok(df, "h:1");
    let fs = p.unpack("h:1");
    assert_eq!(read(&fs, "1"), "one\ntwo\n");
    assert_eq!(read(&fs, "2"), "script /dev/pipes/EOF\n");
    assert_eq!(
        read(&fs, "3"),
        "body /root\n",
        "HOME comes from /etc/passwd? no: from the shell default"
    );
    assert_eq!(read(&fs, "4"), "lo\n");
}

#[test]
fn multi_stage_and_target() {
    let p = Project::new();
    let df = "FROM bb:1 AS base\nRUN echo base > /base\nFROM base AS second\nRUN cat /base > /copy\nFROM bb:1 AS other\nRUN echo other > /other\n";
    let out = p.build(df, "m:1", &["--target", "second"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !log.contains("echo other"),
        "a stage the target does not need never runs:\n{log}"
    );
    let fs = p.unpack("m:1");
    assert_eq!(read(&fs, "copy"), "base\n");
}

fn mounts_mention(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(path.to_str().unwrap())
}

fn step_areas(store: &Path) -> usize {
    std::fs::read_dir(store.join("snapshots"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("step-")
        })
        .count()
}

#[test]
fn failing_step_reports_and_leaves_nothing() {
    let p = Project::new();
    let df =
        "FROM bb:1\nRUN echo fine > /ok\nRUN for i in $(seq 1 30); do echo line$i; done; exit 3\n";
    let out = p.build(df, "f:1", &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Dockerfile:3: RUN for i in"), "{err}");
    assert!(err.contains("exit code 3"), "{err}");
    // The progress log shows every line; the error message only the last 20.
    let message = &err[err.rfind("rbuild: ").expect("an error message")..];
    assert!(
        message.contains("line30") && message.contains("line11\n") && !message.contains("line10\n"),
        "the last 20 lines: {message}"
    );
    let store = images::Store::open(p.store()).unwrap();
    assert!(
        store
            .resolve(&images::Reference::parse("f:1").unwrap())
            .is_err(),
        "nothing tagged"
    );
    assert!(!mounts_mention(&p.store()), "no mount left");
    assert_eq!(step_areas(&p.store()), 0, "step dirs removed");
    assert!(store.fsck().unwrap().iter().all(|x| x.is_harmless()));
}

#[test]
fn killed_build_leaves_no_process_mount_or_damage() {
    let p = Project::new();
    let ctx = p.dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    // A sleep no other process runs, to find (and then miss) with pgrep.
    let marker = format!("sleep 299.{}", std::process::id());
    std::fs::write(ctx.join("Dockerfile"), format!("FROM bb:1\nRUN {marker}\n")).unwrap();
    let mut child = p
        .rbuild(&["build", "-t", "k:1", ctx.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let step_running = || {
        Command::new("pgrep")
            .arg("-f")
            .arg(&marker)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !step_running() {
        assert!(
            std::time::Instant::now() < deadline,
            "the step never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap(); // SIGKILL: no handler of rbuild's runs
    child.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(!step_running(), "the step's processes died with rbuild");
    assert!(!mounts_mention(&p.store()), "no mount left");
    let fsck = run_ok(&mut p.rbuild(&["fsck"]));
    assert!(String::from_utf8_lossy(&fsck.stdout).contains(": ok"));
    p.build_ok("FROM bb:1\nRUN echo after > /after\n", "k:2");
    assert_eq!(
        step_areas(&p.store()),
        0,
        "the killed build's step dir was cleaned"
    );
}

/// Every file under `dir` (the whole store: blobs, snapshots, cache, index).
fn grep_tree(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let data = std::fs::read(&path).unwrap();
                // Compressed layers hide plain text: look inside gzip blobs too.
                let mut plain = Vec::new();
                let _ = std::io::Read::read_to_end(
                    &mut flate2::read::GzDecoder::new(&data[..]),
                    &mut plain,
                );
                if [data, plain]
                    .iter()
                    .any(|d| d.windows(needle.len()).any(|w| w == needle))
                {
                    hits.push(path);
                }
            }
        }
    }
    hits
}

#[test]
fn secrets_reach_the_step_and_nothing_else() {
    let p = Project::new();
    let secret = format!("s3cr3t-{}-value", std::process::id());
    let file = p.dir.path().join("token.txt");
    std::fs::write(&file, &secret).unwrap();
    // The steps check a hash of the secret, so the value is in no Dockerfile, arg or history.
    let sum = String::from_utf8(
        run_ok(
            Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s '{secret}' | sha256sum | cut -d' ' -f1")),
        )
        .stdout,
    )
    .unwrap();
    let sum = sum.trim();
    let df = format!(
        "FROM bb:1\n\
         RUN --mount=type=secret,id=tok test \"$(sha256sum < /run/secrets/tok | cut -d' ' -f1)\" = {sum} && echo file-ok > /seen\n\
         RUN --mount=type=secret,id=tok,env=TOK,required=true test \"$(printf %s \"$TOK\" | sha256sum | cut -d' ' -f1)\" = {sum} && echo env-ok >> /seen\n\
         RUN --mount=type=secret,id=tok,target=/etc/app/key test -s /etc/app/key && echo target-ok >> /seen\n"
    );
    let secret_arg = format!("id=tok,src={}", file.display());
    let out = p.build(&df, "sec:1", &["--secret", &secret_arg]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let fs = p.unpack("sec:1");
    assert_eq!(
        read(&fs, "seen"),
        "file-ok\nenv-ok\ntarget-ok\n",
        "every step saw the secret"
    );
    assert!(
        !fs.join("run/secrets").exists() && !fs.join("etc/app/key").exists(),
        "mount points never reach a layer"
    );
    let hits = grep_tree(&p.store(), secret.as_bytes());
    assert!(hits.is_empty(), "the secret leaked into {hits:?}");
    assert!(!log.contains(&secret), "the secret is not in the build log");

    let missing = p.build(
        "FROM bb:1\nRUN --mount=type=secret,id=nope,required true\n",
        "sec:2",
        &[],
    );
    assert!(String::from_utf8_lossy(&missing.stderr)
        .contains("secret nope is required: pass --secret id=nope"));
}

#[test]
fn bind_mounts_from_context_and_stage_stay_inside() {
    let p = Project::new();
    let ctx = p.dir.path().join("ctx");
    std::fs::create_dir_all(ctx.join("sub")).unwrap();
    std::fs::write(ctx.join("sub/data.txt"), "from context\n").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", ctx.join("escape")).unwrap();
    let df = "FROM bb:1 AS s\nRUN echo from-stage > /s\nFROM bb:1\n\
              RUN --mount=type=bind,source=sub/data.txt,target=/mnt/d cat /mnt/d > /copied\n\
              RUN --mount=type=bind,from=s,target=/from cat /from/s >> /copied\n\
              RUN --mount=type=bind,source=../../sub,target=/up ls /up >> /copied\n";
    p.build_ok(df, "bind:1");
    let fs = p.unpack("bind:1");
    assert_eq!(
        read(&fs, "copied"),
        "from context\nfrom-stage\ndata.txt\n",
        "`..` is clamped at the context root"
    );
    assert!(!fs.join("mnt").exists() && !fs.join("from").exists() && !fs.join("up").exists());
    let out = p.build(
        "FROM bb:1\nRUN --mount=type=bind,source=escape,target=/x cat /x\n",
        "bind:2",
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("points outside its root"), "{err}");
}

#[test]
fn independent_stages_run_side_by_side() {
    let p = Project::new();
    // Stage a can only finish if stage b talks to it while it runs: proof of concurrency that
    // does not depend on timing. Both use the host's loopback (the default network).
    let port = 20000 + std::process::id() % 20000;
    let df = format!(
        "FROM bb:1 AS a\n\
         RUN timeout 60 nc -l -p {port} > /got\n\
         FROM bb:1 AS b\n\
         RUN for i in $(seq 1 200); do echo hello | nc 127.0.0.1 {port} && break; sleep 0.2; done > /sent\n\
         FROM a\n\
         RUN --mount=type=bind,from=b,target=/b test -f /b/sent && cat /got > /final\n"
    );
    p.build_ok(&df, "par:1");
    assert_eq!(read(&p.unpack("par:1"), "final"), "hello\n");
}

#[test]
fn cache_mounts_persist_across_builds_and_stay_out_of_layers() {
    let p = Project::new();
    let df = "FROM bb:1\n\
              RUN --mount=type=cache,target=/var/cache/thing,id=things,uid=33,mode=0750 \
                  echo run >> /var/cache/thing/log && wc -l < /var/cache/thing/log > /count \
                  && stat -c '%u %a' /var/cache/thing > /owner\n";
    p.build_ok(df, "cm:1");
    let out = p.build(df, "cm:1", &["--no-cache"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fs = p.unpack("cm:1");
    assert_eq!(
        read(&fs, "count").trim(),
        "2",
        "the second build saw the first one's file"
    );
    assert_eq!(read(&fs, "owner").trim(), "33 750");
    assert!(
        !fs.join("var/cache/thing").exists(),
        "a cache mount is never in a layer"
    );
}

#[test]
fn killed_during_layer_export_leaves_a_clean_store() {
    let p = Project::new();
    let ctx = p.dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    // Random data compresses slowly: the export takes long enough to be caught.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM bb:1\nRUN head -c 200000000 /dev/urandom > /big\n",
    )
    .unwrap();
    let mut child = p
        .rbuild(&["build", "-t", "x:1", ctx.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ingest = p.store().join("ingest");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let writing = || {
        std::fs::read_dir(&ingest).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.metadata().is_ok_and(|m| m.len() > 1_000_000))
        })
    };
    while !writing() {
        assert!(
            std::time::Instant::now() < deadline,
            "the export never started"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before its export was caught"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let store = images::Store::open(p.store()).unwrap();
    let problems = store.fsck().unwrap();
    assert!(problems.iter().all(|x| x.is_harmless()), "{problems:?}");
    assert!(
        store
            .resolve(&images::Reference::parse("x:1").unwrap())
            .is_err(),
        "nothing tagged"
    );
    assert!(!mounts_mention(&p.store()));
    p.build_ok("FROM bb:1\nRUN echo fine > /fine\n", "x:2");
}

#[test]
fn onbuild_triggers_run_in_the_child_and_are_not_inherited() {
    let p = Project::new();
    p.build_ok(
        "FROM bb:1\nONBUILD RUN echo triggered > /trig\nCMD [\"sh\"]\n",
        "parent:1",
    );
    let parent = p.image("parent:1").config;
    assert_eq!(parent.config.on_build, ["RUN echo triggered > /trig"]);
    assert!(
        !p.unpack("parent:1").join("trig").exists(),
        "a trigger waits for a child"
    );
    let out = p.build(
        "FROM parent:1\nRUN cat /trig > /seen\nENTRYPOINT [\"/bin/env\"]\n",
        "child:1",
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fs = p.unpack("child:1");
    assert_eq!(
        read(&fs, "seen"),
        "triggered\n",
        "the trigger ran before the child's own steps"
    );
    let child = p.image("child:1").config;
    assert!(
        child.config.on_build.is_empty(),
        "triggers are not inherited"
    );
    assert_eq!(
        child.config.cmd, None,
        "a new ENTRYPOINT drops the base's CMD"
    );
}

#[test]
fn user_names_shell_tmpfs_add_tar_and_maintainer() {
    let p = Project::new();
    let ctx = p.dir.path().join("ctx");
    std::fs::create_dir_all(ctx.join("payload/dir")).unwrap();
    std::fs::write(ctx.join("payload/dir/file.txt"), "inside the archive\n").unwrap();
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(ctx.join("payload"))
            .arg("-czf")
            .arg(ctx.join("app.tar.gz"))
            .arg("dir"),
    );
    let df = "FROM bb:1\n\
        MAINTAINER someone@example.com\n\
        RUN echo 'www:x:33:44:web:/var/www:/bin/sh' >> /etc/passwd && printf 'www:x:44:\\nextra:x:99:www\\n' > /etc/group && mkdir -p /var/www && chown 33:44 /var/www\n\
        USER www\n\
        RUN echo \"$(id -u) $(id -g) $(id -G) $HOME\" > /var/www/ids\n\
        USER root\n\
        SHELL [\"/bin/env\", \"VIA_SHELL=yes\", \"/bin/sh\", \"-c\"]\n\
        RUN echo $VIA_SHELL > /shell\n\
        RUN --mount=type=tmpfs,target=/scratch echo t > /scratch/f && cat /scratch/f > /tmpfs\n\
        ADD app.tar.gz /opt/\n";
    let out = p.build(df, "misc:1", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fs = p.unpack("misc:1");
    assert_eq!(
        read(&fs, "var/www/ids"),
        "33 44 44 99 /var/www\n",
        "USER by name: uid, gid, groups, HOME"
    );
    assert_eq!(read(&fs, "shell"), "yes\n", "SHELL runs shell-form RUN");
    assert_eq!(read(&fs, "tmpfs"), "t\n");
    assert!(
        !fs.join("scratch").exists(),
        "tmpfs mount points stay out of layers"
    );
    assert_eq!(
        read(&fs, "opt/dir/file.txt"),
        "inside the archive\n",
        "ADD extracts a local tar"
    );
    assert_eq!(
        p.image("misc:1").config.author.as_deref(),
        Some("someone@example.com")
    );
}

#[test]
fn copy_from_a_stage_and_from_an_image_keeps_owners() {
    let p = Project::new();
    let df = "FROM bb:1 AS build\n\
              RUN mkdir -p /out && echo built > /out/app && chown 7:8 /out/app && chmod 750 /out/app\n\
              FROM bb:1\n\
              COPY --from=build /out/app /usr/local/bin/app\n\
              COPY --from=0 /out /copied/\n\
              COPY --from=bb:1 /etc/passwd /passwd-from-image\n";
    p.build_ok(df, "cf:1");
    let fs = p.unpack("cf:1");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let app = std::fs::metadata(fs.join("usr/local/bin/app")).unwrap();
    assert_eq!(
        (app.uid(), app.gid(), app.permissions().mode() & 0o7777),
        (7, 8, 0o750),
        "--from keeps owners and modes"
    );
    assert_eq!(read(&fs, "copied/app"), "built\n");
    assert!(read(&fs, "passwd-from-image").starts_with("root:x:0:0"));
    let out = p.build("FROM bb:1\nRUN --security=insecure true\n", "sec:1", &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--security=insecure needs an entitlement")
    );
}
