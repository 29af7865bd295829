//! `rbuild prune`: removes build cache records, then the blobs and snapshots nothing needs any
//! more. Tagged images are never touched; cache mounts go only with `--all`.

use super::store::{human_size, open_store};
use crate::frontend::instruction::parse_duration;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Duration;

/// Blobs younger than this are kept: a running build writes its config and manifest just
/// before tagging them (its layers are kept by their cache records meanwhile).
const IN_FLIGHT: Duration = Duration::from_secs(60);

#[derive(Args)]
pub struct PruneArgs {
    /// Remove all build cache (records, cache mounts, snapshots no image uses), not only what
    /// is over the limits.
    #[arg(short, long)]
    all: bool,
    /// Keep this much layer data referenced by the cache (e.g. 10GB, 500MB).
    #[arg(long, value_name = "SIZE")]
    keep_storage: Option<String>,
    /// `until=DURATION`: remove cache not used for that long (e.g. until=24h).
    #[arg(long, value_name = "until=DURATION")]
    filter: Vec<String>,
}

/// `10GB`, `500MB`, `1.5g`, `1024` (bytes); decimal units like Docker's.
fn parse_size(s: &str) -> Result<u64> {
    let lower = s.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let n: f64 = num
        .parse()
        .with_context(|| format!("invalid size {s:?}: use e.g. 10GB or 500MB"))?;
    let factor = match unit.trim_end_matches(['b', 'i']) {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        _ => bail!("invalid size {s:?}: use e.g. 10GB or 500MB"),
    };
    Ok((n * factor) as u64)
}

pub fn run(args: PruneArgs) -> Result<ExitCode> {
    let store = open_store()?;
    let cache = cache::Cache::open(store.root().join("cache"))?;
    let mut older_than = None;
    for f in &args.filter {
        match f.split_once('=') {
            Some(("until", d)) => {
                let ns = parse_duration(d).map_err(anyhow::Error::msg)?;
                older_than = Some(Duration::from_nanos(ns));
            }
            _ => bail!("unsupported filter {f:?}: only until=DURATION (e.g. until=24h)"),
        }
    }
    // Layers of tagged images stay whatever the cache does.
    let mut image_layers = HashSet::new();
    let mut image_chains = HashSet::new();
    for (reference, _) in store.list()? {
        let image = store.image(&reference)?;
        image_layers.extend(
            image
                .manifest
                .layers()
                .iter()
                .map(|l| l.digest().to_string()),
        );
        image_chains.extend(
            layers::chain_ids(&image.config.rootfs.diff_ids)
                .iter()
                .map(|c| c.digest().to_string()),
        );
    }
    let policy = cache::gc::Policy {
        keep_storage: args.keep_storage.as_deref().map(parse_size).transpose()?,
        older_than,
        all: args.all,
        kept_elsewhere: image_layers,
    };
    let report = cache::gc::prune(&cache, &policy)?;
    let keep: HashSet<images::Digest> = cache
        .referenced_layers()?
        .iter()
        .filter_map(|d| d.parse().ok())
        .collect();
    let freed = store.prune(IN_FLIGHT, &keep)?;
    let mut snapshots_removed = 0;
    let mut snapshot_bytes = 0;
    if args.all {
        // Snapshots are unpacked blobs: any of them comes back from its blob when needed.
        let snapshots = layers::Snapshotter::open(store.root())?;
        for entry in std::fs::read_dir(snapshots.dir())? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.len() != 64 || image_chains.contains(&name) {
                continue;
            }
            let chain: images::Digest = format!("sha256:{name}").parse()?;
            snapshot_bytes += images::dir_size(&entry.path()).unwrap_or(0);
            if snapshots.remove(&chain)? {
                snapshots_removed += 1;
            }
        }
    }
    println!(
        "Deleted {} cache record(s), {} blob(s), {} snapshot(s), {} cache mount(s)",
        report.removed.len(),
        freed.count,
        snapshots_removed,
        report.removed_mounts.len()
    );
    println!(
        "Total reclaimed space: {}",
        human_size(freed.bytes + snapshot_bytes)
    );
    for busy in &report.busy_mounts {
        eprintln!("cache mount {busy} is in use by a running build: kept");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10GB").unwrap(), 10_000_000_000);
        assert_eq!(parse_size("500mb").unwrap(), 500_000_000);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("lots").is_err());
    }
}
