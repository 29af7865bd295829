//! Layer export throughput: rbuild's layer writer (walk + tar + sha256 of the tar + gzip +
//! sha256 of the blob) against `tar -c | pigz -p2 | sha256sum` on the same ~1 GB tree.
//!
//! `cargo run --release -p rbuild-bench --bin layer-export [-- DIR] [RUNS]`
//! Without DIR, a copy of /usr/bin and /usr/share is made once under /var/tmp/rbuild-bench.

use layers::{write_layer, Compression, TarOptions};
use rbuild_bench::{median, time_runs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn tree_bytes(dir: &Path) -> u64 {
    let out = Command::new("du")
        .args(["-sb", "--apparent-size"])
        .arg(dir)
        .output()
        .expect("du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("du output")
}

fn default_tree() -> PathBuf {
    let dir = PathBuf::from("/var/tmp/rbuild-bench/usr-tree");
    if !dir.exists() {
        let partial = dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial).unwrap();
        for src in ["/usr/bin", "/usr/share"] {
            let ok = Command::new("cp")
                .arg("-a")
                .arg(src)
                .arg(&partial)
                .status()
                .unwrap()
                .success();
            assert!(ok, "cp -a {src}");
        }
        std::fs::rename(&partial, &dir).unwrap();
    }
    dir
}

struct Row {
    tool: String,
    times: Vec<Duration>,
    output: u64,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().map(PathBuf::from).unwrap_or_else(default_tree);
    let runs: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(3);
    assert!(
        Command::new("pigz").arg("--version").output().is_ok(),
        "apt-get install pigz"
    );
    let bytes = tree_bytes(&dir);
    // Warm the page cache so every tool reads from memory.
    Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .args(["-cf", "/dev/null", "."])
        .status()
        .unwrap();

    let mut rows = Vec::new();
    for (name, compression) in [
        ("rbuild gzip (level 3)", Compression::GZIP),
        ("rbuild zstd (level 3)", Compression::ZSTD),
    ] {
        let opts = TarOptions::default();
        let (times, size) = time_runs(runs, || {
            let (digests, _) =
                write_layer(&dir, std::io::sink(), compression, &opts).expect("write layer");
            digests.size
        });
        rows.push(Row {
            tool: name.to_string(),
            times,
            output: size,
        });
    }
    let store_dir = std::env::temp_dir().join(format!("rbuild-bench-store-{}", std::process::id()));
    let store = images::Store::open(&store_dir).expect("open store");
    let (times, size) = time_runs(runs, || {
        let (digests, blob) = write_layer(
            &dir,
            store.blob_writer().unwrap(),
            Compression::GZIP,
            &TarOptions::default(),
        )
        .unwrap();
        let info = blob.commit(Some(&digests.digest)).unwrap();
        store.delete_blob(&info.digest).unwrap();
        info.size
    });
    rows.push(Row {
        tool: "rbuild gzip into the store (fsync)".into(),
        times,
        output: size,
    });
    let _ = std::fs::remove_dir_all(&store_dir);

    let pipeline = format!(
        "tar -C '{}' -c . | pigz -p2 | tee >(wc -c >&2) | sha256sum >/dev/null",
        dir.display()
    );
    let (times, size) = time_runs(runs, || {
        let out = Command::new("bash")
            .args(["-c", &pipeline])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr)
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
    });
    let reference = median(&times);
    rows.push(Row {
        tool: "tar -c | pigz -p2 | sha256sum".into(),
        times,
        output: size,
    });

    let mb = bytes as f64 / 1e6;
    println!(
        "Layer export of {} ({mb:.0} MB of file data), {runs} runs each, median (min-max):\n",
        dir.display()
    );
    println!("| tool | time s | MB/s | output MB | throughput vs pigz -p2 |");
    println!("|---|---|---|---|---|");
    for row in &rows {
        let m = median(&row.times).as_secs_f64();
        println!(
            "| {} | {m:.2} ({:.2}-{:.2}) | {:.0} | {:.0} | {:.2}× |",
            row.tool,
            row.times[0].as_secs_f64(),
            row.times[row.times.len() - 1].as_secs_f64(),
            mb / m,
            row.output as f64 / 1e6,
            reference.as_secs_f64() / m
        );
    }
}
