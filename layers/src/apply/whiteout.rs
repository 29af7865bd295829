//! Whiteouts: `.wh.NAME` and `.wh..wh..opq`, removed from a flattened tree or stored in
//! overlay form in a snapshot.

use super::entries::{Applier, Ctx};
use super::{ApplyError, Refusal};
use crate::resolve::{join, Follow};
use crate::sys;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;

impl Applier<'_> {
    pub(super) fn whiteout(
        &mut self,
        parent: &[&[u8]],
        target: &[u8],
        cx: &Ctx<'_>,
    ) -> Result<(), ApplyError> {
        let opaque = target == b".wh..opq";
        if !opaque && target.starts_with(b".wh.") {
            // Other `.wh..wh.*` names are AUFS bookkeeping (plnk, aufs): nothing to apply.
            return Ok(());
        }
        if !opaque && matches!(target, b"" | b"." | b"..") {
            return Err(cx.refused(Refusal::BadWhiteout));
        }
        let create = !self.flatten();
        let Some(res) = self
            .root
            .resolve_dir(parent, Follow::Never, create)
            .map_err(|err| cx.resolve(err))?
        else {
            return Ok(()); // nothing below to hide
        };
        self.note_created(&res);

        if !self.flatten() {
            if opaque {
                self.dirs.entry(res.rel).or_default().opaque = true;
                return Ok(());
            }
            let os_name = OsStr::from_bytes(target);
            match rfs::statat(&res.fd, os_name, AtFlags::SYMLINK_NOFOLLOW) {
                // This layer's own entry wins; a directory of its own must still hide the
                // lower one, as the flattened apply would have.
                Ok(st) => {
                    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                        self.dirs.entry(join(&res.rel, target)).or_default().opaque = true;
                    }
                }
                Err(Errno::NOENT) => {
                    rfs::mknodat(
                        &res.fd,
                        os_name,
                        FileType::CharacterDevice,
                        Mode::empty(),
                        rfs::makedev(0, 0),
                    )
                    .map_err(cx.errno("mknod whiteout"))?;
                }
                Err(err) => return Err(cx.errno("lstat")(err)),
            }
            return Ok(());
        }

        let dir = self
            .root
            .open_dir_strict(&res.rel)
            .map_err(cx.errno("open whiteout directory"))?;
        if opaque {
            for child in sys::dir_names(dir.as_fd()).map_err(cx.io("read directory"))? {
                self.prune(dir.as_fd(), &join(&res.rel, &child), &child)
                    .map_err(cx.io("remove lower entry"))?;
            }
        } else {
            self.prune(dir.as_fd(), &join(&res.rel, target), target)
                .map_err(cx.io("remove lower entry"))?;
        }
        Ok(())
    }

    /// Remove what lower layers put at `rel` (named `name` in `dir`), keeping this layer's
    /// entries and the directories leading to them.
    fn prune(&self, dir: BorrowedFd<'_>, rel: &[u8], name: &[u8]) -> io::Result<()> {
        let ours = self.written.contains(rel);
        let below = [rel, b"/"].concat();
        let ours_below = self
            .written
            .range(below.clone()..)
            .next()
            .is_some_and(|p| p.starts_with(&below));
        if !ours && !ours_below {
            return sys::remove_all_at(dir, name);
        }
        let st = match rfs::statat(dir, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return Ok(());
        }
        let child: OwnedFd = rfs::openat(
            dir,
            OsStr::from_bytes(name),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        for grandchild in sys::dir_names(child.as_fd())? {
            self.prune(child.as_fd(), &join(rel, &grandchild), &grandchild)?;
        }
        Ok(())
    }
}
