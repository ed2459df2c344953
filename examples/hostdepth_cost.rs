//! What reading the host in depth costs: each part read many times over (the mount
//! table with a `statvfs` per kept mount, `/proc/diskstats`, the hwmon sensors, the
//! power supplies), its CPU time per reading (user + system, from `getrusage`, so other
//! load on the machine does not count), and what that is per second at the cadence the
//! sampler reads it (`sample/storage.rs`, `sample/sensors.rs`).
//!
//!   cargo run --release --example hostdepth_cost [READINGS]
//!
//! Linux only (elsewhere the sampler does not read these parts yet).

#[cfg(target_os = "linux")]
fn main() {
    use std::path::Path;
    use std::time::Duration;

    use nix::sys::resource::{UsageWho, getrusage};
    use procyon::sample::{sensors, storage};

    fn cpu() -> Duration {
        // getrusage of this process cannot fail; if it did, the figures would read 0.
        let Ok(u) = getrusage(UsageWho::RUSAGE_SELF) else { return Duration::ZERO };
        let t = |tv: nix::sys::time::TimeVal| Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000);
        t(u.user_time()) + t(u.system_time())
    }

    fn measure(name: &str, every: Duration, readings: u32, mut read: impl FnMut() -> usize) {
        let mut items = 0;
        let start = cpu();
        for _ in 0..readings {
            items = read();
        }
        let per = (cpu() - start) / readings;
        let share = per.as_secs_f64() / every.as_secs_f64() * 100.0;
        println!(
            "{name:<34} {items:>3} items  {:>8.1} µs CPU per reading  every {:>2} s  = {share:.4} % of one core",
            per.as_secs_f64() * 1e6,
            every.as_secs()
        );
    }

    let readings: u32 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(2000);
    let tick = Duration::from_secs(1);
    println!("{readings} readings of each part on this machine:");
    measure("filesystems (mountinfo + statvfs)", storage::FILESYSTEMS_EVERY, readings, || {
        storage::read_filesystems(Path::new("/proc/self/mountinfo")).map_or(0, |f| f.len())
    });
    measure("disks (/proc/diskstats)", tick, readings, || {
        std::fs::read_to_string("/proc/diskstats").map_or(0, |t| storage::diskstats(&t).len())
    });
    measure("sensors (/sys/class/hwmon)", sensors::SENSORS_EVERY, readings, || {
        sensors::read_hwmon(Path::new("/sys/class/hwmon")).map_or(0, |(t, f)| t.len() + f.len())
    });
    // This machine may have no sensors: the fixture tree of the parser tests (three
    // chips, a laptop's two batteries) stands for one that has.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/host/sys/class");
    measure("sensors (fixture: 3 hwmon chips)", sensors::SENSORS_EVERY, readings, || {
        sensors::read_hwmon(&fixtures.join("hwmon")).map_or(0, |(t, f)| t.len() + f.len())
    });
    measure("batteries (fixture: 2 + an adapter)", sensors::SENSORS_EVERY, readings, || {
        sensors::read_power_supplies(&fixtures.join("power_supply")).map_or(0, |b| b.len())
    });
    measure("batteries (/sys/class/power_supply)", sensors::SENSORS_EVERY, readings, || {
        sensors::read_power_supplies(Path::new("/sys/class/power_supply")).map_or(0, |b| b.len())
    });
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("The host in depth is read on Linux only for now.");
}
