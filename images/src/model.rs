//! The image model: Docker's image config (OCI config plus Docker's extensions), media types,
//! digests, and the canonical JSON encoding every stored document goes through.
//!
//! Manifests, indexes and descriptors are `oci-spec` types ([`ImageManifest`],
//! [`ImageIndex`], [`Descriptor`]). The image *config* is our own [`ImageConfig`], because
//! `oci_spec::image::ImageConfiguration` has no place for Docker's `Healthcheck`, `OnBuild` and
//! `Shell`, which `docker inspect` must show after `docker load`. Its JSON field names are
//! exactly Docker's (the OCI config is Docker's v1.2 image JSON, so both agree).
//!
//! [`ImageManifest`]: oci_spec::image::ImageManifest
//! [`ImageIndex`]: oci_spec::image::ImageIndex

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use oci_spec::image::{Descriptor, Digest, MediaType, Sha256Digest};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// Docker's manifest media type, as found in images pulled from Docker Hub.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker's manifest list (multi-platform index) media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker's image config media type.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker's gzip layer media type.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Annotation holding the name a ref is looked up by (`oci:ROOT:NAME` in skopeo).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation holding when the ref was written or the image built (RFC 3339).
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
/// Annotation holding the fully qualified image name. containerd's key: `ctr import` and
/// `docker load` (25+, OCI layouts) read it, so one key serves the store and archives.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// The kind of document a media type names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A single-platform image manifest (OCI or Docker schema 2).
    Manifest,
    /// A multi-platform index (OCI index or Docker manifest list).
    Index,
    /// An image config.
    Config,
    /// A filesystem layer.
    Layer,
    /// Anything else (attestations, artifacts, ...).
    Other,
}

impl Kind {
    /// Classifies a media type.
    pub fn of(media_type: &MediaType) -> Kind {
        match media_type {
            MediaType::ImageManifest => Kind::Manifest,
            MediaType::ImageIndex => Kind::Index,
            MediaType::ImageConfig => Kind::Config,
            MediaType::ImageLayer
            | MediaType::ImageLayerGzip
            | MediaType::ImageLayerZstd
            | MediaType::ImageLayerNonDistributable
            | MediaType::ImageLayerNonDistributableGzip
            | MediaType::ImageLayerNonDistributableZstd => Kind::Layer,
            MediaType::Other(s) => match s.as_str() {
                DOCKER_MANIFEST => Kind::Manifest,
                DOCKER_MANIFEST_LIST => Kind::Index,
                DOCKER_CONFIG => Kind::Config,
                s if s.starts_with("application/vnd.docker.image.rootfs.") => Kind::Layer,
                _ => Kind::Other,
            },
            _ => Kind::Other,
        }
    }
}

/// `docker inspect`'s `Healthcheck`: how to check that a container is healthy.
///
/// Durations are integer nanoseconds (Go's `time.Duration`); zero means "inherit".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// `[]` inherit, `["NONE"]` disable, `["CMD", args…]`, `["CMD-SHELL", command]`.
    #[serde(
        rename = "Test",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub test: Vec<String>,
    /// Time between checks.
    #[serde(rename = "Interval", default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    /// Time before a check is considered hung.
    #[serde(rename = "Timeout", default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    /// Grace period before failures count.
    #[serde(rename = "StartPeriod", default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    /// Time between checks during the start period.
    #[serde(rename = "StartInterval", default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    /// Consecutive failures before unhealthy.
    #[serde(rename = "Retries", default, skip_serializing_if = "is_zero")]
    pub retries: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// The `config` object of an image config: defaults for running a container.
///
/// Docker's field names (`User`, `ExposedPorts`, …); maps are `BTreeMap` so that even the
/// in-memory order is deterministic. `OnBuild` is written even when empty (as `null`), the
/// way BuildKit writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// `USER`.
    #[serde(rename = "User", default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// `EXPOSE`: keys like `80/tcp`, values always `{}`.
    #[serde(
        rename = "ExposedPorts",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub exposed_ports: BTreeMap<String, EmptyObject>,
    /// `ENV`, as `KEY=value`.
    #[serde(
        rename = "Env",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<String>,
    /// `ENTRYPOINT`.
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `HEALTHCHECK`.
    #[serde(
        rename = "Healthcheck",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub healthcheck: Option<HealthConfig>,
    /// `VOLUME`: keys are paths, values always `{}`.
    #[serde(
        rename = "Volumes",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub volumes: BTreeMap<String, EmptyObject>,
    /// `WORKDIR`.
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub working_dir: String,
    /// `LABEL`.
    #[serde(
        rename = "Labels",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    /// `STOPSIGNAL`.
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub stop_signal: String,
    /// `ONBUILD` triggers, as Dockerfile lines. Written as `null` when empty, like BuildKit.
    #[serde(
        rename = "OnBuild",
        default,
        deserialize_with = "null_as_default",
        serialize_with = "empty_as_null"
    )]
    pub on_build: Vec<String>,
    /// `SHELL`.
    #[serde(
        rename = "Shell",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub shell: Vec<String>,
}

