//! The store commands as a user runs them, on a real store: import, list, tag, inspect,
//! history, save, rmi, du, fsck, and what a bad input or a kill leaves behind.

use rbuild_tests::{busybox_tar, run_ok, Scratch};
use std::path::Path;
use std::process::Command;

fn blobs(root: &Path) -> usize {
    std::fs::read_dir(root.join("blobs/sha256")).map_or(0, |d| d.count())
}

#[test]
fn import_list_tag_inspect_history_save_rmi() {
    let env = Scratch::new();
    let tar = busybox_tar(&env.work);
    let digest = env.ok(&["import", tar.to_str().unwrap(), "bb:1"]);
    assert!(digest.trim().starts_with("sha256:"), "{digest}");
    env.ok(&["tag", "bb:1", "127.0.0.1:5000/bb:2"]);
    let list = env.ok(&["images"]);
    assert!(
        list.contains("bb ") && list.contains("127.0.0.1:5000/bb"),
        "{list}"
    );

    let inspect: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", "bb:1"])).unwrap();
    let config = &inspect[0]["Config"];
    assert_eq!(
        config["config"]["Env"][0],
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
    assert!(
        config["config"].get("Cmd").is_none(),
        "no bash in busybox, so no CMD"
    );
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
    assert_eq!(inspect[0]["Digest"].as_str().unwrap(), digest.trim());
    assert!(env.ok(&["history", "bb:1"]).contains("rbuild import"));

    let saved = env.work.join("bb-save.tar");
    env.ok(&["save", "bb:1", "-o", saved.to_str().unwrap()]);
    let listing =
        String::from_utf8(run_ok(Command::new("tar").arg("tf").arg(&saved)).stdout).unwrap();
    assert!(
        listing.contains("manifest.json") && listing.contains("index.json"),
        "{listing}"
    );

    env.ok(&["rmi", "bb:1"]);
    assert_eq!(blobs(&env.root), 3, "the other tag still needs every blob");
    env.ok(&["rmi", "127.0.0.1:5000/bb:2"]);
    assert_eq!(blobs(&env.root), 0, "the last rmi frees the blobs");
    env.fails(&["inspect", "bb:1"]);
    assert!(env.ok(&["fsck"]).contains(": ok"));
}

#[test]
fn bad_input_leaves_nothing_and_explains() {
    let env = Scratch::new();
    let out = env.fails(&["import", "/no/such/file", "x:1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open /no/such/file"));
    // A tar whose entry climbs out of the root.
    let evil = env.work.join("evil.tar");
    let mut header = tar::Header::new_ustar();
    header.as_ustar_mut().unwrap().name[..9].copy_from_slice(b"../escape");
    header.set_size(4);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut data = header.as_bytes().to_vec();
    data.extend_from_slice(b"evil");
    data.resize(data.len() + 508 + 1024, 0);
    std::fs::write(&evil, data).unwrap();
    let out = env.fails(&["import", evil.to_str().unwrap(), "evil:1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot be used as a root filesystem") && err.contains(".."),
        "{err}"
    );
    assert_eq!(blobs(&env.root), 0, "the rejected layer is gone");
    assert!(!env.work.join("escape").exists() && !env.root.join("escape").exists());
    let out = env.fails(&["import", evil.to_str().unwrap(), "Not A Ref"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid reference format"));
    assert!(
        env.ok(&["images"]).lines().count() == 1,
        "no image was made"
    );
}

#[test]
fn fsck_finds_a_corrupt_blob() {
    let env = Scratch::new();
    let tar = busybox_tar(&env.work);
    env.ok(&["import", tar.to_str().unwrap(), "bb:1"]);
    let inspect: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", "bb:1"])).unwrap();
    let layer = inspect[0]["Manifest"]["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let path = env.root.join("blobs/sha256").join(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let out = env.fails(&["fsck"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&layer),
        "{out:?}"
    );
}

#[test]
fn killed_import_leaves_a_clean_store() {
    let env = Scratch::new();
    let tar = busybox_tar(&env.work);
    // Feed the import from a pipe that never ends, then kill it mid-layer.
    let mut child = env
        .rbuild(&["import", "-", "slow:1"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(&std::fs::read(&tar).unwrap()[..512 * 40])
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        child.kill().unwrap();
    }
    child.wait().unwrap();
    let fsck = env.ok(&["fsck"]);
    assert!(fsck.contains(": ok"), "{fsck}");
    assert_eq!(blobs(&env.root), 0, "no half blob");
    env.ok(&["import", tar.to_str().unwrap(), "slow:1"]);
    assert!(env.ok(&["fsck"]).contains(": ok"));
}
