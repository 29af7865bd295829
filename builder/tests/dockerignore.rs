//! `.dockerignore` as Docker reads it: moby's patternmatcher cases (table taken from
//! `patternmatcher_test.go`), the ignore-file syntax, which file a build uses, and the walk
//! of a context with exclusions and exceptions.

use builder::context::dockerignore::{self, DockerIgnore};
use builder::context::{Context, PatternMatcher, RootDir};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Want {
    Fail,
    /// Matches the path itself.
    Exact,
    /// Matches only through a parent directory.
    Inexact,
}
use Want::*;

/// moby/patternmatcher `TestMatches`: one pattern, one path.
const MATCHES: &[(&str, &str, Want)] = &[
    ("**", "file", Exact),
    ("**", "file/", Exact),
    ("**/", "file", Exact),
    ("**/", "file/", Exact),
    ("**", "/", Exact),
    ("**/", "/", Exact),
    ("**", "dir/file", Exact),
    ("**/", "dir/file", Exact),
    ("**", "dir/file/", Exact),
    ("**/", "dir/file/", Exact),
    ("**/**", "dir/file", Exact),
    ("**/**", "dir/file/", Exact),
    ("dir/**", "dir/file", Exact),
    ("dir/**", "dir/file/", Exact),
    ("dir/**", "dir/dir2/file", Exact),
    ("dir/**", "dir/dir2/file/", Exact),
    ("**/dir", "dir", Exact),
    ("**/dir", "dir/file", Inexact),
    ("**/dir2/*", "dir/dir2/file", Exact),
    ("**/dir2/*", "dir/dir2/file/", Inexact),
    ("**/dir2/**", "dir/dir2/dir3/file", Exact),
    ("**/dir2/**", "dir/dir2/dir3/file/", Exact),
    ("**file", "file", Exact),
    ("**file", "dir/file", Exact),
    ("**/file", "dir/file", Exact),
    ("**file", "dir/dir/file", Exact),
    ("**/file", "dir/dir/file", Exact),
    ("**/file*", "dir/dir/file", Exact),
    ("**/file*", "dir/dir/file.txt", Exact),
    ("**/file*txt", "dir/dir/file.txt", Exact),
    ("**/file*.txt", "dir/dir/file.txt", Exact),
    ("**/file*.txt*", "dir/dir/file.txt", Exact),
    ("**/**/*.txt", "dir/dir/file.txt", Exact),
    ("**/**/*.txt2", "dir/dir/file.txt", Fail),
    ("**/*.txt", "file.txt", Exact),
    ("**/**/*.txt", "file.txt", Exact),
    ("a**/*.txt", "a/file.txt", Exact),
    ("a**/*.txt", "a/dir/file.txt", Exact),
    ("a**/*.txt", "a/dir/dir/file.txt", Exact),
    ("a/*.txt", "a/dir/file.txt", Fail),
    ("a/*.txt", "a/file.txt", Exact),
    ("a/*.txt**", "a/file.txt", Exact),
    ("a[b-d]e", "ae", Fail),
    ("a[b-d]e", "ace", Exact),
    ("a[b-d]e", "aae", Fail),
    ("a[^b-d]e", "aze", Exact),
    (".*", ".foo", Exact),
    (".*", "foo", Fail),
    ("abc.def", "abcdef", Fail),
    ("abc.def", "abc.def", Exact),
    ("abc.def", "abcZdef", Fail),
    ("abc?def", "abcZdef", Exact),
    ("abc?def", "abcdef", Fail),
    ("**/foo/bar", "foo/bar", Exact),
    ("**/foo/bar", "dir/foo/bar", Exact),
    ("**/foo/bar", "dir/dir2/foo/bar", Exact),
    ("abc/**", "abc", Fail),
    ("abc/**", "abc/def", Exact),
    ("abc/**", "abc/def/ghi", Exact),
    ("**/.foo", ".foo", Exact),
    ("**/.foo", "bar.foo", Fail),
    ("a(b)c/def", "a(b)c/def", Exact),
    ("a(b)c/def", "a(b)c/xyz", Fail),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", Exact),
    (
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        Exact,
    ),
    (
        "dist/*.whl",
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        Exact,
    ),
    ("a\\\\", "a\\", Exact),
    ("a\\*b", "a*b", Exact),
];

