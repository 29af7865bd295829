//! Writing an export: to a registry (only the blobs it lacks) or to a local OCI layout.

use std::path::Path;

use images::registry::{self, PushOptions};
use images::{Descriptor, Digest, ImageManifest, MediaType, Store};

use super::format::{config_descriptor, CacheConfig};
use super::spec::{CacheTo, Location};
use crate::error::{Error, Result};
use crate::Record;

/// What [`export`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    /// Records exported.
    pub records: usize,
    /// Distinct layers they point at.
    pub layers: usize,
    /// Blobs (config and layers) sent: uploaded, cross-mounted or copied.
    pub sent_blobs: usize,
    /// Bytes sent (blobs and manifest).
    pub sent_bytes: u64,
    /// Blobs the destination already had.
    pub skipped_blobs: usize,
    /// Digest of the export's manifest.
    pub manifest: Digest,
}

/// Exports `records` (see [`select`](super::select)) and their layers, which must be in
/// `store`, to `to`. The manifest and config are written to `store` first (untagged: they
/// are small, and `rbuild prune` collects them), because a push sends blobs from the store.
pub fn export(
    store: &Store,
    records: &[Record],
    to: &CacheTo,
    opts: &PushOptions,
) -> Result<ExportReport> {
    let location = to.location.to_string();
    let unusable = |reason: String| Error::Unusable {
        location: location.clone(),
        reason,
    };
    let store_err = |source| Error::Store {
        location: location.clone(),
        source: Box::new(source),
    };
    let config = CacheConfig::new(records);
    let bytes = config.to_bytes();
    let config_desc = config_descriptor(&bytes);
    let manifest = config.manifest(config_desc.clone()).map_err(unusable)?;
    store
        .put_bytes(&bytes, Some(config_desc.digest()))
        .map_err(store_err)?;
    let manifest_desc = store
        .put_json(MediaType::ImageManifest, &manifest)
        .map_err(store_err)?;
    let mut report = ExportReport {
        records: config.records.len(),
        layers: manifest.layers().len(),
        sent_blobs: 0,
        sent_bytes: 0,
        skipped_blobs: 0,
        manifest: manifest_desc.digest().clone(),
    };
    match &to.location {
        Location::Registry(reference) => {
            let pushed = registry::push_manifest(store, &manifest_desc, reference, opts).map_err(
                |source| Error::Registry {
                    location: location.clone(),
                    source: Box::new(source),
                },
            )?;
            report.sent_blobs = pushed.uploaded_blobs + pushed.mounted_blobs;
            report.sent_bytes = pushed.uploaded_bytes;
            report.skipped_blobs = pushed.skipped_blobs;
        }
        Location::Local { dir, tag } => {
            to_local(store, &manifest, &manifest_desc, dir, tag, &mut report).map_err(store_err)?
        }
    }
    Ok(report)
}

/// Copies the blobs `dir` lacks (each verified against its digest and renamed into place),
/// then points the index entry `tag` at the manifest: the index is replaced in one rename,
/// so a kill leaves the previous export (plus some unreferenced blobs) or the new one.
fn to_local(
    store: &Store,
    manifest: &ImageManifest,
    manifest_desc: &Descriptor,
    dir: &Path,
    tag: &str,
    report: &mut ExportReport,
) -> images::Result<()> {
    let dest = Store::open(dir)?;
    for blob in std::iter::once(manifest.config()).chain(manifest.layers()) {
        if dest.has_blob(blob.digest()) {
            report.skipped_blobs += 1;
            continue;
        }
        let info = dest.put_reader(store.get_blob(blob.digest())?, Some(blob.digest()))?;
        report.sent_blobs += 1;
        report.sent_bytes += info.size;
    }
    let body = store.read_blob(manifest_desc.digest())?;
    dest.put_bytes(&body, Some(manifest_desc.digest()))?;
    report.sent_bytes += body.len() as u64;
    dest.set_ref_name(tag, manifest_desc)
}
