//! The content store: a plain OCI image layout on disk, shared by concurrent rbuild processes.
//!
//! ```text
//! ROOT/oci-layout            {"imageLayoutVersion":"1.0.0"}
//! ROOT/index.json            one manifest descriptor per tag (see "Refs" below)
//! ROOT/blobs/sha256/<hex>    content, named by its sha256
//! ROOT/ingest/               blobs and index.json being written (same filesystem)
//! ROOT/index.lock            flock(2) taken around every read-modify-write of index.json
//! ```
//!
//! skopeo (`oci:ROOT:nginx:latest`), umoci (`--image ROOT:nginx:latest`) and crane read it as is.
//! Other crates keep their own directories under the same root ([`Store::root`]).
//!
//! # Crash safety
//!
//! A process may be killed at any instant; what it leaves is always consistent:
//!
//! - A blob is written to a temp file in `ingest/`, hashed while written, verified, fsynced,
//!   renamed to `blobs/sha256/<hex>`, and the directory fsynced. Readers never see half a
//!   blob; a killed writer leaves only an orphan temp file (harmless: [`Store::fsck`] reports
//!   it, [`Store::clean_ingest`] removes it). Each temp file is `flock`ed by its writer while it
//!   is open, which is how cleaning tells an orphan from a live write.
//! - Order: layers, then the config, then the manifest, and only then `index.json`. So no ref
//!   ever points at a manifest whose content is not all there.
//! - `index.json` is replaced atomically (temp file, fsync, rename, fsync the directory),
//!   under an exclusive `flock` on `index.lock` held from read to rename, so two processes
//!   tagging at once never lose each other's tags. The kernel drops the lock when a holder dies.
//!
//! # Refs
//!
//! Each tag is one descriptor in `index.json`, annotated with
//! - `org.opencontainers.image.ref.name`: the *familiar* name, `nginx:latest` or
//!   `127.0.0.1:5000/wordpress:1.0`. skopeo and umoci split `oci:ROOT:REF` at the first `:`
//!   after the path and compare the rest with this annotation verbatim, so this is the form a
//!   user types (`skopeo inspect oci:/var/lib/rbuild:nginx:latest`). Both forms pass the OCI
//!   ref-name grammar.
//! - `io.containerd.image.name`: the fully qualified name, `docker.io/library/nginx:latest`,
//!   which is what we match on (containerd's key, also read by `docker load` of OCI layouts).
//! - `org.opencontainers.image.created`: when the ref was written (the image's `created` for
//!   [`Store::write_image`]).
//!
//! Entries written by other tools with only a ref name are understood too: the name is parsed
//! and normalized like any reference.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::{
    Arch, Descriptor, Digest, ImageIndex, ImageIndexBuilder, ImageManifest, ImageManifestBuilder,
    MediaType, Os, PlatformBuilder,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::model::{
    self, canonical_json, digest_from_sha256, sha256_hex, ImageConfig, Kind, ANNOTATION_CREATED,
    ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME,
};
use crate::reference::Reference;

const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const INDEX_FILE: &str = "index.json";
const LOCK_FILE: &str = "index.lock";
const BLOBS_DIR: &str = "blobs/sha256";
const INGEST_DIR: &str = "ingest";
/// Manifests, indexes and configs are small; refusing to slurp anything bigger keeps a
/// mislabelled layer from being read into memory.
const MAX_JSON_BLOB: u64 = 32 << 20;
const COPY_BUF: usize = 1 << 20;

/// Where the store lives when the caller does not say: `$RBUILD_ROOT`, else `/var/lib/rbuild`
/// for root, else `$XDG_DATA_HOME/rbuild`, else `~/.local/share/rbuild`.
pub fn default_root() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(root) = env("RBUILD_ROOT") {
        return root;
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/rbuild");
    }
    if let Some(xdg) = env("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        return xdg.join("rbuild");
    }
    match env("HOME") {
        Some(home) => home.join(".local/share/rbuild"),
        // No home at all (a bare service account): still somewhere private and writable-ish.
        None => std::env::temp_dir().join(format!("rbuild-{}", nix::unistd::geteuid())),
    }
}

/// A blob's address and size: what [`BlobWriter::commit`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobInfo {
    /// `sha256:<hex>` of the content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
}

impl BlobInfo {
    /// A descriptor for this blob with the given media type.
    pub fn descriptor(&self, media_type: MediaType) -> Descriptor {
        Descriptor::new(media_type, self.size, self.digest.clone())
    }
}

/// An image read back from the store: its manifest descriptor, manifest and config.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// Descriptor of the (platform) manifest.
    pub descriptor: Descriptor,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The config.
    pub config: ImageConfig,
}

impl StoredImage {
    /// The image ID, as Docker shows it: the config's digest.
    pub fn id(&self) -> &Digest {
        self.manifest.config().digest()
    }

    /// Bytes the image takes in the store (manifest, config and compressed layers; layers
    /// shared with other images are counted here too).
    pub fn size(&self) -> u64 {
        self.descriptor.size()
            + self.manifest.config().size()
            + self.manifest.layers().iter().map(|l| l.size()).sum::<u64>()
    }
}

