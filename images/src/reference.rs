//! Docker-style image references: parsing, normalization and the familiar (short) form.
//!
//! The grammar and the normalization rules follow Docker's (`distribution/reference`):
//!
//! ```text
//! reference := name [ ":" tag ] [ "@" digest ]
//! name      := [ domain "/" ] path
//! domain    := host [ ":" port ]         host: DNS name, IPv4, or [IPv6]
//! path      := component ( "/" component )*
//! component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag       := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! ```
//!
//! The first path element is a domain only if it contains `.` or `:`, is `localhost`, or has
//! upper-case letters; otherwise the image is on Docker Hub (`docker.io`), where a single-element
//! path gets the `library/` prefix. Without tag and digest the tag is `latest`.
//!
//! `nginx` → `docker.io/library/nginx:latest` (the [`Display`](std::fmt::Display) form), shown
//! back to users as `nginx:latest` ([`Reference::familiar`]).
//!
//! Written here rather than taken from a crate: it is small, and we want Docker's error wording
//! plus an example of a valid reference in every error.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::{Digest, DigestAlgorithm};

/// The registry that references without a domain point to.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The legacy name of Docker Hub, normalized to [`DEFAULT_DOMAIN`].
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// Namespace of Docker Hub's official images.
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The tag used when a reference has neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
/// Docker's limit on the length of `domain/path`.
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// A reference that could not be parsed, with the reason and examples of valid ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid reference format: {reason} in {input:?} (valid examples: \"nginx\", \"nginx:1.25\", \
     \"127.0.0.1:5000/wordpress:1.0\", \"debian@sha256:<64 hex digits>\")"
)]
pub struct ReferenceError {
    /// The text that was parsed.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A parsed and normalized image reference.
///
/// Always has a domain and a path; has a tag, a digest, or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalizes a reference the way `docker pull` does.
    ///
    /// ```
    /// use images::Reference;
    /// let r = Reference::parse("nginx").unwrap();
    /// assert_eq!(r.to_string(), "docker.io/library/nginx:latest");
    /// assert_eq!(r.familiar(), "nginx:latest");
    /// ```
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let err = |reason: &str| ReferenceError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(err("empty reference"));
        }
        if input.len() == 64 && input.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err(
                "cannot specify a 64-character hexadecimal string as a repository name \
                 (to use an image by digest, write NAME@sha256:HEX)",
            ));
        }

        // name [":" tag] ["@" digest]: the digest is after the only '@'.
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => (rest, Some(parse_digest(d).map_err(|r| err(&r))?)),
            None => (input, None),
        };

        // The domain is the first '/'-separated element, if it looks like one.
        let (domain, remainder) = match rest.split_once('/') {
            Some((first, remainder)) if looks_like_domain(first) => (Some(first), remainder),
            _ => (None, rest),
        };

        // The tag is after the last ':' of the path part (a port's ':' is in the domain).
        let (path, tag) = match remainder.rsplit_once(':') {
            Some((path, tag)) => {
                validate_tag(tag).map_err(|r| err(&r))?;
                (path, Some(tag.to_string()))
            }
            None => (remainder, None),
        };

        let domain = match domain {
            Some(d) => {
                validate_domain(d).map_err(|r| err(&r))?;
                if d == LEGACY_DEFAULT_DOMAIN {
                    DEFAULT_DOMAIN.to_string()
                } else {
                    d.to_string()
                }
            }
            None => DEFAULT_DOMAIN.to_string(),
        };

        if path.is_empty() {
            return Err(err("repository name is empty"));
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err("repository name must be lowercase"));
        }
        validate_path(path).map_err(|r| err(&r))?;

        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("{OFFICIAL_REPO_PREFIX}{path}")
        } else {
            path.to_string()
        };
        if domain.len() + 1 + path.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(err(&format!(
                "repository name must not be longer than {NAME_TOTAL_LENGTH_MAX} characters"
            )));
        }

        let tag = match (tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (tag, _) => tag,
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// The registry host (and port): `docker.io`, `127.0.0.1:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path inside the registry: `library/nginx`, `wordpress`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tag, if any (`latest` is filled in when there was neither tag nor digest).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The full repository name: `docker.io/library/nginx`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The repository name as Docker shows it: `nginx`, `bitnami/redis`,
    /// `127.0.0.1:5000/wordpress`.
    pub fn familiar_repository(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
                Some(short) if !short.contains('/') => short.to_string(),
                _ => self.path.clone(),
            }
        } else {
            self.repository()
        }
    }

    /// The short form Docker shows: `nginx:latest`, `127.0.0.1:5000/wordpress:1.0`,
    /// `debian@sha256:…`.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_repository();
        self.push_tag_digest(&mut s);
        s
    }

    /// The same repository with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        validate_tag(tag).map_err(|reason| ReferenceError {
            input: tag.to_string(),
            reason,
        })?;
        Ok(Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        })
    }

    /// The same repository pinned to `digest` (the tag is kept).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same reference without its digest (tag `latest` if it had no tag either).
    pub fn without_digest(&self) -> Self {
        Reference {
            tag: Some(self.tag.clone().unwrap_or_else(|| DEFAULT_TAG.to_string())),
            digest: None,
            ..self.clone()
        }
    }

    fn push_tag_digest(&self, s: &mut String) {
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            s.push('@');
            s.push_str(digest.as_ref());
        }
    }
}

