//! COPY/ADD against the real kernel, as root: each test unshares a mount namespace on its own
//! thread, mounts `overlay(lower = a small image, upper = fresh dir)` as the builder does,
//! copies into the merged view, unmounts, and checks the upper dir (what becomes the layer)
//! entry by entry: type, mode, owner, content or link target.

use builder::context::Context;
use builder::exec::copy::{self, CopyError, CopyRequest, CopyStats, HeredocSource, Source};
use builder::exec::users;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1001:1002:App:/home/app:/bin/sh\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nstaff:x:50:app,www-data\napp:x:1002:\nwww-data:x:33:\n";

fn write(path: &Path, text: &str, mode: u32) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(path: &Path, mode: u32) {
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

/// One test's image, context, and overlay.
struct Env {
    tmp: tempfile::TempDir,
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    merged: PathBuf,
    ctx: PathBuf,
    mounted: bool,
}

impl Env {
    fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("rbuild-copy-")
            .tempdir()
            .unwrap();
        let d = |n: &str| {
            let p = tmp.path().join(n);
            fs::create_dir_all(&p).unwrap();
            p
        };
        let (lower, upper, work, merged, ctx) =
            (d("lower"), d("upper"), d("work"), d("merged"), d("ctx"));
        // The image.
        write(&lower.join("etc/passwd"), PASSWD, 0o644);
        write(&lower.join("etc/group"), GROUP, 0o644);
        mkdir(&lower.join("etc"), 0o755);
        mkdir(&lower.join("run"), 0o755);
        mkdir(&lower.join("var"), 0o755);
        symlink("/run", lower.join("var/run")).unwrap();
        mkdir(&lower.join("opt"), 0o755);
        symlink("/etc", lower.join("opt/x")).unwrap();
        symlink("../../../../../../../..", lower.join("up")).unwrap();
        // The context.
        write(&ctx.join("a.txt"), "A", 0o644);
        chown(&ctx.join("a.txt"), 1234, 1234);
        write(&ctx.join("b.txt"), "B", 0o600);
        write(&ctx.join("dir/x.sh"), "X", 0o755);
        write(&ctx.join("dir/notes.log"), "L", 0o644);
        write(&ctx.join("dir/sub/y"), "Y", 0o640);
        mkdir(&ctx.join("dir/sub"), 0o700);
        mkdir(&ctx.join("dir"), 0o750);
        chown(&ctx.join("dir/sub/y"), 1234, 1234);
        symlink("a.txt", ctx.join("link-to-a")).unwrap();
        symlink("/etc/shadow", ctx.join("evil")).unwrap();
        Self {
            tmp,
            lower,
            upper,
            work,
            merged,
            ctx,
            mounted: false,
        }
    }

    /// A private mount namespace for this thread, then the step's overlay.
    fn mount(&mut self) {
        unshare(CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS): the tests run as root");
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .unwrap();
        layers::mount_overlay(
            std::slice::from_ref(&self.lower),
            &self.upper,
            &self.work,
            &self.merged,
        )
        .unwrap();
        self.mounted = true;
    }

    fn context(&self) -> Context {
        Context::open(&self.ctx, &self.ctx.join("Dockerfile")).unwrap()
    }

    fn copy(&self, req: &CopyRequest) -> Result<CopyStats, CopyError> {
        let ctx = self.context();
        copy::copy(req, Source::Context(&ctx), &self.merged, "/")
    }

    /// Unmounts and lists the upper dir.
    fn layer(&mut self) -> Vec<String> {
        if self.mounted {
            layers::umount(&self.merged).unwrap();
            self.mounted = false;
        }
        list(&self.upper)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if self.mounted {
            let _ = layers::mount::umount_detach(&self.merged);
        }
    }
}

/// `kind mode uid:gid path [= content | -> target | major:minor]`, sorted by path.
fn list(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let md = fs::symlink_metadata(e.path()).unwrap();
            let ft = md.file_type();
            let perm = md.mode() & 0o7777;
            let head = |k: char| format!("{k} {perm:o} {}:{} {rel}", md.uid(), md.gid());
            let line = if ft.is_dir() {
                walk(&e.path(), &rel, out);
                head('d')
            } else if ft.is_symlink() {
                format!(
                    "{} -> {}",
                    head('l'),
                    fs::read_link(e.path()).unwrap().display()
                )
            } else if ft.is_file() {
                format!(
                    "{} = {}",
                    head('f'),
                    fs::read_to_string(e.path()).unwrap_or_default()
                )
            } else if ft.is_fifo() {
                head('p')
            } else if ft.is_char_device() {
                let rdev = md.rdev();
                format!("{} {}:{}", head('c'), libc::major(rdev), libc::minor(rdev))
            } else {
                head('?')
            };
            out.insert(rel.clone(), line);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out.into_values().collect()
}

fn req(sources: &[&str], dest: &str) -> CopyRequest {
    CopyRequest {
        sources: sources.iter().map(|s| s.to_string()).collect(),
        dest: dest.to_string(),
        ..Default::default()
    }
}

