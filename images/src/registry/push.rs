//! Push: HEAD every blob, mount or upload what is missing (streamed from the blob files),
//! then the manifests.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, Stream, StreamExt, TryStreamExt};
use oci_client::errors::OciDistributionError;
use oci_client::RegistryOperation;
use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest};

use super::client::{oci_reference, Session};
use super::error::{Access, Error, Result, Target};
use super::{PushOptions, PushReport};
use crate::model::Kind;
use crate::reference::Reference;
use crate::store::Store;

/// HEAD requests are tiny: more of them in flight hides latency to remote registries.
const HEAD_CONCURRENCY: usize = 8;

/// A manifest or index to send: its descriptor and exact stored bytes.
struct ManifestToPush {
    desc: Descriptor,
    body: Vec<u8>,
}

/// Everything a push sends, read from the store before any request is made.
struct Plan {
    /// Platform manifests first, the tagged manifest or index last.
    manifests: Vec<ManifestToPush>,
    /// Configs and layers, each once.
    blobs: Vec<Descriptor>,
    /// Digest of the manifest or index the reference resolves to.
    top: Digest,
}

impl Plan {
    fn new(store: &Store, top: &Descriptor, what: &str) -> Result<Plan> {
        let mut plan = Plan {
            manifests: Vec::new(),
            blobs: Vec::new(),
            top: top.digest().clone(),
        };
        let mut seen = HashSet::new();
        plan.add(store, top, what, &mut seen, 0)?;
        Ok(plan)
    }

    fn add(
        &mut self,
        store: &Store,
        desc: &Descriptor,
        what: &str,
        seen: &mut HashSet<String>,
        depth: usize,
    ) -> Result<()> {
        let body = store.read_blob(desc.digest())?;
        let parse_err = |e: serde_json::Error| {
            Error::Store(crate::Error::json(format!("{what}: {}", desc.digest()), e))
        };
        match Kind::of(desc.media_type()) {
            Kind::Manifest => {
                let manifest: ImageManifest = serde_json::from_slice(&body).map_err(parse_err)?;
                for blob in std::iter::once(manifest.config()).chain(manifest.layers()) {
                    if seen.insert(blob.digest().to_string()) {
                        check_local_blob(store, blob)?;
                        self.blobs.push(blob.clone());
                    }
                }
            }
            // Nested indexes are legal but rare; a bound keeps a malformed store from
            // recursing forever.
            Kind::Index if depth < 4 => {
                let index: ImageIndex = serde_json::from_slice(&body).map_err(parse_err)?;
                for child in index.manifests() {
                    self.add(store, child, what, seen, depth + 1)?;
                }
            }
            _ => {
                return Err(Error::Store(crate::Error::InvalidImage {
                    what: what.to_string(),
                    reason: format!(
                        "cannot push {} of media type {}: not an image manifest or index",
                        desc.digest(),
                        desc.media_type()
                    ),
                }))
            }
        }
        self.manifests.push(ManifestToPush {
            desc: desc.clone(),
            body,
        });
        Ok(())
    }
}

/// The blob must be in the store with the size its descriptor says: the registry checks the
/// digest only after the whole upload, so catching a damaged store here saves the transfer.
fn check_local_blob(store: &Store, blob: &Descriptor) -> Result<()> {
    let path = store.blob_path(blob.digest())?;
    let meta = std::fs::metadata(&path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            crate::Error::BlobNotFound {
                digest: blob.digest().clone(),
                path: path.clone(),
            }
        } else {
            crate::Error::io("stat", &path, e)
        }
    })?;
    if meta.len() != blob.size() {
        return Err(Error::Store(crate::Error::InvalidImage {
            what: blob.digest().to_string(),
            reason: format!(
                "the blob is {} bytes in the store but its descriptor says {}; run `rbuild fsck`",
                meta.len(),
                blob.size()
            ),
        }));
    }
    Ok(())
}

enum Outcome {
    Skipped,
    Mounted,
    Uploaded(u64),
}

pub(super) fn push(store: &Store, reference: &Reference, opts: &PushOptions) -> Result<PushReport> {
    let top = store.resolve(reference)?;
    push_descriptor(store, &top, reference, opts)
}

pub(super) fn push_descriptor(
    store: &Store,
    top: &Descriptor,
    reference: &Reference,
    opts: &PushOptions,
) -> Result<PushReport> {
    let plan = Plan::new(store, top, &reference.familiar())?;
    let session = Session::open(reference, &opts.registry, Access::Push, opts.upload_mode)?;
    session.block_on(run(&session, store, reference, &plan, opts))
}

