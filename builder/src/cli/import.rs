//! `rbuild import [FILE|-] REF`: a root filesystem tarball (plain, gzip or zstd), such as
//! `mmdebstrap --variant=minbase bookworm -` writes, becomes a one-layer image. The layer is
//! streamed into the store once, then unpacked once as a snapshot: that both checks the tar
//! (nothing may escape the root) and leaves it ready for builds.

use super::store::{human_size, open_store};
use anyhow::{Context, Result};
use clap::Args;
use images::{History, ImageConfig, Reference};
use layers::{Compression, LayerWriter, Snapshotter};
use std::io::{self, Read};
use std::path::Path;
use std::process::ExitCode;

#[derive(Args)]
pub struct ImportArgs {
    /// The tarball, or `-` for standard input.
    #[arg(value_name = "FILE|-")]
    file: String,
    /// The name to give the image (name[:tag]).
    #[arg(value_name = "REF")]
    reference: String,
    /// Layer compression.
    #[arg(long, default_value = "gzip", value_name = "gzip|zstd")]
    compression: Compression,
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn run(args: ImportArgs) -> Result<ExitCode> {
    let reference = Reference::parse(&args.reference)?;
    let store = open_store()?;
    let input: Box<dyn Read> = if args.file == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(&args.file)
                .with_context(|| format!("cannot open {}", args.file))?,
        )
    };
    let (_, tar) = layers::compress::decompress(io::BufReader::with_capacity(1 << 20, input))
        .context("cannot read the tarball")?;
    let mut layer = LayerWriter::new(store.blob_writer()?, args.compression)?;
    let copied = io::copy(&mut { tar }, &mut layer).context("cannot read the tarball")?;
    let (digests, blob) = layer.finish()?;
    let blob = blob.commit(Some(&digests.digest))?;
    eprintln!(
        "layer {} ({} → {})",
        digests.diff_id,
        human_size(copied),
        human_size(blob.size)
    );

    let snapshots = Snapshotter::open(store.root())?;
    let chain = std::slice::from_ref(&digests.diff_id);
    let fs = match snapshots.prepare(chain, store.get_blob(&digests.digest)?) {
        Ok(fs) => fs,
        Err(e) => {
            // Leave no trace of a rejected tarball, unless an image already uses the same blob.
            if store
                .gc_candidates()?
                .iter()
                .any(|c| c.digest == digests.digest)
            {
                store.delete_blob(&digests.digest)?;
            }
            let what = format!("{} cannot be used as a root filesystem", args.file);
            return Err(anyhow::Error::new(e).context(what));
        }
    };

    let mut config = ImageConfig::default();
    let created = created_time();
    config.created = Some(created.clone());
    config.config.env = vec![DEFAULT_PATH.to_string()];
    if has_bash(&fs) {
        config.config.cmd = Some(vec!["bash".to_string()]);
    }
    config.rootfs.diff_ids = vec![digests.diff_id.clone()];
    config.history = vec![History {
        created: Some(created),
        created_by: Some(format!("rbuild import {}", args.file)),
        comment: Some("imported".to_string()),
        ..History::default()
    }];
    let layer = blob.descriptor(digests.media_type.clone());
    let manifest = store.write_image(&config, &[layer], std::slice::from_ref(&reference))?;
    println!("{}", manifest.digest());
    eprintln!("imported {}", reference.familiar());
    Ok(ExitCode::SUCCESS)
}

/// bash in the unpacked layer, looking through usr-merge's relative `bin` link but never
/// following a link out of the snapshot.
fn has_bash(fs: &Path) -> bool {
    ["usr/bin/bash", "bin/bash"].iter().any(|p| {
        let (dir, _) = p.rsplit_once('/').expect("has a slash");
        std::fs::symlink_metadata(fs.join(dir)).is_ok_and(|m| m.is_dir())
            && std::fs::symlink_metadata(fs.join(p)).is_ok_and(|m| m.is_file())
    })
}

/// `SOURCE_DATE_EPOCH` when set (reproducible images), else now.
pub fn created_time() -> String {
    match images::archive::source_date_epoch() {
        Some(secs) => images::model::rfc3339_utc(secs as i64),
        None => images::model::now_rfc3339(),
    }
}