fn add(sources: &[&str], dest: &str) -> CopyRequest {
    CopyRequest {
        add: true,
        ..req(sources, dest)
    }
}

#[test]
fn file_to_file_and_into_directories() {
    let mut env = Env::new();
    env.mount();
    env.copy(&req(&["a.txt"], "/dst.txt")).unwrap();
    env.copy(&req(&["a.txt"], "/newdir/")).unwrap();
    // Relative to WORKDIR, trailing slash: a directory.
    let ctx = env.context();
    copy::copy(
        &req(&["b.txt"], "rel/"),
        Source::Context(&ctx),
        &env.merged,
        "/app",
    )
    .unwrap();
    // "." is the WORKDIR itself.
    copy::copy(
        &req(&["a.txt"], "."),
        Source::Context(&ctx),
        &env.merged,
        "/app",
    )
    .unwrap();
    assert_eq!(
        env.layer(),
        [
            "d 755 0:0 app",
            "f 644 0:0 app/a.txt = A",
            "d 755 0:0 app/rel",
            "f 600 0:0 app/rel/b.txt = B",
            "f 644 0:0 dst.txt = A",
            "d 755 0:0 newdir",
            "f 644 0:0 newdir/a.txt = A",
        ]
    );
}

#[test]
fn directory_sources_copy_their_contents() {
    let mut env = Env::new();
    env.mount();
    let stats = env.copy(&req(&["dir"], "/app")).unwrap();
    assert_eq!((stats.files, stats.dirs), (3, 1));
    // Into an existing directory: it keeps its own metadata.
    env.copy(&req(&["dir/sub"], "/etc")).unwrap();
    assert_eq!(
        env.layer(),
        [
            "d 755 0:0 app",
            "f 644 0:0 app/notes.log = L",
            "d 700 0:0 app/sub",
            "f 640 0:0 app/sub/y = Y",
            "f 755 0:0 app/x.sh = X",
            "d 755 0:0 etc",
            "f 640 0:0 etc/y = Y",
        ]
    );
}

#[test]
fn wildcards_match_files_and_directories_and_may_match_nothing() {
    let mut env = Env::new();
    env.mount();
    env.copy(&req(&["*.txt"], "/w/")).unwrap();
    env.copy(&req(&["d?r"], "/w2/")).unwrap();
    env.copy(&req(&["dir/*/y"], "/w3/")).unwrap();
    // BuildKit: a wildcard that matches nothing copies nothing and is not an error.
    let stats = env.copy(&req(&["nomatch*.txt"], "/none/")).unwrap();
    assert_eq!(stats, CopyStats::default());
    // But the directory before the wildcard must exist.
    let err = env.copy(&req(&["nodir/*.txt"], "/x/")).unwrap_err();
    assert!(err.to_string().contains("\"/nodir\": not found"), "{err}");
    assert_eq!(
        env.layer(),
        [
            "d 755 0:0 w",
            "f 644 0:0 w/a.txt = A",
            "f 600 0:0 w/b.txt = B",
            "d 755 0:0 w2",
            "f 644 0:0 w2/notes.log = L",
            "d 700 0:0 w2/sub",
            "f 640 0:0 w2/sub/y = Y",
            "f 755 0:0 w2/x.sh = X",
            "d 755 0:0 w3",
            "f 640 0:0 w3/y = Y",
        ]
    );
}

#[test]
fn several_sources_need_a_directory_destination() {
    let mut env = Env::new();
    env.mount();
    for r in [req(&["a.txt", "b.txt"], "/file"), req(&["*.txt"], "/file")] {
        let err = env.copy(&r).unwrap_err();
        assert_eq!(
            err.to_string(),
            "When using COPY with more than one source file, the destination must be a directory and end with a /"
        );
    }
    let mut a = add(&["a.txt", "b.txt"], "/file");
    a.unpack = Some(false);
    assert!(env
        .copy(&a)
        .unwrap_err()
        .to_string()
        .starts_with("When using ADD"));
    // An existing directory is accepted without the slash, as BuildKit does.
    env.copy(&req(&["a.txt", "b.txt"], "/etc")).unwrap();
    assert_eq!(
        env.layer(),
        [
            "d 755 0:0 etc",
            "f 644 0:0 etc/a.txt = A",
            "f 600 0:0 etc/b.txt = B"
        ]
    );
}

