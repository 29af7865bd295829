//! PAX extended header records (`"<len> <key>=<value>\n"`), encoded and decoded as raw bytes so
//! that non-UTF-8 paths and binary xattr values round trip.

/// Append one record. The length prefix counts itself, so find the fixed point of its width.
pub(crate) fn push_record(buf: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let base = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = base + 1;
    loop {
        let next = base + decimal_width(len);
        if next == len {
            break;
        }
        len = next;
    }
    buf.extend_from_slice(len.to_string().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(key);
    buf.push(b'=');
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

fn decimal_width(mut n: usize) -> usize {
    let mut w = 1;
    while n >= 10 {
        n /= 10;
        w += 1;
    }
    w
}

/// One `(key, value)` record.
pub(crate) type Record<'a> = (&'a [u8], &'a [u8]);

/// Split an extended header's data into `(key, value)` pairs.
pub(crate) fn parse_records(mut data: &[u8]) -> Result<Vec<Record<'_>>, String> {
    let mut out = Vec::new();
    loop {
        // Some writers pad the data block with NULs after the last record.
        if data.iter().all(|&b| b == 0) {
            return Ok(out);
        }
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or("PAX record without a length")?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("PAX record with a bad length")?;
        if len <= space + 1 || len > data.len() {
            return Err(format!("PAX record length {len} out of range"));
        }
        let record = &data[space + 1..len];
        let record = record
            .strip_suffix(b"\n")
            .ok_or("PAX record not ended by a newline")?;
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or("PAX record without '='")?;
        if eq == 0 {
            return Err("PAX record with an empty key".into());
        }
        out.push((&record[..eq], &record[eq + 1..]));
        data = &data[len..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefix_counts_itself() {
        for n in [0usize, 1, 5, 6, 7, 90, 95, 96, 97, 995, 996, 1000] {
            let mut buf = Vec::new();
            let value = vec![b'v'; n];
            push_record(&mut buf, b"path", &value);
            let parsed = parse_records(&buf).unwrap();
            assert_eq!(parsed, vec![(&b"path"[..], &value[..])], "n={n}");
        }
    }

    #[test]
    fn binary_values_and_padding() {
        let mut buf = Vec::new();
        push_record(&mut buf, b"SCHILY.xattr.user.x", b"a\0b\n=c");
        push_record(&mut buf, b"path", b"\xff\xfe");
        buf.extend_from_slice(&[0; 30]);
        let parsed = parse_records(&buf).unwrap();
        assert_eq!(parsed[0].1, b"a\0b\n=c");
        assert_eq!(parsed[1].1, b"\xff\xfe");
        assert!(parse_records(b"5 a=b\n").is_err());
        assert!(parse_records(b"99 a=b\n").is_err());
        assert!(parse_records(b"6 =bc\n").is_err());
    }
}
