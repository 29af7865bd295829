//! `RUN --mount=type=…,key=value,…` specs, parsed with BuildKit's keys, aliases and defaults.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountType,
    /// Where it appears in the container; secrets default to `/run/secrets/<id>`, ssh to
    /// `/run/buildkit/ssh_agent.<n>`, which the executor fills in.
    pub target: Option<String>,
    pub source: Option<String>,
    /// A stage name or image reference to take the source from (bind, cache).
    pub from: Option<String>,
    pub readonly: bool,
    pub id: Option<String>,
    pub sharing: Sharing,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// tmpfs size in bytes.
    pub size: Option<u64>,
    /// Secret and ssh mounts fail when the secret is missing only if required.
    pub required: bool,
    /// Secret exposed as an environment variable instead of (or as well as) a file.
    pub env: Option<String>,
}

/// Parses one `--mount` value. `expand` is applied to every value (build args in scope).
pub fn parse_mount(
    spec: &str,
    expand: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Mount, String> {
    let mut fields = Vec::new();
    for field in split_csv(spec)? {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(expand(v)?)),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        fields.push((key, value));
    }
    let kind = match fields.iter().find(|(k, _)| k == "type") {
        None => MountType::Bind,
        Some((_, v)) => match v.as_deref().unwrap_or("") {
            "bind" => MountType::Bind,
            "cache" => MountType::Cache,
            "tmpfs" => MountType::Tmpfs,
            "secret" => MountType::Secret,
            "ssh" => MountType::Ssh,
            other => {
                return Err(format!(
                    "unsupported mount type {other:?}: use bind, cache, tmpfs, secret or ssh"
                ))
            }
        },
    };
    let mut m = Mount {
        kind,
        target: None,
        source: None,
        from: None,
        readonly: kind == MountType::Bind,
        id: None,
        sharing: Sharing::Shared,
        mode: None,
        uid: None,
        gid: None,
        size: None,
        required: false,
        env: None,
    };
    for (key, value) in fields {
        let need = |v: &Option<String>| {
            v.clone()
                .ok_or_else(|| format!("mount option {key:?} needs a value ({key}=…)"))
        };
        match key.as_str() {
            "type" => {}
            "target" | "dst" | "destination" => m.target = Some(need(&value)?),
            "source" | "src" => m.source = Some(need(&value)?),
            "from" => m.from = Some(need(&value)?),
            "id" => m.id = Some(need(&value)?),
            "env" => m.env = Some(need(&value)?),
            "readonly" | "ro" => m.readonly = parse_bool(&key, value.as_deref())?,
            "readwrite" | "rw" => m.readonly = !parse_bool(&key, value.as_deref())?,
            "required" => m.required = parse_bool(&key, value.as_deref())?,
            "sharing" => {
                m.sharing = match need(&value)?.as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    other => {
                        return Err(format!(
                            "unsupported sharing value {other:?}: use shared, private or locked"
                        ))
                    }
                }
            }
            "mode" => {
                let v = need(&value)?;
                m.mode = Some(u32::from_str_radix(&v, 8).map_err(|_| {
                    format!("invalid mount mode {v:?}: expected an octal number such as 0755")
                })?)
            }
            "uid" | "gid" => {
                let v = need(&value)?;
                let n = v
                    .parse()
                    .map_err(|_| format!("invalid mount {key} {v:?}: expected a number"))?;
                if key == "uid" {
                    m.uid = Some(n);
                } else {
                    m.gid = Some(n);
                }
            }
            "size" => m.size = Some(parse_size(&need(&value)?)?),
            other => return Err(format!("unexpected key {other:?} in mount option")),
        }
    }
    validate(&m)?;
    Ok(m)
}