#[test]
fn destinations_through_image_symlinks_stay_in_the_root() {
    let mut env = Env::new();
    env.mount();
    let probe = "rbuild-copy-escape-probe.txt";
    assert!(!Path::new("/").join(probe).exists());
    // A dangling absolute link: the directory is made where a chroot would look.
    fs::remove_dir(env.merged.join("run")).unwrap();
    env.copy(&req(&["b.txt"], "/var/run/deep/")).unwrap();
    env.copy(&req(&["a.txt"], "/var/run/a.txt")).unwrap();
    env.copy(&req(&["b.txt"], "/opt/x/")).unwrap();
    env.copy(&req(&["a.txt"], &format!("/up/{probe}"))).unwrap();
    env.copy(&req(&["dir/sub"], "/up/../../opt/x")).unwrap();
    assert!(!Path::new("/").join(probe).exists());
    assert!(!env.tmp.path().join(probe).exists());
    let layer = env.layer();
    assert_eq!(
        layer,
        [
            "d 755 0:0 etc",
            "f 600 0:0 etc/b.txt = B",
            "f 640 0:0 etc/y = Y",
            format!("f 644 0:0 {probe} = A").as_str(),
            "d 755 0:0 run",
            "f 644 0:0 run/a.txt = A",
            "d 755 0:0 run/deep",
            "f 600 0:0 run/deep/b.txt = B",
        ]
    );
}

#[test]
fn context_symlinks_are_copied_as_links_and_followed_only_inside_the_context() {
    let mut env = Env::new();
    write(&env.ctx.join("links/real"), "R", 0o644);
    symlink("/etc/shadow", env.ctx.join("links/shadow")).unwrap();
    symlink("../../../../../../etc/hostname", env.ctx.join("links/up")).unwrap();
    symlink("../../../../../../etc/hostname", env.ctx.join("esc")).unwrap();
    env.mount();
    env.copy(&req(&["links"], "/l")).unwrap();
    // Named sources that are links are followed, inside the context only.
    env.copy(&req(&["link-to-a"], "/la")).unwrap();
    env.copy(&req(&["link-to-a"], "/ld/")).unwrap();
    for s in ["evil", "esc"] {
        let err = env.copy(&req(&[s], "/e")).unwrap_err();
        assert!(
            err.to_string().contains("not found in the build context"),
            "{err}"
        );
    }
    assert_eq!(
        env.layer(),
        [
            "d 755 0:0 l",
            "f 644 0:0 l/real = R",
            "l 777 0:0 l/shadow -> /etc/shadow",
            "l 777 0:0 l/up -> ../../../../../../etc/hostname",
            "f 644 0:0 la = A",
            "d 755 0:0 ld",
            "f 644 0:0 ld/link-to-a = A",
        ]
    );
}

#[test]
fn dot_dot_in_sources_stays_in_the_context() {
    let mut env = Env::new();
    write(&env.tmp.path().join("outside.txt"), "OUTSIDE", 0o644);
    env.mount();
    env.copy(&req(&["../../a.txt"], "/z.txt")).unwrap();
    env.copy(&req(&["/dir/../b.txt"], "/zz.txt")).unwrap();
    let err = env.copy(&req(&["../outside.txt"], "/o.txt")).unwrap_err();
    assert!(
        err.to_string().contains("\"/outside.txt\": not found"),
        "{err}"
    );
    assert_eq!(env.layer(), ["f 644 0:0 z.txt = A", "f 600 0:0 zz.txt = B"]);
}

#[test]
fn dockerignore_exclusions_and_exceptions() {
    let mut env = Env::new();
    let c = env.tmp.path().join("ctx2");
    write(
        &c.join(".dockerignore"),
        "*.log\nsecret.txt\ndocs\n!docs/README.md\n",
        0o644,
    );
    write(&c.join("keep.txt"), "K", 0o644);
    write(&c.join("app.log"), "no", 0o644);
    write(&c.join("secret.txt"), "no", 0o644);
    write(&c.join("docs/README.md"), "R", 0o644);
    write(&c.join("docs/other.md"), "no", 0o644);
    mkdir(&c.join("docs"), 0o750);
    write(&c.join("sub/x.log"), "S", 0o644);
    env.mount();
    let ctx = Context::open(&c, &c.join("Dockerfile")).unwrap();
    let run = |r: CopyRequest| copy::copy(&r, Source::Context(&ctx), &env.merged, "/");
    run(req(&["."], "/app")).unwrap();
    run(req(&["docs"], "/d")).unwrap();
    run(req(&["*.txt"], "/t/")).unwrap();
    let err = run(req(&["secret.txt"], "/s")).unwrap_err().to_string();
    assert!(
        err.contains("\"/secret.txt\": not found in the build context")
            && err.contains(".dockerignore excludes it")
            && err.contains("\"!secret.txt\""),
        "{err}"
    );
    let sel = ctx
        .select(&["docs".to_string()], &Default::default())
        .unwrap();
    assert_eq!(
        sel.paths(),
        [PathBuf::from("docs"), PathBuf::from("docs/README.md")]
    );
    drop(ctx);
    assert_eq!(
        env.layer(),
        [
            "d 755 0:0 app",
            "f 644 0:0 app/.dockerignore = *.log\nsecret.txt\ndocs\n!docs/README.md\n",
            "d 750 0:0 app/docs",
            "f 644 0:0 app/docs/README.md = R",
            "f 644 0:0 app/keep.txt = K",
            "d 755 0:0 app/sub",
            "f 644 0:0 app/sub/x.log = S",
            "d 755 0:0 d",
            "f 644 0:0 d/README.md = R",
            "d 755 0:0 t",
            "f 644 0:0 t/keep.txt = K",
        ]
    );
}