/// moby/patternmatcher multi-pattern cases.
const MULTI: &[(&[&str], &str, bool)] = &[
    (&["**", "!util/docker/web"], "util/docker/web/foo", false),
    (
        &["**", "!util/docker/web", "util/docker/web/foo"],
        "util/docker/web/foo",
        true,
    ),
    (
        &[
            "**",
            "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        ],
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        false,
    ),
    (
        &["**", "!dist/*.whl"],
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        false,
    ),
    // The single-case tests at the top of patternmatcher_test.go.
    (&["*"], "fileutils.go", true),
    (&["*.go"], "fileutils.go", true),
    (&["!fileutils.go", "*.go"], "fileutils.go", true),
    (&["docs", "!docs/README.md"], "docs/README.md", false),
    (&["docs/", "!docs/README.md"], "docs/README.md", false),
    (&["docs/*", "!docs/README.md"], "docs/README.md", false),
    (&["*.go", "!fileutils.go"], "fileutils.go", false),
    (&["*.go"], ".", false),
    (&[], "/any/path/there", false),
];

fn matcher(patterns: &[&str]) -> PatternMatcher {
    PatternMatcher::new(patterns).unwrap_or_else(|e| panic!("{patterns:?}: {e}"))
}

/// Matches `path` the way fsutil's walk does: its parents first, their results handed down.
fn using_parent_results(pm: &PatternMatcher, path: &str) -> bool {
    let path = path.trim_end_matches('/');
    let mut info = Default::default();
    if let Some(slash) = path.rfind('/') {
        let dirs: Vec<&str> = path[..slash].split('/').collect();
        for i in 1..=dirs.len() {
            info = pm
                .matches_using_parent_results(&dirs[..i].join("/"), &info)
                .1;
        }
    }
    pm.matches_using_parent_results(path, &info).0
}

#[test]
fn moby_pattern_table() {
    assert!(MATCHES.len() + MULTI.len() >= 40);
    let mut failures = Vec::new();
    for &(pattern, text, want) in MATCHES {
        let pm = matcher(&[pattern]);
        let exact = pm.matches_exact(text);
        let parents = pm.matches_or_parent_matches(text);
        let walked = using_parent_results(&pm, text);
        let no_context = pm.matches_using_parent_results(text, &Default::default()).0;
        if exact != (want == Exact)
            || parents != (want != Fail)
            || walked != (want != Fail)
            || no_context != (want != Fail)
        {
            failures.push(format!(
                "{pattern:?} vs {text:?}: want {want:?}, exact={exact} parents={parents} walked={walked} no_context={no_context}"
            ));
        }
    }
    for &(patterns, text, want) in MULTI {
        let pm = matcher(patterns);
        let got = pm.matches_or_parent_matches(text);
        let walked = text == "." || using_parent_results(&pm, text);
        if got != want || (text != "." && walked != want) {
            failures.push(format!(
                "{patterns:?} vs {text:?}: want {want}, got {got}/{walked}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn pattern_errors_and_cleaning() {
    assert!(PatternMatcher::new(&["!"]).is_err());
    assert!(PatternMatcher::new(&["["]).is_err());
    assert!(PatternMatcher::new(&["a[b-"]).is_err());
    let pm = matcher(&["docs", "config", ""]);
    assert_eq!(pm.patterns().len(), 2);
    let pm = matcher(&["docs", "  !docs/README.md  "]);
    assert!(pm.has_exclusions());
    assert_eq!(pm.patterns()[1].as_str(), "docs/README.md");
    // filepath.Clean: "./a/b/../c/" is "a/c".
    let pm = matcher(&["./a/b/../c/"]);
    assert_eq!(pm.patterns()[0].as_str(), "a/c");
    assert!(pm.matches_or_parent_matches("a/c/d"));
}

#[test]
fn ignore_file_syntax() {
    let text = "\u{feff}# comment\n  \n*.log\n/abs/path\n./rel/\n!keep.log\n #not-a-comment\n! /inverted\n";
    assert_eq!(
        dockerignore::parse(text.as_bytes()),
        [
            "*.log",
            "abs/path",
            "rel",
            "!keep.log",
            "#not-a-comment",
            "!inverted"
        ]
    );
    let ig = DockerIgnore::from_patterns(dockerignore::parse(text.as_bytes()), None).unwrap();
    assert!(ig.is_excluded(Path::new("x.log"), false));
    assert!(!ig.is_excluded(Path::new("keep.log"), false));
    assert!(ig.is_excluded(Path::new("abs/path/deeper/file"), false));
    assert!(ig.is_excluded(Path::new("rel"), true));
    assert!(
        !ig.is_excluded(Path::new("sub/x.log"), false),
        "*.log is top-level only"
    );
    let bad = DockerIgnore::from_patterns(vec!["!".into()], Some("/ctx/.dockerignore".into()));
    let msg = bad.unwrap_err().to_string();
    assert!(msg.contains("/ctx/.dockerignore"), "{msg}");
}

fn write(path: &Path, text: &str) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, text).unwrap();
}

#[test]
fn dockerfile_ignore_file_takes_precedence() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path();
    write(&ctx.join(".dockerignore"), "a.txt\n");
    write(&ctx.join("nginx/Dockerfile"), "FROM scratch\n");
    write(&ctx.join("nginx/Dockerfile.dockerignore"), "b.txt\n");
    write(&ctx.join("Dockerfile"), "FROM scratch\n");

    let nginx = DockerIgnore::load(ctx, &ctx.join("nginx/Dockerfile")).unwrap();
    assert_eq!(nginx.patterns(), ["b.txt"]);
    assert_eq!(
        nginx.file(),
        Some(ctx.join("nginx/Dockerfile.dockerignore").as_path())
    );
    let root = DockerIgnore::load(ctx, &ctx.join("Dockerfile")).unwrap();
    assert_eq!(root.patterns(), ["a.txt"]);

    // An empty Dockerfile.dockerignore still wins: nothing is ignored.
    write(&ctx.join("nginx/Dockerfile.dockerignore"), "");
    let empty = DockerIgnore::load(ctx, &ctx.join("nginx/Dockerfile")).unwrap();
    assert!(empty.patterns().is_empty());

    // No file at all: no rules.
    let bare = tempfile::tempdir().unwrap();
    let none = DockerIgnore::load(bare.path(), &bare.path().join("Dockerfile")).unwrap();
    assert!(none.patterns().is_empty() && none.file().is_none());
}

#[test]
fn context_ignore_file_is_read_inside_the_context() {
    // A .dockerignore that is a symlink to a host file is resolved inside the context.
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    write(&tmp.path().join("host-ignore"), "everything\n");
    write(&ctx.join("inner-ignore"), "inner\n");
    fs::create_dir_all(&ctx).unwrap();
    symlink("/inner-ignore", ctx.join(".dockerignore")).unwrap();
    let ig = DockerIgnore::load(&ctx, &ctx.join("Dockerfile")).unwrap();
    assert_eq!(ig.patterns(), ["inner"]);
    fs::remove_file(ctx.join(".dockerignore")).unwrap();
    symlink("../host-ignore", ctx.join(".dockerignore")).unwrap();
    let ig = DockerIgnore::load(&ctx, &ctx.join("Dockerfile")).unwrap();
    assert!(
        ig.patterns().is_empty(),
        "../host-ignore clamps to /host-ignore in the context"
    );
}

#[test]
fn walk_skips_excluded_dirs_unless_an_exception_may_match_inside() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path();
    for f in [
        "Dockerfile",
        "app.log",
        "src/main.rs",
        "src/debug.log",
        "docs/README.md",
        "docs/guide.md",
        "docs/img/x.png",
        "node_modules/a/index.js",
        "keep/.git/HEAD",
        "zz/file",
    ] {
        write(&ctx.join(f), f);
    }
    symlink("/etc/shadow", ctx.join("zz/shadow-link")).unwrap();
    write(
        &ctx.join(".dockerignore"),
        "*.log\n**/*.log\ndocs\n!docs/README.md\nnode_modules\n**/.git\n",
    );
    let context = Context::open(ctx, &ctx.join("Dockerfile")).unwrap();
    let got: Vec<String> = context
        .entries()
        .unwrap()
        .iter()
        .map(|e| e.rel.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        got,
        [
            ".dockerignore",
            "Dockerfile",
            "docs",
            "docs/README.md",
            "keep",
            "src",
            "src/main.rs",
            "zz",
            "zz/file",
            "zz/shadow-link",
        ]
    );
    // The walk never follows the link: it is listed as a symlink.
    let link = context
        .entries()
        .unwrap()
        .into_iter()
        .find(|e| e.rel.ends_with("shadow-link"))
        .unwrap();
    assert_eq!(link.meta.mode & libc::S_IFMT, libc::S_IFLNK);

    // Without an exception, an excluded directory is not even opened.
    let no_exc = DockerIgnore::from_patterns(vec!["docs".into()], None).unwrap();
    assert!(!no_exc.may_include_inside(Path::new("docs")));
    let exc =
        DockerIgnore::from_patterns(vec!["docs".into(), "!docs/README.md".into()], None).unwrap();
    assert!(exc.may_include_inside(Path::new("docs")));
    assert!(!exc.may_include_inside(Path::new("node_modules")));
    let root = RootDir::open(ctx).unwrap();
    let walked = no_exc.walk(&root).unwrap();
    assert!(walked.iter().all(|e| !e.rel.starts_with("docs")));
}
