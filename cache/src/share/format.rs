//! What a cache export is: an OCI image manifest
//!
//! ```text
//! { "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
//!   "artifactType": "application/vnd.rbuild.cache.config.v1+json",
//!   "config": { "mediaType": "application/vnd.rbuild.cache.config.v1+json", … },
//!   "layers": [ the distinct layer blobs of the records, sorted by digest ] }
//! ```
//!
//! whose config is [`CacheConfig`] in canonical JSON (sorted keys, compact):
//!
//! ```text
//! { "records": [ { "created": 1700000000, "inputs": { "instruction": "…", … },
//!                  "key": "sha256:…", "layer": { "diff_id": …, "digest": …,
//!                  "media_type": …, "size": … } | null, "slot": "Dockerfile#build#3" }, … ],
//!   "version": 1 }
//! ```
//!
//! Records are sorted by key and carry no machine-local field (`last_used`), so exporting the
//! same records twice gives the same digests and a re-export pushes nothing but HEADs.
//! `artifactType` repeats the config type, as OCI 1.1 reads a manifest's artifact type when
//! the field is absent; old registries ignore it.

use std::collections::BTreeMap;

use images::{Descriptor, Digest, ImageManifest, MediaType};
use oci_spec::image::ImageManifestBuilder;
use serde::{Deserialize, Serialize};

use crate::key::{CacheKey, Inputs};
use crate::record::{LayerRef, Record};

/// Media type of the config blob, and the manifest's `artifactType`.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.rbuild.cache.config.v1+json";

/// The config's `version`: bumped when a reader of the old format would misread the new.
pub const FORMAT_VERSION: u32 = 1;

/// A config larger than this is refused on import (about 30,000 records).
pub const MAX_CONFIG: u64 = 16 << 20;

/// One record as exported: [`Record`] without its machine-local `last_used`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedRecord {
    /// The step's key.
    pub key: CacheKey,
    /// The layer the step made; `None` for an empty diff.
    pub layer: Option<LayerRef>,
    /// Digests of the step's inputs (to explain misses against it).
    pub inputs: Inputs,
    /// The exporting build's slot (informational: slots are per machine).
    pub slot: String,
    /// Unix seconds: becomes the step's history time, so it must travel unchanged.
    pub created: u64,
}

/// The config blob of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheConfig {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// Sorted by key, each key once.
    pub records: Vec<SharedRecord>,
}

impl CacheConfig {
    /// The config for `records` (any order; a repeated key keeps its first record).
    pub fn new(records: &[Record]) -> CacheConfig {
        let mut by_key: BTreeMap<CacheKey, SharedRecord> = BTreeMap::new();
        for r in records {
            by_key.entry(r.key).or_insert_with(|| SharedRecord {
                key: r.key,
                layer: r.layer.clone(),
                inputs: r.inputs.clone(),
                slot: r.slot.clone(),
                created: r.created,
            });
        }
        CacheConfig {
            version: FORMAT_VERSION,
            records: by_key.into_values().collect(),
        }
    }

    /// Canonical JSON: the same records give the same bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        images::canonical_json(self).expect("a cache config always encodes")
    }

    /// Reads a config; the error says what is wrong with it.
    pub fn parse(bytes: &[u8]) -> std::result::Result<CacheConfig, String> {
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let v: Version = serde_json::from_slice(bytes)
            .map_err(|e| format!("its config is not an rbuild cache config: {e}"))?;
        if v.version != FORMAT_VERSION {
            return Err(format!(
                "its config is format version {}, this rbuild reads version {FORMAT_VERSION}: \
                 export it again with this rbuild, or use the rbuild that made it",
                v.version
            ));
        }
        serde_json::from_slice(bytes).map_err(|e| format!("its config is damaged: {e}"))
    }

    /// The distinct layers the records point at, sorted by digest.
    pub fn layers(&self) -> std::result::Result<Vec<Descriptor>, String> {
        let mut out: BTreeMap<String, Descriptor> = BTreeMap::new();
        for layer in self.records.iter().filter_map(|r| r.layer.as_ref()) {
            if out.contains_key(&layer.digest) {
                continue;
            }
            let digest: Digest = layer
                .digest
                .parse()
                .map_err(|e| format!("record layer digest {:?}: {e}", layer.digest))?;
            out.insert(
                layer.digest.clone(),
                Descriptor::new(
                    MediaType::from(layer.media_type.as_str()),
                    layer.size,
                    digest,
                ),
            );
        }
        Ok(out.into_values().collect())
    }

    /// The manifest of an export whose config blob is `config`.
    pub fn manifest(&self, config: Descriptor) -> std::result::Result<ImageManifest, String> {
        ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .artifact_type(MediaType::from(CONFIG_MEDIA_TYPE))
            .config(config)
            .layers(self.layers()?)
            .build()
            .map_err(|e| format!("cannot build the cache manifest: {e}"))
    }

    /// The records, as the local cache stores them (`last_used` = `created`).
    pub fn into_records(self) -> impl Iterator<Item = Record> {
        self.records.into_iter().map(|r| Record {
            key: r.key,
            layer: r.layer,
            inputs: r.inputs,
            slot: r.slot,
            created: r.created,
            last_used: r.created,
        })
    }
}