#[test]
fn dockerfile_dockerignore_takes_precedence_over_the_context_one() {
    let mut env = Env::new();
    write(&env.ctx.join(".dockerignore"), "a.txt\n", 0o644);
    write(&env.ctx.join("sub/Dockerfile"), "FROM scratch\n", 0o644);
    write(
        &env.ctx.join("sub/Dockerfile.dockerignore"),
        "b.txt\n",
        0o644,
    );
    env.mount();
    let sub = Context::open(&env.ctx, &env.ctx.join("sub/Dockerfile")).unwrap();
    copy::copy(
        &req(&["a.txt"], "/p/"),
        Source::Context(&sub),
        &env.merged,
        "/",
    )
    .unwrap();
    let err = copy::copy(
        &req(&["b.txt"], "/p/"),
        Source::Context(&sub),
        &env.merged,
        "/",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("sub/Dockerfile.dockerignore excludes it"),
        "{err}"
    );
    let root = env.context();
    assert!(copy::copy(
        &req(&["a.txt"], "/q/"),
        Source::Context(&root),
        &env.merged,
        "/"
    )
    .is_err());
    copy::copy(
        &req(&["b.txt"], "/q/"),
        Source::Context(&root),
        &env.merged,
        "/",
    )
    .unwrap();
    assert_eq!(
        env.layer(),
        [
            "d 755 0:0 p",
            "f 644 0:0 p/a.txt = A",
            "d 755 0:0 q",
            "f 600 0:0 q/b.txt = B"
        ]
    );
}

