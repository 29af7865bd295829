//! OCI image model, the content store (an OCI image layout), references and archives.
//!
//! - [`mod@reference`]: Docker-style image references (`nginx` → `docker.io/library/nginx:latest`).
//! - [`model`]: the image config with Docker's extensions, media types, digests and the
//!   canonical JSON encoding that makes digests reproducible.
//! - [`store`]: the content store under `$RBUILD_ROOT`, a plain OCI image layout that skopeo
//!   and umoci read, safe against concurrent processes and crashes.
//! - [`archive`]: `docker save`-style tars (docker-archive and oci-archive).
//!
//! A typical build ends like this:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::io::Write;
//! use images::{ImageConfig, MediaType, Reference, Store};
//! let store = Store::open_default()?;
//! let mut w = store.blob_writer()?;          // the layers crate streams a gzip tar here
//! w.write_all(b"...")?;
//! let layer = w.commit(None)?.descriptor(MediaType::ImageLayerGzip);
//! let mut config = ImageConfig::default();
//! config.rootfs.diff_ids.push(images::sha256_digest(b"uncompressed tar"));
//! let tag = Reference::parse("myapp:1.0")?;
//! store.write_image(&config, &[layer], &[tag])?;
//! # Ok(()) }
//! ```

pub mod archive;
mod error;
pub mod model;
pub mod reference;
pub mod registry;
pub mod store;

pub use archive::Format;
pub use error::{Error, Result};
pub use model::{
    canonical_json, sha256_digest, ContainerConfig, HealthConfig, History, ImageConfig, Kind,
    RootFs,
};
pub use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest, MediaType};
pub use reference::{Reference, ReferenceError};
pub use store::{
    default_root, dir_size, BlobInfo, BlobWriter, GcCandidate, KindUsage, Problem, Store,
    StoredImage, Usage,
};
