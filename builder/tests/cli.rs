//! The command line as a user meets it: defaults, exit codes, messages.

use std::process::Command;

fn rbuild(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A project of its own for each test: the tests run in parallel threads of one process, and
/// a shared directory let one test read a Dockerfile while another was rewriting it.
fn project() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let nginx = dir.join("srcs/requirements/nginx");
    std::fs::create_dir_all(&nginx).unwrap();
    std::fs::write(nginx.join("Dockerfile"), "FROM debian\nRUN echo hi\n").unwrap();
    std::fs::write(dir.join("Dockerfile"), "FROM debian\nRUNN typo\n").unwrap();
    tmp
}

#[test]
fn build_forms_find_the_dockerfile_and_name_a_missing_base_image() {
    let tmp = project();
    let dir = tmp.path();
    let store = dir.join("store");
    for args in [
        &["-f", "srcs/requirements/nginx/Dockerfile"][..],
        &["build", "-f", "srcs/requirements/nginx/Dockerfile"][..],
        &["build", "srcs/requirements/nginx"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .current_dir(dir)
            .env("RBUILD_ROOT", &store)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("base image debian is neither in the local store nor pullable"),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("rbuild import - debian"),
            "the error says how to fix it: {err}"
        );
    }
}

#[test]
fn default_dockerfile_is_in_the_context_and_errors_point_at_it() {
    let tmp = project();
    let dir = tmp.path();
    let (code, _, err) = rbuild(dir, &[]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("Dockerfile:2:1: unknown instruction \"RUNN\" (did you mean \"RUN\"?)"),
        "{err}"
    );
    assert!(
        err.contains(" 2 | RUNN typo"),
        "the offending line is shown: {err}"
    );
}

#[test]
fn parse_reads_stdin_and_reports_missing_files() {
    let tmp = project();
    let dir = tmp.path();
    let (code, _, err) = rbuild(dir, &["parse", "-f", "nope/Dockerfile"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot read Dockerfile nope/Dockerfile"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .args(["parse", "--format", "buildkit", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"FROM a\nCMD [\"x\"]\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "(from \"a\")\n(cmd \"x\")\n"
    );
}

#[test]
fn build_arg_from_environment_like_docker() {
    let tmp = project();
    let dir = tmp.path();
    std::fs::write(
        dir.join("args.Dockerfile"),
        "FROM debian\nARG V\nLABEL v=$V\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .current_dir(dir)
        .env("V", "from-env")
        .args(["parse", "-f", "args.Dockerfile", "--build-arg", "V"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["stages"][0]["steps"][1]["instruction"]["pairs"][0]["value"],
        "from-env"
    );
}
