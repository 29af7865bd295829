//! Our own Dockerfile fixtures (`fixtures/dockerfiles/<case>/`): each case's `Dockerfile`,
//! optional `args` (extra command-line words, one per line), and `expected`: the exit code,
//! stdout and stderr of `rbuild parse -f Dockerfile [args]` run in the case's directory.
//! `RBUILD_BLESS=1 cargo test --test fixtures` rewrites `expected`; review the diff.

use std::fs;
use std::path::Path;
use std::process::Command;

fn run_case(dir: &Path) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.current_dir(dir).args(["parse", "-f", "Dockerfile"]);
    if let Ok(args) = fs::read_to_string(dir.join("args")) {
        cmd.args(args.lines().filter(|l| !l.is_empty()));
    }
    let out = cmd.output().expect("run rbuild");
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn fixtures_match_expected_output() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/dockerfiles");
    let bless = std::env::var_os("RBUILD_BLESS").is_some();
    let mut cases: Vec<_> = fs::read_dir(&root)
        .expect("fixtures/dockerfiles")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Dockerfile").exists())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 60,
        "expected at least 60 fixtures, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let got = run_case(case);
        let expected_path = case.join("expected");
        if bless {
            fs::write(&expected_path, &got).unwrap();
            continue;
        }
        match fs::read_to_string(&expected_path) {
            Ok(expected) if expected == got => {}
            Ok(expected) => failures.push(format!(
                "{}\n--- expected\n{expected}\n--- got\n{got}",
                case.display()
            )),
            Err(_) => failures.push(format!("{}: no `expected` file", case.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
