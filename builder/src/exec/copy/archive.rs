//! Local archives for ADD: detection by content, decompression, and extraction through
//! `layers::apply` (which refuses `..`, absolute escapes and links out of the root).

use rustix::fd::BorrowedFd;
use std::fs::File;
use std::io::{self, Read, Seek};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Plain,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

fn by_magic(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(b"BZh") {
        Compression::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Compression::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (head.len() >= 4
            && u32::from_le_bytes([head[0], head[1], head[2], head[3]]) & 0xffff_fff0
                == 0x184d_2a50)
    {
        Compression::Zstd
    } else {
        Compression::Plain
    }
}

fn decoder<'a>(kind: Compression, r: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match kind {
        Compression::Plain => Box::new(r),
        // layers knows gzip (multi-member) and zstd by their magic.
        Compression::Gzip | Compression::Zstd => layers::compress::decompress(r)?.1,
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(r)),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
    })
}

/// A tar header block: not all zeros, and its checksum adds up (unsigned, or signed as
/// some old tars wrote it). That is what Go's `tar.Reader.Next` accepts.
fn is_tar_header(block: &[u8; 512]) -> bool {
    if block.iter().all(|&b| b == 0) {
        return false;
    }
    let field = &block[148..156];
    let text: String = field
        .iter()
        .map(|&b| b as char)
        .filter(|c| !matches!(c, ' ' | '\0'))
        .collect();
    let Ok(want) = i64::from_str_radix(&text, 8) else {
        return false;
    };
    let mut unsigned: i64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += b as i64;
        signed += b as i8 as i64;
    }
    want == unsigned || want == signed
}

