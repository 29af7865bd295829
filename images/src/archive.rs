//! Image archives: `docker save`-style tars of images from the store.
//!
//! [`Format::Docker`] is what `docker load` (20.10 and later) reads: a top-level
//! `manifest.json` (`[{"Config":"blobs/sha256/…","RepoTags":["nginx:latest"],"Layers":[…]}]`)
//! naming the config and layer blobs, plus `repositories` for old loaders. Layers stay
//! gzip-compressed as they are in the store; `docker load` decompresses them while loading
//! and checks their uncompressed digests against the config's `rootfs.diff_ids`. The same
//! tar also carries `oci-layout`, `index.json` and the manifests, so it is at the same time an
//! OCI image layout (as `docker save` writes it since 25.0). skopeo reads it as
//! `docker-archive:FILE`.
//!
//! [`Format::Oci`] is the OCI image layout as a tar (`oci-archive:FILE` for skopeo). It keeps
//! multi-platform indexes whole, so every blob they refer to must be in the store.
//!
//! Archives are deterministic: entries sorted by path, mtime 0 (or `$SOURCE_DATE_EPOCH`),
//! owner 0:0, fixed modes. Blobs are streamed from the store and re-verified on the way; a
//! corrupt blob fails the save (the partial output must then be discarded).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use oci_spec::image::{Descriptor, Digest, ImageIndexBuilder, MediaType};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::model::{
    canonical_json, digest_from_sha256, sha256_hex, Kind, ANNOTATION_CREATED,
    ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME,
};
use crate::reference::Reference;
use crate::store::Store;

/// Which kind of archive to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `docker load` / `docker-archive:` (also a valid OCI layout).
    Docker,
    /// OCI image layout tar / `oci-archive:`.
    Oci,
}

/// Writes `refs` to `out` as an archive, with mtimes from `$SOURCE_DATE_EPOCH` (else 0).
/// Returns the writer once the archive is complete.
pub fn save<W: Write>(store: &Store, refs: &[Reference], out: W, format: Format) -> Result<W> {
    save_with_mtime(store, refs, out, format, source_date_epoch().unwrap_or(0))
}

/// [`save`] to a file, atomically: written to a temp file next to `path`, fsynced, then
/// renamed, so an interrupted save never leaves a truncated archive under the final name.
pub fn save_to_path(store: &Store, refs: &[Reference], path: &Path, format: Format) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "archive".into());
    let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let file = File::create(&temp).map_err(|e| Error::io("create", &temp, e))?;
        let file = save(store, refs, io::BufWriter::new(file), format)?
            .into_inner()
            .map_err(|e| Error::io("write", &temp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io("fsync", &temp, e))?;
        fs::rename(&temp, path).map_err(|e| Error::io("rename into place", path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// `$SOURCE_DATE_EPOCH`, if set to a number.
pub fn source_date_epoch() -> Option<u64> {
    std::env::var("SOURCE_DATE_EPOCH").ok()?.trim().parse().ok()
}

/// [`save`] with an explicit mtime for every entry.
pub fn save_with_mtime<W: Write>(
    store: &Store,
    refs: &[Reference],
    out: W,
    format: Format,
    mtime: u64,
) -> Result<W> {
    if refs.is_empty() {
        return Err(Error::Invalid(
            "nothing to save: name at least one image, e.g. nginx:latest".into(),
        ));
    }

    // One entry per distinct image, in the order first named; each with its tags.
    let mut images: Vec<SavedImage> = Vec::new();
    for r in refs {
        let top = store.resolve(r)?;
        let (desc, created, docker) = match format {
            Format::Docker => {
                let img = store.image_from(&top, &r.familiar())?;
                let created = img.config.created.clone();
                let entry = DockerEntry {
                    config: blob_path(img.manifest.config().digest())?,
                    repo_tags: Vec::new(),
                    layers: img
                        .manifest
                        .layers()
                        .iter()
                        .map(|l| blob_path(l.digest()))
                        .collect::<Result<_>>()?,
                };
                let top_layer = img.manifest.layers().last().map(|l| l.digest().clone());
                (img.descriptor, created, Some((entry, top_layer)))
            }
            Format::Oci => {
                let created = match Kind::of(top.media_type()) {
                    Kind::Manifest => store.image_from(&top, &r.familiar())?.config.created,
                    _ => None,
                };
                (top, created, None)
            }
        };
        let i = match images.iter().position(|i| i.desc.digest() == desc.digest()) {
            Some(i) => i,
            None => {
                // A clean descriptor: the store's annotations (its tags) do not belong here.
                let mut clean = Descriptor::new(
                    desc.media_type().clone(),
                    desc.size(),
                    desc.digest().clone(),
                );
                clean.set_platform(desc.platform().clone());
                images.push(SavedImage {
                    desc: clean,
                    tags: Vec::new(),
                    created,
                    docker,
                });
                images.len() - 1
            }
        };
        if r.digest().is_none() && !images[i].tags.contains(r) {
            images[i].tags.push(r.clone());
        }
    }

    // Every blob the archive needs, sorted by digest.
    let mut blobs: BTreeMap<String, (Digest, u64)> = BTreeMap::new();
    for img in &images {
        collect_blobs(store, &img.desc, &mut blobs)?;
    }

    let index = index_json(&images)?;
    let mut tar = TarWriter {
        tar: tar::Builder::new(out),
        mtime,
    };
    tar.dir("blobs/")?;
    tar.dir("blobs/sha256/")?;
    for (hex, (digest, size)) in &blobs {
        tar.blob(store, &format!("blobs/sha256/{hex}"), digest, *size)?;
    }
    tar.file("index.json", &index)?;
    if format == Format::Docker {
        tar.file("manifest.json", &manifest_json(&images)?)?;
    }
    tar.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    if format == Format::Docker {
        if let Some(repos) = repositories_json(&images)? {
            tar.file("repositories", &repos)?;
        }
    }
    tar.tar
        .into_inner()
        .map_err(|e| Error::io("finish", "the archive", e))
}

struct SavedImage {
    desc: Descriptor,
    tags: Vec<Reference>,
    created: Option<String>,
    /// For the Docker format: the `manifest.json` entry and the top layer.
    docker: Option<(DockerEntry, Option<Digest>)>,
}

/// One element of Docker's `manifest.json`.
#[derive(Clone, Serialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn blob_path(digest: &Digest) -> Result<String> {
    Ok(format!("blobs/sha256/{}", sha256_hex(digest)?))
}

/// Adds `desc` and everything below it to `blobs`.
fn collect_blobs(
    store: &Store,
    desc: &Descriptor,
    blobs: &mut BTreeMap<String, (Digest, u64)>,
) -> Result<()> {
    let mut stack = vec![desc.clone()];
    while let Some(d) = stack.pop() {
        let hex = sha256_hex(d.digest())?.to_string();
        if blobs.contains_key(&hex) {
            continue;
        }
        let path = store.blob_path(d.digest())?;
        let size = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::BlobNotFound {
                    digest: d.digest().clone(),
                    path,
                })
            }
            Err(e) => return Err(Error::io("stat", path, e)),
        };
        if size != d.size() {
            return Err(Error::InvalidImage {
                what: d.digest().to_string(),
                reason: format!(
                    "the blob is {size} bytes but its descriptor says {}; run `rbuild fsck`",
                    d.size()
                ),
            });
        }
        blobs.insert(hex, (d.digest().clone(), size));
        stack.extend(store.children(&d)?);
    }
    Ok(())
}