/// The config's descriptor.
pub fn config_descriptor(bytes: &[u8]) -> Descriptor {
    Descriptor::new(
        MediaType::from(CONFIG_MEDIA_TYPE),
        bytes.len() as u64,
        images::sha256_digest(bytes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyBuilder;

    fn record(n: u8, layer: Option<u8>) -> Record {
        let (key, inputs) = KeyBuilder::new("test")
            .field("instruction", format!("RUN step {n}"))
            .into_parts();
        let mut r = Record::new(
            key,
            format!("Dockerfile#0#{n}"),
            inputs,
            layer.map(|l| LayerRef {
                digest: format!("sha256:{}", hex::encode([l; 32])),
                diff_id: format!("sha256:{}", hex::encode([l + 100; 32])),
                size: 100 + u64::from(l),
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            }),
        );
        r.created = 1_700_000_000 + u64::from(n);
        r.last_used = 42;
        r
    }

    #[test]
    fn round_trip_keeps_everything_but_last_used() {
        let records = vec![record(1, Some(7)), record(2, None), record(3, Some(7))];
        let config = CacheConfig::new(&records);
        let bytes = config.to_bytes();
        let back = CacheConfig::parse(&bytes).unwrap();
        assert_eq!(back, config);
        let mut imported: Vec<Record> = back.into_records().collect();
        imported.sort_by_key(|r| r.key);
        let mut expected: Vec<Record> = records
            .into_iter()
            .map(|mut r| {
                r.last_used = r.created;
                r
            })
            .collect();
        expected.sort_by_key(|r| r.key);
        assert_eq!(imported, expected, "created, inputs, layer and slot travel");
    }

    #[test]
    fn encoding_is_canonical_whatever_the_order() {
        let a = CacheConfig::new(&[record(1, Some(7)), record(2, None), record(1, Some(9))]);
        let b = CacheConfig::new(&[record(2, None), record(1, Some(7))]);
        assert_eq!(
            a.to_bytes(),
            b.to_bytes(),
            "sorted by key, first record of a key kept"
        );
        let text = String::from_utf8(a.to_bytes()).unwrap();
        assert!(text.starts_with(r#"{"records":[{"created":"#), "{text}");
        assert!(
            !text.contains("last_used") && !text.contains('\n'),
            "{text}"
        );
    }

    #[test]
    fn manifest_lists_each_layer_once_with_its_media_type() {
        let config = CacheConfig::new(&[record(1, Some(7)), record(2, None), record(3, Some(7))]);
        let bytes = config.to_bytes();
        let m = config.manifest(config_descriptor(&bytes)).unwrap();
        assert_eq!(m.layers().len(), 1);
        assert_eq!(m.layers()[0].size(), 107);
        assert_eq!(
            m.layers()[0].media_type(),
            &MediaType::ImageLayerGzip,
            "the layer's real media type"
        );
        assert_eq!(
            m.config().media_type().to_string(),
            CONFIG_MEDIA_TYPE,
            "our own config type"
        );
        let json = String::from_utf8(images::canonical_json(&m).unwrap()).unwrap();
        assert!(
            json.contains(r#""artifactType":"application/vnd.rbuild.cache.config.v1+json""#),
            "{json}"
        );
    }

    #[test]
    fn other_versions_and_garbage_are_refused_with_a_reason() {
        let e = CacheConfig::parse(br#"{"version":2,"records":[]}"#).unwrap_err();
        assert!(
            e.contains("version 2") && e.contains("export it again"),
            "{e}"
        );
        let e = CacheConfig::parse(b"{\"architecture\":\"amd64\"}").unwrap_err();
        assert!(e.contains("not an rbuild cache config"), "{e}");
        let e = CacheConfig::parse(br#"{"version":1,"records":[{"key":"x"}]}"#).unwrap_err();
        assert!(e.contains("damaged"), "{e}");
    }
}
