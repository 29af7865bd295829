//! Drives BuildKit's shell-lexer conformance data (`envVarTest`, `wordsTest`) through
//! `builder::frontend::shell`, following `shared/conformance/buildkit/README.md`
//! ("Shell lexer data"). Every failing case is reported at once.

use std::path::PathBuf;

use builder::frontend::shell::Lexer;

fn data_dir() -> PathBuf {
    match std::env::var_os("RBUILD_CONFORMANCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/conformance/buildkit"
        )),
    }
}

fn read(name: &str) -> String {
    let path = data_dir().join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

fn pair(name: &str, value: &str) -> (String, String) {
    (name.to_owned(), value.to_owned())
}

/// `TestShellParser4EnvVars`, Linux side: `A` and `U` lines through `process_word`.
#[test]
fn env_var_test() {
    let env = vec![
        pair("PWD", "/home"),
        pair("SHELL", "bash"),
        pair("KOREAN", "한국어"),
        pair("NULL", ""),
    ];
    let lexer = Lexer::new('\\');
    let mut failures = Vec::new();
    let (mut ran, mut errors_expected, mut windows_only) = (0, 0, 0);
    for (index, raw) in read("envVarTest").lines().enumerate() {
        let line_no = index + 1;
        if raw.starts_with('#') {
            continue;
        }
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        let [platform, source, expected] = fields[..] else {
            failures.push(format!("line {line_no}: malformed case {line:?}"));
            continue;
        };
        let (platform, source, expected) = (platform.trim(), source.trim(), expected.trim());
        match platform {
            "A" | "U" => {}
            "W" => {
                windows_only += 1;
                continue;
            }
            other => {
                failures.push(format!("line {line_no}: unknown platform {other:?}"));
                continue;
            }
        }
        ran += 1;
        let got = lexer.process_word(source, &env);
        if expected == "error" {
            errors_expected += 1;
            if let Ok(word) = got {
                failures.push(format!(
                    "line {line_no}: {source:?}: expected an error, got {word:?}"
                ));
            }
        } else {
            match got {
                Ok(word) if word == expected => {}
                Ok(word) => failures.push(format!(
                    "line {line_no}: {source:?}: expected {expected:?}, got {word:?}"
                )),
                Err(err) => failures.push(format!(
                    "line {line_no}: {source:?}: expected {expected:?}, got error: {err}"
                )),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} envVarTest cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // 230 cases in the file, 2 of them Windows-only; 36 expect an error.
    assert_eq!(windows_only, 2, "Windows-only cases skipped");
    assert_eq!(ran, 228, "envVarTest cases run");
    assert_eq!(errors_expected, 36, "envVarTest error cases run");
}

/// `TestShellParser4Words`, normal mode: `process_words` with a growing environment.
#[test]
fn words_test() {
    let lexer = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    let mut failures = Vec::new();
    let mut ran = 0;
    for (index, line) in read("wordsTest").lines().enumerate() {
        let line_no = index + 1;
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            // Like BuildKit's BuildEnvs: split at the first `=`, keep trailing spaces.
            let rest = rest.trim_start_matches(' ');
            env.push(match rest.split_once('=') {
                Some((name, value)) => pair(name, value),
                None => pair(rest, ""),
            });
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        let [input, expected] = fields[..] else {
            failures.push(format!("line {line_no}: malformed case {line:?}"));
            continue;
        };
        let input = input.trim();
        let expected: Vec<&str> = expected.trim_start_matches(' ').split(',').collect();
        ran += 1;
        let got = match lexer.process_words(input, &env) {
            Ok(words) => words,
            Err(_) => vec!["error".to_owned()],
        };
        if got != expected {
            failures.push(format!(
                "line {line_no}: {input:?}: expected {expected:?}, got {got:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} wordsTest cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(ran, 24, "wordsTest cases run");
}