/// Something [`Store::fsck`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A blob's content does not hash to its name.
    CorruptBlob {
        /// The blob's name.
        digest: Digest,
        /// What its content hashes to.
        actual: Digest,
        /// Its path.
        path: PathBuf,
    },
    /// A ref (or an image it points to) refers to a blob that is missing.
    DanglingRef {
        /// The ref, familiar form (or the manifest digest for unnamed entries).
        reference: String,
        /// The missing blob.
        missing: Digest,
        /// What the missing blob is.
        kind: Kind,
    },
    /// A manifest, index or config exists but cannot be parsed.
    UnreadableBlob {
        /// The ref it belongs to.
        reference: String,
        /// The blob.
        digest: Digest,
        /// The parse error.
        error: String,
    },
    /// `index.json` is missing or invalid.
    BadIndex {
        /// What is wrong.
        error: String,
    },
    /// A file in `blobs/` that is not named like a sha256 blob. Harmless.
    StrayFile {
        /// Its path.
        path: PathBuf,
    },
    /// A temp file left by a writer that died. Harmless: nothing refers to it.
    LeftoverIngest {
        /// Its path.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
}

impl Problem {
    /// True for findings that need no repair (they only waste space).
    pub fn is_harmless(&self) -> bool {
        matches!(
            self,
            Problem::StrayFile { .. } | Problem::LeftoverIngest { .. }
        )
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::CorruptBlob {
                digest,
                actual,
                path,
            } => write!(
                f,
                "corrupt blob {digest} ({}): content hashes to {actual}; delete it and pull or \
                 rebuild the images that use it",
                path.display()
            ),
            Problem::DanglingRef {
                reference,
                missing,
                kind,
            } => write!(
                f,
                "{reference}: {} {missing} is missing; pull or rebuild the image, or `rbuild rmi \
                 {reference}`",
                kind_name(*kind)
            ),
            Problem::UnreadableBlob {
                reference,
                digest,
                error,
            } => write!(
                f,
                "{reference}: cannot parse {digest}: {error}; pull or rebuild the image"
            ),
            Problem::BadIndex { error } => write!(
                f,
                "index.json: {error}; the refs are lost but blobs are intact: re-tag or rebuild"
            ),
            Problem::StrayFile { path } => write!(
                f,
                "stray file {} (harmless, not a blob; may be deleted)",
                path.display()
            ),
            Problem::LeftoverIngest { path, size } => write!(
                f,
                "leftover temp file {} ({size} bytes) from an interrupted write (harmless; \
                 removed by cleanup)",
                path.display()
            ),
        }
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Manifest => "manifest",
        Kind::Index => "index",
        Kind::Config => "config",
        Kind::Layer => "layer",
        Kind::Other => "blob",
    }
}

/// Count and bytes of one kind of blob.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindUsage {
    /// Number of blobs.
    pub count: u64,
    /// Their total size in bytes.
    pub bytes: u64,
}

impl KindUsage {
    fn add(&mut self, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
    }
}

/// Disk usage of the store's blobs, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// All blobs.
    pub total: KindUsage,
    /// Manifests and indexes reachable from a ref.
    pub manifests: KindUsage,
    /// Image configs reachable from a ref.
    pub configs: KindUsage,
    /// Layers reachable from a ref.
    pub layers: KindUsage,
    /// Reachable blobs of other kinds.
    pub other: KindUsage,
    /// Blobs no ref reaches (what a prune would free).
    pub unreferenced: KindUsage,
    /// Temp files in `ingest/`.
    pub ingest: KindUsage,
    /// Number of refs (tags).
    pub refs: usize,
}

/// A blob that no ref reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcCandidate {
    /// The blob.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// When it was written. A build writes its blobs before it tags them, so a caller that
    /// deletes candidates while builds may run should skip recent ones.
    pub modified: SystemTime,
}

