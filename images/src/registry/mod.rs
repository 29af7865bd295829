//! Registry client: push images from the store to an OCI distribution registry, and pull
//! them back.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use images::registry::{self, PullOptions, PushOptions};
//! use images::{Reference, Store};
//! let store = Store::open_default()?;
//! let r = Reference::parse("127.0.0.1:5000/nginx:1.0")?;
//! let pushed = registry::push(&store, &r, &PushOptions::default())?;
//! println!("{} bytes uploaded, manifest {}", pushed.uploaded_bytes, pushed.manifest_digest);
//! let pulled = registry::pull(&store, &r, &PullOptions::default())?;
//! # Ok(()) }
//! ```
//!
//! # How
//!
//! HTTP goes through the `oci-client` crate, whose API is async; the rest of rbuild is
//! synchronous, so each [`push`] or [`pull`] runs on a small current-thread tokio runtime of
//! its own and blocks until done. Concurrency (3 transfers at once by default) is
//! cooperative on that one thread; file reads and fsyncs go to tokio's blocking pool so they
//! never stall the transfers.
//!
//! - **Push** sends the exact bytes of the stored blobs, so digests match the local ones. It
//!   first asks the registry (HEAD) for every blob and sends only what is missing: a blob
//!   that another repository of the same registry holds (according to the local store's
//!   tags) is cross-mounted, else uploaded, streamed from the blob file 8 MiB at a time in
//!   one request ([`UploadMode`]).
//!   Manifests go last (an index after its platform manifests), and not at all when the tag
//!   already points at the same digest: pushing an already-pushed image is HEADs only.
//! - **Pull** fetches the manifest (an OCI index or Docker manifest list is resolved to this
//!   machine's platform, and only that platform's manifest is stored), then the config and
//!   layers the store lacks, each streamed into [`Store::blob_writer`] and committed against
//!   its expected digest; a blob that does not verify leaves nothing behind. The manifest is
//!   stored after its blobs and the tag is written last, so a ref never points at a partial
//!   image. OCI and Docker schema 2 media types are both accepted.
//!
//! # Transport, credentials, retries
//!
//! - Plain HTTP for loopback registries (127.0.0.0/8, `localhost`, `::1`) and for those listed
//!   (`host:port`, comma-separated) in `$RBUILD_INSECURE_REGISTRIES` or
//!   [`RegistryOptions::insecure_registries`]; HTTPS otherwise (see [`use_plain_http`]).
//! - Credentials from `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` (including
//!   credential helpers) through the `docker_credential` crate, since oci-client does not
//!   read it; anonymous when it has nothing for the registry.
//! - Connection errors, 5xx, 408 and 429 are retried ([`RetryPolicy`]: 3 tries, 0.5 s then
//!   1 s, at most 2 s between tries). A blob upload or download that fails is restarted from
//!   its first byte. Other 4xx fail at once with an [`Error`] naming the registry, the
//!   repository and the manifest or blob, and saying what to do.

mod client;
mod error;
mod pull;
mod push;

use std::time::Duration;

use oci_spec::image::{Descriptor, Digest, ImageManifest};

pub use client::{use_plain_http, Credentials, INSECURE_REGISTRIES_ENV};
pub use error::{Error, Location, Result, Target};

use crate::reference::Reference;
use crate::store::Store;

/// How many times, and how patiently, transient failures are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub tries: u32,
    /// Wait before the second attempt; doubled for each later one.
    pub initial_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
}

/// Settings shared by push and pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryOptions {
    /// Where credentials come from (default: the Docker config file).
    pub credentials: Credentials,
    /// Registries (`host:port`) to reach over plain HTTP, on top of the loopback ones and
    /// `$RBUILD_INSECURE_REGISTRIES`.
    pub insecure_registries: Vec<String>,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Limit on establishing a connection.
    pub connect_timeout: Duration,
    /// Limit on waiting for the next bytes of an answer.
    pub read_timeout: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            credentials: Credentials::default(),
            insecure_registries: Vec::new(),
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(120),
        }
    }
}

/// How a blob's bytes are sent. Both stream from the blob file, `chunk_size` bytes at a
/// time, and never hold a whole layer in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UploadMode {
    /// One `PUT ...?digest=` whose body is streamed: one request per blob. The default: on
    /// this machine against distribution 2.8 it pushed 256 MiB at about 300 MB/s, three
    /// times the chunked rate, with the same memory.
    #[default]
    Monolithic,
    /// `PATCH` requests of at most 4 MiB each (oci-client's fixed chunk size), then a `PUT`.
    /// For registries or proxies that refuse large request bodies.
    Chunked,
}

/// Options of [`push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOptions {
    /// Connection settings.
    pub registry: RegistryOptions,
    /// Blobs uploaded at the same time (at least 1).
    pub max_concurrent_uploads: usize,
    /// Bytes read from a blob file at a time; memory use is about twice this per upload.
    pub chunk_size: usize,
    /// One streamed request per blob, or 4 MiB chunks.
    pub upload_mode: UploadMode,
    /// Try a cross-repository mount before uploading a blob that another repository of the
    /// same registry is known (from the local tags) to hold.
    pub cross_repo_mount: bool,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            registry: RegistryOptions::default(),
            max_concurrent_uploads: 3,
            chunk_size: 8 << 20,
            upload_mode: UploadMode::default(),
            cross_repo_mount: true,
        }
    }
}