/// Whether `file` is a tar archive (maybe compressed); the file is rewound either way.
pub fn sniff(file: &File) -> io::Result<Option<Compression>> {
    let mut f = file;
    f.rewind()?;
    let mut head = [0u8; 6];
    let n = read_full(&mut f, &mut head)?;
    let kind = by_magic(&head[..n]);
    f.rewind()?;
    let mut block = [0u8; 512];
    // A corrupt compressed stream is simply "not an archive", as in BuildKit.
    let ok = match decoder(kind, f) {
        Ok(mut d) => matches!(read_full(&mut d, &mut block), Ok(512)) && is_tar_header(&block),
        Err(_) => false,
    };
    f.rewind()?;
    Ok(ok.then_some(kind))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Extracts into the directory `dest` (an fd inside the image root, already resolved);
/// `owner` replaces every entry's owner (`--chown`). Returns entries and bytes read.
pub fn extract(
    file: File,
    kind: Compression,
    dest: BorrowedFd<'_>,
    owner: Option<(u32, u32)>,
) -> Result<(u64, u64), layers::ApplyError> {
    let counter = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let counted = CountInto {
        inner: file,
        count: counter.clone(),
    };
    let plain = decoder(kind, counted).map_err(layers::ApplyError::Read)?;
    let plain: Box<dyn Read> = match owner {
        Some((uid, gid)) => Box::new(ChownTar::new(plain, uid, gid)),
        None => plain,
    };
    // The fd was resolved inside the image root; /proc/self/fd names exactly that
    // directory, so `layers::apply` roots itself there with no lookup of its own.
    let path = super::proc_path(dest, std::ffi::OsStr::new(""));
    let stats = layers::apply(
        plain,
        &path,
        &layers::ApplyOptions::new(layers::ApplyMode::Flatten),
    )?;
    Ok((stats.entries, counter.get()))
}

/// Counts the (compressed) bytes read, for the stats.
struct CountInto<R> {
    inner: R,
    count: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for CountInto<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Rewrites a tar stream so that every entry belongs to `uid:gid` (`ADD --chown` of an
/// archive): header owner fields are replaced, PAX `uid`/`gid`/`uname`/`gname` records
/// dropped; data passes through untouched.
pub struct ChownTar<R> {
    inner: R,
    uid: u32,
    gid: u32,
    out: Vec<u8>,
    pos: usize,
    /// Bytes of entry data (with padding) still to pass through.
    data_left: u64,
    /// After the end-of-archive marker, or on anything unparsable: copy as is and let
    /// `layers::apply` judge it.
    passthrough: bool,
}

impl<R: Read> ChownTar<R> {
    pub fn new(inner: R, uid: u32, gid: u32) -> Self {
        Self {
            inner,
            uid,
            gid,
            out: Vec::new(),
            pos: 0,
            data_left: 0,
            passthrough: false,
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        self.out.clear();
        self.pos = 0;
        if self.passthrough || self.data_left > 0 {
            let want = if self.passthrough {
                64 << 10
            } else {
                self.data_left.min(64 << 10) as usize
            };
            self.out.resize(want, 0);
            let n = read_full(&mut self.inner, &mut self.out)?;
            self.out.truncate(n);
            if !self.passthrough {
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                self.data_left -= n as u64;
            }
            return Ok(());
        }
        let mut block = [0u8; 512];
        let n = read_full(&mut self.inner, &mut block)?;
        if n < 512 || block.iter().all(|&b| b == 0) {
            self.out.extend_from_slice(&block[..n]);
            self.passthrough = true;
            return Ok(());
        }
        let mut header = tar::Header::new_old();
        header.as_mut_bytes().copy_from_slice(&block);
        let Ok(size) = header.entry_size() else {
            self.out.extend_from_slice(&block);
            self.passthrough = true;
            return Ok(());
        };
        let padded = size.div_ceil(512) * 512;
        match header.entry_type().as_byte() {
            b'x' if size <= 1 << 20 => {
                let mut data = vec![0u8; padded as usize];
                if read_full(&mut self.inner, &mut data)? < data.len() {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let records = strip_owner_records(&data[..size as usize]);
                header.set_size(records.len() as u64);
                header.set_cksum();
                self.out.extend_from_slice(header.as_bytes());
                self.out.extend_from_slice(&records);
                let pad = records.len().div_ceil(512) * 512 - records.len();
                self.out.resize(self.out.len() + pad, 0);
            }
            b'x' | b'g' | b'L' | b'K' => {
                self.out.extend_from_slice(&block);
                self.data_left = padded;
            }
            _ => {
                header.set_uid(self.uid as u64);
                header.set_gid(self.gid as u64);
                header.set_cksum();
                self.out.extend_from_slice(header.as_bytes());
                self.data_left = padded;
            }
        }
        Ok(())
    }
}

/// PAX records without the ones that carry an owner.
fn strip_owner_records(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let Some(sp) = data.iter().position(|&b| b == b' ') else {
            break;
        };
        let Some(len) = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&l| l > sp && l <= data.len())
        else {
            break;
        };
        let record = &data[..len];
        let kv = &record[sp + 1..];
        let key = kv.split(|&b| b == b'=').next().unwrap_or_default();
        if !matches!(key, b"uid" | b"gid" | b"uname" | b"gname") {
            out.extend_from_slice(record);
        }
        data = &data[len..];
    }
    out
}

impl<R: Read> Read for ChownTar<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.out.len() {
            self.fill()?;
            if self.out.is_empty() {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_numbers() {
        assert_eq!(by_magic(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(by_magic(b"BZh91AY"), Compression::Bzip2);
        assert_eq!(
            by_magic(&[0xfd, b'7', b'z', b'X', b'Z', 0]),
            Compression::Xz
        );
        assert_eq!(by_magic(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(by_magic(b"hello"), Compression::Plain);
    }

    #[test]
    fn pax_owner_records_are_dropped() {
        let rec = |k: &str, v: &str| {
            let body = format!(" {k}={v}\n");
            let mut len = body.len() + 1;
            while len != body.len() + len.to_string().len() {
                len = body.len() + len.to_string().len();
            }
            format!("{len}{body}")
        };
        let data = format!(
            "{}{}{}",
            rec("uid", "1000"),
            rec("path", "a/b"),
            rec("gname", "x")
        );
        let out = strip_owner_records(data.as_bytes());
        assert_eq!(String::from_utf8(out).unwrap(), rec("path", "a/b"));
    }
}