/// Handle on a store root. Cheap to clone; holds no open files or locks.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens the store at `root`, creating the layout if it is not there yet.
    ///
    /// A complete existing layout is opened without writing anything, so read-only users can
    /// inspect a store they cannot modify.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let store = Store { root: root.into() };
        let complete = store.root.join(LAYOUT_FILE).is_file()
            && store.root.join(INDEX_FILE).is_file()
            && store.root.join(BLOBS_DIR).is_dir()
            && store.root.join(INGEST_DIR).is_dir();
        if !complete {
            store.init()?;
        }
        Ok(store)
    }

    /// Opens the store at [`default_root`].
    pub fn open_default() -> Result<Store> {
        Store::open(default_root())
    }

    fn init(&self) -> Result<()> {
        let root = &self.root;
        fs::create_dir_all(root).ctx("create the store directory", root)?;
        // Under the lock so that two first runs do not race on index.json.
        let _lock = self.lock_index()?;
        for dir in [BLOBS_DIR, INGEST_DIR] {
            let p = root.join(dir);
            fs::create_dir_all(&p).ctx("create directory", &p)?;
        }
        if !root.join(LAYOUT_FILE).is_file() {
            self.replace_file(LAYOUT_FILE, LAYOUT_CONTENT)?;
        }
        if !root.join(INDEX_FILE).is_file() {
            self.write_index(&empty_index()?)?;
        }
        fsync_dir(&root.join("blobs"))?;
        fsync_dir(root)
    }

    /// The store's root directory. Other crates keep their own subdirectories here
    /// (snapshots, cache).
    pub fn root(&self) -> &Path {
        &self.root
    }

    // ---------------------------------------------------------------- blobs

    /// Where the blob with this digest lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> Result<PathBuf> {
        Ok(self.root.join(BLOBS_DIR).join(sha256_hex(digest)?))
    }

    /// True if the blob is in the store.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).map(|p| p.is_file()).unwrap_or(false)
    }

    /// Starts writing a blob. Write the content, then [`BlobWriter::commit`]; dropping the
    /// writer without committing removes the temp file.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let (file, temp) = self.create_ingest_file()?;
        Ok(BlobWriter {
            file: Some(BufWriter::with_capacity(256 << 10, file)),
            temp,
            blobs_dir: self.root.join(BLOBS_DIR),
            hasher: Sha256::new(),
            size: 0,
            done: false,
        })
    }

    /// Stores `data`, verified against `expected` if given.
    pub fn put_bytes(&self, data: &[u8], expected: Option<&Digest>) -> Result<BlobInfo> {
        let digest = model::sha256_digest(data);
        if let Some(expected) = expected {
            if *expected != digest {
                return Err(Error::DigestMismatch {
                    expected: expected.clone(),
                    actual: digest,
                    size: data.len() as u64,
                });
            }
        }
        if self.has_blob(&digest) {
            return Ok(BlobInfo {
                digest,
                size: data.len() as u64,
            });
        }
        let mut w = self.blob_writer()?;
        w.write_all(data).ctx("write", w.temp.clone())?;
        w.commit(Some(&digest))
    }

    /// Streams `reader` into the store, verified against `expected` if given.
    pub fn put_reader(&self, mut reader: impl Read, expected: Option<&Digest>) -> Result<BlobInfo> {
        let mut w = self.blob_writer()?;
        let temp = w.temp.clone();
        io::copy(&mut reader, &mut w).ctx("copy into", temp)?;
        w.commit(expected)
    }

    /// Stores `value` as canonical JSON and returns its descriptor.
    pub fn put_json<T: Serialize + ?Sized>(
        &self,
        media_type: MediaType,
        value: &T,
    ) -> Result<Descriptor> {
        let bytes = canonical_json(value)?;
        let info = self.put_bytes(&bytes, None)?;
        Ok(info.descriptor(media_type))
    }

    /// Opens a blob for reading.
    pub fn get_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest)?;
        File::open(&path).map_err(|e| self.not_found_or(digest, path, "open", e))
    }

    /// Reads a small blob (a manifest, index or config) whole, verifying its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let file =
            File::open(&path).map_err(|e| self.not_found_or(digest, path.clone(), "open", e))?;
        let len = file.metadata().ctx("stat", &path)?.len();
        if len > MAX_JSON_BLOB {
            return Err(Error::InvalidImage {
                what: digest.to_string(),
                reason: format!(
                    "{len} bytes is too large for a manifest or config (is it a layer?)"
                ),
            });
        }
        let mut data = Vec::with_capacity(len as usize);
        file.take(MAX_JSON_BLOB)
            .read_to_end(&mut data)
            .ctx("read", &path)?;
        let actual = model::sha256_digest(&data);
        if actual != *digest {
            return Err(Error::DigestMismatch {
                expected: digest.clone(),
                actual,
                size: data.len() as u64,
            });
        }
        Ok(data)
    }

    /// Reads and parses a JSON blob.
    pub fn read_json<T: DeserializeOwned>(&self, digest: &Digest) -> Result<T> {
        let data = self.read_blob(digest)?;
        serde_json::from_slice(&data).map_err(|e| Error::json(format!("blob {digest}"), e))
    }

    /// Deletes a blob (for garbage collection); returns the bytes freed, 0 if it was absent.
    pub fn delete_blob(&self, digest: &Digest) -> Result<u64> {
        let path = self.blob_path(digest)?;
        let size = match fs::symlink_metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io("stat", path, e)),
        };
        match fs::remove_file(&path) {
            Ok(()) => Ok(size),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::io("remove", path, e)),
        }
    }

    fn not_found_or(
        &self,
        digest: &Digest,
        path: PathBuf,
        op: &'static str,
        e: io::Error,
    ) -> Error {
        if e.kind() == io::ErrorKind::NotFound {
            Error::BlobNotFound {
                digest: digest.clone(),
                path,
            }
        } else {
            Error::io(op, path, e)
        }
    }

    /// Creates a fresh, `flock`ed temp file in `ingest/`.
    fn create_ingest_file(&self) -> Result<(LockedFile, PathBuf)> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = self.root.join(INGEST_DIR);
        loop {
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let name = format!(
                "{}-{}-{nanos:08x}.tmp",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            );
            let path = dir.join(name);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)
            {
                Ok(file) => {
                    let locked = Flock::lock(file, FlockArg::LockExclusive)
                        .map_err(|(_, errno)| Error::io("lock", &path, errno.into()))?;
                    return Ok((LockedFile(locked), path));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io("create a temp file in", &dir, e)),
            }
        }
    }

    /// Atomically replaces `ROOT/name` with `data`.
    fn replace_file(&self, name: &str, data: &[u8]) -> Result<()> {
        let (file, temp) = self.create_ingest_file()?;
        let result = (|| {
            (&*file.0).write_all(data).ctx("write", &temp)?;
            file.0.sync_all().ctx("fsync", &temp)?;
            let dest = self.root.join(name);
            fs::rename(&temp, &dest).ctx("rename into place", &dest)?;
            fsync_dir(&self.root)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    // ---------------------------------------------------------------- index and refs

    /// Takes the exclusive lock on `index.json` (blocks until it is free).
    fn lock_index(&self) -> Result<Flock<File>> {
        let path = self.root.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .ctx("open the lock file", &path)?;
        let mut file = file;
        loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(lock) => return Ok(lock),
                // Interrupted by a signal: try again.
                Err((f, Errno::EINTR)) => file = f,
                Err((_, errno)) => return Err(Error::io("lock", &path, errno.into())),
            }
        }
    }

    /// Reads `index.json` as it is now (no lock needed: it is only ever replaced whole).
    pub fn read_index(&self) -> Result<ImageIndex> {
        let path = self.root.join(INDEX_FILE);
        let data = fs::read(&path).ctx("read", &path)?;
        serde_json::from_slice(&data).map_err(|e| Error::json(path.display().to_string(), e))
    }

    fn write_index(&self, index: &ImageIndex) -> Result<()> {
        self.replace_file(INDEX_FILE, &canonical_json(index)?)
    }

    /// Read-modify-write of `index.json` under the lock; not rewritten when `f` changed
    /// nothing (a rebuild that re-tags the same image costs no write and no fsync).
    fn update_index<R>(&self, f: impl FnOnce(&mut Vec<Descriptor>) -> Result<R>) -> Result<R> {
        let _lock = self.lock_index()?;
        let mut index = self.read_index()?;
        let mut manifests = index.manifests().clone();
        let r = f(&mut manifests)?;
        if &manifests != index.manifests() {
            index.set_manifests(manifests);
            self.write_index(&index)?;
        }
        Ok(r)
    }

    /// The manifest (or index) descriptor a reference points to.
    ///
    /// A reference with a digest resolves to that blob if it is in the store; otherwise the
    /// tag is looked up in `index.json`.
    pub fn resolve(&self, reference: &Reference) -> Result<Descriptor> {
        if let Some(digest) = reference.digest() {
            return self.describe_manifest(digest);
        }
        let index = self.read_index()?;
        index
            .manifests()
            .iter()
            .find(|d| entry_reference(d).as_ref() == Some(reference))
            .cloned()
            .ok_or_else(|| Error::RefNotFound {
                reference: reference.familiar(),
                root: self.root.clone(),
            })
    }

    /// A descriptor for a manifest or index blob known only by digest.
    fn describe_manifest(&self, digest: &Digest) -> Result<Descriptor> {
        let data = self.read_blob(digest)?;
        let v: serde_json::Value =
            serde_json::from_slice(&data).map_err(|e| Error::json(format!("blob {digest}"), e))?;
        let media_type = match v.get("mediaType").and_then(|m| m.as_str()) {
            Some(m) => MediaType::from(m),
            None if v.get("manifests").is_some() => MediaType::ImageIndex,
            None if v.get("config").is_some() => MediaType::ImageManifest,
            None => {
                return Err(Error::InvalidImage {
                    what: digest.to_string(),
                    reason: "this blob is neither a manifest nor an index".into(),
                })
            }
        };
        if !matches!(Kind::of(&media_type), Kind::Manifest | Kind::Index) {
            return Err(Error::InvalidImage {
                what: digest.to_string(),
                reason: format!("media type {media_type} is not a manifest or an index"),
            });
        }
        Ok(Descriptor::new(
            media_type,
            data.len() as u64,
            digest.clone(),
        ))
    }

    /// Points `reference` (which must have a tag and no digest) at a manifest or index,
    /// replacing what it pointed to before.
    pub fn tag(&self, reference: &Reference, target: &Descriptor) -> Result<()> {
        self.tag_many(std::slice::from_ref(reference), target)
    }

    /// [`Store::tag`] for several references, in one update of `index.json`.
    pub fn tag_many(&self, references: &[Reference], target: &Descriptor) -> Result<()> {
        self.tag_with_created(references, target, &model::now_rfc3339())
    }

    fn tag_with_created(
        &self,
        references: &[Reference],
        target: &Descriptor,
        created: &str,
    ) -> Result<()> {
        for r in references {
            check_taggable(r)?;
        }
        check_ref_target(target, "tag")?;
        self.update_index(|manifests| {
            self.require_ref_target(target)?;
            // A tag that already names this very manifest keeps its entry (and its time).
            let current = |r: &Reference| {
                manifests.iter().any(|d| {
                    entry_reference(d).as_ref() == Some(r)
                        && d.digest() == target.digest()
                        && d.media_type() == target.media_type()
                })
            };
            let moved: Vec<&Reference> = references.iter().filter(|r| !current(r)).collect();
            manifests.retain(|d| entry_reference(d).is_none_or(|r| !moved.contains(&&r)));
            for r in moved {
                manifests.push(tagged_descriptor(target, r, created));
            }
            Ok(())
        })
    }

    /// Never a dangling ref: called under the index lock, which `prune` also holds, so the
    /// manifest cannot be deleted between this check and the write.
    fn require_ref_target(&self, target: &Descriptor) -> Result<()> {
        if self.has_blob(target.digest()) {
            return Ok(());
        }
        Err(Error::BlobNotFound {
            digest: target.digest().clone(),
            path: self.blob_path(target.digest())?,
        })
    }

    /// Removes a tag; returns the descriptor it pointed to. The blobs stay until collected.
    pub fn untag(&self, reference: &Reference) -> Result<Descriptor> {
        self.update_index(|manifests| {
            let pos = manifests
                .iter()
                .position(|d| entry_reference(d).as_ref() == Some(reference));
            match pos {
                Some(i) => {
                    let removed = manifests.remove(i);
                    // Duplicates written by other tools go too.
                    manifests.retain(|d| entry_reference(d).as_ref() != Some(reference));
                    Ok(removed)
                }
                None => Err(Error::RefNotFound {
                    reference: reference.familiar(),
                    root: self.root.clone(),
                }),
            }
        })
    }

    /// Points the `index.json` entry whose `org.opencontainers.image.ref.name` is exactly
    /// `name` at `target` (a manifest or index in the store), replacing it. For layouts that
    /// are not image stores but one artifact under a plain OCI ref name such as `latest`
    /// (what `skopeo … oci:DIR:latest` looks up): no reference parsing, no other annotation.
    pub fn set_ref_name(&self, name: &str, target: &Descriptor) -> Result<()> {
        if name.is_empty() {
            return Err(Error::Invalid("an empty ref name".into()));
        }
        check_ref_target(target, "name")?;
        self.update_index(|manifests| {
            self.require_ref_target(target)?;
            manifests.retain(|d| ref_name(d) != Some(name));
            let mut d = target.clone();
            d.set_annotations(Some(HashMap::from([(
                ANNOTATION_REF_NAME.to_string(),
                name.to_string(),
            )])));
            manifests.push(d);
            Ok(())
        })
    }

    /// The entry whose `org.opencontainers.image.ref.name` is exactly `name` (see
    /// [`Store::set_ref_name`]), if any.
    pub fn find_ref_name(&self, name: &str) -> Result<Option<Descriptor>> {
        Ok(self
            .read_index()?
            .manifests()
            .iter()
            .find(|d| ref_name(d) == Some(name))
            .cloned())
    }

    /// Every tagged ref and its descriptor, sorted by familiar name. Entries without a
    /// parseable name (written by other tools) are left out.
    pub fn list(&self) -> Result<Vec<(Reference, Descriptor)>> {
        let index = self.read_index()?;
        let mut out: Vec<(Reference, Descriptor)> = index
            .manifests()
            .iter()
            .filter_map(|d| entry_reference(d).map(|r| (r, d.clone())))
            .collect();
        out.sort_by_key(|(r, _)| r.familiar());
        Ok(out)
    }

    // ---------------------------------------------------------------- images

    /// The image a reference points to. For a multi-platform index, the manifest for this
    /// machine's platform.
    pub fn image(&self, reference: &Reference) -> Result<StoredImage> {
        let desc = self.resolve(reference)?;
        self.image_from(&desc, &reference.familiar())
    }

    /// The image a manifest (or index) descriptor points to; `what` names it in errors.
    pub fn image_from(&self, desc: &Descriptor, what: &str) -> Result<StoredImage> {
        let desc = match Kind::of(desc.media_type()) {
            Kind::Manifest => desc.clone(),
            Kind::Index => {
                let index: ImageIndex = self.read_json(desc.digest())?;
                select_platform(&index, what)?
            }
            _ => {
                return Err(Error::InvalidImage {
                    what: what.to_string(),
                    reason: format!("media type {} is not an image manifest", desc.media_type()),
                })
            }
        };
        let manifest: ImageManifest = self.read_json(desc.digest())?;
        let config: ImageConfig = self.read_json(manifest.config().digest())?;
        Ok(StoredImage {
            descriptor: desc,
            manifest,
            config,
        })
    }

    /// Writes an image: `config`, then a manifest listing `layers` (already in the store,
    /// bottom first, one per `config.rootfs.diff_ids` entry), then tags it with `tags`.
    /// Returns the manifest descriptor.
    ///
    /// Images written without tags are not referenced by anything and are therefore
    /// [`Store::gc_candidates`].
    pub fn write_image(
        &self,
        config: &ImageConfig,
        layers: &[Descriptor],
        tags: &[Reference],
    ) -> Result<Descriptor> {
        let what = || {
            tags.first()
                .map(Reference::familiar)
                .unwrap_or_else(|| "(untagged)".to_string())
        };
        if config.rootfs.diff_ids.len() != layers.len() {
            return Err(Error::InvalidImage {
                what: what(),
                reason: format!(
                    "the config lists {} diff IDs but {} layers were given",
                    config.rootfs.diff_ids.len(),
                    layers.len()
                ),
            });
        }
        for r in tags {
            check_taggable(r)?;
        }
        for layer in layers {
            let path = self.blob_path(layer.digest())?;
            let meta = fs::metadata(&path)
                .map_err(|e| self.not_found_or(layer.digest(), path.clone(), "stat", e))?;
            if meta.len() != layer.size() {
                return Err(Error::InvalidImage {
                    what: what(),
                    reason: format!(
                        "layer {} is {} bytes in the store but its descriptor says {}",
                        layer.digest(),
                        meta.len(),
                        layer.size()
                    ),
                });
            }
        }
        let config_desc = self.put_json(MediaType::ImageConfig, config)?;
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config_desc)
            .layers(layers.to_vec())
            .build()
            .map_err(|e| Error::Invalid(format!("cannot build a manifest: {e}")))?;
        let mut desc = self.put_json(MediaType::ImageManifest, &manifest)?;
        let mut platform = PlatformBuilder::default()
            .os(Os::from(config.os.as_str()))
            .architecture(Arch::from(config.architecture.as_str()));
        if let Some(v) = &config.variant {
            platform = platform.variant(v.clone());
        }
        if let Ok(p) = platform.build() {
            desc.set_platform(Some(p));
        }
        if !tags.is_empty() {
            let created = config.created.clone().unwrap_or_else(model::now_rfc3339);
            self.tag_with_created(tags, &desc, &created)?;
        }
        Ok(desc)
    }

    /// The direct children of a manifest (config, layers) or index (manifests).
    pub fn children(&self, desc: &Descriptor) -> Result<Vec<Descriptor>> {
        match Kind::of(desc.media_type()) {
            Kind::Manifest => {
                let m: ImageManifest = self.read_json(desc.digest())?;
                let mut out = vec![m.config().clone()];
                out.extend(m.layers().iter().cloned());
                Ok(out)
            }
            Kind::Index => {
                let i: ImageIndex = self.read_json(desc.digest())?;
                Ok(i.manifests().clone())
            }
            _ => Ok(Vec::new()),
        }
    }

    /// Every blob reachable from the refs, with its kind. Missing or unreadable blobs are
    /// passed to `on_problem` instead of failing the walk.
    fn reachable(
        &self,
        index: &ImageIndex,
        mut on_problem: impl FnMut(Problem),
    ) -> HashMap<Digest, Kind> {
        let mut seen: HashMap<Digest, Kind> = HashMap::new();
        for top in index.manifests() {
            let name = entry_name(top);
            let mut stack = vec![top.clone()];
            while let Some(d) = stack.pop() {
                let kind = Kind::of(d.media_type());
                let kind = if kind == Kind::Other && d.digest() == top.digest() {
                    Kind::Manifest
                } else {
                    kind
                };
                if seen.contains_key(d.digest()) {
                    continue;
                }
                if !self.has_blob(d.digest()) {
                    on_problem(Problem::DanglingRef {
                        reference: name.clone(),
                        missing: d.digest().clone(),
                        kind,
                    });
                    continue;
                }
                seen.insert(d.digest().clone(), kind);
                match self.children(&d) {
                    Ok(children) => stack.extend(children),
                    Err(e) => on_problem(Problem::UnreadableBlob {
                        reference: name.clone(),
                        digest: d.digest().clone(),
                        error: e.to_string(),
                    }),
                }
                if kind == Kind::Manifest {
                    // The config must parse too, or the image cannot be used.
                    if let Ok(m) = self.read_json::<ImageManifest>(d.digest()) {
                        let c = m.config().digest();
                        if self.has_blob(c) {
                            if let Err(e) = self.read_json::<ImageConfig>(c) {
                                on_problem(Problem::UnreadableBlob {
                                    reference: name.clone(),
                                    digest: c.clone(),
                                    error: e.to_string(),
                                });
                            }
                        }
                    }
                }
            }
        }
        seen
    }

    // ---------------------------------------------------------------- maintenance

    /// Checks the whole store: every blob's digest is re-computed; every ref must lead to a
    /// parseable manifest whose config and layers exist; abandoned temp files are reported
    /// as harmless. Returns an empty list for a healthy store.
    pub fn fsck(&self) -> Result<Vec<Problem>> {
        let mut problems = Vec::new();
        for (digest, path, _) in self.scan_blobs(&mut problems)? {
            let actual = hash_file(&path)?;
            if actual != digest {
                problems.push(Problem::CorruptBlob {
                    digest,
                    actual,
                    path,
                });
            }
        }
        match self.read_index() {
            Ok(index) => {
                self.reachable(&index, |p| problems.push(p));
            }
            Err(e) => problems.push(Problem::BadIndex {
                error: e.to_string(),
            }),
        }
        for (path, size) in self.abandoned_ingest(Duration::ZERO)? {
            problems.push(Problem::LeftoverIngest { path, size });
        }
        Ok(problems)
    }

    /// Bytes and counts of blobs by kind.
    pub fn usage(&self) -> Result<Usage> {
        let index = self.read_index()?;
        let kinds = self.reachable(&index, |_| {});
        let mut usage = Usage {
            refs: index.manifests().len(),
            ..Usage::default()
        };
        for (digest, _, size) in self.scan_blobs(&mut Vec::new())? {
            usage.total.add(size);
            match kinds.get(&digest) {
                Some(Kind::Manifest | Kind::Index) => usage.manifests.add(size),
                Some(Kind::Config) => usage.configs.add(size),
                Some(Kind::Layer) => usage.layers.add(size),
                Some(Kind::Other) => usage.other.add(size),
                None => usage.unreferenced.add(size),
            }
        }
        let dir = self.root.join(INGEST_DIR);
        for entry in fs::read_dir(&dir).ctx("list", &dir)? {
            let entry = entry.ctx("list", &dir)?;
            if let Ok(m) = entry.metadata() {
                usage.ingest.add(m.len());
            }
        }
        Ok(usage)
    }

    /// Blobs that no ref reaches. Nothing is deleted: the caller decides (and should skip
    /// recently written ones, see [`GcCandidate::modified`]), then calls
    /// [`Store::delete_blob`].
    pub fn gc_candidates(&self) -> Result<Vec<GcCandidate>> {
        let index = self.read_index()?;
        let reachable = self.reachable(&index, |_| {});
        let mut out = Vec::new();
        for (digest, path, size) in self.scan_blobs(&mut Vec::new())? {
            if reachable.contains_key(&digest) {
                continue;
            }
            let modified = fs::metadata(&path)
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            out.push(GcCandidate {
                digest,
                size,
                modified,
            });
        }
        out.sort_by(|a, b| a.digest.as_ref().cmp(b.digest.as_ref()));
        Ok(out)
    }

    /// Deletes the blobs no ref reaches, except those in `keep` (e.g. layers the build cache
    /// still points to) and those modified less than `min_age` ago (a build that is running
    /// writes its blobs before it tags them). Holds the `index.json` lock throughout, so no
    /// ref can be added to a blob while it is being deleted. Also cleans `ingest/`.
    /// Returns what was freed.
    pub fn prune(&self, min_age: Duration, keep: &HashSet<Digest>) -> Result<KindUsage> {
        let _lock = self.lock_index()?;
        let mut freed = KindUsage::default();
        let now = SystemTime::now();
        for c in self.gc_candidates()? {
            let age = now.duration_since(c.modified).unwrap_or_default();
            if keep.contains(&c.digest) || age < min_age {
                continue;
            }
            let bytes = self.delete_blob(&c.digest)?;
            if bytes > 0 {
                freed.add(bytes);
            }
        }
        self.clean_ingest(min_age)?;
        Ok(freed)
    }

    /// Removes temp files in `ingest/` whose writer is gone (their `flock` is free) and that
    /// are older than `min_age`. Returns how many were removed.
    pub fn clean_ingest(&self, min_age: Duration) -> Result<usize> {
        let mut n = 0;
        for (path, _) in self.abandoned_ingest(min_age)? {
            match fs::remove_file(&path) {
                Ok(()) => n += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", path, e)),
            }
        }
        Ok(n)
    }

    /// Temp files no live process holds, older than `min_age`.
    fn abandoned_ingest(&self, min_age: Duration) -> Result<Vec<(PathBuf, u64)>> {
        let dir = self.root.join(INGEST_DIR);
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io("list", dir, e)),
        };
        let now = SystemTime::now();
        for entry in entries {
            let entry = entry.ctx("list", &dir)?;
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if age < min_age {
                continue;
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            // A live writer holds an exclusive lock on its temp file.
            if Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok() {
                out.push((path, meta.len()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every well-named blob file: (digest, path, size). Misnamed files go to `problems`.
    fn scan_blobs(&self, problems: &mut Vec<Problem>) -> Result<Vec<(Digest, PathBuf, u64)>> {
        let blobs = self.root.join("blobs");
        let mut out = Vec::new();
        for algo in fs::read_dir(&blobs).ctx("list", &blobs)? {
            let algo = algo.ctx("list", &blobs)?;
            if algo.file_name() != "sha256" {
                problems.push(Problem::StrayFile { path: algo.path() });
                continue;
            }
            let dir = algo.path();
            for entry in fs::read_dir(&dir).ctx("list", &dir)? {
                let entry = entry.ctx("list", &dir)?;
                let path = entry.path();
                let meta = entry.metadata().ctx("stat", &path)?;
                let digest = entry
                    .file_name()
                    .to_str()
                    .filter(|n| n.len() == 64)
                    .and_then(|n| format!("sha256:{n}").parse::<Digest>().ok());
                match digest {
                    Some(d) if meta.is_file() => out.push((d, path, meta.len())),
                    _ => problems.push(Problem::StrayFile { path }),
                }
            }
        }
        out.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        Ok(out)
    }
}

/// Streams a blob into the store. See [`Store::blob_writer`].
#[derive(Debug)]
pub struct BlobWriter {
    file: Option<BufWriter<LockedFile>>,
    temp: PathBuf,
    blobs_dir: PathBuf,
    hasher: Sha256,
    size: u64,
    done: bool,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The temp file being written (for error messages).
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// Finishes the blob: verifies it against `expected` (if given), makes it durable and
    /// moves it into `blobs/`. An existing blob with the same digest is left untouched.
    ///
    /// On a digest mismatch the temp file is removed and nothing is stored.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<BlobInfo> {
        let Some(buf) = self.file.take() else {
            return Err(Error::Invalid("blob writer already finished".into()));
        };
        let file = buf
            .into_inner()
            .map_err(|e| Error::io("write", &self.temp, e.into_error()))?;
        let digest = digest_from_sha256(std::mem::take(&mut self.hasher).finalize().into());
        let info = BlobInfo {
            digest,
            size: self.size,
        };
        if let Some(expected) = expected {
            if *expected != info.digest {
                drop(file);
                let _ = fs::remove_file(&self.temp);
                self.done = true;
                return Err(Error::DigestMismatch {
                    expected: expected.clone(),
                    actual: info.digest,
                    size: info.size,
                });
            }
        }
        let dest = self.blobs_dir.join(info.digest.digest());
        if dest.is_file() {
            // Content-addressed: what is there is the same content (fsck checks that).
            drop(file);
            let _ = fs::remove_file(&self.temp);
            self.done = true;
            return Ok(info);
        }
        file.0.sync_all().ctx("fsync", &self.temp)?;
        fs::rename(&self.temp, &dest).ctx("move a blob into", &dest)?;
        self.done = true;
        drop(file);
        fsync_dir(&self.blobs_dir)?;
        Ok(info)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already finished"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.done {
            self.file = None;
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// A temp file with its writer's `flock` held for as long as it is open.
#[derive(Debug)]
struct LockedFile(Flock<File>);

impl Write for LockedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
    }
}

/// Total apparent size of the regular files under `path` (0 if it does not exist). Hard
/// links count once; symlinks are not followed; mount points below `path` are not entered
/// (a mounted overlay would otherwise be counted on top of its layers).
pub fn dir_size(path: &Path) -> Result<u64> {
    let top = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("stat", path, e)),
    };
    if !top.is_dir() {
        return Ok(if top.is_file() { top.len() } else { 0 });
    }
    let dev = top.dev();
    let mut seen_inodes = HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            // Vanished while walking (another process removed it): nothing to count.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("list", dir, e)),
        };
        for entry in entries {
            let entry = entry.ctx("list", &dir)?;
            let Ok(meta) = entry.metadata() else { continue };
            if meta.dev() != dev {
                continue;
            }
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file()
                && (meta.nlink() == 1 || seen_inodes.insert((meta.dev(), meta.ino())))
            {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("fsync directory", dir)
}

fn hash_file(path: &Path) -> Result<Digest> {
    let mut file = File::open(path).ctx("open", path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", path, e)),
        };
        hasher.update(&buf[..n]);
    }
    Ok(digest_from_sha256(hasher.finalize().into()))
}

fn empty_index() -> Result<ImageIndex> {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::new())
        .build()
        .map_err(|e| Error::Invalid(format!("cannot build an empty index: {e}")))
}

