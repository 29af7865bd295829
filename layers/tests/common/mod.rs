//! Helpers shared by the integration tests: a tree fingerprint to compare directories bit for
//! bit, a hand-made tar builder for hostile archives, and mount guards.
#![allow(dead_code)]

use rustix::buffer::spare_capacity;
use rustix::fs as rfs;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Everything a layer round trip must preserve about one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub kind: char,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    /// sha256 of a file's content, a symlink's target, or "major:minor" of a device.
    pub content: String,
    pub size: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A tree's fingerprint: every node but the root, by path bytes, plus hardlink groups.
#[derive(Debug, PartialEq, Eq)]
pub struct Tree {
    pub nodes: BTreeMap<Vec<u8>, NodeInfo>,
    pub links: BTreeSet<Vec<Vec<u8>>>,
}

pub fn xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut names = Vec::with_capacity(4096);
    rfs::llistxattr(path, spare_capacity(&mut names)).unwrap();
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"trusted.overlay.") {
            continue;
        }
        let mut v = Vec::with_capacity(65536);
        rfs::lgetxattr(path, OsStr::from_bytes(name), spare_capacity(&mut v)).unwrap();
        out.push((name.to_vec(), v));
    }
    out.sort();
    out
}

pub fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    xattrs(path)
        .into_iter()
        .find(|(n, _)| n == name.as_bytes())
        .map(|(_, v)| v)
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rfs::lsetxattr(path, name, value, rfs::XattrFlags::empty()).unwrap();
}

pub fn sha256_file(path: &Path) -> String {
    let mut f = fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

pub fn tree(root: &Path) -> Tree {
    let mut nodes = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    walk(root, b"", &mut nodes, &mut inodes);
    let links = inodes.into_values().filter(|v| v.len() > 1).collect();
    Tree { nodes, links }
}

fn walk(
    dir: &Path,
    prefix: &[u8],
    nodes: &mut BTreeMap<Vec<u8>, NodeInfo>,
    inodes: &mut BTreeMap<u64, Vec<Vec<u8>>>,
) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let rel = [prefix, entry.file_name().as_bytes()].concat();
        let md = fs::symlink_metadata(&path).unwrap();
        let ft = md.file_type();
        let (kind, content) = if ft.is_dir() {
            ('d', String::new())
        } else if ft.is_symlink() {
            (
                'l',
                fs::read_link(&path)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .escape_ascii()
                    .to_string(),
            )
        } else if ft.is_file() {
            ('f', sha256_file(&path))
        } else if ft.is_char_device() {
            (
                'c',
                format!("{}:{}", rfs::major(md.rdev()), rfs::minor(md.rdev())),
            )
        } else if ft.is_block_device() {
            (
                'b',
                format!("{}:{}", rfs::major(md.rdev()), rfs::minor(md.rdev())),
            )
        } else if ft.is_fifo() {
            ('p', String::new())
        } else {
            ('s', String::new())
        };
        if !ft.is_dir() && md.nlink() > 1 {
            inodes.entry(md.ino()).or_default().push(rel.clone());
        }
        nodes.insert(
            rel.clone(),
            NodeInfo {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                mtime: md.mtime(),
                content,
                size: if ft.is_file() { md.len() } else { 0 },
                xattrs: xattrs(&path),
            },
        );
        if ft.is_dir() {
            walk(&path, &[&rel[..], b"/"].concat(), nodes, inodes);
        }
    }
}

/// Assert two trees are equal, printing the first differing node rather than two huge maps.
pub fn assert_same(expected: &Tree, actual: &Tree) {
    for (path, e) in &expected.nodes {
        match actual.nodes.get(path) {
            None => panic!("missing {:?}", path.escape_ascii().to_string()),
            Some(a) => assert_eq!(e, a, "node {:?} differs", path.escape_ascii().to_string()),
        }
    }
    for path in actual.nodes.keys() {
        assert!(
            expected.nodes.contains_key(path),
            "unexpected {:?}",
            path.escape_ascii().to_string()
        );
    }
    assert_eq!(expected.links, actual.links, "hardlink groups differ");
}

