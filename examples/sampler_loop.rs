//! Benchmark subject: Procyon's own sampler, taking a full snapshot once a second.
//!
//! Each tick it calls `Sampler::sample` and serialises the snapshot to JSON, as the
//! agent does before sending it. Run by `bench/run.sh` next to `examples/naive_proc.rs`
//! and `bench/psutil_sampler.py`; see `bench/run.py` for how the cost is measured.

use std::error::Error;

use procyon::model::Snapshot;
use procyon::sample::{Sampler, SamplerOptions};

#[path = "../bench/tick_loop.rs"]
mod tick_loop;

fn main() -> Result<(), Box<dyn Error>> {
    let mut sampler = Sampler::new(SamplerOptions::default());
    tick_loop::run("ours", || {
        let snapshot: Snapshot = sampler.sample();
        let json = serde_json::to_vec(&snapshot)?;
        // Keep the compiler from dropping the serialisation as unused work.
        std::hint::black_box(json);
        Ok((snapshot.processes.len(), snapshot.connections.len()))
    })
}
