//! The filesystem side of images: tar layers, overlay diffs, whiteouts, compression, snapshots.