async fn run(
    session: &Session,
    store: &Store,
    reference: &Reference,
    plan: &Plan,
    opts: &PushOptions,
) -> Result<PushReport> {
    session.authenticate(RegistryOperation::Push).await?;

    // 1. What does the repository lack?
    let present: Vec<bool> = stream::iter(&plan.blobs)
        .map(|blob| blob_exists(session, blob))
        .buffered(HEAD_CONCURRENCY)
        .try_collect()
        .await?;
    let missing: Vec<&Descriptor> = plan
        .blobs
        .iter()
        .zip(&present)
        .filter(|(_, p)| !**p)
        .map(|(b, _)| b)
        .collect();

    // 2. Mount or upload it, a few blobs at a time.
    let sources = if opts.cross_repo_mount && !missing.is_empty() {
        mount_sources(store, reference)
    } else {
        BTreeMap::new()
    };
    let mut outcomes: Vec<Outcome> = present
        .iter()
        .filter(|p| **p)
        .map(|_| Outcome::Skipped)
        .collect();
    let sent: Vec<Outcome> = stream::iter(missing)
        .map(|blob| send_blob(session, store, blob, &sources, opts))
        .buffer_unordered(opts.max_concurrent_uploads.max(1))
        .try_collect()
        .await?;
    outcomes.extend(sent);

    // 3. Manifests, children before the index that lists them.
    let mut uploaded_manifests = 0;
    let mut manifest_bytes = 0;
    let last = plan.manifests.len().saturating_sub(1);
    for (i, m) in plan.manifests.iter().enumerate() {
        let digest = m.desc.digest().to_string();
        // The top one goes under the tag (by digest for a digest-only reference); platform
        // manifests of an index by digest.
        let oref = if i == last && reference.tag().is_some() {
            oci_reference(&reference.without_digest())
        } else if i == last {
            oci_reference(reference)
        } else {
            session.oref_digest(&digest)
        };
        if manifest_digest(session, &oref).await?.as_deref() == Some(digest.as_str()) {
            continue;
        }
        push_manifest(session, &oref, m).await?;
        uploaded_manifests += 1;
        manifest_bytes += m.body.len() as u64;
    }

    let mut report = PushReport {
        uploaded_blobs: 0,
        uploaded_bytes: manifest_bytes,
        skipped_blobs: 0,
        mounted_blobs: 0,
        uploaded_manifests,
        manifest_digest: plan.top.clone(),
    };
    for o in outcomes {
        match o {
            Outcome::Skipped => report.skipped_blobs += 1,
            Outcome::Mounted => report.mounted_blobs += 1,
            Outcome::Uploaded(n) => {
                report.uploaded_blobs += 1;
                report.uploaded_bytes += n;
            }
        }
    }
    Ok(report)
}

async fn blob_exists(session: &Session, blob: &Descriptor) -> Result<bool> {
    let ctx = session.ctx.with_target(Target::Blob(blob.digest().clone()));
    session
        .retry(|| async {
            session
                .client
                .blob_exists(&session.oref, blob.digest().as_ref())
                .await
                .map_err(|e| ctx.oci(e))
        })
        .await
}