/// The `{}` values of `ExposedPorts` and `Volumes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyObject {}

/// `rootfs`: the layers' uncompressed digests (diff IDs), bottom first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// sha256 of each layer's uncompressed tar.
    #[serde(rename = "diff_ids", default, deserialize_with = "null_as_default")]
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".to_string(),
            diff_ids: Vec::new(),
        }
    }
}

/// One `history` entry: one Dockerfile step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// RFC 3339 time of the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The step, e.g. `RUN /bin/sh -c apt-get update # buildkit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Author, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Free text, e.g. `buildkit.dockerfile.v0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the step made no layer (ENV, CMD, ...).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// An image config (`application/vnd.oci.image.config.v1+json`), with Docker's extensions.
///
/// Fields we do not model (`container_config`, `docker_version`, … of classic-builder images)
/// are dropped when a config is parsed, as BuildKit does when it derives an image from a base.
/// Stored blobs themselves are never rewritten, so pulled images keep their exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// RFC 3339 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Author (`MAINTAINER`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture, Go's names: `amd64`, `arm64`, …
    pub architecture: String,
    /// CPU variant (`v8` for arm64, `v7` for arm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Operating system: `linux`.
    pub os: String,
    /// Run defaults.
    #[serde(default)]
    pub config: ContainerConfig,
    /// Layer diff IDs.
    #[serde(default)]
    pub rootfs: RootFs,
    /// One entry per step, including the steps that made no layer.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub history: Vec<History>,
}

impl Default for ImageConfig {
    /// An empty config for this machine's platform (`FROM scratch`).
    fn default() -> Self {
        let (os, architecture, variant) = host_platform();
        ImageConfig {
            created: None,
            author: None,
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
            os: os.to_string(),
            config: ContainerConfig::default(),
            rootfs: RootFs::default(),
            history: Vec::new(),
        }
    }
}

fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn empty_as_null<S: serde::Serializer>(v: &[String], s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.is_empty() {
        s.serialize_none()
    } else {
        v.serialize(s)
    }
}

/// This machine's platform in OCI terms: (`os`, `architecture`, `variant`).
pub fn host_platform() -> (&'static str, &'static str, Option<&'static str>) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    };
    let variant = match arch {
        "arm64" => Some("v8"),
        "arm" => Some("v7"),
        _ => None,
    };
    ("linux", arch, variant)
}

/// Encodes `value` as canonical JSON: object keys sorted (bytewise) at every level, no
/// insignificant whitespace.
///
/// Why: a blob's digest is its identity, so the same document must always give the same bytes.
/// `oci-spec` keeps annotations and labels in `HashMap`s, whose iteration order changes from
/// run to run. We go through `serde_json::Value` and sort every object explicitly with
/// `Value::sort_all_objects` rather than rely on `Value`'s map being a `BTreeMap`: that holds
/// only while no crate in the build turns on serde_json's `preserve_order` feature, and Cargo
/// unifies features across the whole workspace. This is the same approach as OLPC canonical
/// JSON without another dependency; we never encode floats, so number formatting is not an
/// issue. Struct fields are sorted too, so field declaration order does not matter.
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut v = serde_json::to_value(value).map_err(|e| Error::json("a document to store", e))?;
    v.sort_all_objects();
    serde_json::to_vec(&v).map_err(|e| Error::json("a document to store", e))
}

/// The sha256 digest of `data`.
pub fn sha256_digest(data: &[u8]) -> Digest {
    digest_from_sha256(Sha256::digest(data).into())
}

/// Wraps a finished sha256 hash as a [`Digest`].
pub fn digest_from_sha256(hash: [u8; 32]) -> Digest {
    // Hex of a 32-byte hash is always 64 lowercase hex characters: a valid sha256 digest.
    match hex::encode(hash).parse::<Sha256Digest>() {
        Ok(d) => d.into(),
        Err(e) => unreachable!("hex of a sha256 hash is a valid digest: {e}"),
    }
}