/// Options of [`pull`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullOptions {
    /// Connection settings.
    pub registry: RegistryOptions,
    /// Blobs downloaded at the same time (at least 1).
    pub max_concurrent_downloads: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            registry: RegistryOptions::default(),
            max_concurrent_downloads: 3,
        }
    }
}

/// What [`push`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// Blobs (configs and layers) uploaded.
    pub uploaded_blobs: usize,
    /// Bytes uploaded: blobs and manifests.
    pub uploaded_bytes: u64,
    /// Blobs the repository already had (found by HEAD).
    pub skipped_blobs: usize,
    /// Blobs cross-mounted from another repository of the registry (no data sent).
    pub mounted_blobs: usize,
    /// Manifests (and indexes) uploaded; 0 when the tag already pointed at this image.
    pub uploaded_manifests: usize,
    /// Digest of the manifest (or index) the tag now points to.
    pub manifest_digest: Digest,
}

/// What [`pull`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullReport {
    /// The stored manifest: for a multi-platform image, this machine's platform manifest.
    pub descriptor: Descriptor,
    /// Its digest (the same as `descriptor.digest()`).
    pub manifest_digest: Digest,
    /// The digest of the index or manifest list the tag pointed to, if it was one.
    pub index_digest: Option<Digest>,
    /// Blobs downloaded.
    pub downloaded_blobs: usize,
    /// Bytes downloaded (blobs and manifests).
    pub downloaded_bytes: u64,
    /// Blobs the store already had.
    pub skipped_blobs: usize,
    /// The local ref written, if the reference had a tag (a pull by digest tags nothing).
    pub tagged: Option<Reference>,
}

/// Pushes the image `reference` resolves to in `store` to the registry and repository the
/// reference names (`127.0.0.1:5000/nginx:1.0`), under its tag (or by digest only, for a
/// digest reference). A multi-platform index is pushed whole: its platform manifests, then
/// the index. Only what the registry lacks is sent. See the [module docs](self).
pub fn push(store: &Store, reference: &Reference, opts: &PushOptions) -> Result<PushReport> {
    push::push(store, reference, opts)
}

/// Pulls `reference` from its registry into `store` and tags it locally under the same name
/// (unless it is a digest reference). Blobs already in the store are not downloaded. See the
/// [module docs](self).
pub fn pull(store: &Store, reference: &Reference, opts: &PullOptions) -> Result<PullReport> {
    pull::pull(store, reference, opts)
}

/// Pushes a manifest that is in `store` (tagged or not, e.g. an artifact such as a build-cache
/// export) with its config and layers to `reference`, exactly as [`push`] pushes an image:
/// only missing blobs, the manifest last, under the reference's tag.
pub fn push_manifest(
    store: &Store,
    manifest: &Descriptor,
    reference: &Reference,
    opts: &PushOptions,
) -> Result<PushReport> {
    push::push_descriptor(store, manifest, reference, opts)
}

/// A manifest fetched with its config, but none of its layers (see [`fetch_artifact`]).
#[derive(Debug, Clone)]
pub struct Artifact {
    /// Digest of the manifest the reference resolved to.
    pub manifest_digest: Digest,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The config blob's bytes, verified against the manifest's config digest.
    pub config: Vec<u8>,
}

/// Fetches the manifest `reference` names and its config blob (at most `max_config` bytes),
/// into memory: for artifacts whose config describes which layers to fetch later with
/// [`fetch_blob`]. Whatever the config's media type; an index is refused.
pub fn fetch_artifact(
    reference: &Reference,
    opts: &RegistryOptions,
    max_config: u64,
) -> Result<Artifact> {
    pull::fetch_artifact(reference, opts, max_config)
}

/// One repository, logged in to once, for fetching blobs one at a time as they turn out to
/// be needed (a build importing a cache fetches a layer when a step hits): one handshake and
/// one connection pool for all of them. Can be shared between threads: concurrent fetches
/// take turns driving its runtime.
pub struct BlobSource {
    session: client::Session,
}

impl BlobSource {
    /// Connects to the registry of `repository` (its tag or digest is ignored) and logs in
    /// for pulling.
    pub fn open(repository: &Reference, opts: &RegistryOptions) -> Result<BlobSource> {
        Ok(BlobSource {
            session: pull::open_for_blobs(repository, opts)?,
        })
    }

    /// Fetches one blob into `store`, streamed and committed against the descriptor's digest:
    /// a failure leaves nothing behind. Returns the bytes downloaded, 0 when the store
    /// already had it.
    pub fn fetch(&self, store: &Store, blob: &Descriptor) -> Result<u64> {
        pull::fetch_blob(&self.session, store, blob)
    }
}

impl std::fmt::Debug for BlobSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BlobSource({}/{})",
            self.session.ctx.registry, self.session.ctx.repository
        )
    }
}
