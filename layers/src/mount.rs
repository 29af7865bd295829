//! Overlay mounts for a build step: snapshot lower dirs + a fresh upper dir → a merged root.
//!
//! Options are always `redirect_dir=off,metacopy=off,index=off`: with them an upper dir is a
//! self-contained diff ([`crate::writer`] refuses redirects and metacopy files).
//!
//! Writable overlays are also `volatile` (Linux 5.10+): fsync inside a step becomes a no-op.
//! A step's upper dir needs no durability of its own (its layer blob is written and fsynced
//! into the store when the step ends, and a killed step's upper dir is thrown away), while
//! dpkg alone fsyncs every file it unpacks: `apt-get install` steps spend much of their time
//! waiting on the disk without it.
//!
//! Limits: `mount(2)` copies at most one page (4096 bytes) of options, and silently cutting a
//! lowerdir list would mount the wrong layers. Up to that length (about 45 lower dirs at
//! `/var/lib/rbuild/snapshots/<64 hex>/fs`) the classic call is used; past it, or when a path
//! holds `,` `:` or `\` (separators in the option string), the new mount API is used with one
//! `lowerdir+` parameter per layer, which needs Linux 6.8 or later. overlayfs itself stacks at
//! most 500 lower dirs.

use rustix::fs::CWD;
use rustix::mount::{
    fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, mount, move_mount,
    unmount, FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Options every build-step overlay gets.
const FIXED_OPTIONS: [(&str, &str); 3] = [
    ("redirect_dir", "off"),
    ("metacopy", "off"),
    ("index", "off"),
];

/// What `mount(2)` accepts: one page including the terminating NUL.
const LEGACY_MAX: usize = 4095;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("an overlay mount needs at least one lower dir")]
    NoLowerDirs,
    #[error("mounting overlay on {target} ({how}): {source}")]
    Mount {
        target: PathBuf,
        how: String,
        #[source]
        source: io::Error,
    },
    #[error("unmounting {target}: {source}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Mount a writable overlay on `target`; `lowers` top-most first, as overlay's lowerdir wants
/// and as [`crate::Snapshotter::lower_dirs`] returns them. `work` must be an empty directory
/// on the same filesystem as `upper`.
pub fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), MountError> {
    mount_impl(lowers, Some((upper, work)), target)
}

/// Mount a read-only overlay of `lowers` (top-most first) on `target`.
pub fn mount_overlay_readonly(lowers: &[PathBuf], target: &Path) -> Result<(), MountError> {
    if let [only] = lowers {
        // overlayfs wants two lower dirs when it has no upper: one snapshot is simply bound
        // read-only (a bottom layer has nothing beneath it for whiteouts to hide).
        let err = |source: rustix::io::Errno| MountError::Mount {
            target: target.to_path_buf(),
            how: "read-only bind".to_string(),
            source: source.into(),
        };
        rustix::mount::mount_bind(only, target).map_err(err)?;
        return rustix::mount::mount_remount(
            target,
            rustix::mount::MountFlags::BIND | rustix::mount::MountFlags::RDONLY,
            "",
        )
        .map_err(err);
    }
    mount_impl(lowers, None, target)
}

/// Unmount `target`.
pub fn umount(target: &Path) -> Result<(), MountError> {
    unmount(target, UnmountFlags::empty()).map_err(|e| MountError::Unmount {
        target: target.to_path_buf(),
        source: e.into(),
    })
}

/// Unmount `target` lazily (`MNT_DETACH`): for cleanup paths where a process may still hold
/// a file open inside the mount.
pub fn umount_detach(target: &Path) -> Result<(), MountError> {
    unmount(target, UnmountFlags::DETACH).map_err(|e| MountError::Unmount {
        target: target.to_path_buf(),
        source: e.into(),
    })
}

fn mount_impl(
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<(), MountError> {
    if lowers.is_empty() {
        return Err(MountError::NoLowerDirs);
    }
    let mut all: Vec<&Path> = lowers.iter().map(|p| p.as_path()).collect();
    if let Some((u, w)) = upper {
        all.extend([u, w]);
    }
    let plain = all.iter().all(|p| {
        !p.as_os_str()
            .as_bytes()
            .iter()
            .any(|b| b",:\\\n".contains(b))
    });
    let data = legacy_options(lowers, upper);
    if plain && data.len() <= LEGACY_MAX {
        let c = CString::new(data).expect("paths hold no NUL");
        return mount(
            "overlay",
            target,
            "overlay",
            MountFlags::empty(),
            c.as_c_str(),
        )
        .map_err(|e| MountError::Mount {
            target: target.to_path_buf(),
            how: format!("mount(2), {} lower dirs", lowers.len()),
            source: e.into(),
        });
    }
    mount_new_api(lowers, upper, target).map_err(|(step, e)| MountError::Mount {
        target: target.to_path_buf(),
        how: format!(
            "new mount API, {} lower dirs, at {step}; `lowerdir+` needs Linux 6.8+",
            lowers.len()
        ),
        source: e,
    })
}

fn legacy_options(lowers: &[PathBuf], upper: Option<(&Path, &Path)>) -> Vec<u8> {
    let mut data = b"lowerdir=".to_vec();
    for (i, l) in lowers.iter().enumerate() {
        if i > 0 {
            data.push(b':');
        }
        data.extend_from_slice(l.as_os_str().as_bytes());
    }
    if let Some((u, w)) = upper {
        data.extend_from_slice(b",upperdir=");
        data.extend_from_slice(u.as_os_str().as_bytes());
        data.extend_from_slice(b",workdir=");
        data.extend_from_slice(w.as_os_str().as_bytes());
        data.extend_from_slice(b",volatile");
    }
    for (k, v) in FIXED_OPTIONS {
        data.extend_from_slice(format!(",{k}={v}").as_bytes());
    }
    data
}

fn mount_new_api(
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<(), (&'static str, io::Error)> {
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| ("fsopen", e.into()))?;
    fsconfig_set_string(&fs, "source", "overlay").map_err(|e| ("source", e.into()))?;
    // Appended in the order given: top-most first, like the colon-separated list.
    for l in lowers {
        fsconfig_set_string(&fs, "lowerdir+", l.as_path()).map_err(|e| ("lowerdir+", e.into()))?;
    }
    if let Some((u, w)) = upper {
        fsconfig_set_string(&fs, "upperdir", u).map_err(|e| ("upperdir", e.into()))?;
        fsconfig_set_string(&fs, "workdir", w).map_err(|e| ("workdir", e.into()))?;
        fsconfig_set_flag(&fs, "volatile").map_err(|e| ("volatile", e.into()))?;
    }
    for (k, v) in FIXED_OPTIONS {
        fsconfig_set_string(&fs, k, v).map_err(|e| (k, e.into()))?;
    }
    fsconfig_create(&fs).map_err(|e| ("create", e.into()))?;
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(|e| ("fsmount", e.into()))?;
    move_mount(
        &mnt,
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| ("move_mount", e.into()))
}
