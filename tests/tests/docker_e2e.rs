//! End to end with real parts (slow: mmdebstrap once, then cached): a Debian bookworm rootfs
//! imported by rbuild is accepted by skopeo and umoci straight from the store, and
//! `rbuild save | docker load` gives an image that `docker run` runs; so does an image built
//! on it with `apt-get install nginx-light`.

use rbuild_tests::{bookworm_rootfs, rbuild_bin, require_tool, run_ok, Docker};
use std::process::{Command, Stdio};

#[test]
fn imported_bookworm_runs_under_docker() {
    require_tool("skopeo", "skopeo");
    require_tool("umoci", "umoci");
    let rootfs = bookworm_rootfs();
    let dir = tempfile::Builder::new()
        .prefix("rbuild-e2e-")
        .tempdir()
        .unwrap();
    let store = dir.path().join("store");
    let rbuild = |args: &[&str]| {
        let mut cmd = Command::new(rbuild_bin());
        cmd.env("RBUILD_ROOT", &store).args(args);
        cmd
    };
    let name = "rbuild-e2e/debian:bookworm";
    run_ok(rbuild(&["import", rootfs.to_str().unwrap(), name]).stderr(Stdio::null()));

    // Other OCI tools read the store as it is.
    let oci_ref = format!("oci:{}:{name}", store.display());
    let inspect = run_ok(Command::new("skopeo").args(["inspect", &oci_ref]));
    let inspect: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 1, "{inspect}");
    assert_eq!(inspect["Os"], "linux");
    let bundle = dir.path().join("bundle");
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--image", &format!("{}:{name}", store.display())])
            .arg(&bundle),
    );
    let version = std::fs::read_to_string(bundle.join("rootfs/etc/debian_version")).unwrap();
    assert!(version.starts_with("12."), "{version}");

    // rbuild save | docker load, then run it.
    let docker = Docker::start();
    let mut save = rbuild(&["save", name])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut load = docker.cmd();
    load.arg("load").stdin(save.stdout.take().unwrap());
    let loaded = run_ok(&mut load);
    assert!(save.wait().unwrap().success(), "rbuild save failed");
    assert!(
        String::from_utf8_lossy(&loaded.stdout).contains(name),
        "{loaded:?}"
    );
    let run = run_ok(docker.cmd().args([
        "run",
        "--rm",
        "--network",
        "none",
        name,
        "cat",
        "/etc/debian_version",
    ]));
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(out.starts_with("12."), "docker run printed {out:?}");
    let cmd =
        run_ok(
            docker
                .cmd()
                .args(["image", "inspect", "--format", "{{json .Config.Cmd}}", name]),
        );
    assert_eq!(String::from_utf8_lossy(&cmd.stdout).trim(), r#"["bash"]"#);
    run_ok(docker.cmd().args(["rmi", name]));

    // A real Debian build on that base: apt-get over the host network, then docker run.
    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {name}\nRUN apt-get update && apt-get install -y --no-install-recommends nginx-light \
             && rm -rf /var/lib/apt/lists/*\nCMD [\"nginx\", \"-v\"]\n"
        ),
    )
    .unwrap();
    let archive = dir.path().join("nginx.tar");
    let out = format!("type=docker,dest={}", archive.display());
    let web = "rbuild-e2e/nginx:1";
    run_ok(&mut rbuild(&[
        "build",
        "--progress",
        "plain",
        "-t",
        web,
        "-o",
        &out,
        ctx.to_str().unwrap(),
    ]));
    run_ok(docker.cmd().arg("load").arg("-i").arg(&archive));
    let version = run_ok(docker.cmd().args(["run", "--rm", "--network", "none", web]));
    let text = String::from_utf8_lossy(&version.stderr);
    assert!(text.contains("nginx version: nginx/"), "{text}");
    run_ok(docker.cmd().args(["rmi", web]));
}