/// The digest the registry has under `oref` (a tag or a digest), `None` if it has nothing.
async fn manifest_digest(
    session: &Session,
    oref: &oci_client::Reference,
) -> Result<Option<String>> {
    let name = oref.digest().or(oref.tag()).unwrap_or("latest").to_string();
    let ctx = session.ctx.with_target(Target::Manifest(name));
    let found = session
        .retry(|| async {
            session
                .client
                .fetch_manifest_digest(oref, &session.auth)
                .await
                .map_err(|e| ctx.oci(e))
        })
        .await;
    match found {
        Ok(d) => Ok(Some(d)),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn push_manifest(
    session: &Session,
    oref: &oci_client::Reference,
    m: &ManifestToPush,
) -> Result<()> {
    let name = oref.tag().or(oref.digest()).unwrap_or("latest").to_string();
    let ctx = session.ctx.with_target(Target::Manifest(name));
    let media_type = m.desc.media_type().to_string();
    session
        .retry(|| async {
            let content_type = media_type.parse().map_err(|_| {
                ctx.rejected(
                    None,
                    format!("media type {media_type:?} is not a valid header"),
                )
            })?;
            session
                .client
                .push_manifest_raw(oref, m.body.clone(), content_type)
                .await
                .map(|_| ())
                .map_err(|e| ctx.oci(e))
        })
        .await
}

/// Mounts `blob` from a repository known to hold it, else uploads it.
async fn send_blob(
    session: &Session,
    store: &Store,
    blob: &Descriptor,
    sources: &BTreeMap<String, Vec<String>>,
    opts: &PushOptions,
) -> Result<Outcome> {
    let digest = blob.digest().to_string();
    // A mount is an optimisation: any failure (the source lacks the blob, which the
    // registry answers with 202 and an upload session; no pull access to the source; ...)
    // falls back to an upload. Two candidates at most, so a stale store costs little.
    for source in sources.get(&digest).into_iter().flatten().take(2) {
        let from = oci_client::Reference::with_tag(
            session.oref.registry().to_string(),
            source.clone(),
            crate::reference::DEFAULT_TAG.to_string(),
        );
        if session
            .client
            .mount_blob(&session.oref, &from, &digest)
            .await
            .is_ok()
        {
            return Ok(Outcome::Mounted);
        }
    }
    upload(session, store, blob, opts.chunk_size).await?;
    Ok(Outcome::Uploaded(blob.size()))
}

async fn upload(session: &Session, store: &Store, blob: &Descriptor, chunk: usize) -> Result<()> {
    let ctx = session.ctx.with_target(Target::Blob(blob.digest().clone()));
    let path = store.blob_path(blob.digest())?;
    session
        .retry(|| async {
            let file = File::open(&path).map_err(|e| crate::Error::io("open", &path, e))?;
            // A read error inside the stream reaches us as an oci-client error; the slot
            // keeps the original so a disk problem is not mistaken for a network one.
            let local_error = Arc::new(Mutex::new(None));
            let body = file_stream(file, path.clone(), blob.size(), chunk, local_error.clone());
            let result = session
                .client
                .push_blob_stream(
                    &session.oref,
                    body,
                    blob.digest().as_ref(),
                    Some(blob.size()),
                )
                .await;
            if let Some(e) = local_error.lock().ok().and_then(|mut slot| slot.take()) {
                return Err(Error::Store(e));
            }
            result.map(|_| ()).map_err(|e| ctx.oci(e))
        })
        .await
}

/// The blob file as a stream of `chunk`-byte pieces, read on tokio's blocking pool. Exactly
/// `size` bytes are produced: a file that is shorter than its descriptor fails the upload.
fn file_stream(
    file: File,
    path: PathBuf,
    size: u64,
    chunk: usize,
    local_error: Arc<Mutex<Option<crate::Error>>>,
) -> impl Stream<Item = oci_client::errors::Result<bytes::Bytes>> + Send + 'static {
    let chunk = chunk.max(1) as u64;
    stream::try_unfold((file, 0u64), move |(mut file, offset)| {
        let path = path.clone();
        let local_error = local_error.clone();
        async move {
            if offset >= size {
                return Ok(None);
            }
            let want = chunk.min(size - offset) as usize;
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; want];
                file.read_exact(&mut buf).map(|()| (file, buf))
            })
            .await
            .map_err(io::Error::other)
            .and_then(|r| r);
            match read {
                Ok((file, buf)) => Ok(Some((
                    bytes::Bytes::from(buf),
                    (file, offset + want as u64),
                ))),
                Err(e) => {
                    let message = e.to_string();
                    if let Ok(mut slot) = local_error.lock() {
                        *slot = Some(crate::Error::io("read", path, e));
                    }
                    Err(OciDistributionError::GenericError(Some(message)))
                }
            }
        }
    })
}

/// For each blob, the repositories of the same registry that the local store has tagged
/// images from and whose images contain the blob: candidates for a cross-repository mount.
/// Best effort: unreadable entries are skipped.
fn mount_sources(store: &Store, reference: &Reference) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let Ok(refs) = store.list() else {
        return out;
    };
    for (r, desc) in refs {
        if r.domain() != reference.domain() || r.path() == reference.path() {
            continue;
        }
        let mut stack = vec![desc];
        let mut steps = 0;
        while let Some(d) = stack.pop() {
            steps += 1;
            if steps > 64 {
                break;
            }
            match Kind::of(d.media_type()) {
                Kind::Manifest | Kind::Index => {
                    if let Ok(children) = store.children(&d) {
                        stack.extend(children);
                    }
                }
                _ => {
                    let repos = out.entry(d.digest().to_string()).or_default();
                    if !repos.iter().any(|p| p == r.path()) {
                        repos.push(r.path().to_string());
                    }
                }
            }
        }
    }
    out
}