/// The hex part of a sha256 digest; an error for any other algorithm.
pub fn sha256_hex(digest: &Digest) -> Result<&str> {
    if *digest.algorithm() == oci_spec::image::DigestAlgorithm::Sha256 {
        Ok(digest.digest())
    } else {
        Err(Error::UnsupportedDigest {
            digest: digest.to_string(),
        })
    }
}

/// Builds a descriptor without optional fields.
pub fn descriptor(media_type: MediaType, digest: Digest, size: u64) -> Descriptor {
    Descriptor::new(media_type, size, digest)
}

/// Formats seconds since the epoch as RFC 3339 UTC (`2024-05-01T12:00:00Z`), the form
/// Docker and OCI use for `created`.
pub fn rfc3339_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Now, as RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    rfc3339_utc(secs)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_utc(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn canonical_sorts_nested_maps_and_is_compact() {
        let mut inner = HashMap::new();
        for k in ["zeta", "alpha", "mid", "Beta"] {
            inner.insert(k.to_string(), k.len());
        }
        let mut outer = HashMap::new();
        outer.insert("b".to_string(), inner.clone());
        outer.insert("a".to_string(), inner);
        let out = String::from_utf8(canonical_json(&outer).unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{"a":{"Beta":4,"alpha":5,"mid":3,"zeta":4},"b":{"Beta":4,"alpha":5,"mid":3,"zeta":4}}"#
        );
    }

    #[test]
    fn config_uses_docker_field_names() {
        let mut c = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            ..Default::default()
        };
        c.variant = None;
        c.config.healthcheck = Some(HealthConfig {
            test: vec!["CMD-SHELL".into(), "curl -f http://localhost/".into()],
            interval: 30_000_000_000,
            timeout: 5_000_000_000,
            start_period: 1_000_000_000,
            start_interval: 2_000_000_000,
            retries: 3,
        });
        c.config.shell = vec!["/bin/bash".into(), "-c".into()];
        c.config
            .exposed_ports
            .insert("80/tcp".into(), EmptyObject {});
        c.config.cmd = Some(vec!["nginx".into()]);
        c.rootfs.diff_ids.push(sha256_digest(b""));
        c.history.push(History {
            created_by: Some("CMD [\"nginx\"]".into()),
            empty_layer: true,
            ..Default::default()
        });
        let v: serde_json::Value = serde_json::from_slice(&canonical_json(&c).unwrap()).unwrap();
        let hc = &v["config"]["Healthcheck"];
        assert_eq!(hc["Test"][0], "CMD-SHELL");
        assert_eq!(hc["Interval"], 30_000_000_000i64);
        assert_eq!(hc["StartPeriod"], 1_000_000_000i64);
        assert_eq!(hc["StartInterval"], 2_000_000_000i64);
        assert_eq!(hc["Retries"], 3);
        assert_eq!(v["config"]["Shell"][1], "-c");
        assert!(v["config"]["OnBuild"].is_null());
        assert!(v["config"].as_object().unwrap().contains_key("OnBuild"));
        assert_eq!(v["config"]["ExposedPorts"]["80/tcp"], serde_json::json!({}));
        assert_eq!(v["rootfs"]["type"], "layers");
        assert_eq!(v["history"][0]["empty_layer"], true);
        assert!(v.get("variant").is_none());
        // Round trip, including `null`s as other tools write them.
        let back: ImageConfig = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
        let loose: ImageConfig = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","config":{"OnBuild":null,"Env":["A=1"],
                "Hostname":"x"},"rootfs":{"type":"layers","diff_ids":null},"container":"abc"}"#,
        )
        .unwrap();
        assert_eq!(loose.config.env, vec!["A=1"]);
    }

    #[test]
    fn kinds() {
        assert_eq!(Kind::of(&MediaType::ImageManifest), Kind::Manifest);
        assert_eq!(
            Kind::of(&MediaType::Other(DOCKER_LAYER_GZIP.into())),
            Kind::Layer
        );
        assert_eq!(
            Kind::of(&MediaType::Other(DOCKER_MANIFEST_LIST.into())),
            Kind::Index
        );
        assert_eq!(Kind::of(&MediaType::ImageLayerZstd), Kind::Layer);
    }
}
