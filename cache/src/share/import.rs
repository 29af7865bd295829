//! Reading an export: [`Imported`] holds its records and fetches a layer when a build hits a
//! record that needs it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use images::registry::{self, BlobSource, RegistryOptions};
use images::{Descriptor, Digest, ImageManifest, MediaType, Reference, Store};

use super::format::{CacheConfig, CONFIG_MEDIA_TYPE, MAX_CONFIG};
use super::spec::{CacheFrom, Location};
use crate::error::{Error, Result};
use crate::key::CacheKey;
use crate::record::{LayerRef, Record};

/// Where the layers of an import come from.
#[derive(Debug)]
enum Origin {
    Registry {
        reference: Reference,
        opts: Box<RegistryOptions>,
        /// Opened at the first layer fetch and kept: one login for all of them.
        blobs: Mutex<Option<Arc<BlobSource>>>,
    },
    Local(Store),
}

/// The records of one `--cache-from`, and where to fetch their layers.
#[derive(Debug)]
pub struct Imported {
    location: Location,
    origin: Origin,
    records: HashMap<CacheKey, Record>,
    layers: usize,
    skipped: usize,
}

impl Imported {
    /// Fetches the export's manifest and config (no layer). A missing export is
    /// [`Error::NotFound`]-like (registry 404, no such directory or entry): callers treat
    /// every error here as "no cache", with a warning.
    pub fn open(from: &CacheFrom, opts: &RegistryOptions) -> Result<Imported> {
        let location = from.location.to_string();
        let store_err = |source| Error::Store {
            location: location.clone(),
            source: Box::new(source),
        };
        let (origin, manifest, config) = match &from.location {
            Location::Registry(reference) => {
                let artifact =
                    registry::fetch_artifact(reference, opts, MAX_CONFIG).map_err(|source| {
                        Error::Registry {
                            location: location.clone(),
                            source: Box::new(source),
                        }
                    })?;
                let origin = Origin::Registry {
                    reference: reference.clone(),
                    opts: Box::new(opts.clone()),
                    blobs: Mutex::new(None),
                };
                (origin, artifact.manifest, artifact.config)
            }
            Location::Local { dir, tag } => {
                // Opening a directory that is not a layout would create one: check first.
                if !dir.join("index.json").is_file() {
                    return Err(Error::Unusable {
                        location,
                        reason: "no OCI layout there (no index.json); write one with \
                                 --cache-to type=local,dest=DIR"
                            .into(),
                    });
                }
                let store = Store::open(dir).map_err(store_err)?;
                let desc = store
                    .find_ref_name(tag)
                    .map_err(store_err)?
                    .ok_or_else(|| Error::Unusable {
                        location: location.clone(),
                        reason: format!("its index.json has no entry named {tag:?}"),
                    })?;
                let manifest: ImageManifest = store.read_json(desc.digest()).map_err(store_err)?;
                if manifest.config().size() > MAX_CONFIG {
                    return Err(Error::Unusable {
                        location,
                        reason: format!("its config is {} bytes", manifest.config().size()),
                    });
                }
                let config = store
                    .read_blob(manifest.config().digest())
                    .map_err(store_err)?;
                (Origin::Local(store), manifest, config)
            }
        };
        Imported::from_parts(from.location.clone(), origin, &manifest, &config)
    }

    fn from_parts(
        location: Location,
        origin: Origin,
        manifest: &ImageManifest,
        config: &[u8],
    ) -> Result<Imported> {
        let unusable = |reason: String| Error::Unusable {
            location: location.to_string(),
            reason,
        };
        let config_type = manifest.config().media_type().to_string();
        if config_type != CONFIG_MEDIA_TYPE {
            return Err(unusable(format!(
                "it is not an rbuild cache export (its config is {config_type}); point \
                 --cache-from at what --cache-to wrote"
            )));
        }
        let config = CacheConfig::parse(config).map_err(unusable)?;
        // A record is usable only if the manifest lists its layer: the registry keeps the
        // blobs a manifest lists, and nothing else.
        let listed: HashSet<(String, u64)> = manifest
            .layers()
            .iter()
            .map(|l| (l.digest().to_string(), l.size()))
            .collect();
        let mut records = HashMap::new();
        let mut skipped = 0;
        for r in config.into_records() {
            let ok = r
                .layer
                .as_ref()
                .is_none_or(|l| listed.contains(&(l.digest.clone(), l.size)));
            if ok {
                records.insert(r.key, r);
            } else {
                skipped += 1;
            }
        }
        Ok(Imported {
            location,
            origin,
            records,
            layers: listed.len(),
            skipped,
        })
    }

    /// Where it came from.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Usable records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when it holds no usable record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Layers its manifest lists.
    pub fn layers(&self) -> usize {
        self.layers
    }

    /// Records left out because the manifest does not list their layer (a damaged or
    /// hand-edited export).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The record of `key`, if the export has one.
    pub fn get(&self, key: &CacheKey) -> Option<&Record> {
        self.records.get(key)
    }

    /// Puts `layer`'s blob into `store`, streamed and verified against its digest (nothing
    /// is left behind on failure). Returns the bytes fetched: 0 when the store had it.
    pub fn fetch_layer(&self, store: &Store, layer: &LayerRef) -> Result<u64> {
        let location = self.location.to_string();
        let digest: Digest = layer.digest.parse().map_err(|e| Error::Unusable {
            location: location.clone(),
            reason: format!("record layer digest {:?}: {e}", layer.digest),
        })?;
        if store.has_blob(&digest) {
            return Ok(0);
        }
        match &self.origin {
            Origin::Registry {
                reference,
                opts,
                blobs,
            } => {
                let blob = Descriptor::new(
                    MediaType::from(layer.media_type.as_str()),
                    layer.size,
                    digest,
                );
                let fetched = blob_source(blobs, reference, opts)
                    .and_then(|source| source.fetch(store, &blob));
                fetched.map_err(|source| Error::Registry {
                    location,
                    source: Box::new(source),
                })
            }
            Origin::Local(source) => source
                .get_blob(&digest)
                .and_then(|blob| store.put_reader(blob, Some(&digest)))
                .map(|info| info.size)
                .map_err(|source| Error::Store {
                    location,
                    source: Box::new(source),
                }),
        }
    }
}

/// The registry connection of an import, opened once; a failed open is not kept, so a
/// registry that comes back is used again.
fn blob_source(
    slot: &Mutex<Option<Arc<BlobSource>>>,
    reference: &Reference,
    opts: &RegistryOptions,
) -> registry::Result<Arc<BlobSource>> {
    let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(source) = slot.as_ref() {
        return Ok(source.clone());
    }
    let source = Arc::new(BlobSource::open(reference, opts)?);
    *slot = Some(source.clone());
    Ok(source)
}