#[test]
fn chown_by_name_from_the_image() {
    let mut env = Env::new();
    env.mount();
    let with = |mut r: CopyRequest, c: &str| {
        r.chown = Some(c.to_string());
        r
    };
    env.copy(&with(req(&["a.txt"], "/o/x/"), "app")).unwrap();
    env.copy(&with(req(&["b.txt"], "/o2.txt"), "app:staff"))
        .unwrap();
    env.copy(&with(req(&["b.txt"], "/o3.txt"), "1000")).unwrap();
    env.copy(&with(req(&["dir/sub"], "/o4"), "www-data:50"))
        .unwrap();
    let err = env
        .copy(&with(req(&["a.txt"], "/n"), "nobody"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unable to find user nobody") && err.contains("/etc/passwd"),
        "{err}"
    );
    let err = env
        .copy(&with(req(&["a.txt"], "/n"), "app:wheel"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unable to find group wheel") && err.contains("/etc/group"),
        "{err}"
    );
    assert_eq!(
        env.layer(),
        [
            "d 755 1001:1002 o",
            "d 755 1001:1002 o/x",
            "f 644 1001:1002 o/x/a.txt = A",
            "f 600 1001:50 o2.txt = B",
            "f 600 1000:1000 o3.txt = B",
            "d 755 33:50 o4",
            "f 640 33:50 o4/y = Y",
        ]
    );
}

#[test]
fn chmod_octal_and_symbolic() {
    let mut env = Env::new();
    env.mount();
    let with = |mut r: CopyRequest, c: &str| {
        r.chmod = Some(c.to_string());
        r
    };
    env.copy(&with(req(&["dir"], "/m"), "0755")).unwrap();
    env.copy(&with(req(&["b.txt"], "/s1"), "u=rwx,go=rx"))
        .unwrap();
    env.copy(&with(req(&["dir"], "/m2"), "a+X")).unwrap();
    env.copy(&with(req(&["a.txt"], "/s2"), "+x")).unwrap();
    let err = env
        .copy(&with(req(&["a.txt"], "/s3"), "u=rwz"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("invalid chmod parameter: 'u=rwz'"), "{err}");
    assert!(env.copy(&with(req(&["a.txt"], "/s3"), "08")).is_err());
    assert_eq!(
        env.layer(),
        [
            "d 755 0:0 m",
            "f 755 0:0 m/notes.log = L",
            "d 755 0:0 m/sub",
            "f 755 0:0 m/sub/y = Y",
            "f 755 0:0 m/x.sh = X",
            "d 755 0:0 m2",
            "f 644 0:0 m2/notes.log = L",
            "d 711 0:0 m2/sub",
            "f 640 0:0 m2/sub/y = Y",
            "f 755 0:0 m2/x.sh = X",
            "f 755 0:0 s1 = B",
            "f 755 0:0 s2 = A",
        ]
    );
}

#[test]
fn exclude_patterns() {
    let mut env = Env::new();
    env.mount();
    let with = |mut r: CopyRequest, ex: &[&str]| {
        r.exclude = ex.iter().map(|s| s.to_string()).collect();
        r
    };
    env.copy(&with(req(&["dir"], "/e"), &["*.log", "sub"]))
        .unwrap();
    env.copy(&with(req(&["*.txt"], "/ex/"), &["b.txt"]))
        .unwrap();
    env.copy(&with(req(&["dir"], "/e2"), &["**", "!sub/y"]))
        .unwrap();
    assert_eq!(
        env.layer(),
        [
            "d 755 0:0 e",
            "f 755 0:0 e/x.sh = X",
            "d 755 0:0 e2",
            "d 700 0:0 e2/sub",
            "f 640 0:0 e2/sub/y = Y",
            "d 755 0:0 ex",
            "f 644 0:0 ex/a.txt = A",
        ]
    );
}

#[test]
fn parents_keep_the_path_after_the_pivot() {
    let mut env = Env::new();
    write(&env.ctx.join("a/b/c.txt"), "C", 0o644);
    write(&env.ctx.join("a/b/d.txt"), "D", 0o644);
    mkdir(&env.ctx.join("a/b"), 0o750);
    write(&env.ctx.join("x/y/z.txt"), "Z", 0o644);
    write(&env.ctx.join("x/y/w.md"), "W", 0o644);
    env.mount();
    let parents = |mut r: CopyRequest| {
        r.parents = true;
        r
    };
    env.copy(&parents(req(&["./a/./b/c.txt"], "/dst/")))
        .unwrap();
    env.copy(&parents(req(&["x/y/*.txt"], "/p/"))).unwrap();
    env.copy(&parents(req(&["x/**/*.md", "a.txt"], "/q")))
        .unwrap();
    let err = env
        .copy(&parents(req(&["a/b/nothere.txt"], "/r/")))
        .unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    assert_eq!(
        env.layer(),
        [
            "d 755 0:0 dst",
            "d 750 0:0 dst/b",
            "f 644 0:0 dst/b/c.txt = C",
            "d 755 0:0 p",
            "d 755 0:0 p/x",
            "d 755 0:0 p/x/y",
            "f 644 0:0 p/x/y/z.txt = Z",
            "d 755 0:0 q",
            "f 644 0:0 q/a.txt = A",
            "d 755 0:0 q/x",
            "d 755 0:0 q/x/y",
            "f 644 0:0 q/x/y/w.md = W",
        ]
    );
}

#[test]
fn heredoc_sources() {
    let mut env = Env::new();
    env.mount();
    let mut motd = req(&["<<EOF"], "/etc/motd");
    motd.heredocs = vec![HeredocSource {
        name: "EOF".into(),
        content: "Welcome\n".into(),
    }];
    copy::copy(&motd, Source::Inline, &env.merged, "/").unwrap();
    let mut two = req(&["<<one.txt", "<<two.txt"], "/docs/");
    two.heredocs = vec![
        HeredocSource {
            name: "one.txt".into(),
            content: "1\n".into(),
        },
        HeredocSource {
            name: "two.txt".into(),
            content: "2\n".into(),
        },
    ];
    two.chmod = Some("0755".into());
    two.chown = Some("app".into());
    copy::copy(&two, Source::Inline, &env.merged, "/").unwrap();
    let err = copy::copy(&req(&["a.txt"], "/x"), Source::Inline, &env.merged, "/").unwrap_err();
    assert!(matches!(err, CopyError::NoFileSource { .. }), "{err}");
    assert_eq!(
        env.layer(),
        [
            "d 755 1001:1002 docs",
            "f 755 1001:1002 docs/one.txt = 1\n",
            "f 755 1001:1002 docs/two.txt = 2\n",
            "d 755 0:0 etc",
            "f 644 0:0 etc/motd = Welcome\n",
        ]
    );
}

/// A tar with a directory, files, a symlink and a hard link, owned by 1000.
fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    let mut entry = |b: &mut tar::Builder<Vec<u8>>,
                     path: &str,
                     kind: tar::EntryType,
                     mode: u32,
                     data: &[u8],
                     link: Option<&str>| {
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        match link {
            Some(l) => b.append_link(&mut h, path, l).unwrap(),
            None => b.append_data(&mut h, path, data).unwrap(),
        }
    };
    entry(&mut b, "pkg/", tar::EntryType::Directory, 0o755, b"", None);
    entry(
        &mut b,
        "pkg/README",
        tar::EntryType::Regular,
        0o644,
        b"read me",
        None,
    );
    entry(
        &mut b,
        "pkg/bin/tool",
        tar::EntryType::Regular,
        0o4755,
        b"#!tool",
        None,
    );
    entry(
        &mut b,
        "pkg/link",
        tar::EntryType::Symlink,
        0o777,
        b"",
        Some("README"),
    );
    entry(
        &mut b,
        "pkg/hard",
        tar::EntryType::Link,
        0o644,
        b"",
        Some("pkg/README"),
    );
    b.into_inner().unwrap()
}

fn compress(kind: &str, data: &[u8]) -> Vec<u8> {
    match kind {
        "tar" => data.to_vec(),
        "tar.gz" | "tar.zst" => {
            let c = if kind == "tar.gz" {
                layers::Compression::GZIP
            } else {
                layers::Compression::ZSTD
            };
            let mut w = layers::LayerWriter::new(Vec::new(), c).unwrap();
            w.write_all(data).unwrap();
            w.finish().unwrap().1
        }
        "tar.bz2" => {
            let mut w = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            w.write_all(data).unwrap();
            w.finish().unwrap()
        }
        "tar.xz" => {
            let mut w = liblzma::write::XzEncoder::new(Vec::new(), 6);
            w.write_all(data).unwrap();
            w.finish().unwrap()
        }
        _ => unreachable!(),
    }
}

#[test]
fn add_extracts_local_archives_of_every_compression() {
    for kind in ["tar", "tar.gz", "tar.bz2", "tar.xz", "tar.zst"] {
        let mut env = Env::new();
        let name = format!("pkg.{kind}");
        fs::write(env.ctx.join(&name), compress(kind, &sample_tar())).unwrap();
        env.mount();
        let stats = env.copy(&add(&[&name], "/opt/app")).unwrap();
        assert_eq!((stats.archives, stats.archive_entries), (1, 5), "{kind}");
        let layer = env.layer();
        assert_eq!(
            layer,
            [
                "d 755 0:0 opt",
                "d 755 0:0 opt/app",
                "d 755 1000:1000 opt/app/pkg",
                "f 644 1000:1000 opt/app/pkg/README = read me",
                "d 755 0:0 opt/app/pkg/bin",
                "f 4755 1000:1000 opt/app/pkg/bin/tool = #!tool",
                "f 644 1000:1000 opt/app/pkg/hard = read me",
                "l 777 1000:1000 opt/app/pkg/link -> README",
            ],
            "{kind}"
        );
        let ino = |p: &str| fs::metadata(env.upper.join(p)).unwrap().ino();
        assert_eq!(ino("opt/app/pkg/hard"), ino("opt/app/pkg/README"), "{kind}");
    }
}

#[test]
fn add_archive_with_chown_and_unpack_false() {
    let mut env = Env::new();
    fs::write(
        env.ctx.join("pkg.tar.gz"),
        compress("tar.gz", &sample_tar()),
    )
    .unwrap();
    env.mount();
    let mut r = add(&["pkg.tar.gz"], "/o/");
    r.chown = Some("app".into());
    env.copy(&r).unwrap();
    let mut r = add(&["pkg.tar.gz"], "/raw/");
    r.unpack = Some(false);
    env.copy(&r).unwrap();
    // COPY never extracts.
    env.copy(&req(&["pkg.tar.gz"], "/cp/")).unwrap();
    assert_eq!(
        env.layer(),
        [
            "d 755 0:0 cp",
            "f 644 0:0 cp/pkg.tar.gz = ",
            "d 755 1001:1002 o",
            "d 755 1001:1002 o/pkg",
            "f 644 1001:1002 o/pkg/README = read me",
            // Parents a tar only implies are root's, as in BuildKit.
            "d 755 0:0 o/pkg/bin",
            "f 4755 1001:1002 o/pkg/bin/tool = #!tool",
            "f 644 1001:1002 o/pkg/hard = read me",
            "l 777 1001:1002 o/pkg/link -> README",
            "d 755 0:0 raw",
            "f 644 0:0 raw/pkg.tar.gz = ",
        ]
    );
}

#[test]
fn add_refuses_archives_that_climb_out() {
    let mut env = Env::new();
    // Built by hand: the tar crate refuses to write `..`.
    let mut h = tar::Header::new_old();
    h.as_mut_bytes()[..14].copy_from_slice(b"../escaped.txt");
    h.set_size(4);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    let mut data = h.as_bytes().to_vec();
    data.extend_from_slice(b"evil");
    data.resize(512 * 2, 0);
    data.resize(512 * 4, 0);
    fs::write(env.ctx.join("evil.tar"), compress("tar.gz", &data)).unwrap();
    env.mount();
    let err = env.copy(&add(&["evil.tar"], "/x/")).unwrap_err();
    assert!(
        matches!(&err, CopyError::Archive { source, .. } if source.refusal().is_some()),
        "{err}"
    );
    assert!(err.to_string().contains("../escaped.txt"), "{err}");
    assert!(!env.tmp.path().join("escaped.txt").exists());
    assert!(!env.merged.join("escaped.txt").exists());
}

/// Serves `body` at `/files/data.bin` and 404 elsewhere, for `n` connections.
fn serve(n: usize, body: &'static [u8]) -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming().take(n) {
            let mut s = stream.unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let k = s.read(&mut buf).unwrap();
                if k == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..k]);
            }
            let line = String::from_utf8_lossy(&req);
            let head = if line.starts_with("GET /files/data.bin ") {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: close\r\n\r\n",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            s.write_all(head.as_bytes()).unwrap();
            if head.starts_with("HTTP/1.1 200") {
                s.write_all(body).unwrap();
            }
        }
    });
    (url, handle)
}

