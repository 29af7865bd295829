//! Pull: manifest (an index resolved to this platform), then config and layers streamed into
//! the store and verified, then the manifest, then the tag.

use std::io::Write;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use oci_client::RegistryOperation;
use oci_spec::image::{
    Arch, Descriptor, Digest, ImageIndex, ImageManifest, MediaType, Os, Platform, PlatformBuilder,
};

use super::client::Session;
use super::error::{Access, Error, Result, Target};
use super::{Artifact, PullOptions, PullReport, RegistryOptions, UploadMode};
use crate::model::{self, ImageConfig, Kind, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST};
use crate::reference::Reference;
use crate::store::{self, Store};

/// The manifest media types we ask for, OCI and Docker schema 2 (no schema 1).
const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// Manifests and indexes are small; a bigger answer is refused rather than kept in memory.
const MAX_MANIFEST: usize = 4 << 20;

pub(super) fn pull(store: &Store, reference: &Reference, opts: &PullOptions) -> Result<PullReport> {
    let session = Session::open(
        reference,
        &opts.registry,
        Access::Pull,
        UploadMode::default(),
    )?;
    session.block_on(run(&session, store, reference, opts))
}

async fn run(
    session: &Session,
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
) -> Result<PullReport> {
    session.authenticate(RegistryOperation::Pull).await?;
    let invalid = |reason: String| Error::InvalidImage {
        registry: session.ctx.registry.clone(),
        reference: reference.familiar(),
        reason,
    };

    // 1. The manifest, resolved to this platform.
    let top_name = match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, t) => t.unwrap_or(crate::reference::DEFAULT_TAG).to_string(),
    };
    let (mut body, mut digest) = fetch_manifest(session, &session.oref, &top_name).await?;
    let mut downloaded_bytes = body.len() as u64;
    let mut media_type = media_type_of(&body).map_err(&invalid)?;
    let mut index_digest = None;
    let mut platform = None;
    if Kind::of(&media_type) == Kind::Index {
        let index: ImageIndex = serde_json::from_slice(&body)
            .map_err(|e| invalid(format!("unreadable index {digest}: {e}")))?;
        let child = store::select_platform(&index, &reference.familiar()).map_err(|e| match e {
            crate::Error::InvalidImage { reason, .. } => invalid(reason),
            other => Error::Store(other),
        })?;
        index_digest = Some(digest);
        let child_name = child.digest().to_string();
        (body, digest) =
            fetch_manifest(session, &session.oref_digest(&child_name), &child_name).await?;
        if digest != *child.digest() {
            return Err(session
                .ctx
                .with_target(Target::Manifest(child_name))
                .digest_mismatch(child.digest().to_string(), digest.to_string()));
        }
        downloaded_bytes += body.len() as u64;
        media_type = media_type_of(&body).map_err(&invalid)?;
        platform = child.platform().clone();
    }
    if Kind::of(&media_type) != Kind::Manifest {
        return Err(invalid(format!(
            "{digest} has media type {media_type}, not an image manifest"
        )));
    }
    let manifest: ImageManifest = serde_json::from_slice(&body)
        .map_err(|e| invalid(format!("unreadable manifest {digest}: {e}")))?;
    if Kind::of(manifest.config().media_type()) != Kind::Config {
        return Err(invalid(format!(
            "config media type {} is not an image config: this is an artifact, not a \
             container image",
            manifest.config().media_type()
        )));
    }

    // 2. Config and layers the store lacks. Checked up front: the store only holds sha256.
    let blobs: Vec<&Descriptor> = std::iter::once(manifest.config())
        .chain(manifest.layers())
        .collect();
    for b in &blobs {
        model::sha256_hex(b.digest())?;
    }
    let mut wanted: Vec<&Descriptor> = Vec::new();
    let mut skipped_blobs = 0;
    for b in blobs {
        if store.has_blob(b.digest()) || wanted.iter().any(|w| w.digest() == b.digest()) {
            skipped_blobs += 1;
        } else {
            wanted.push(b);
        }
    }
    let sizes: Vec<u64> = stream::iter(&wanted)
        .map(|b| download(session, store, b))
        .buffer_unordered(opts.max_concurrent_downloads.max(1))
        .try_collect()
        .await?;
    downloaded_bytes += sizes.iter().sum::<u64>();

    // 3. The manifest, after everything it lists; then the tag, last.
    store.put_bytes(&body, Some(&digest))?;
    if platform.is_none() {
        // Best effort: the index entry usually says; otherwise the config does.
        platform = store
            .read_json::<ImageConfig>(manifest.config().digest())
            .ok()
            .and_then(|c| platform_of(&c));
    }
    let mut descriptor = Descriptor::new(media_type, body.len() as u64, digest.clone());
    descriptor.set_platform(platform);
    let tagged = if reference.digest().is_none() {
        store.tag(reference, &descriptor)?;
        Some(reference.clone())
    } else {
        None
    };
    Ok(PullReport {
        manifest_digest: digest,
        descriptor,
        index_digest,
        downloaded_blobs: sizes.len(),
        downloaded_bytes,
        skipped_blobs,
        tagged,
    })
}

