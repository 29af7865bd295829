//! `--chmod` values: octal, or symbolic as chmod(1) reads them.

const SUID: u32 = 0o4000;
const SGID: u32 = 0o2000;
const STICKY: u32 = 0o1000;
/// What `a` and an `=` without who cover: everything but the sticky bit.
const STANDARD: u32 = SUID | SGID | 0o777;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Add(u32),
    Remove(u32),
    /// Add execute bits when the node is a directory or already executable.
    AddX(u32),
    /// Copy the permissions of class `from` (`u`, `g`, `o`) to the classes in `to`.
    CopyFrom {
        from: u8,
        to: [bool; 3],
        bits: u32,
        set: bool,
        clear: bool,
    },
}

/// A parsed `--chmod`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chmod(Repr);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Repr {
    Octal(u32),
    Symbolic(Vec<Op>),
}

impl Chmod {
    /// Parses an octal (at most 07777) or symbolic mode; `None` when invalid.
    pub fn parse(s: &str) -> Option<Self> {
        if s.is_empty() {
            return None;
        }
        if s.as_bytes()[0].is_ascii_digit() {
            let v = u32::from_str_radix(s, 8).ok()?;
            return (v <= 0o7777).then_some(Chmod(Repr::Octal(v)));
        }
        parse_symbolic(s).map(|ops| Chmod(Repr::Symbolic(ops)))
    }

    /// The permission bits (with setuid, setgid, sticky) a node with `perm` gets.
    pub fn apply(&self, perm: u32, is_dir: bool) -> u32 {
        let ops = match &self.0 {
            Repr::Octal(v) => return *v,
            Repr::Symbolic(ops) => ops,
        };
        let orig = perm & 0o7777;
        let mut mode = orig;
        for op in ops {
            match *op {
                Op::Add(b) => mode |= b,
                Op::Remove(b) => mode &= !b,
                Op::AddX(b) => {
                    // BSD setmode: judged on the mode before this --chmod.
                    if orig & 0o111 != 0 || is_dir {
                        mode |= b;
                    }
                }
                Op::CopyFrom {
                    from,
                    to,
                    bits,
                    set,
                    clear,
                } => {
                    let value = match from {
                        b'u' => (mode >> 6) & 7,
                        b'g' => (mode >> 3) & 7,
                        _ => mode & 7,
                    };
                    for (i, shift) in [6u32, 3, 0].into_iter().enumerate() {
                        if !to[i] {
                            continue;
                        }
                        if clear {
                            let clr = if set { 7 } else { value };
                            mode &= !((clr << shift) & bits);
                        }
                        if set {
                            mode |= (value << shift) & bits;
                        }
                    }
                }
            }
        }
        mode
    }
}