/// The fully qualified form: `docker.io/library/nginx:latest`.
impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.repository();
        self.push_tag_digest(&mut s);
        f.write_str(&s)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

fn looks_like_domain(first: &str) -> bool {
    first.contains(['.', ':'])
        || first == "localhost"
        || first.bytes().any(|b| b.is_ascii_uppercase())
}

fn parse_digest(d: &str) -> Result<Digest, String> {
    let digest = Digest::from_str(d).map_err(|e| format!("invalid digest {d:?}: {e}"))?;
    if *digest.algorithm() != DigestAlgorithm::Sha256 {
        return Err(format!(
            "unsupported digest algorithm {} (only sha256 is supported)",
            digest.algorithm()
        ));
    }
    Ok(digest)
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let bytes = tag.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tag {tag:?} (a tag is 1 to 128 letters, digits, '_', '.' or '-', \
             not starting with '.' or '-')"
        ))
    }
}

fn validate_domain(domain: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid registry {domain:?}: {why}"));
    // [IPv6]:port or host:port
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return bad("unterminated '[' in IPv6 address");
        };
        if v6.is_empty()
            || !v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return bad("invalid IPv6 address");
        }
        match after {
            "" => return Ok(()),
            p => match p.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return bad("unexpected text after ']'"),
            },
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return bad("the port must be a number");
        }
    }
    if let Some(host) = host {
        for label in host.split('.') {
            let b = label.as_bytes();
            let ok = !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-');
            if !ok {
                return bad("host names are letters, digits and '-', separated by '.'");
            }
        }
    }
    Ok(())
}