/// GETs a manifest or index; the body is verified against the registry's digest header and
/// against the digest in `oref` (oci-client does both).
async fn fetch_manifest(
    session: &Session,
    oref: &oci_client::Reference,
    name: &str,
) -> Result<(Vec<u8>, Digest)> {
    let ctx = session.ctx.with_target(Target::Manifest(name.to_string()));
    let (body, digest) = session
        .retry(|| async {
            session
                .client
                .pull_manifest_raw(oref, &session.auth, ACCEPT)
                .await
                .map_err(|e| ctx.oci(e))
        })
        .await?;
    if body.len() > MAX_MANIFEST {
        return Err(ctx.rejected(
            None,
            format!("{} bytes is too large for a manifest", body.len()),
        ));
    }
    let digest: Digest = digest
        .parse()
        .map_err(|e| ctx.rejected(None, format!("bad manifest digest {digest:?}: {e}")))?;
    Ok((body.to_vec(), digest))
}

/// The media type a manifest declares, or the one its shape implies (the field is optional
/// in OCI documents).
fn media_type_of(body: &[u8]) -> std::result::Result<MediaType, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the manifest is not JSON: {e}"))?;
    if v.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1) {
        return Err(
            "it is a Docker schema 1 manifest, which rbuild does not support: push \
                    it again with a recent Docker or skopeo"
                .into(),
        );
    }
    Ok(match v.get("mediaType").and_then(|m| m.as_str()) {
        Some(m) => MediaType::from(m),
        None if v.get("manifests").is_some() => MediaType::ImageIndex,
        None if v.get("config").is_some() => MediaType::ImageManifest,
        None => return Err("the registry's answer is neither a manifest nor an index".into()),
    })
}

/// Streams one blob into the store and commits it against its digest. Returns its size.
async fn download(session: &Session, store: &Store, blob: &Descriptor) -> Result<u64> {
    let ctx = session.ctx.with_target(Target::Blob(blob.digest().clone()));
    session
        .retry(|| async {
            // Dropping the writer on any error below removes its temp file.
            let mut writer = store.blob_writer()?;
            receive(session, blob, &mut |piece| {
                writer
                    .write_all(piece)
                    .map_err(|e| crate::Error::io("write", writer.path(), e).into())
            })
            .await?;
            // commit() fsyncs: off the runtime thread, so other transfers go on meanwhile.
            let expected = blob.digest().clone();
            let committed = tokio::task::spawn_blocking(move || writer.commit(Some(&expected)))
                .await
                .map_err(|e| Error::Client(format!("blob writer task: {e}")))?;
            match committed {
                Ok(info) => Ok(info.size),
                Err(crate::Error::DigestMismatch {
                    expected, actual, ..
                }) => Err(ctx.digest_mismatch(expected.to_string(), actual.to_string())),
                Err(e) => Err(e.into()),
            }
        })
        .await
}

