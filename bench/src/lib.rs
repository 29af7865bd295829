//! Shared pieces of rbuild's benchmarks: timing and the median of repeated runs.

use std::time::{Duration, Instant};

/// Runs `f` `runs` times and returns the durations, sorted.
pub fn time_runs<T>(runs: usize, mut f: impl FnMut() -> T) -> (Vec<Duration>, T) {
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let start = Instant::now();
        last = Some(f());
        times.push(start.elapsed());
    }
    times.sort();
    (times, last.expect("at least one run"))
}

pub fn median(times: &[Duration]) -> Duration {
    times[times.len() / 2]
}
