//! The tick loop shared by the Rust benchmark samplers (`examples/naive_proc.rs` and
//! `examples/sampler_loop.rs`).
//!
//! Both examples include this file with `#[path]`, so they pace their ticks, measure
//! themselves and report in exactly the same way as `bench/psutil_sampler.py`. The
//! runner, `bench/run.py`, reads the line printed at the end.

use std::error::Error;
use std::time::{Duration, Instant};

/// Time between two snapshots, as a real agent would sample.
const INTERVAL: Duration = Duration::from_secs(1);

/// Ticks when `BENCH_TICKS` is not set.
const DEFAULT_TICKS: u32 = 30;

/// Takes `BENCH_TICKS` snapshots one second apart with `tick`, then prints one JSON line:
/// `{"name", "ticks", "processes", "sockets", "warmup_cpu_s"}`.
///
/// `tick` takes one full snapshot and returns how many processes and sockets it saw.
/// `warmup_cpu_s` is this process's CPU time right after the first tick: start-up plus
/// one snapshot. The runner subtracts it from the total CPU time it measures from
/// outside, which leaves the cost of the other, steady-state ticks.
pub fn run<F>(name: &str, mut tick: F) -> Result<(), Box<dyn Error>>
where
    F: FnMut() -> Result<(usize, usize), Box<dyn Error>>,
{
    let ticks = ticks_from_env()?;
    let start = Instant::now();
    let mut warmup_cpu_s = 0.0;
    let mut counts = (0, 0);
    for n in 0..ticks {
        // Pace against the start, not the previous tick, so slow ticks do not drift.
        let due = start + INTERVAL * n;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        counts = tick()?;
        if n == 0 {
            warmup_cpu_s = own_cpu_seconds()?;
        }
    }
    let report = serde_json::json!({
        "name": name,
        "ticks": ticks,
        "processes": counts.0,
        "sockets": counts.1,
        "warmup_cpu_s": warmup_cpu_s,
    });
    println!("{report}");
    Ok(())
}

/// Reads `BENCH_TICKS`; at least two ticks are needed, one of them being the warm-up.
fn ticks_from_env() -> Result<u32, Box<dyn Error>> {
    let ticks = match std::env::var("BENCH_TICKS") {
        Ok(text) => {
            text.trim().parse::<u32>().map_err(|e| format!("BENCH_TICKS={text:?} is not a whole number: {e}"))?
        }
        Err(std::env::VarError::NotPresent) => DEFAULT_TICKS,
        Err(e) => return Err(format!("BENCH_TICKS: {e}").into()),
    };
    if ticks < 2 {
        return Err(format!("BENCH_TICKS={ticks}: need at least 2 (one is the warm-up)").into());
    }
    Ok(ticks)
}

/// CPU seconds used so far by all threads of this process.
///
/// Sums the first field of `/proc/self/task/*/schedstat`, the time on CPU in
/// nanoseconds. `/proc/self/stat` counts in 10 ms clock ticks, coarser than what one
/// snapshot costs, and the standard library has no call for it. The kernel adds a
/// running thread's latest stretch only when the thread is switched out, so we sleep a
/// moment first to make the figure current.
fn own_cpu_seconds() -> Result<f64, Box<dyn Error>> {
    std::thread::sleep(Duration::from_millis(2));
    let mut total_ns: u64 = 0;
    for entry in std::fs::read_dir("/proc/self/task")? {
        let path = entry?.path().join("schedstat");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            // A thread that ended meanwhile: its time is no longer listed anywhere here.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{}: {e}", path.display()).into()),
        };
        let ns = text
            .split_whitespace()
            .next()
            .and_then(|field| field.parse::<u64>().ok())
            .ok_or_else(|| format!("{}: unexpected content {text:?}", path.display()))?;
        total_ns += ns;
    }
    Ok(total_ns as f64 / 1e9)
}
