//! The store is a real OCI image layout: skopeo and umoci read it.
//! These tests fail (not skip) when the tools are missing: `apt-get install skopeo umoci`.

use std::process::Command;

use crate::common::{require_tool, run_ok, temp_store, write_test_image};

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn skopeo_inspects_store_refs_by_familiar_name() {
    let skopeo = require_tool("skopeo");
    let (_d, store) = temp_store();
    let img = write_test_image(
        &store,
        b"hello from rbuild\n",
        &["hello", "127.0.0.1:5000/team/hello:1.0"],
    );
    write_test_image(&store, b"another\n", &["other:2"]);
    let root = store.root().display().to_string();

    for name in ["hello:latest", "127.0.0.1:5000/team/hello:1.0"] {
        let out = run_ok(Command::new(&skopeo).args(["inspect", &format!("oci:{root}:{name}")]));
        let v = json(&out);
        assert_eq!(v["Digest"], img.manifest.digest().to_string(), "{name}");
        assert_eq!(
            v["Layers"],
            serde_json::json!([img.layer.digest().to_string()])
        );
        assert_eq!(v["Os"], "linux");
        assert_eq!(v["Labels"]["org.example.test"], "yes");
    }

    // The raw config keeps Docker's extensions.
    let out = run_ok(Command::new(&skopeo).args([
        "inspect",
        "--config",
        "--raw",
        &format!("oci:{root}:hello:latest"),
    ]));
    let c = json(&out);
    assert_eq!(c["config"]["Healthcheck"]["Test"][0], "CMD-SHELL");
    assert_eq!(
        c["config"]["Healthcheck"]["StartInterval"],
        1_000_000_000i64
    );
    assert_eq!(c["config"]["Shell"], serde_json::json!(["/bin/sh", "-ec"]));
    assert_eq!(
        c["config"]["OnBuild"],
        serde_json::json!(["RUN echo child"])
    );
    assert_eq!(c["rootfs"]["diff_ids"][0], img.diff_id.to_string());

    // A ref that is not there is an error.
    let out = Command::new(&skopeo)
        .args(["inspect", &format!("oci:{root}:nope:latest")])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn umoci_lists_and_unpacks_store_images() {
    let umoci = require_tool("umoci");
    let (dir, store) = temp_store();
    let content = b"hello from rbuild\n";
    write_test_image(&store, content, &["hello"]);
    let root = store.root().display().to_string();

    let out = run_ok(Command::new(&umoci).args(["ls", "--layout", &root]));
    let tags = String::from_utf8_lossy(&out.stdout);
    assert!(
        tags.lines().any(|l| l.trim() == "hello:latest"),
        "umoci ls: {tags}"
    );

    let out = run_ok(Command::new(&umoci).args([
        "stat",
        "--json",
        "--image",
        &format!("{root}:hello:latest"),
    ]));
    let stat = json(&out);
    assert!(stat["history"].is_array(), "{stat}");

    let bundle = dir.path().join("bundle");
    let mut cmd = Command::new(&umoci);
    cmd.arg("unpack");
    if !nix::unistd::geteuid().is_root() {
        cmd.arg("--rootless");
    }
    cmd.args(["--image", &format!("{root}:hello:latest")])
        .arg(&bundle);
    run_ok(&mut cmd);
    assert_eq!(
        std::fs::read(bundle.join("rootfs/hello.txt")).unwrap(),
        content
    );
    let runtime: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        runtime["process"]["args"],
        serde_json::json!(["/bin/cat", "/hello.txt"])
    );
    // umoci only read the store: still healthy.
    assert!(store.fsck().unwrap().is_empty());
}