/// Refs point at manifests and indexes only.
fn check_ref_target(target: &Descriptor, verb: &str) -> Result<()> {
    if matches!(Kind::of(target.media_type()), Kind::Manifest | Kind::Index) {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "cannot {verb} {}: media type {} is not a manifest or an index",
        target.digest(),
        target.media_type()
    )))
}

fn check_taggable(r: &Reference) -> Result<()> {
    if r.tag().is_none() || r.digest().is_some() {
        return Err(Error::Invalid(format!(
            "refusing to tag with a digest reference {}: give a name and a tag, e.g. \
             {}:latest",
            r.familiar(),
            r.familiar_repository()
        )));
    }
    Ok(())
}

/// The reference an `index.json` entry stands for: the full name if present, else the ref
/// name (as written by skopeo, umoci, ...), normalized.
pub(crate) fn entry_reference(d: &Descriptor) -> Option<Reference> {
    let ann = d.annotations().as_ref()?;
    ann.get(ANNOTATION_IMAGE_NAME)
        .or_else(|| ann.get(ANNOTATION_REF_NAME))
        .and_then(|n| Reference::parse(n).ok())
        .filter(|r| r.tag().is_some() && r.digest().is_none())
}

/// An index entry's `org.opencontainers.image.ref.name`, as written.
fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()?
        .get(ANNOTATION_REF_NAME)
        .map(String::as_str)
}