fn index_json(images: &[SavedImage]) -> Result<Vec<u8>> {
    let mut manifests = Vec::new();
    for img in images {
        let mut base = HashMap::new();
        if let Some(created) = &img.created {
            base.insert(ANNOTATION_CREATED.to_string(), created.clone());
        }
        if img.tags.is_empty() {
            let mut d = img.desc.clone();
            if !base.is_empty() {
                d.set_annotations(Some(base.clone()));
            }
            manifests.push(d);
        }
        for tag in &img.tags {
            let mut d = img.desc.clone();
            let mut ann = base.clone();
            ann.insert(ANNOTATION_REF_NAME.into(), tag.familiar());
            ann.insert(ANNOTATION_IMAGE_NAME.into(), tag.to_string());
            d.set_annotations(Some(ann));
            manifests.push(d);
        }
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(|e| Error::Invalid(format!("cannot build index.json: {e}")))?;
    canonical_json(&index)
}

fn manifest_json(images: &[SavedImage]) -> Result<Vec<u8>> {
    let entries: Vec<DockerEntry> = images
        .iter()
        .filter_map(|img| {
            img.docker.as_ref().map(|(entry, _)| {
                let mut e = entry.clone();
                e.repo_tags = img.tags.iter().map(Reference::familiar).collect();
                e
            })
        })
        .collect();
    // Docker's own field order (Config, RepoTags, Layers): struct order, not sorted.
    serde_json::to_vec(&entries).map_err(|e| Error::json("manifest.json", e))
}

/// The legacy `repositories` file: `{"nginx":{"latest":"<top layer hex>"}}`.
fn repositories_json(images: &[SavedImage]) -> Result<Option<Vec<u8>>> {
    let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for img in images {
        let Some((_, Some(top))) = &img.docker else {
            continue;
        };
        for tag in &img.tags {
            if let Some(t) = tag.tag() {
                repos
                    .entry(tag.familiar_repository())
                    .or_default()
                    .insert(t.to_string(), sha256_hex(top)?.to_string());
            }
        }
    }
    if repos.is_empty() {
        return Ok(None);
    }
    canonical_json(&repos).map(Some)
}

struct TarWriter<W: Write> {
    tar: tar::Builder<W>,
    mtime: u64,
}

impl<W: Write> TarWriter<W> {
    fn header(&self, path: &str, size: u64, dir: bool) -> Result<tar::Header> {
        let mut h = tar::Header::new_ustar();
        h.set_path(path)
            .map_err(|e| Error::io("add to the archive", path, e))?;
        h.set_size(size);
        h.set_mode(if dir { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(self.mtime);
        h.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_cksum();
        Ok(h)
    }

    fn dir(&mut self, path: &str) -> Result<()> {
        let h = self.header(path, 0, true)?;
        self.tar
            .append(&h, io::empty())
            .map_err(|e| Error::io("write the archive entry", path, e))
    }

    fn file(&mut self, path: &str, data: &[u8]) -> Result<()> {
        let h = self.header(path, data.len() as u64, false)?;
        self.tar
            .append(&h, data)
            .map_err(|e| Error::io("write the archive entry", path, e))
    }

    /// Streams a blob into the archive, verifying its digest on the way.
    fn blob(&mut self, store: &Store, path: &str, digest: &Digest, size: u64) -> Result<()> {
        let h = self.header(path, size, false)?;
        let file = store.get_blob(digest)?;
        let mut reader = HashingReader {
            inner: file.take(size),
            hasher: Sha256::new(),
            count: 0,
        };
        self.tar
            .append(&h, &mut reader)
            .map_err(|e| Error::io("write the archive entry", path, e))?;
        let actual = digest_from_sha256(reader.hasher.finalize().into());
        if reader.count != size || actual != *digest {
            return Err(Error::DigestMismatch {
                expected: digest.clone(),
                actual,
                size: reader.count,
            });
        }
        Ok(())
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}
