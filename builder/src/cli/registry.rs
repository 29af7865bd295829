//! `rbuild push` and `rbuild pull`: the store's images to and from an OCI registry, through
//! `images::registry` (only missing blobs move; plain HTTP only for loopback registries and
//! `$RBUILD_INSECURE_REGISTRIES`).

use super::store::{human_size, open_store};
use anyhow::{bail, Result};
use clap::Args;
use images::registry::{self, PullOptions, PushOptions, PushReport};
use images::{Reference, Store};
use std::process::ExitCode;

#[derive(Args)]
pub struct PushArgs {
    /// The image to push, named with its registry (127.0.0.1:5000/nginx:1.0).
    image: String,
    /// Push every tag of the image's repository that the store has.
    #[arg(short = 'a', long)]
    all_tags: bool,
}

#[derive(Args)]
pub struct PullArgs {
    /// The image to pull (127.0.0.1:5000/nginx:1.0, or by @sha256:… digest).
    image: String,
}

pub fn push(args: PushArgs) -> Result<ExitCode> {
    let store = open_store()?;
    let reference = Reference::parse(&args.image)?;
    let refs = if args.all_tags {
        // The parsed reference has `latest` filled in: look at what was typed.
        let last = args.image.rsplit('/').next().unwrap_or_default();
        if last.contains([':', '@']) {
            bail!(
                "--all-tags pushes every tag of a repository: name the repository without a \
                 tag ({})",
                reference.repository()
            );
        }
        let repo = reference.repository();
        let tagged: Vec<Reference> = store
            .list()?
            .into_iter()
            .map(|(r, _)| r)
            .filter(|r| r.repository() == repo && r.tag().is_some())
            .collect();
        if tagged.is_empty() {
            bail!("no tag of {repo} in the local store (see `rbuild images`)");
        }
        tagged
    } else {
        vec![reference]
    };
    for r in &refs {
        let report = push_one(&store, r)?;
        println!("{}@{}", r.familiar_repository(), report.manifest_digest);
    }
    Ok(ExitCode::SUCCESS)
}

/// Pushes one image; what moved goes to stderr.
pub fn push_one(store: &Store, reference: &Reference) -> Result<PushReport> {
    eprintln!(
        "The push refers to repository [{}]",
        reference.familiar_repository()
    );
    let report = registry::push(store, reference, &PushOptions::default())?;
    eprintln!(
        "{} blob(s) uploaded ({}), {} already there, {} mounted from another repository",
        report.uploaded_blobs,
        human_size(report.uploaded_bytes),
        report.skipped_blobs,
        report.mounted_blobs
    );
    eprintln!(
        "{}: digest: {}",
        reference.tag().unwrap_or("latest"),
        report.manifest_digest
    );
    Ok(report)
}

pub fn pull(args: PullArgs) -> Result<ExitCode> {
    let store = open_store()?;
    let reference = Reference::parse(&args.image)?;
    pull_one(&store, &reference)?;
    println!("{}", reference.familiar());
    Ok(ExitCode::SUCCESS)
}

/// Pulls one image into the store, with Docker's status lines on stderr.
pub fn pull_one(store: &Store, reference: &Reference) -> Result<()> {
    eprintln!(
        "{}: Pulling from {}",
        reference.tag().unwrap_or("latest"),
        reference.familiar_repository()
    );
    let report = registry::pull(store, reference, &PullOptions::default())?;
    eprintln!(
        "Digest: {}\n{} blob(s) downloaded ({}), {} already present",
        report
            .index_digest
            .as_ref()
            .unwrap_or(&report.manifest_digest),
        report.downloaded_blobs,
        human_size(report.downloaded_bytes),
        report.skipped_blobs
    );
    Ok(())
}
