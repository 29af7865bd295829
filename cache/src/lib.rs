//! rbuild's build cache: an unchanged rebuild should cost almost nothing, and a step that
//! runs should say why it was not a hit.
//!
//! - [`key`]: a [`CacheKey`] per step, sha256 over named, length-prefixed fields
//!   ([`KeyBuilder`]), plus the [`Inputs`] (name → short digest) that explain misses.
//! - [`record`]: the [`Cache`]: one crash-safe JSON [`Record`] per key, a slot index for "the
//!   same step in the previous build", LRU via file mtimes.
//! - [`explain`]: [`Miss`], why a step was not a hit, printed as `not cached: …`.
//! - [`checksum`]: [`Checksummer`], context file checksums with a stat index, so a cached
//!   build does not read unchanged files.
//! - [`gc`]: [`prune`] by size, age or everything; cache mount directories ([`mounts`]).
//! - [`steps`]: [`Cache::lock_step`], so that concurrent builds run an identical step once.
//! - [`share`]: `--cache-to` / `--cache-from`: records and their layers exported to a
//!   registry or an OCI layout directory, and imported as a second lookup source.
//!
//! Everything is plain files under one directory (`$RBUILD_ROOT/cache`), written by temp file
//! and rename, so it can be inspected with `ls` and `jq` and survives a `kill -9` at any point.
//!
//! How the builder uses it, per step:
//!
//! ```no_run
//! # fn main() -> Result<(), cache::Error> {
//! use cache::{key, Cache, KeyBuilder, Record};
//!
//! let cache = Cache::open("/var/lib/rbuild/cache")?;
//! let (k, inputs) = KeyBuilder::new("rbuild.step.v1")
//!     .field(key::PARENT, "sha256:…parent key…")
//!     .field(key::INSTRUCTION, "RUN make")
//!     .field(&key::arg("VERSION"), "1.2")
//!     .into_parts();
//! let slot = "Dockerfile#build#3";
//! match cache.lookup_for(slot, &k)? {
//!     Some(hit) => { /* reuse hit.layer */ }
//!     None => {
//!         println!("{}", cache.explain_miss(slot, &inputs)); // "not cached: build arg VERSION changed"
//!         // … run the step, store its layer blob, then:
//!         cache.record(Record::new(k, slot, inputs, None))?;
//!     }
//! }
//! # Ok(()) }
//! ```

mod digest;
mod error;
mod sys;

pub mod checksum;
pub mod explain;
pub mod gc;
pub mod key;
pub mod mounts;
pub mod record;
pub mod share;
pub mod steps;

pub use checksum::{hash_bytes, hash_reader, ChecksumStats, Checksummer, FileSum};
pub use error::{Error, Result};
pub use explain::{Change, Miss};
pub use gc::{prune, Policy, PruneReport};
pub use key::{CacheKey, Inputs, KeyBuilder};
pub use mounts::MountGuard;
pub use record::{Cache, LayerRef, Record, Warning};
pub use steps::StepLock;
