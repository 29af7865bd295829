//! Commands over the image store: `images`, `inspect`, `history`, `tag`, `rmi`, `save`, `du`,
//! `fsck`. Each is a few calls into the `images` crate; this module only formats.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use images::{archive, Reference, Store};
use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

pub fn open_store() -> Result<Store> {
    let root = images::default_root();
    Store::open(&root).with_context(|| format!("cannot open the image store at {}", root.display()))
}

fn parse_ref(s: &str) -> Result<Reference> {
    Ok(Reference::parse(s)?)
}

/// `1.2 MB`, in Docker's decimal units.
pub fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes} B");
    }
    let digits = format!("{value:.3}");
    format!(
        "{} {}",
        digits.trim_end_matches('0').trim_end_matches('.'),
        units[unit]
    )
}

fn short(digest: &images::Digest) -> String {
    digest.digest().chars().take(12).collect()
}

#[derive(Clone, Copy, ValueEnum, Default)]
pub enum ListFormat {
    #[default]
    Table,
    Json,
}

#[derive(Args)]
pub struct ImagesArgs {
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,
    #[arg(long, value_enum, default_value_t)]
    format: ListFormat,
}

pub fn images(args: ImagesArgs) -> Result<ExitCode> {
    let store = open_store()?;
    let mut rows = Vec::new();
    for (reference, _) in store.list()? {
        let image = store.image(&reference)?;
        rows.push((reference, image));
    }
    match args.format {
        ListFormat::Json => {
            let list: Vec<serde_json::Value> = rows
                .iter()
                .map(|(r, i)| {
                    serde_json::json!({
                        "Reference": r.familiar(),
                        "Id": i.id().to_string(),
                        "Digest": i.descriptor.digest().to_string(),
                        "Created": i.config.created,
                        "Size": i.size(),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        ListFormat::Table if args.quiet => {
            for (_, i) in &rows {
                println!("{}", short(i.id()));
            }
        }
        ListFormat::Table => {
            println!(
                "{:<40} {:<16} {:<14} {:<22} {:>10}",
                "REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"
            );
            for (r, i) in &rows {
                println!(
                    "{:<40} {:<16} {:<14} {:<22} {:>10}",
                    r.familiar_repository(),
                    r.tag().unwrap_or("<none>"),
                    short(i.id()),
                    i.config.created.as_deref().unwrap_or("-"),
                    human_size(i.size())
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct RefsArgs {
    /// Image references (name[:tag] or name@digest).
    #[arg(required = true, value_name = "IMAGE")]
    refs: Vec<String>,
}

/// Docker-like `inspect`: a JSON array, one object per image with its manifest and config.
pub fn inspect(args: RefsArgs) -> Result<ExitCode> {
    let store = open_store()?;
    let mut out = Vec::new();
    for r in &args.refs {
        let reference = parse_ref(r)?;
        let image = store.image(&reference)?;
        out.push(serde_json::json!({
            "Id": image.id().to_string(),
            "RepoTags": [reference.familiar()],
            "Digest": image.descriptor.digest().to_string(),
            "Size": image.size(),
            "Manifest": image.manifest,
            "Config": image.config,
        }));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct HistoryArgs {
    #[arg(value_name = "IMAGE")]
    image: String,
    /// Do not truncate the CREATED BY column.
    #[arg(long)]
    no_trunc: bool,
}

/// One line per history entry, newest first; layer sizes matched to non-empty entries.
pub fn history(args: HistoryArgs) -> Result<ExitCode> {
    let store = open_store()?;
    let image = store.image(&parse_ref(&args.image)?)?;
    let mut layers = image.manifest.layers().iter();
    let mut rows = Vec::new();
    for h in &image.config.history {
        let size = if h.empty_layer {
            0
        } else {
            layers.next().map_or(0, |l| l.size())
        };
        rows.push((h, size));
    }
    println!(
        "{:<22} {:<60} {:>10}  COMMENT",
        "CREATED", "CREATED BY", "SIZE"
    );
    for (h, size) in rows.iter().rev() {
        let mut by = h.created_by.clone().unwrap_or_default();
        if !args.no_trunc && by.chars().count() > 60 {
            by = by.chars().take(57).collect::<String>() + "...";
        }
        println!(
            "{:<22} {:<60} {:>10}  {}",
            h.created.as_deref().unwrap_or("-"),
            by,
            human_size(*size),
            h.comment.as_deref().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct TagArgs {
    #[arg(value_name = "SOURCE")]
    source: String,
    #[arg(value_name = "TARGET")]
    target: String,
}

pub fn tag(args: TagArgs) -> Result<ExitCode> {
    let store = open_store()?;
    let desc = store.resolve(&parse_ref(&args.source)?)?;
    store.tag(&parse_ref(&args.target)?, &desc)?;
    Ok(ExitCode::SUCCESS)
}

/// Untags, then deletes the blobs of those images that no remaining tag reaches. Blobs of
/// other unreferenced content (a build still writing) are left alone.
pub fn rmi(args: RefsArgs) -> Result<ExitCode> {
    let store = open_store()?;
    let mut mine: HashSet<images::Digest> = HashSet::new();
    for r in &args.refs {
        let reference = parse_ref(r)?;
        let image = store.image(&reference)?;
        mine.insert(image.descriptor.digest().clone());
        mine.insert(image.id().clone());
        mine.extend(image.manifest.layers().iter().map(|l| l.digest().clone()));
        store.untag(&reference)?;
        println!("Untagged: {}", reference.familiar());
    }
    for candidate in store.gc_candidates()? {
        if mine.contains(&candidate.digest) {
            store.delete_blob(&candidate.digest)?;
            println!("Deleted: {}", candidate.digest);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone, Copy, ValueEnum, Default)]
pub enum SaveFormat {
    /// docker-archive, for `docker load` (also an OCI layout).
    #[default]
    Docker,
    /// oci-archive, for skopeo and other OCI tools.
    Oci,
}

#[derive(Args)]
pub struct SaveArgs {
    #[arg(required = true, value_name = "IMAGE")]
    refs: Vec<String>,
    /// Write to a file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    format: SaveFormat,
}

pub fn save(args: SaveArgs) -> Result<ExitCode> {
    let store = open_store()?;
    let refs = args
        .refs
        .iter()
        .map(|r| parse_ref(r))
        .collect::<Result<Vec<_>>>()?;
    let format = match args.format {
        SaveFormat::Docker => images::Format::Docker,
        SaveFormat::Oci => images::Format::Oci,
    };
    match args.output {
        Some(path) => archive::save_to_path(&store, &refs, &path, format)?,
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                bail!("refusing to write an archive to a terminal: use -o FILE or redirect the output");
            }
            let mut w = archive::save(
                &store,
                &refs,
                std::io::BufWriter::new(stdout.lock()),
                format,
            )?;
            std::io::Write::flush(&mut w)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Store usage: blobs by kind, snapshots, cache.
pub fn du() -> Result<ExitCode> {
    let store = open_store()?;
    let u = store.usage()?;
    let line = |what: &str, k: images::KindUsage| {
        println!("{what:<24} {:>8} {:>12}", k.count, human_size(k.bytes))
    };
    println!("{:<24} {:>8} {:>12}", "WHAT", "COUNT", "SIZE");
    line("layers", u.layers);
    line("configs", u.configs);
    line("manifests", u.manifests);
    line("other blobs", u.other);
    line("unreferenced blobs", u.unreferenced);
    line("interrupted writes", u.ingest);
    for dir in ["snapshots", "cache"] {
        let path = store.root().join(dir);
        let bytes = if path.exists() {
            images::dir_size(&path)?
        } else {
            0
        };
        println!("{dir:<24} {:>8} {:>12}", "", human_size(bytes));
    }
    println!("{:<24} {:>8} {:>12}", "refs", u.refs, "");
    Ok(ExitCode::SUCCESS)
}

/// Re-verifies every blob and ref; exit 1 when anything needs repair.
pub fn fsck() -> Result<ExitCode> {
    let store = open_store()?;
    let problems = store.fsck()?;
    let serious = problems.iter().filter(|p| !p.is_harmless()).count();
    for p in &problems {
        println!(
            "{}{p}",
            if p.is_harmless() {
                "note: "
            } else {
                "damaged: "
            }
        );
    }
    if serious > 0 {
        eprintln!(
            "rbuild fsck: {serious} problem(s) in {}",
            store.root().display()
        );
        return Ok(ExitCode::FAILURE);
    }
    println!("{}: ok", store.root().display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1000), "1 kB");
        assert_eq!(human_size(1_234_567), "1.235 MB");
        assert_eq!(human_size(74_500_000), "74.5 MB");
    }
}
