//! `USER` and `--chown` specs resolved against the image's own `/etc/passwd` and
//! `/etc/group`, read inside the image root (`openat2(RESOLVE_IN_ROOT)`: an image whose
//! `/etc/passwd` is a symlink to `/etc/shadow` reads its own shadow file, never the host's).
//!
//! The two specs follow different rules in Docker, kept here:
//!
//! - `USER spec` (BuildKit `executor/oci.GetUser`, runc's `GetExecUser`): `uid:gid` with both
//!   numeric (or `root`) is taken as is, without reading any file and with no supplementary
//!   groups. Otherwise the user is looked up by name, or by uid when numeric; a numeric uid
//!   with no entry is fine and gets gid 0; a name with no entry is an error. An explicit
//!   group is looked up by name or gid (a numeric gid needs no entry); without one, the
//!   supplementary groups are every group that lists the user's name.
//! - `--chown=spec` (BuildKit `llb.WithUser` + `file/user_linux.go`): each side is numeric or
//!   a name. A numeric user alone means `uid:uid` (`--chown=1000` is `1000:1000`); a named
//!   user takes its primary group from passwd; a group, when given, replaces it. Where
//!   BuildKit silently uses 0 for a name it cannot find, we fail and name the file, except
//!   for `root`, which is 0 even in an image without `/etc/passwd` (`FROM scratch`).

use crate::context::root::{RootDir, RootError};
use std::path::{Path, PathBuf};

/// `/etc/passwd` and `/etc/group` bigger than this are refused rather than read.
const MAX_FILE: u64 = 32 << 20;

/// A resolved `USER`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, in `/etc/group` order.
    pub groups: Vec<u32>,
    /// The home directory from `/etc/passwd`, when the user has an entry.
    pub home: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("unable to find user {name}: no matching entries in {file} of the image")]
    NoUser { name: String, file: PathBuf },
    #[error("unable to find group {name}: no matching entries in {file} of the image")]
    NoGroup { name: String, file: PathBuf },
    #[error("invalid user spec {spec:?}: {why}")]
    Invalid { spec: String, why: &'static str },
    #[error("reading the image's user database: {0}")]
    Root(#[from] RootError),
}

/// One `/etc/passwd` line.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

/// One `/etc/group` line.
#[derive(Clone, Debug, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Lines as glibc and runc read them: trimmed, `#` comments and blank lines skipped,
/// fields split on `:`, a number that does not parse reads as 0.
fn lines(text: &[u8]) -> impl Iterator<Item = Vec<String>> + '_ {
    text.split(|&b| b == b'\n').filter_map(|l| {
        let l = String::from_utf8_lossy(l);
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            None
        } else {
            Some(l.split(':').map(str::to_string).collect())
        }
    })
}

