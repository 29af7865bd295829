//! The filesystem side of images: layer tars, overlay diffs, whiteouts, compression, snapshots.
//!
//! Data flow (see `DESIGN.md`):
//!
//! ```text
//! directory or overlay upper dir ──writer──▶ tar bytes ──compress::LayerWriter──▶ blob sink
//!                                                        (diffID, blob digest, size)
//! blob ──apply (detects gzip/zstd/plain)──▶ directory (Flatten) or snapshot (OverlayLower)
//! snapshots keyed by chain ID ──snapshot::Snapshotter::lower_dirs──▶ mount::mount_overlay
//! ```
//!
//! Modules:
//! - [`writer`]: deterministic layer tar from a directory, plain or overlay-upper mode.
//! - [`compress`]: compression and both digests in one streaming pass; decompression by magic.
//! - [`mod@apply`]: extract a layer into a directory without ever writing outside it.
//! - [`snapshot`]: extracted layers as directories keyed by OCI chain ID.
//! - [`mount`]: overlay mount and unmount for a build step.
//!
//! Everything here is Linux-only and uses real syscalls (through `rustix`).

pub mod apply;
pub mod compress;
pub mod mount;
mod pax;
mod reader;
mod resolve;
pub mod snapshot;
mod sys;
pub mod writer;
pub mod xattr;

pub use apply::{apply, ApplyError, ApplyMode, ApplyOptions, ApplyStats, Refusal};
pub use compress::{Compression, Detected, LayerDigests, LayerWriter};
pub use mount::{mount_overlay, mount_overlay_readonly, umount, umount_detach, MountError};
pub use snapshot::{chain_id, chain_ids, SnapshotError, Snapshotter, StepArea};
pub use writer::{write_layer, write_tar, SourceKind, TarOptions, WriteError};

/// The OCI types shared with the rest of the workspace.
pub use oci_spec::image::{Digest, MediaType};
