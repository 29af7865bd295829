//! BuildKit's own parser test data (../shared/conformance/buildkit): every positive case must
//! dump exactly like BuildKit's `Node.Dump()`, every negative case must fail, and the line-span
//! file must give BuildKit's spans.

use builder::frontend::{self, Node};
use std::fs;
use std::path::PathBuf;

fn data_dir() -> PathBuf {
    std::env::var_os("RBUILD_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/buildkit")
        })
}

fn cases(dir: &str) -> Vec<PathBuf> {
    let dir = data_dir().join(dir);
    let mut cases: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    cases
}

fn dump(path: &std::path::Path) -> Result<String, String> {
    let source = fs::read_to_string(path.join("Dockerfile")).map_err(|e| e.to_string())?;
    let raw = frontend::parse("Dockerfile", &source).map_err(|e| e.to_string())?;
    Ok(raw
        .nodes
        .iter()
        .map(Node::dump)
        .collect::<Vec<_>>()
        .join("\n")
        + "\n")
}

#[test]
fn positive_cases_dump_like_buildkit() {
    let cases = cases("testfiles");
    assert_eq!(cases.len(), 33, "expected BuildKit's 33 positive cases");
    let mut failures = Vec::new();
    for case in &cases {
        let expected = fs::read_to_string(case.join("result")).unwrap();
        match dump(case) {
            Ok(got) if got == expected => {}
            Ok(got) => failures.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{got}",
                case.display()
            )),
            Err(e) => failures.push(format!("{}: error {e}", case.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn negative_cases_fail() {
    let cases = cases("testfiles-negative");
    assert_eq!(cases.len(), 4);
    for case in &cases {
        let source = fs::read_to_string(case.join("Dockerfile")).unwrap();
        let parsed = builder::frontend::parse_dockerfile("Dockerfile", &source);
        assert!(parsed.is_err(), "{} should fail to parse", case.display());
    }
}

#[test]
fn line_spans_match_buildkit() {
    let source = fs::read_to_string(data_dir().join("testfile-line/Dockerfile")).unwrap();
    let raw = frontend::parse("Dockerfile", &source).unwrap();
    let spans: Vec<(usize, usize)> = raw
        .nodes
        .iter()
        .map(|n| (n.span.start_line, n.span.end_line))
        .collect();
    assert_eq!(spans, [(5, 5), (11, 12), (17, 31)]);
}

/// The same data through the command line: `rbuild parse --format buildkit`.
#[test]
fn cli_dumps_like_buildkit() {
    for case in cases("testfiles") {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .args(["parse", "--format", "buildkit", "-f"])
            .arg(case.join("Dockerfile"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {:?}", case.display(), out);
        let expected = fs::read_to_string(case.join("result")).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            expected,
            "{}",
            case.display()
        );
    }
    for case in cases("testfiles-negative") {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .args(["parse", "--format", "buildkit", "-f"])
            .arg(case.join("Dockerfile"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{} must fail", case.display());
        assert!(!out.stderr.is_empty(), "{} must say why", case.display());
    }
}