fn num(s: Option<&String>) -> u32 {
    s.and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn parse_passwd(text: &[u8]) -> Vec<PasswdEntry> {
    lines(text)
        .map(|f| PasswdEntry {
            name: f.first().cloned().unwrap_or_default(),
            uid: num(f.get(2)),
            gid: num(f.get(3)),
            home: f.get(5).cloned().unwrap_or_default(),
        })
        .collect()
}

fn parse_group(text: &[u8]) -> Vec<GroupEntry> {
    lines(text)
        .map(|f| GroupEntry {
            name: f.first().cloned().unwrap_or_default(),
            gid: num(f.get(2)),
            members: f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// The image's user database, read lazily.
struct Db<'a> {
    root: &'a RootDir,
    passwd: Option<Option<Vec<PasswdEntry>>>,
    group: Option<Option<Vec<GroupEntry>>>,
}

const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";

impl<'a> Db<'a> {
    fn new(root: &'a RootDir) -> Self {
        Self {
            root,
            passwd: None,
            group: None,
        }
    }

    /// `None` when the image has no `/etc/passwd`.
    fn passwd(&mut self) -> Result<Option<&[PasswdEntry]>, UserError> {
        if self.passwd.is_none() {
            let text = self.root.read_file(Path::new(PASSWD), MAX_FILE)?;
            self.passwd = Some(text.map(|t| parse_passwd(&t)));
        }
        Ok(self.passwd.as_ref().and_then(|p| p.as_deref()))
    }

    fn group(&mut self) -> Result<Option<&[GroupEntry]>, UserError> {
        if self.group.is_none() {
            let text = self.root.read_file(Path::new(GROUP), MAX_FILE)?;
            self.group = Some(text.map(|t| parse_group(&t)));
        }
        Ok(self.group.as_ref().and_then(|g| g.as_deref()))
    }

    fn file(&self, f: &str) -> PathBuf {
        PathBuf::from(f)
    }
}

fn parse_id(s: &str) -> Option<u32> {
    if s == "root" {
        return Some(0);
    }
    s.parse().ok()
}

/// Resolves a `USER` instruction's spec in the image at `root`.
pub fn resolve_user(root: &Path, spec: &str) -> Result<User, UserError> {
    let root = RootDir::open(root)?;
    resolve_user_in(&root, spec)
}

/// [`resolve_user`] with the root already open.
pub fn resolve_user_in(root: &RootDir, spec: &str) -> Result<User, UserError> {
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    // The fast path: both sides numeric, no file read, no supplementary groups.
    if let Some(g) = group_arg {
        if let (Some(uid), Some(gid)) = (parse_id(user_arg), parse_id(g)) {
            return Ok(User {
                uid,
                gid,
                groups: Vec::new(),
                home: None,
            });
        }
    }
    let group_arg = group_arg.filter(|g| !g.is_empty());
    let mut db = Db::new(root);
    let mut user = User {
        uid: 0,
        gid: 0,
        groups: Vec::new(),
        home: None,
    };
    let uid_arg: Option<u32> = user_arg.parse().ok();
    let found = match db.passwd()? {
        Some(entries) => entries
            .iter()
            .find(|e| match uid_arg {
                _ if user_arg.is_empty() => e.uid == 0,
                Some(uid) => e.uid == uid,
                None => e.name == user_arg,
            })
            .cloned(),
        None => None,
    };
    let matched_name = match found {
        Some(e) => {
            user.uid = e.uid;
            user.gid = e.gid;
            user.home = Some(e.home);
            Some(e.name)
        }
        None => {
            match uid_arg {
                Some(uid) => user.uid = uid,
                None if user_arg.is_empty() => {}
                None => {
                    return Err(UserError::NoUser {
                        name: user_arg.to_string(),
                        file: db.file(PASSWD),
                    })
                }
            }
            None
        }
    };
    if let Some(g) = group_arg {
        let gid_arg: Option<u32> = g.parse().ok();
        let hit = db.group()?.and_then(|groups| {
            groups
                .iter()
                .find(|e| match gid_arg {
                    Some(gid) => e.gid == gid,
                    None => e.name == g,
                })
                .map(|e| e.gid)
        });
        user.gid = match (hit, gid_arg) {
            (Some(gid), _) | (None, Some(gid)) => gid,
            (None, None) => {
                return Err(UserError::NoGroup {
                    name: g.to_string(),
                    file: db.file(GROUP),
                })
            }
        };
    } else if let Some(name) = matched_name {
        if let Some(groups) = db.group()? {
            user.groups = groups
                .iter()
                .filter(|e| e.members.contains(&name))
                .map(|e| e.gid)
                .collect();
        }
    }
    Ok(user)
}

/// Resolves a `--chown` spec in the image at `root` to `(uid, gid)`.
pub fn resolve_chown(root: &Path, spec: &str) -> Result<(u32, u32), UserError> {
    let root = RootDir::open(root)?;
    resolve_chown_in(&root, spec)
}

/// [`resolve_chown`] with the root already open.
pub fn resolve_chown_in(root: &RootDir, spec: &str) -> Result<(u32, u32), UserError> {
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user_arg.is_empty() {
        return Err(UserError::Invalid {
            spec: spec.to_string(),
            why: "expected user[:group], e.g. --chown=1000:1000 or --chown=www-data",
        });
    }
    let mut db = Db::new(root);
    let (uid, mut gid) = match user_arg.parse::<u32>() {
        Ok(id) => (id, id),
        Err(_) => {
            let hit = db.passwd()?.and_then(|p| {
                p.iter()
                    .find(|e| e.name == user_arg)
                    .map(|e| (e.uid, e.gid))
            });
            match hit {
                Some(ids) => ids,
                None if user_arg == "root" => (0, 0),
                None => {
                    return Err(UserError::NoUser {
                        name: user_arg.to_string(),
                        file: db.file(PASSWD),
                    })
                }
            }
        }
    };
    if let Some(g) = group_arg.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(id) => id,
            Err(_) => {
                let hit = db
                    .group()?
                    .and_then(|groups| groups.iter().find(|e| e.name == g).map(|e| e.gid));
                match hit {
                    Some(id) => id,
                    None if g == "root" => 0,
                    None => {
                        return Err(UserError::NoGroup {
                            name: g.to_string(),
                            file: db.file(GROUP),
                        })
                    }
                }
            }
        };
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_and_group_lines() {
        let p = parse_passwd(
            b"# c\nroot:x:0:0:root:/root:/bin/sh\n\n  www:x:33:34::/var/www:/bin/false\nbad:x:zz\n",
        );
        assert_eq!(p.len(), 3);
        assert_eq!(p[1].name, "www");
        assert_eq!(
            (p[1].uid, p[1].gid, p[1].home.as_str()),
            (33, 34, "/var/www")
        );
        assert_eq!((p[2].uid, p[2].gid), (0, 0));
        let g = parse_group(b"adm:x:4:root,www\nstaff:x:50:\n");
        assert_eq!(g[0].members, ["root", "www"]);
        assert!(g[1].members.is_empty());
    }
}