/// A name for an index entry in messages.
fn entry_name(d: &Descriptor) -> String {
    entry_reference(d)
        .map(|r| r.familiar())
        .unwrap_or_else(|| d.digest().to_string())
}

/// `target` annotated as the entry for `reference`.
pub(crate) fn tagged_descriptor(
    target: &Descriptor,
    reference: &Reference,
    created: &str,
) -> Descriptor {
    let mut d = target.clone();
    let mut ann: HashMap<String, String> = d.annotations().clone().unwrap_or_default();
    ann.insert(ANNOTATION_REF_NAME.into(), reference.familiar());
    ann.insert(ANNOTATION_IMAGE_NAME.into(), reference.to_string());
    ann.insert(ANNOTATION_CREATED.into(), created.to_string());
    d.set_annotations(Some(ann));
    d
}

/// Picks this machine's manifest from an index.
pub(crate) fn select_platform(index: &ImageIndex, what: &str) -> Result<Descriptor> {
    let (os, arch, variant) = model::host_platform();
    let candidates: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| Kind::of(d.media_type()) == Kind::Manifest)
        .collect();
    let matching = |want_variant: bool| {
        candidates.iter().find(|d| match d.platform() {
            Some(p) => {
                p.os().to_string() == os
                    && p.architecture().to_string() == arch
                    && (!want_variant || p.variant().as_deref() == variant || p.variant().is_none())
            }
            None => false,
        })
    };
    if let Some(d) = matching(true).or_else(|| matching(false)) {
        return Ok((*d).clone());
    }
    if candidates.len() == 1 && candidates[0].platform().is_none() {
        return Ok(candidates[0].clone());
    }
    let available: BTreeMap<String, ()> = candidates
        .iter()
        .filter_map(|d| d.platform().as_ref())
        .map(|p| (format!("{}/{}", p.os(), p.architecture()), ()))
        .collect();
    Err(Error::InvalidImage {
        what: what.to_string(),
        reason: format!(
            "no manifest for {os}/{arch} in this multi-platform image (it has: {})",
            available.into_keys().collect::<Vec<_>>().join(", ")
        ),
    })
}