/// One GET of a blob, its bytes handed to `sink` as they arrive; never more than the
/// descriptor's size. The caller verifies the digest (and retries).
async fn receive(
    session: &Session,
    blob: &Descriptor,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let ctx = session.ctx.with_target(Target::Blob(blob.digest().clone()));
    let size = blob.size();
    let mut body = session
        .client
        .pull_blob_stream(&session.oref, blob.digest().as_ref())
        .await
        .map_err(|e| ctx.oci(e))?;
    if let Some(len) = body.content_length.filter(|len| *len != size) {
        return Err(ctx.rejected(
            None,
            format!("the registry sends {len} bytes but the manifest says {size}"),
        ));
    }
    let mut received = 0u64;
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|e| ctx.io(e))?;
        received += piece.len() as u64;
        // Never store more than the manifest promised, whatever the server sends.
        if received > size {
            return Err(ctx.rejected(
                None,
                format!("the registry sent more than the {size} bytes the manifest says"),
            ));
        }
        sink(&piece)?;
    }
    Ok(())
}

/// A small blob (a config), in memory, verified against its digest.
async fn fetch_small_blob(session: &Session, blob: &Descriptor) -> Result<Vec<u8>> {
    let ctx = session.ctx.with_target(Target::Blob(blob.digest().clone()));
    session
        .retry(|| async {
            let mut data = Vec::new();
            receive(session, blob, &mut |piece| {
                data.extend_from_slice(piece);
                Ok(())
            })
            .await?;
            let actual = model::sha256_digest(&data);
            if actual != *blob.digest() {
                return Err(ctx.digest_mismatch(blob.digest().to_string(), actual.to_string()));
            }
            Ok(data)
        })
        .await
}

pub(super) fn fetch_artifact(
    reference: &Reference,
    opts: &RegistryOptions,
    max_config: u64,
) -> Result<Artifact> {
    let session = Session::open(reference, opts, Access::Pull, UploadMode::default())?;
    session.block_on(async {
        session.authenticate(RegistryOperation::Pull).await?;
        let invalid = |reason: String| Error::InvalidImage {
            registry: session.ctx.registry.clone(),
            reference: reference.familiar(),
            reason,
        };
        let name = match (reference.digest(), reference.tag()) {
            (Some(d), _) => d.to_string(),
            (None, t) => t.unwrap_or(crate::reference::DEFAULT_TAG).to_string(),
        };
        let (body, digest) = fetch_manifest(&session, &session.oref, &name).await?;
        let media_type = media_type_of(&body).map_err(&invalid)?;
        if Kind::of(&media_type) != Kind::Manifest {
            return Err(invalid(format!(
                "{digest} has media type {media_type}, not a manifest"
            )));
        }
        let manifest: ImageManifest = serde_json::from_slice(&body)
            .map_err(|e| invalid(format!("unreadable manifest {digest}: {e}")))?;
        let config = manifest.config();
        model::sha256_hex(config.digest())?;
        if config.size() > max_config {
            return Err(invalid(format!(
                "its config {} is {} bytes, more than the {max_config} expected",
                config.digest(),
                config.size()
            )));
        }
        let config = fetch_small_blob(&session, config).await?;
        Ok(Artifact {
            manifest_digest: digest,
            manifest,
            config,
        })
    })
}

/// A session logged in for pulling, for [`super::BlobSource`].
pub(super) fn open_for_blobs(repository: &Reference, opts: &RegistryOptions) -> Result<Session> {
    let session = Session::open(repository, opts, Access::Pull, UploadMode::default())?;
    session.block_on(session.authenticate(RegistryOperation::Pull))?;
    Ok(session)
}

pub(super) fn fetch_blob(session: &Session, store: &Store, blob: &Descriptor) -> Result<u64> {
    model::sha256_hex(blob.digest())?;
    if store.has_blob(blob.digest()) {
        return Ok(0);
    }
    session.block_on(download(session, store, blob))
}

/// The platform an image config declares, for the ref's descriptor.
fn platform_of(c: &ImageConfig) -> Option<Platform> {
    let mut b = PlatformBuilder::default()
        .os(Os::from(c.os.as_str()))
        .architecture(Arch::from(c.architecture.as_str()));
    if let Some(v) = &c.variant {
        b = b.variant(v.clone());
    }
    b.build().ok()
}