#[test]
fn add_url_with_checksum() {
    const BODY: &[u8] = b"hello download\n";
    let sum = {
        use sha2::Digest;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(BODY)))
    };
    let (url, server) = serve(4, BODY);
    let mut env = Env::new();
    env.mount();
    let file = format!("{url}/files/data.bin");
    let mut ok = add(&[&file], "/d/");
    ok.checksum = Some(sum.clone());
    let stats = copy::copy(&ok, Source::Inline, &env.merged, "/").unwrap();
    assert_eq!((stats.downloads, stats.bytes), (1, BODY.len() as u64));
    copy::copy(
        &add(&[&file], "/plain.bin"),
        Source::Inline,
        &env.merged,
        "/",
    )
    .unwrap();
    let mut bad = add(&[&file], "/bad/");
    let wrong = format!("sha256:{}", "0".repeat(64));
    bad.checksum = Some(wrong.clone());
    let err = copy::copy(&bad, Source::Inline, &env.merged, "/")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("checksum mismatch") && err.contains(&wrong) && err.contains(&sum),
        "{err}"
    );
    let err = copy::copy(
        &add(&[&format!("{url}/missing")], "/m/"),
        Source::Inline,
        &env.merged,
        "/",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("download failed") && err.contains("404"),
        "{err}"
    );
    server.join().unwrap();
    let mtime = fs::symlink_metadata(env.merged.join("d/data.bin"))
        .unwrap()
        .mtime();
    assert_eq!(mtime, 784_111_777, "Last-Modified");
    assert_eq!(
        env.layer(),
        [
            "d 755 0:0 d",
            "f 600 0:0 d/data.bin = hello download\n",
            "f 600 0:0 plain.bin = hello download\n",
        ]
    );
}

