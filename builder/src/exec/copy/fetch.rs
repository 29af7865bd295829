//! ADD of URLs: download, checksum, naming.

use super::CopyError;
use sha2::Digest as _;
use std::fs::File;
use std::io::{self, Read, Write};
use std::time::Duration;

/// A downloaded file, rewound, with what the destination needs.
pub struct Downloaded {
    pub file: File,
    pub name: String,
    pub mtime: Option<i64>,
}

/// Git sources as BuildKit's `dfgitutil` recognises them well enough to refuse them.
pub fn is_git(s: &str) -> bool {
    if s.starts_with("git@") || s.starts_with("git://") || s.starts_with("ssh://") {
        return true;
    }
    if !(s.starts_with("http://") || s.starts_with("https://")) {
        return false;
    }
    let no_frag = s.split('#').next().unwrap_or(s);
    let path = no_frag.split('?').next().unwrap_or(no_frag);
    path.ends_with(".git") || path.ends_with(".git/")
}

/// The file name BuildKit gives a download: the URL path's last segment (`path.Base`,
/// percent-decoded), or `__unnamed__`.
pub fn file_name(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("");
    let base = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let decoded = percent_decode(base);
    if decoded.is_empty() || decoded == "." || decoded == ".." || decoded.contains('/') {
        "__unnamed__".to_string()
    } else {
        decoded
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `algo:hex` for sha256, sha384 or sha512.
pub fn parse_checksum(s: &str) -> Result<(&str, &str), CopyError> {
    let bad = || {
        CopyError::Checksum(format!(
            "invalid checksum {s:?}: expected sha256:<64 hex digits> (or sha384:, sha512:)"
        ))
    };
    let (algo, hex) = s.split_once(':').ok_or_else(bad)?;
    let len = match algo {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(bad()),
    };
    if hex.len() != len
        || !hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(bad());
    }
    Ok((algo, hex))
}

enum Hasher {
    S256(sha2::Sha256),
    S384(sha2::Sha384),
    S512(sha2::Sha512),
}

impl Hasher {
    fn new(algo: &str) -> Self {
        match algo {
            "sha384" => Hasher::S384(sha2::Sha384::new()),
            "sha512" => Hasher::S512(sha2::Sha512::new()),
            _ => Hasher::S256(sha2::Sha256::new()),
        }
    }
    fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::S256(h) => h.update(b),
            Hasher::S384(h) => h.update(b),
            Hasher::S512(h) => h.update(b),
        }
    }
    fn hex(self) -> String {
        match self {
            Hasher::S256(h) => hex::encode(h.finalize()),
            Hasher::S384(h) => hex::encode(h.finalize()),
            Hasher::S512(h) => hex::encode(h.finalize()),
        }
    }
}

/// Downloads `url` into an unnamed temp file, checking `checksum` when given.
pub fn download(url: &str, checksum: Option<&str>) -> Result<Downloaded, CopyError> {
    let fail = |reason: String| CopyError::Download {
        url: url.to_string(),
        reason,
    };
    let expected = checksum.map(parse_checksum).transpose()?;
    let agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        // A stalled transfer fails instead of hanging the build.
        .timeout_per_read(Some(Duration::from_secs(120)))
        .user_agent("rbuild")
        .build()
        .new_agent();
    let response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let mtime = response
        .headers()
        .get("last-modified")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date);
    let mut body = response.into_body().into_reader();
    let mut file = tempfile::tempfile().map_err(|e| fail(format!("temp file: {e}")))?;
    let mut hasher = Hasher::new(expected.map(|(a, _)| a).unwrap_or("sha256"));
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(e.to_string())),
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|e| fail(format!("temp file: {e}")))?;
    }
    if let Some((algo, want)) = expected {
        let got = hasher.hex();
        if got != want {
            return Err(CopyError::ChecksumMismatch {
                url: url.to_string(),
                expected: format!("{algo}:{want}"),
                actual: format!("{algo}:{got}"),
            });
        }
    }
    use std::io::Seek;
    file.rewind().map_err(|e| fail(e.to_string()))?;
    Ok(Downloaded {
        file,
        name: file_name(url),
        mtime,
    })
}

/// RFC 7231 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form servers must send.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, mon, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: i64 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == mon)? as i64
        + 1;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = hms.as_slice() else {
        return None;
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_dates() {
        assert_eq!(
            file_name("https://x.org/a/b/file.tar.gz?x=1#f"),
            "file.tar.gz"
        );
        assert_eq!(file_name("https://x.org/dir/"), "dir");
        assert_eq!(file_name("https://x.org"), "__unnamed__");
        assert_eq!(file_name("https://x.org/a%20b"), "a b");
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("garbage"), None);
        assert!(is_git("https://github.com/moby/buildkit.git#v0.13"));
        assert!(is_git("git@github.com:moby/buildkit.git"));
        assert!(!is_git("https://example.com/file.tar.gz"));
    }
}
