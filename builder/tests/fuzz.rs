//! No panic on any input: random bytes and mutated corpus files (BuildKit's test data and our
//! fixtures) go through the parser, the planner and the BuildKit dump. Runs for
//! `RBUILD_FUZZ_SECONDS` (default 5; CI sets 60). A panicking input is saved under
//! `target/fuzz-crash-*.dockerfile` and reported.

use builder::frontend::{self, Node};
use builder::plan::{self, PlanOptions};
use std::panic;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Small deterministic PRNG (xorshift64*) so a failure is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&str] = &[
    "\\\n",
    "`\n",
    "\n",
    "\r\n",
    "<<EOF\n",
    "<<-EOF\n",
    "EOF\n",
    "\tEOF\n",
    "<<'X'",
    "${",
    "}",
    "$",
    "${A:-",
    "${A#",
    "${A//",
    "[\"",
    "\"]",
    "\",",
    "'",
    "\"",
    "--mount=",
    "type=cache,",
    "target=",
    "--from=",
    "--",
    "=",
    " AS ",
    "# escape=`\n",
    "# syntax=x\n",
    "# check=error=true\n",
    "\u{feff}",
    "ONBUILD ",
    "FROM ",
    "RUN ",
    "COPY ",
    "ARG ",
    "ENV ",
    "HEALTHCHECK ",
    "CMD ",
    "\\",
    "#",
    "\0",
];

fn corpus() -> Vec<Vec<u8>> {
    fn walk(dir: &Path, out: &mut Vec<Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.file_name().is_some_and(|n| n == "Dockerfile") {
                out.push(std::fs::read(&p).unwrap());
            }
        }
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    walk(&root.join("../fixtures/dockerfiles"), &mut out);
    let shared = std::env::var_os("RBUILD_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../../shared/conformance/buildkit"));
    walk(&shared, &mut out);
    assert!(out.len() > 90, "corpus too small: {}", out.len());
    out
}

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    if rng.below(10) == 0 {
        return (0..rng.below(300)).map(|_| rng.next() as u8).collect();
    }
    let mut data = corpus[rng.below(corpus.len())].clone();
    for _ in 0..=rng.below(8) {
        let at = rng.below(data.len() + 1);
        match rng.below(5) {
            0 => data
                .splice(at..at, TOKENS[rng.below(TOKENS.len())].bytes())
                .for_each(drop),
            1 if !data.is_empty() => {
                let end = (at + rng.below(20)).min(data.len());
                data.drain(at.min(end)..end);
            }
            2 if at < data.len() => data[at] = rng.next() as u8,
            3 => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len());
                let end = (from + rng.below(200)).min(other.len());
                data.splice(at..at, other[from..end].iter().copied())
                    .for_each(drop);
            }
            _ => {
                let end = (at + rng.below(40)).min(data.len());
                let copy = data[at.min(end)..end].to_vec();
                data.splice(at..at, copy).for_each(drop);
            }
        }
    }
    data
}

fn exercise(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    if let Ok(raw) = frontend::parse("Dockerfile", &text) {
        raw.nodes.iter().map(Node::dump).for_each(drop);
    }
    if let Ok(df) = frontend::parse_dockerfile("Dockerfile", &text) {
        let mut opts = PlanOptions::default();
        opts.build_args.insert("A".into(), "x y".into());
        opts.target = Some("build".into()).filter(|_| input.len().is_multiple_of(2));
        if let Err(e) = plan::plan(&df, &opts, &|_| None) {
            let _ = e.to_string();
        }
    } else if let Err(e) = frontend::parse_dockerfile("Dockerfile", &text) {
        let _ = e.to_string();
    }
}

#[test]
fn parser_and_planner_never_panic() {
    let seconds: u64 = std::env::var("RBUILD_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let corpus = corpus();
    let seed: u64 = std::env::var("RBUILD_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let mut rng = Rng(seed | 1);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut runs = 0u64;
    panic::set_hook(Box::new(|_| {}));
    while Instant::now() < deadline {
        let input = mutate(&mut rng, &corpus);
        if panic::catch_unwind(|| exercise(&input)).is_err() {
            let _ = panic::take_hook();
            let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("fuzz-crash-{runs}.dockerfile"));
            std::fs::write(&path, &input).unwrap();
            exercise(&input); // re-run to show the panic message
            panic!(
                "input saved at {} panicked (RBUILD_FUZZ_SEED={seed})",
                path.display()
            );
        }
        runs += 1;
    }
    let _ = panic::take_hook();
    assert!(runs > 100, "only {runs} inputs in {seconds}s");
    eprintln!("fuzz: {runs} inputs in {seconds}s (seed {seed}), no panic");
}
