//! Measures the agent channel's candidate encodings on this machine's snapshot grown to
//! the design's reference host (480 processes, 400 sockets): encode and decode time per
//! snapshot, size as is and after zstd level 1, and whether each round trip is exact.
//! The choice of MessagePack for protocol 3 rests on this (see `model/agent.rs`).
//!
//! `cargo run --release --example encodings [-- --rounds 200]`

use std::time::Instant;

use procyon::model::Snapshot;
use procyon::sample::{Sampler, SamplerOptions};

/// The machine's own snapshot with its processes and sockets copied up to the sizes.
fn reference_host(processes: usize, sockets: usize) -> Snapshot {
    let mut s = Sampler::new(SamplerOptions::default()).sample();
    let originals: Vec<_> = s.processes.iter().filter(|p| !p.kernel_thread).cloned().collect();
    let mut pid = 100_000;
    while s.processes.len() < processes && !originals.is_empty() {
        let mut copy = originals[pid as usize % originals.len()].clone();
        copy.pid = pid;
        pid += 1;
        s.processes.push(copy);
    }
    let pattern = s.connections.clone();
    let mut i = 0usize;
    while s.connections.len() < sockets && !pattern.is_empty() {
        let mut copy = pattern[i % pattern.len()].clone();
        copy.local_port = 20_000 + (i % 40_000) as u16;
        s.connections.push(copy);
        i += 1;
    }
    s
}

/// Microseconds per call of `f`, after a warm-up.
fn micros(rounds: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let started = Instant::now();
    for _ in 0..rounds {
        f();
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
}

type Codec = (&'static str, fn(&Snapshot) -> Vec<u8>, fn(&[u8]) -> Snapshot);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: u32 = match args.iter().position(|a| a == "--rounds") {
        Some(i) => args.get(i + 1).ok_or("--rounds needs a number")?.parse()?,
        None => 200,
    };
    let snapshot = reference_host(480, 400);
    #[allow(clippy::unwrap_used)]
    let codecs: [Codec; 4] = [
        ("json", |s| serde_json::to_vec(s).unwrap(), |b| serde_json::from_slice(b).unwrap()),
        ("messagepack (named)", |s| rmp_serde::to_vec_named(s).unwrap(), |b| rmp_serde::from_slice(b).unwrap()),
        ("messagepack (arrays)", |s| rmp_serde::to_vec(s).unwrap(), |b| rmp_serde::from_slice(b).unwrap()),
        (
            "cbor",
            |s| {
                let mut out = Vec::new();
                ciborium::into_writer(s, &mut out).unwrap();
                out
            },
            |b| ciborium::from_reader(b).unwrap(),
        ),
    ];
    println!("{} processes, {} sockets; {rounds} rounds each", snapshot.processes.len(), snapshot.connections.len());
    println!("{:22} {:>11} {:>11} {:>9} {:>9}  exact", "", "encode µs", "decode µs", "bytes", "zstd");
    for (name, encode, decode) in codecs {
        let bytes = encode(&snapshot);
        let enc = micros(rounds, || drop(encode(&snapshot)));
        let dec = micros(rounds, || drop(decode(&bytes)));
        let packed = zstd::bulk::compress(&bytes, 1)?.len();
        let exact = decode(&bytes) == snapshot;
        println!("{name:22} {enc:>11.1} {dec:>11.1} {:>9} {packed:>9}  {exact}", bytes.len());
    }
    Ok(())
}
