//! Integration tests of the `images` crate on real files, with real skopeo and umoci.

mod archive;
mod blobs;
mod canonical;
mod child;
mod common;
mod crash;
mod fsck;
mod refs;
mod tools;
