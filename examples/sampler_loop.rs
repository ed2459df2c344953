//! Benchmark subject: Procyon's own sampler, taking a full snapshot once a second.
//!
//! Each tick it calls `Sampler::sample` and serialises the snapshot to JSON, as the
//! agent does before sending it. Run by `bench/run.sh` next to `examples/naive_proc.rs`
//! and `bench/psutil_sampler.py`; see `bench/run.py` for how the cost is measured.
//!
//! Extra load, to measure closer to a busy server: with `SAMPLER_LOAD=N` it first starts
//! N idle processes holding N loopback TCP sockets between them (gone when it exits).
//! `sampler_loop --hold-load N` only starts that load and holds it until its input
//! closes or it is killed, so that other samplers can be measured against it too.

use std::error::Error;

use procyon::model::Snapshot;
use procyon::sample::{Sampler, SamplerOptions};

#[path = "../bench/tick_loop.rs"]
mod tick_loop;

#[path = "../tests/common/load.rs"]
mod load;

/// Starts `n` idle processes and `n` sockets, if `n` is given and not zero.
fn start_load(n: Option<&str>) -> Result<Option<load::Load>, Box<dyn Error>> {
    let Some(n) = n else { return Ok(None) };
    let n: usize = n.trim().parse().map_err(|e| format!("load {n:?} is not a whole number: {e}"))?;
    Ok((n > 0).then(|| load::Load::start(n, n)).transpose()?)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, n] = args.as_slice()
        && flag == "--hold-load"
    {
        let _load = start_load(Some(n))?;
        eprintln!("holding {n} processes and sockets; close input or kill to end");
        // Returns at end of input (or an error): either way, let go.
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        return Ok(());
    }
    if !args.is_empty() {
        return Err("usage: sampler_loop [--hold-load N]  (SAMPLER_LOAD=N adds load to the run)".into());
    }
    let _load = start_load(std::env::var("SAMPLER_LOAD").ok().as_deref())?;

    let mut sampler = Sampler::new(SamplerOptions::default());
    tick_loop::run("ours", || {
        let snapshot: Snapshot = sampler.sample();
        let json = serde_json::to_vec(&snapshot)?;
        // Keep the compiler from dropping the serialisation as unused work.
        std::hint::black_box(json);
        Ok((snapshot.processes.len(), snapshot.connections.len()))
    })
}