/// chmod(1) symbolic modes: `[ugoa]*([-+=]([rwxXst]*|[ugo]))+`, comma-separated.
fn parse_symbolic(s: &str) -> Option<Vec<Op>> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut ops = Vec::new();
    loop {
        let mut who = 0u32;
        while let Some(&c) = b.get(i) {
            who |= match c {
                b'a' => STANDARD,
                b'u' => SUID | 0o700,
                b'g' => SGID | 0o070,
                b'o' => 0o007,
                _ => break,
            };
            i += 1;
        }
        loop {
            let op = *b.get(i)?;
            if !matches!(op, b'+' | b'-' | b'=') {
                return None;
            }
            i += 1;
            let mut equal_done = false;
            who &= !STICKY;
            let mut perm = 0u32;
            let mut perm_x = 0u32;
            loop {
                let c = b.get(i).copied();
                match c {
                    Some(b'r') => perm |= 0o444,
                    Some(b'w') => perm |= 0o222,
                    Some(b'x') => perm |= 0o111,
                    Some(b'X') => {
                        if op == b'+' {
                            perm_x = 0o111;
                        }
                    }
                    Some(b's') => {
                        if who == 0 || who & !0o007 != 0 {
                            perm |= SUID | SGID;
                        }
                    }
                    Some(b't') => {
                        if who == 0 || who & !0o007 != 0 {
                            who |= STICKY;
                            perm |= STICKY;
                        }
                    }
                    Some(c @ (b'u' | b'g' | b'o')) => {
                        if perm != 0 {
                            push(&mut ops, op, who, perm);
                            perm = 0;
                        }
                        if op == b'=' {
                            equal_done = true;
                        }
                        if perm_x != 0 {
                            ops.push(Op::AddX(bits_for(who, perm_x)));
                            perm_x = 0;
                        }
                        ops.push(copy_op(c, who, op));
                    }
                    _ => {
                        if perm != 0 || (op == b'=' && !equal_done) {
                            push(&mut ops, op, who, perm);
                        }
                        if perm_x != 0 {
                            ops.push(Op::AddX(bits_for(who, perm_x)));
                        }
                        break;
                    }
                }
                i += 1;
            }
            match b.get(i) {
                None => return Some(ops),
                Some(b',') => {
                    i += 1;
                    break;
                }
                Some(_) => continue,
            }
        }
    }
}

fn bits_for(who: u32, perm: u32) -> u32 {
    if who != 0 {
        who & perm
    } else {
        perm
    }
}

fn push(ops: &mut Vec<Op>, op: u8, who: u32, perm: u32) {
    match op {
        b'+' => ops.push(Op::Add(bits_for(who, perm))),
        b'-' => ops.push(Op::Remove(bits_for(who, perm))),
        _ => {
            ops.push(Op::Remove(if who != 0 { who } else { STANDARD }));
            ops.push(Op::Add(bits_for(who, perm)));
        }
    }
}

fn copy_op(from: u8, who: u32, op: u8) -> Op {
    let (to, bits) = if who != 0 {
        (
            [who & 0o400 != 0, who & 0o040 != 0, who & 0o004 != 0],
            u32::MAX,
        )
    } else {
        ([true; 3], u32::MAX)
    };
    Op::CopyFrom {
        from,
        to,
        bits,
        set: op == b'+' || op == b'=',
        clear: op == b'-' || op == b'=',
    }
}

#[cfg(test)]
mod tests {
    use super::Chmod;

    #[test]
    fn octal_and_symbolic() {
        let c = |s: &str| Chmod::parse(s).unwrap_or_else(|| panic!("{s} parses"));
        assert_eq!(c("0755").apply(0o600, false), 0o755);
        assert_eq!(c("4755").apply(0o600, false), 0o4755);
        assert!(Chmod::parse("07778").is_none());
        assert!(Chmod::parse("17777").is_none());
        assert!(Chmod::parse("u=rwz").is_none());
        assert!(Chmod::parse("").is_none());
        assert_eq!(c("u=rwx,go=rx").apply(0o600, false), 0o755);
        assert_eq!(c("+x").apply(0o644, false), 0o755);
        assert_eq!(c("a-w").apply(0o666, false), 0o444);
        assert_eq!(c("go-rwx").apply(0o755, true), 0o700);
        assert_eq!(c("u+s").apply(0o755, false), 0o4755);
        assert_eq!(c("+t").apply(0o777, true), 0o1777);
        assert_eq!(c("a+X").apply(0o644, false), 0o644);
        assert_eq!(c("a+X").apply(0o644, true), 0o755);
        assert_eq!(c("a+X").apply(0o744, false), 0o755);
        assert_eq!(c("g=u").apply(0o640, false), 0o660);
        assert_eq!(c("o=").apply(0o777, false), 0o770);
        assert_eq!(c("u=rw,g=r,o=").apply(0o777, false), 0o640);
        assert_eq!(c("=r").apply(0o4777, false), 0o444);
        assert_eq!(c("u+x-w").apply(0o644, false), 0o544);
    }
}
