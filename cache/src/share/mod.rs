//! Sharing the build cache between machines: `--cache-to` exports the records a build used
//! and the layers they point at; `--cache-from` imports them as a second place to look up.
//!
//! - [`spec`]: the flag values, `type=registry,ref=R[,mode=min|max]` and
//!   `type=local,dest=DIR` / `src=DIR` ([`CacheTo`], [`CacheFrom`]), and which records a
//!   mode exports ([`select`]).
//! - [`format`]: what an export is: an OCI image manifest whose config (media type
//!   [`CONFIG_MEDIA_TYPE`]) lists the records in canonical JSON and whose layers are the
//!   distinct layer blobs they point at, with their own media types.
//! - [`export`](mod@export): writes that to a registry (through `images::registry`, only the blobs
//!   it lacks) or to a local OCI layout directory.
//! - [`import`](mod@import): [`Imported`]: fetches the manifest and config only; a layer is
//!   fetched when a build hits a record that needs it.
//!
//! # Why an image manifest
//!
//! Registries store OCI image manifests whatever their config's media type; an artifact
//! manifest type or an index of our own would be refused by older ones (distribution 2.8, as
//! Debian ships it, has no artifact support but keeps unknown config types and the
//! `artifactType` field as they are). Listing the layers in the manifest makes the registry
//! keep them (its garbage collector follows manifests), and lets a plain
//! `skopeo copy` move a cache between registries.
//!
//! # Why imported records are not written to the local cache wholesale
//!
//! A cache may hold thousands of records of which a build needs a few; writing them all
//! would make the local cache point at layers the store does not have. A record is written
//! locally when a build uses it, once its layer blob is in the store (the same rule as for
//! records of steps that ran), with its original `created` time: history times, and so the
//! image digest, are the exporting build's.

pub mod export;
pub mod format;
pub mod import;
pub mod spec;

pub use export::{export, ExportReport};
pub use format::{CacheConfig, SharedRecord, CONFIG_MEDIA_TYPE};
pub use import::Imported;
pub use spec::{select, CacheFrom, CacheTo, Location, Mode};
