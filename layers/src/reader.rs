//! A strict streaming tar reader for layers: ustar/PAX/GNU long names, with limits.
//!
//! Written here rather than taken from the `tar` crate because a layer reader must bound what
//! it buffers (the `tar` crate reads a PAX header of any declared size into memory) and must
//! agree with Go's archive/tar, which BuildKit and containerd use, on where data is: header-only
//! types (links, directories, devices, fifos) carry no data whatever their size field says.

use crate::pax;
use std::io::{self, Read};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

/// One entry's header, with PAX and GNU extensions folded in.
#[derive(Debug)]
pub(crate) struct Entry {
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub dev: (u32, u32),
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug)]
pub(crate) enum ReadError {
    /// Not a well-formed tar; `offset` is where the bad header starts.
    Malformed {
        offset: u64,
        reason: String,
    },
    /// Extension headers before one entry add up to more than the limit.
    TooBig {
        offset: u64,
        limit: usize,
    },
    /// A valid tar feature this reader refuses (`path` may be empty when not yet known).
    Unsupported {
        path: Vec<u8>,
        what: String,
    },
    Io(io::Error),
}

pub(crate) struct TarReader<R> {
    inner: R,
    offset: u64,
    /// Unread data of the current entry, then its padding.
    data_left: u64,
    pad_left: u64,
    max_ext: usize,
    done: bool,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R, max_ext: usize) -> Self {
        Self {
            inner,
            offset: 0,
            data_left: 0,
            pad_left: 0,
            max_ext,
            done: false,
        }
    }

    /// The wrapped reader, positioned after the end-of-archive marker once `next` said so.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The data of the entry last returned by `next`.
    pub fn data(&mut self) -> DataReader<'_, R> {
        DataReader { tar: self }
    }

    fn skip(&mut self, mut n: u64) -> Result<(), ReadError> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            self.read_exact_counted(&mut buf[..want])?;
            n -= want as u64;
        }
        Ok(())
    }

    fn read_exact_counted(&mut self, buf: &mut [u8]) -> Result<(), ReadError> {
        let at = self.offset;
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                ReadError::Malformed {
                    offset: at,
                    reason: "truncated archive".into(),
                }
            } else {
                ReadError::Io(e)
            }
        })?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// Read one 512-byte block; `None` at a clean end of stream.
    fn block(&mut self) -> Result<Option<[u8; 512]>, ReadError> {
        let mut b = [0u8; 512];
        let mut n = 0;
        while n < 512 {
            match self.inner.read(&mut b[n..]) {
                Ok(0) if n == 0 => return Ok(None),
                Ok(0) => {
                    return Err(ReadError::Malformed {
                        offset: self.offset,
                        reason: "truncated header".into(),
                    })
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
        self.offset += 512;
        Ok(Some(b))
    }

    /// The next entry, or `None` at the end-of-archive marker (or a clean end of stream).
    pub fn next(&mut self) -> Result<Option<Entry>, ReadError> {
        if self.done {
            return Ok(None);
        }
        let rest = self.data_left + self.pad_left;
        self.skip(rest)?;
        self.data_left = 0;
        self.pad_left = 0;

        let mut ext_bytes = 0usize;
        let mut pax_records: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut gnu_name: Option<Vec<u8>> = None;
        let mut gnu_link: Option<Vec<u8>> = None;
        loop {
            let at = self.offset;
            let Some(block) = self.block()? else {
                self.done = true;
                return Ok(None);
            };
            if block.iter().all(|&b| b == 0) {
                self.done = true;
                return Ok(None);
            }
            let h = tar::Header::from_byte_slice(&block);
            check_cksum(&block, at)?;
            let bad = |what: &str, e: io::Error| ReadError::Malformed {
                offset: at,
                reason: format!("bad {what} field: {e}"),
            };
            let size = h.entry_size().map_err(|e| bad("size", e))?;
            let flag = h.entry_type().as_byte();
            match flag {
                b'x' | b'g' | b'L' | b'K' => {
                    ext_bytes =
                        ext_bytes.saturating_add(usize::try_from(size).unwrap_or(usize::MAX));
                    if ext_bytes > self.max_ext {
                        return Err(ReadError::TooBig {
                            offset: at,
                            limit: self.max_ext,
                        });
                    }
                    let mut data = vec![0u8; size as usize];
                    self.read_exact_counted(&mut data)?;
                    self.skip(pad(size))?;
                    match flag {
                        b'x' => {
                            let recs = pax::parse_records(&data)
                                .map_err(|reason| ReadError::Malformed { offset: at, reason })?;
                            for (k, v) in recs {
                                pax_records.push((k.to_vec(), v.to_vec()));
                            }
                        }
                        // Global headers carry nothing a layer needs (git archive puts a
                        // commit id there); they only count against the limit.
                        b'g' => {}
                        b'L' => gnu_name = Some(trim_nul(data)),
                        _ => gnu_link = Some(trim_nul(data)),
                    }
                    continue;
                }
                _ => {}
            }

            let mut e = Entry {
                path: gnu_name
                    .take()
                    .unwrap_or_else(|| h.path_bytes().into_owned()),
                link: gnu_link
                    .take()
                    .or_else(|| h.link_name_bytes().map(|l| l.into_owned()))
                    .unwrap_or_default(),
                kind: Kind::File,
                size,
                mode: h.mode().map_err(|e| bad("mode", e))? & 0o7777,
                uid: h.uid().map_err(|e| bad("uid", e))?,
                gid: h.gid().map_err(|e| bad("gid", e))?,
                mtime: h.mtime().map_err(|e| bad("mtime", e))? as i64,
                dev: (0, 0),
                xattrs: Vec::new(),
            };
            for (k, v) in pax_records.drain(..) {
                apply_pax(&mut e, &k, v, at)?;
            }
            e.kind = match flag {
                b'0' | 0 | b'7' if e.path.ends_with(b"/") => Kind::Dir,
                b'0' | 0 | b'7' => Kind::File,
                b'1' => Kind::Hardlink,
                b'2' => Kind::Symlink,
                b'3' => Kind::Char,
                b'4' => Kind::Block,
                b'5' => Kind::Dir,
                b'6' => Kind::Fifo,
                b'S' => {
                    return Err(ReadError::Unsupported {
                        path: e.path,
                        what: "GNU sparse entries".into(),
                    })
                }
                other => {
                    return Err(ReadError::Unsupported {
                        path: e.path,
                        what: format!("entry type {:?}", other as char),
                    })
                }
            };
            if matches!(e.kind, Kind::Char | Kind::Block) {
                let major = h
                    .device_major()
                    .map_err(|e| bad("devmajor", e))?
                    .unwrap_or(0);
                let minor = h
                    .device_minor()
                    .map_err(|e| bad("devminor", e))?
                    .unwrap_or(0);
                e.dev = (major, minor);
            }
            if e.kind != Kind::File {
                e.size = 0;
            }
            self.data_left = e.size;
            self.pad_left = pad(e.size);
            return Ok(Some(e));
        }
    }
}

fn apply_pax(e: &mut Entry, key: &[u8], value: Vec<u8>, at: u64) -> Result<(), ReadError> {
    let num = |what: &str| -> Result<i64, ReadError> {
        let s = std::str::from_utf8(&value).unwrap_or("");
        // PAX times may carry a fraction; whole seconds are all a layer keeps.
        let int = s.split('.').next().unwrap_or("");
        int.parse::<i64>().map_err(|_| ReadError::Malformed {
            offset: at,
            reason: format!(
                "bad PAX {what} value {:?}",
                value.escape_ascii().to_string()
            ),
        })
    };
    let unsigned = |v: i64, what: &str| {
        u64::try_from(v).map_err(|_| ReadError::Malformed {
            offset: at,
            reason: format!("negative PAX {what}"),
        })
    };
    match key {
        b"path" => e.path = value,
        b"linkpath" => e.link = value,
        b"size" => e.size = unsigned(num("size")?, "size")?,
        b"uid" => e.uid = unsigned(num("uid")?, "uid")?,
        b"gid" => e.gid = unsigned(num("gid")?, "gid")?,
        b"mtime" => e.mtime = num("mtime")?,
        k if k.starts_with(b"SCHILY.xattr.") => {
            e.xattrs.push((k[b"SCHILY.xattr.".len()..].to_vec(), value));
        }
        k if k.starts_with(b"GNU.sparse.") => {
            return Err(ReadError::Unsupported {
                path: e.path.clone(),
                what: "PAX sparse files".into(),
            })
        }
        // atime, ctime, uname, gname, comment, charset, LIBARCHIVE.*, SCHILY.dev/ino/nlink...
        _ => {}
    }
    Ok(())
}

fn check_cksum(block: &[u8; 512], at: u64) -> Result<(), ReadError> {
    let field = &block[148..156];
    let text: Vec<u8> = field
        .iter()
        .copied()
        .take_while(|&b| b != 0)
        .filter(|&b| b != b' ')
        .collect();
    let stored = std::str::from_utf8(&text)
        .ok()
        .and_then(|s| u32::from_str_radix(s, 8).ok())
        .ok_or_else(|| ReadError::Malformed {
            offset: at,
            reason: "bad checksum field".into(),
        })?;
    let unsigned: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                b' ' as u32
            } else {
                b as u32
            }
        })
        .sum();
    // Some historic writers summed signed chars.
    let signed: i32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                b' ' as i32
            } else {
                b as i8 as i32
            }
        })
        .sum();
    if stored == unsigned || stored as i32 == signed {
        Ok(())
    } else {
        Err(ReadError::Malformed {
            offset: at,
            reason: "header checksum mismatch".into(),
        })
    }
}

fn pad(size: u64) -> u64 {
    (512 - size % 512) % 512
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// Reads the current entry's data, never past it.
pub(crate) struct DataReader<'a, R> {
    tar: &'a mut TarReader<R>,
}

impl<R: Read> Read for DataReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (buf.len() as u64).min(self.tar.data_left) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.tar.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive ends inside an entry's data",
            ));
        }
        self.tar.data_left -= n as u64;
        self.tar.offset += n as u64;
        Ok(n)
    }
}