#[test]
fn url_and_git_sources_are_checked() {
    let env = Env::new();
    let ctx = env.context();
    let run = |r: CopyRequest| copy::copy(&r, Source::Context(&ctx), &env.merged, "/");
    let err = run(req(&["https://example.com/x"], "/x")).unwrap_err();
    assert!(matches!(err, CopyError::UrlInCopy(_)), "{err}");
    let err = run(add(&["https://github.com/moby/buildkit.git#v0.13"], "/src")).unwrap_err();
    assert!(err.to_string().contains("not supported yet"), "{err}");
    let mut r = req(&["a.txt"], "/x");
    r.checksum = Some(format!("sha256:{}", "0".repeat(64)));
    assert_eq!(
        run(r).unwrap_err().to_string(),
        "checksum can't be specified for COPY"
    );
    let mut r = add(&["a.txt"], "/x");
    r.checksum = Some(format!("sha256:{}", "0".repeat(64)));
    assert_eq!(
        run(r).unwrap_err().to_string(),
        "checksum requires HTTP(S) or Git sources"
    );
    let mut r = add(&["https://example.com/x"], "/x");
    r.checksum = Some("md5:abc".into());
    assert!(run(r).unwrap_err().to_string().contains("invalid checksum"));
}

#[test]
fn hardlinks_are_preserved() {
    let mut env = Env::new();
    write(&env.ctx.join("hl/a"), "same", 0o644);
    fs::hard_link(env.ctx.join("hl/a"), env.ctx.join("hl/b")).unwrap();
    write(&env.ctx.join("hl/c"), "same", 0o644);
    env.mount();
    let stats = env.copy(&req(&["hl"], "/h")).unwrap();
    assert_eq!((stats.files, stats.hardlinks), (2, 1));
    let layer = env.layer();
    assert_eq!(
        layer,
        [
            "d 755 0:0 h",
            "f 644 0:0 h/a = same",
            "f 644 0:0 h/b = same",
            "f 644 0:0 h/c = same"
        ]
    );
    let ino = |p: &str| fs::metadata(env.upper.join(p)).unwrap().ino();
    assert_eq!(ino("h/a"), ino("h/b"));
    assert_ne!(ino("h/a"), ino("h/c"));
}

