//! Cache keys: the documented encoding, stability, and collision resistance at boundaries.

use cache::key::{self, input_digest, CacheKey, KeyBuilder, INPUT_DIGEST_LEN};
use sha2::{Digest, Sha256};

/// The encoding as documented in `cache::key`, written out independently.
fn documented(domain: &str, fields: &[(&str, &[u8])]) -> String {
    let mut bytes = Vec::new();
    let mut lp = |x: &[u8]| {
        bytes.extend_from_slice(&(x.len() as u64).to_be_bytes());
        bytes.extend_from_slice(x);
    };
    lp(domain.as_bytes());
    for (name, value) in fields {
        lp(name.as_bytes());
        lp(value);
    }
    format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
}

fn build(domain: &str, fields: &[(&str, &[u8])]) -> CacheKey {
    let mut kb = KeyBuilder::new(domain);
    for (n, v) in fields {
        kb.push(n, v);
    }
    kb.finish()
}

const FIELDS: &[(&str, &[u8])] = &[
    (
        "parent",
        b"sha256:4ad4ae2e2b37b8b6f1d4c1e3a36cdab98f8d0b2b0d9e3f4b7f11bd5f7cc0ad71",
    ),
    (
        "instruction",
        b"RUN apt-get update && apt-get install -y nginx",
    ),
    ("arg:VERSION", b"1.25"),
    ("platform", b"linux/amd64"),
];

/// The expected value, fixed: if this changes, every existing cache entry is lost, so it must
/// only change together with the domain version. (Computed with Python's hashlib over the
/// same bytes, independently of this crate.)
const EXPECTED: &str = "sha256:16d2c4be0a0308a25ea82e587af4bdd64bf62ddb594a49c79cdbd42628714c13";

#[test]
fn key_is_the_documented_encoding() {
    let key = build("rbuild.step.v1", FIELDS);
    assert_eq!(key.to_string(), documented("rbuild.step.v1", FIELDS));
}

#[test]
fn key_is_a_fixed_value() {
    assert_eq!(build("rbuild.step.v1", FIELDS).to_string(), EXPECTED);
}

#[test]
fn key_is_stable_across_processes() {
    if std::env::var_os("CACHE_TEST_PRINT_KEY").is_some() {
        println!("KEY={}", build("rbuild.step.v1", FIELDS));
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "key_is_stable_across_processes", "--nocapture"])
        .env("CACHE_TEST_PRINT_KEY", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("KEY="))
        .unwrap_or_else(|| panic!("child printed no key: {stdout}"));
    assert_eq!(line, build("rbuild.step.v1", FIELDS).to_string());
}

#[test]
fn boundaries_and_order_matter() {
    let d = "rbuild.step.v1";
    let ab_c = build(d, &[("a", b"bc")]);
    assert_ne!(ab_c, build(d, &[("ab", b"c")]));
    assert_ne!(ab_c, build(d, &[("a", b"b"), ("c", b"")]));
    // Domain and first field name run together.
    assert_ne!(build("x", &[("yz", b"")]), build("xy", &[("z", b"")]));
    // Order of fields.
    assert_ne!(
        build(d, &[("a", b"1"), ("b", b"2")]),
        build(d, &[("b", b"2"), ("a", b"1")])
    );
    // An empty value is not the absence of the field.
    assert_ne!(build(d, &[("a", b"")]), build(d, &[]));
    // A value containing what looks like a length prefix.
    let mut tricky = b"x".to_vec();
    tricky.extend_from_slice(&1u64.to_be_bytes());
    tricky.extend_from_slice(b"y");
    assert_ne!(
        build(d, &[("a", &tricky)]),
        build(d, &[("a", b"x"), ("y", b"")])
    );
    // Another domain.
    assert_ne!(build(d, FIELDS), build("rbuild.step.v2", FIELDS));
}

#[test]
fn inputs_hold_short_digests_not_values() {
    let (k, inputs) = KeyBuilder::new("rbuild.step.v1")
        .field(key::PARENT, "p")
        .field(&key::arg("TOKEN"), "hunter2")
        .field(&key::file("conf/nginx.conf"), "sha256:00")
        .into_parts();
    assert_eq!(
        k,
        build(
            "rbuild.step.v1",
            &[
                ("parent", b"p"),
                ("arg:TOKEN", b"hunter2"),
                ("file:conf/nginx.conf", b"sha256:00")
            ]
        )
    );
    assert_eq!(
        inputs.keys().collect::<Vec<_>>(),
        ["arg:TOKEN", "file:conf/nginx.conf", "parent"]
    );
    let d = &inputs["arg:TOKEN"];
    assert_eq!(d.len(), INPUT_DIGEST_LEN);
    assert!(!d.contains("hunter2"));
    assert_eq!(
        d,
        &hex::encode(Sha256::digest(b"hunter2"))[..INPUT_DIGEST_LEN]
    );
    assert_eq!(d, &input_digest(b"hunter2"));
}

#[test]
fn text_and_json_forms() {
    let k = build("rbuild.step.v1", FIELDS);
    let s = k.to_string();
    assert_eq!(s.len(), 7 + 64);
    assert_eq!(s.parse::<CacheKey>().unwrap(), k);
    assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{s}\""));
    assert_eq!(
        serde_json::from_str::<CacheKey>(&format!("\"{s}\"")).unwrap(),
        k
    );
    for bad in [
        &s[7..],                                       // no prefix
        &s[..70],                                      // short
        &s.to_uppercase().replace("SHA256", "sha256"), // uppercase hex
        "sha512:00",
        "sha256:zz",
    ] {
        let err = bad.parse::<CacheKey>().unwrap_err();
        assert!(err.to_string().contains("invalid cache key"), "{err}");
    }
    assert!(serde_json::from_str::<CacheKey>("\"sha256:00\"").is_err());
}
