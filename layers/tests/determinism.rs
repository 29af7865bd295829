//! Same tree, different mtimes, same SOURCE_DATE_EPOCH → same diffID and blob digest; and the
//! digests and sizes reported are those of the bytes written.

mod common;

use common::*;
use layers::compress::{decompress, Detected};
use layers::MediaType;
use layers::{write_layer, Compression, LayerDigests, SourceKind, TarOptions};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;
use std::path::Path;

const EPOCH: i64 = 1_700_000_000;

fn build(root: &Path, mtime: i64) {
    fs::create_dir_all(root.join("etc/app")).unwrap();
    fs::write(root.join("etc/app/config"), b"key=value\n").unwrap();
    fs::write(root.join("bin"), vec![7u8; 100_000]).unwrap();
    fs::hard_link(root.join("bin"), root.join("bin2")).unwrap();
    std::os::unix::fs::symlink("etc/app/config", root.join("cfg")).unwrap();
    set_xattr(&root.join("bin"), "user.k", b"v");
    for p in ["etc/app/config", "bin", "cfg", "etc/app", "etc"] {
        set_mtime(&root.join(p), mtime);
    }
}

fn layer(root: &Path, c: Compression, epoch: Option<i64>) -> (LayerDigests, Vec<u8>) {
    let opts = TarOptions {
        source: SourceKind::Plain,
        source_date_epoch: epoch,
    };
    write_layer(root, Vec::new(), c, &opts).unwrap()
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

#[test]
fn same_tree_different_mtimes_same_digests() {
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    // Both later than the epoch: both clamp to it.
    build(&a, EPOCH + 10);
    build(&b, EPOCH + 99_999);
    for c in [Compression::GZIP, Compression::ZSTD, Compression::None] {
        let (da, _) = layer(&a, c, Some(EPOCH));
        let (db, _) = layer(&b, c, Some(EPOCH));
        assert_eq!(da, db, "{c:?}");
    }
    // Without the epoch the mtimes show.
    let (da, _) = layer(&a, Compression::GZIP, None);
    let (db, _) = layer(&b, Compression::GZIP, None);
    assert_ne!(da.diff_id, db.diff_id);
}

#[test]
fn digests_sizes_and_media_types_match_the_bytes() {
    let work = tempfile::tempdir().unwrap();
    build(work.path(), EPOCH - 5);
    let (plain_d, plain) = layer(work.path(), Compression::None, None);
    assert_eq!(plain_d.diff_id.to_string(), sha(&plain));
    assert_eq!(plain_d.digest, plain_d.diff_id);
    assert_eq!(plain_d.media_type, MediaType::ImageLayer);

    for (c, media, detected) in [
        (Compression::GZIP, MediaType::ImageLayerGzip, Detected::Gzip),
        (Compression::ZSTD, MediaType::ImageLayerZstd, Detected::Zstd),
    ] {
        let (d, blob) = layer(work.path(), c, None);
        assert_eq!(d.digest.to_string(), sha(&blob));
        assert_eq!(d.size, blob.len() as u64);
        assert_eq!(
            d.diff_id, plain_d.diff_id,
            "diffID is of the uncompressed tar"
        );
        assert_eq!(d.media_type, media);
        assert!(media
            .to_string()
            .starts_with("application/vnd.oci.image.layer.v1.tar+"));
        let (found, mut r) = decompress(&blob[..]).unwrap();
        assert_eq!(found, detected);
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!(back, plain);
    }
}

#[test]
fn gzip_header_has_no_mtime_and_no_name() {
    let work = tempfile::tempdir().unwrap();
    build(work.path(), EPOCH);
    let (_, blob) = layer(work.path(), Compression::GZIP, Some(EPOCH));
    assert_eq!(&blob[..3], &[0x1f, 0x8b, 8], "gzip, deflate");
    assert_eq!(blob[3], 0, "FLG: no FNAME, FCOMMENT, FEXTRA");
    assert_eq!(&blob[4..8], &[0, 0, 0, 0], "MTIME is zero");
}

#[test]
fn compression_names_parse() {
    assert_eq!("gzip".parse::<Compression>().unwrap(), Compression::GZIP);
    assert_eq!("zstd".parse::<Compression>().unwrap(), Compression::ZSTD);
    assert_eq!(
        "uncompressed".parse::<Compression>().unwrap(),
        Compression::None
    );
    assert!("lz4".parse::<Compression>().is_err());
    assert_eq!(Compression::default(), Compression::GZIP);
}