fn validate_path(path: &str) -> Result<(), String> {
    for component in path.split('/') {
        if !valid_path_component(component) {
            return Err(format!(
                "invalid repository name component {component:?} (lowercase letters and \
                 digits, separated by '.', '_', '__' or '-')"
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or "-"+, followed by an alphanumeric.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }
    fn short(s: &str) -> String {
        Reference::parse(s).unwrap().familiar()
    }
    const HEX: &str = "6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b";

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(full("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(full("nginx:1.25"), "docker.io/library/nginx:1.25");
        assert_eq!(full("debian:bookworm"), "docker.io/library/debian:bookworm");
        assert_eq!(full("bitnami/redis"), "docker.io/bitnami/redis:latest");
        assert_eq!(full("docker.io/nginx"), "docker.io/library/nginx:latest");
        assert_eq!(
            full("index.docker.io/nginx"),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(
            full("127.0.0.1:5000/wordpress:1.0"),
            "127.0.0.1:5000/wordpress:1.0"
        );
        assert_eq!(full("localhost/app"), "localhost/app:latest");
        assert_eq!(full("localhost:5000/a/b/c:v1"), "localhost:5000/a/b/c:v1");
        assert_eq!(full("ghcr.io/org/img:2"), "ghcr.io/org/img:2");
        assert_eq!(full("[::1]:5000/x:y"), "[::1]:5000/x:y");
        assert_eq!(
            full(&format!("x@sha256:{HEX}")),
            format!("docker.io/library/x@sha256:{HEX}")
        );
        assert_eq!(
            full(&format!("x:1@sha256:{HEX}")),
            format!("docker.io/library/x:1@sha256:{HEX}")
        );
        assert_eq!(
            full("a_b__c.d-e---f"),
            "docker.io/library/a_b__c.d-e---f:latest"
        );
    }

    #[test]
    fn familiar_form() {
        assert_eq!(short("nginx"), "nginx:latest");
        assert_eq!(short("docker.io/library/nginx:1.25"), "nginx:1.25");
        assert_eq!(short("docker.io/bitnami/redis"), "bitnami/redis:latest");
        assert_eq!(short("docker.io/library/a/b"), "library/a/b:latest");
        assert_eq!(
            short("127.0.0.1:5000/wordpress:1.0"),
            "127.0.0.1:5000/wordpress:1.0"
        );
        assert_eq!(short(&format!("x@sha256:{HEX}")), format!("x@sha256:{HEX}"));
        let r = Reference::parse("127.0.0.1:5000/wordpress:1.0").unwrap();
        assert_eq!(r.domain(), "127.0.0.1:5000");
        assert_eq!(r.path(), "wordpress");
        assert_eq!(r.tag(), Some("1.0"));
        assert_eq!(r.familiar_repository(), "127.0.0.1:5000/wordpress");
        // The familiar form parses back to the same reference.
        for s in [
            "nginx",
            "bitnami/redis:7",
            "127.0.0.1:5000/wordpress:1.0",
            "localhost/x",
        ] {
            let r = Reference::parse(s).unwrap();
            assert_eq!(Reference::parse(&r.familiar()).unwrap(), r);
            assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
        }
    }

    #[test]
    fn rejects_invalid_with_clear_errors() {
        let cases = [
            ("", "empty"),
            ("Nginx", "lowercase"),
            ("nginx:", "invalid tag"),
            ("nginx:-x", "invalid tag"),
            ("nginx:a/b", "invalid"),
            ("nginx@sha256:abc", "invalid digest"),
            (&format!("nginx@md5:{HEX}"), "unsupported digest"),
            ("a//b", "component"),
            ("a..b", "component"),
            ("-a", "component"),
            ("a___b", "component"),
            ("host:port/x", "port must be a number"),
            ("my_host.com/x", "host names"),
            (HEX, "hexadecimal"),
            ("/nginx", "component"),
        ];
        for (input, want) in cases {
            let e = Reference::parse(input).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(want), "{input:?}: {msg}");
            assert!(msg.contains("valid examples"), "{msg}");
            assert!(msg.starts_with("invalid reference format"), "{msg}");
        }
        let long = format!("{}/x", "a".repeat(300));
        assert!(Reference::parse(&long).is_err());
        assert!(Reference::parse(&format!("x:{}", "t".repeat(129))).is_err());
    }

    #[test]
    fn with_tag_and_digest() {
        let r = Reference::parse("nginx:1.25").unwrap();
        assert_eq!(r.with_tag("2").unwrap().familiar(), "nginx:2");
        assert!(r.with_tag("bad tag").is_err());
        let d: Digest = format!("sha256:{HEX}").parse().unwrap();
        let pinned = r.with_digest(d.clone());
        assert_eq!(pinned.familiar(), format!("nginx:1.25@sha256:{HEX}"));
        assert_eq!(pinned.without_digest(), r);
        let by_digest = Reference::parse(&format!("nginx@{d}")).unwrap();
        assert_eq!(by_digest.tag(), None);
        assert_eq!(by_digest.without_digest().familiar(), "nginx:latest");
    }
}