/// A tar built by hand, header by header, to say exactly what a hostile layer says.
#[derive(Default)]
pub struct RawTar {
    pub buf: Vec<u8>,
}

pub fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while base + len.to_string().len() != len {
        len = base + len.to_string().len();
    }
    [len.to_string().as_bytes(), b" ", key, b"=", value, b"\n"].concat()
}

impl RawTar {
    pub fn new() -> Self {
        Self::default()
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(512) {
            self.buf.push(0);
        }
    }

    /// A raw header: the name and link fields are copied byte for byte (truncated to 100).
    pub fn header(
        &mut self,
        kind: tar::EntryType,
        name: &[u8],
        link: &[u8],
        size: u64,
        mode: u32,
    ) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        {
            let old = h.as_old_mut();
            let n = name.len().min(100);
            old.name[..n].copy_from_slice(&name[..n]);
            let n = link.len().min(100);
            old.linkname[..n].copy_from_slice(&link[..n]);
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(size);
        h.set_device_major(0).unwrap();
        h.set_device_minor(0).unwrap();
        h.set_cksum();
        h
    }

    pub fn push_header(&mut self, h: &tar::Header) -> &mut Self {
        self.buf.extend_from_slice(h.as_bytes());
        self
    }

    pub fn data(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    pub fn file(&mut self, name: &str, content: &[u8]) -> &mut Self {
        self.file_bytes(name.as_bytes(), content)
    }

    pub fn file_bytes(&mut self, name: &[u8], content: &[u8]) -> &mut Self {
        let h = self.header(
            tar::EntryType::Regular,
            name,
            b"",
            content.len() as u64,
            0o644,
        );
        self.push_header(&h).data(content)
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        let h = self.header(tar::EntryType::Directory, name.as_bytes(), b"", 0, mode);
        self.push_header(&h)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let h = self.header(
            tar::EntryType::Symlink,
            name.as_bytes(),
            target.as_bytes(),
            0,
            0o777,
        );
        self.push_header(&h)
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        let h = self.header(
            tar::EntryType::Link,
            name.as_bytes(),
            target.as_bytes(),
            0,
            0o644,
        );
        self.push_header(&h)
    }

    pub fn device(
        &mut self,
        kind: tar::EntryType,
        name: &str,
        major: u32,
        minor: u32,
    ) -> &mut Self {
        let mut h = self.header(kind, name.as_bytes(), b"", 0, 0o600);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.push_header(&h)
    }

    /// A PAX extended header whose data is `records` (already encoded, or garbage).
    pub fn pax(&mut self, records: &[u8]) -> &mut Self {
        let h = self.header(
            tar::EntryType::XHeader,
            b"PaxHeaders.0/x",
            b"",
            records.len() as u64,
            0o644,
        );
        self.push_header(&h).data(records)
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = self.buf.clone();
        out.extend_from_slice(&[0; 1024]);
        out
    }
}

/// Unmounts (lazily) when dropped, so a failing test leaves no mount behind.
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = layers::mount::umount_detach(&self.0);
    }
}

pub fn mkdirs(base: &Path, names: &[&str]) -> Vec<PathBuf> {
    names
        .iter()
        .map(|n| {
            let p = base.join(n);
            fs::create_dir_all(&p).unwrap();
            p
        })
        .collect()
}

pub fn set_mtime(path: &Path, secs: i64) {
    let t = rfs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rfs::utimensat(
        rfs::CWD,
        path,
        &rfs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rfs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

pub fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn mknod(path: &Path, kind: rfs::FileType, major: u32, minor: u32) {
    rfs::mknodat(
        rfs::CWD,
        path,
        kind,
        rfs::Mode::from_raw_mode(0o600),
        rfs::makedev(major, minor),
    )
    .unwrap();
}