#[test]
fn from_a_stage_keeps_owners_and_special_files() {
    let mut env = Env::new();
    let stage = env.tmp.path().join("stage");
    write(&stage.join("srv/data"), "D", 0o640);
    chown(&stage.join("srv/data"), 33, 33);
    mkdir(&stage.join("srv/inner"), 0o710);
    chown(&stage.join("srv/inner"), 33, 50);
    nix::unistd::mkfifo(
        &stage.join("srv/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    nix::sys::stat::mknod(
        &stage.join("srv/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    for special in ["srv/fifo", "srv/null"] {
        // mkfifo and mknod apply the umask.
        fs::set_permissions(stage.join(special), fs::Permissions::from_mode(0o666)).unwrap();
    }
    symlink("data", stage.join("srv/link")).unwrap();
    symlink("/etc/shadow", stage.join("srv/abs")).unwrap();
    let mnt = env.tmp.path().join("stage-mnt");
    fs::create_dir(&mnt).unwrap();
    // A read-only overlay needs two lower dirs on this kernel (one gives EINVAL).
    let empty = env.tmp.path().join("empty-lower");
    fs::create_dir(&empty).unwrap();
    env.mount();
    layers::mount_overlay_readonly(&[stage.clone(), empty], &mnt).unwrap();
    let src = Source::Root {
        root: &mnt,
        name: "builder",
    };
    let stats = copy::copy(&req(&["/srv"], "/s"), src, &env.merged, "/").unwrap();
    assert_eq!(stats.specials, 2);
    // A --from source named through a link is followed inside the stage, not on the host.
    let err = copy::copy(&req(&["/srv/abs"], "/t"), src, &env.merged, "/").unwrap_err();
    assert!(
        err.to_string().contains("not found in --from=builder"),
        "{err}"
    );
    layers::umount(&mnt).unwrap();
    assert_eq!(
        env.layer(),
        [
            "d 755 0:0 s",
            "l 777 0:0 s/abs -> /etc/shadow",
            "f 640 33:33 s/data = D",
            "p 666 0:0 s/fifo",
            "d 710 33:50 s/inner",
            "l 777 0:0 s/link -> data",
            "c 666 0:0 s/null 1:3",
        ]
    );
}

#[test]
fn user_specs_resolve_inside_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(&root.join("etc/passwd.real"), PASSWD, 0o644);
    write(&root.join("etc/group"), GROUP, 0o644);
    // An absolute link and a `..`-laden one both resolve inside the image.
    symlink("/etc/passwd.real", root.join("etc/passwd")).unwrap();
    let u = users::resolve_user(root, "app").unwrap();
    assert_eq!(
        (u.uid, u.gid, u.groups.clone(), u.home.as_deref()),
        (1001, 1002, vec![50], Some("/home/app"))
    );
    let u = users::resolve_user(root, "www-data").unwrap();
    assert_eq!((u.uid, u.gid, u.groups.clone()), (33, 33, vec![50]));
    // Numeric without an entry: gid 0; uid:gid: as given, nothing read.
    let u = users::resolve_user(root, "4242").unwrap();
    assert_eq!((u.uid, u.gid, u.groups.len(), u.home), (4242, 0, 0, None));
    let u = users::resolve_user(root, "7:8").unwrap();
    assert_eq!((u.uid, u.gid), (7, 8));
    // Numeric with an entry takes the entry's group; an explicit group drops supplementary ones.
    let u = users::resolve_user(root, "1001:staff").unwrap();
    assert_eq!((u.uid, u.gid, u.groups.len()), (1001, 50, 0));
    let err = users::resolve_user(root, "ghost").unwrap_err().to_string();
    assert!(
        err.contains("unable to find user ghost") && err.contains("/etc/passwd"),
        "{err}"
    );
    assert!(users::resolve_user(root, "app:nogroup").is_err());
    assert_eq!(users::resolve_chown(root, "1000").unwrap(), (1000, 1000));
    assert_eq!(users::resolve_chown(root, "app").unwrap(), (1001, 1002));
    assert_eq!(users::resolve_chown(root, "app:33").unwrap(), (1001, 33));
    assert!(users::resolve_chown(root, ":staff").is_err());
    fs::remove_file(root.join("etc/passwd")).unwrap();
    symlink(
        "../../../../../../../../etc/passwd.real",
        root.join("etc/passwd"),
    )
    .unwrap();
    assert_eq!(users::resolve_user(root, "app").unwrap().uid, 1001);
    // No passwd at all (FROM scratch): root still works for --chown.
    fs::remove_file(root.join("etc/passwd")).unwrap();
    assert_eq!(users::resolve_chown(root, "root:root").unwrap(), (0, 0));
}

#[test]
fn source_date_epoch_sets_every_mtime() {
    let mut env = Env::new();
    env.mount();
    let mut r = req(&["dir", "link-to-a"], "/se/");
    r.mtime = Some(1_700_000_000);
    env.copy(&r).unwrap();
    let mut heredoc = req(&["<<EOF"], "/se/doc");
    heredoc.heredocs = vec![HeredocSource {
        name: "EOF".into(),
        content: "x\n".into(),
    }];
    heredoc.mtime = Some(1_700_000_000);
    copy::copy(&heredoc, Source::Inline, &env.merged, "/").unwrap();
    let layer = env.layer();
    assert_eq!(layer.len(), 7, "{layer:#?}");
    // "se" itself was stamped when made, then changed by what was written into it, as in
    // BuildKit; the layer writer clamps it to SOURCE_DATE_EPOCH.
    for p in ["se/sub", "se/sub/y", "se/x.sh", "se/link-to-a", "se/doc"] {
        let md = fs::symlink_metadata(env.upper.join(p)).unwrap();
        assert_eq!(md.mtime(), 1_700_000_000, "{p}");
    }
}