fn validate(m: &Mount) -> Result<(), String> {
    match m.kind {
        MountType::Secret | MountType::Ssh => {
            if m.kind == MountType::Secret && m.id.is_none() && m.target.is_none() {
                return Err(
                    "secret mount needs id= or target= (its id defaults to the target's base name)"
                        .into(),
                );
            }
            if m.from.is_some() || m.source.is_some() && m.kind == MountType::Ssh {
                return Err(format!("{:?} mounts take no from=/source=", m.kind).to_lowercase());
            }
        }
        _ if m.target.is_none() => {
            return Err("mount needs a target (target=/path)".into());
        }
        MountType::Tmpfs if m.source.is_some() || m.from.is_some() => {
            return Err("tmpfs mounts take no source= or from=".into());
        }
        _ => {}
    }
    if m.size.is_some() && m.kind != MountType::Tmpfs {
        return Err("size= is only valid for tmpfs mounts".into());
    }
    if m.env.is_some() && m.kind != MountType::Secret {
        return Err("env= is only valid for secret mounts".into());
    }
    Ok(())
}

fn parse_bool(key: &str, value: Option<&str>) -> Result<bool, String> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(v) => Err(format!(
            "invalid value {v:?} for mount option {key}: use true or false"
        )),
    }
}

/// `64m`, `1g`, `512k`, `1048576`.
fn parse_size(v: &str) -> Result<u64, String> {
    let lower = v.to_ascii_lowercase();
    let trimmed = lower.trim_end_matches(['b', 'i']);
    let (digits, unit) = trimmed.split_at(
        trimmed.len()
            - trimmed
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .len(),
    );
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid tmpfs size {v:?}: use a size such as 64m"))?;
    let factor = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return Err(format!("invalid tmpfs size {v:?}: use a size such as 64m")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("tmpfs size {v:?} is too large"))
}

/// The spec with every value expanded (`id=$CACHE_ID` → `id=apt`), re-quoted where needed,
/// so the executor parses what the planner resolved.
pub fn expand_spec(
    spec: &str,
    expand: &dyn Fn(&str) -> Result<String, String>,
) -> Result<String, String> {
    let mut fields = Vec::new();
    for field in split_csv(spec)? {
        let field = match field.split_once('=') {
            Some((k, v)) => format!("{k}={}", expand(v)?),
            None => field,
        };
        fields.push(if field.contains([',', '"']) {
            format!("\"{}\"", field.replace('"', "\"\""))
        } else {
            field
        });
    }
    Ok(fields.join(","))
}

/// Splits on commas outside double quotes, like Go's encoding/csv that BuildKit uses.
fn split_csv(spec: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = spec.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    if quoted {
        return Err(format!("unterminated quote in mount option {spec:?}"));
    }
    out.push(field);
    Ok(out.into_iter().filter(|f| !f.is_empty()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Mount, String> {
        parse_mount(s, &|v| Ok(v.to_string()))
    }

    #[test]
    fn defaults_and_aliases() {
        let m = parse("type=cache,target=/var/cache/apt,sharing=locked,mode=0700,uid=33").unwrap();
        assert_eq!(
            (m.kind, m.sharing, m.mode, m.uid),
            (MountType::Cache, Sharing::Locked, Some(0o700), Some(33))
        );
        assert!(!m.readonly);
        let b = parse("dst=/src,from=build,src=/out").unwrap();
        assert_eq!(b.kind, MountType::Bind);
        assert!(b.readonly, "bind mounts are read-only by default");
        assert!(!parse("type=bind,target=/x,rw").unwrap().readonly);
        let s = parse("type=secret,id=tok,env=TOKEN,required").unwrap();
        assert!(s.required && s.env.as_deref() == Some("TOKEN"));
        assert_eq!(
            parse("type=tmpfs,target=/t,size=64m").unwrap().size,
            Some(64 << 20)
        );
    }

    #[test]
    fn expanded_specs_parse_back() {
        let spec = expand_spec(
            "type=cache,id=$X,target=/a",
            &|v| Ok(v.replace("$X", "x,y")),
        )
        .unwrap();
        assert_eq!(spec, "type=cache,\"id=x,y\",target=/a");
        assert_eq!(parse(&spec).unwrap().id.as_deref(), Some("x,y"));
    }

    #[test]
    fn errors() {
        for bad in [
            "type=nfs,target=/x",
            "type=cache",
            "target=/x,sharing=all",
            "type=cache,target=/x,mode=9",
            "type=bind,target=/x,bogus=1",
            "type=cache,target=/x,size=1m",
            "type=tmpfs,target=/x,size=lots",
        ] {
            assert!(parse(bad).is_err(), "{bad} should fail");
        }
    }
}
