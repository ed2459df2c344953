//! The agent's spool disk fills up while its collector is unreachable: the agent drops
//! its oldest snapshots to make room and says so (as its spool limit does), never
//! crashes, keeps sampling; once space returns and the collector is back, every snapshot
//! that stayed in the spool is stored exactly once, and the collector hears how many
//! were dropped, one for each hole in the seqs.
//!
//! The agent's `--spool` is a 4 MiB tmpfs mounted in a private mount namespace
//! (`unshare -m`), which takes root (or `CAP_SYS_ADMIN`). Where that cannot be done the
//! test says so on the terminal (not captured by the test harness) and does nothing
//! else; `PROCYON_REQUIRE_NAMESPACES=1` makes that a failure instead.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::collector::{Collector, agent_bin, new_key};

/// Size of the agent's spool disk: a few dozen snapshots of a busy machine.
const DISK: &str = "4m";

/// Whether this process may mount a tmpfs in a mount namespace of its own. When it may
/// not, says so where the person running the tests sees it.
fn namespaces_available() -> bool {
    let probe = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", "mount -t tmpfs -o size=1m probe /mnt"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if probe.is_ok_and(|s| s.success()) {
        return true;
    }
    let why = "spool_full: SKIPPED: mounting a tmpfs in a private mount namespace (`unshare -m`, \
               util-linux) needs root or CAP_SYS_ADMIN, which this run does not have";
    assert!(std::env::var_os("PROCYON_REQUIRE_NAMESPACES").is_none(), "{why}");
    // Written to the terminal itself: the harness captures `eprintln!`, not this.
    let _ = writeln!(std::io::stderr(), "{why}");
    false
}

/// A `procyon-agent` whose spool directory is a small tmpfs of its own. Killed when
/// dropped.
struct Agent {
    child: Child,
    /// `--spool`, as the agent sees it.
    spool: PathBuf,
    log: PathBuf,
}

impl Agent {
    fn start(collector: &str, key: &Path, spool: &Path, log: &Path) -> Agent {
        std::fs::create_dir_all(spool).unwrap();
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!("mount -t tmpfs -o size={DISK},mode=0700 procyon-spool \"$0\" && exec \"$@\""))
            .arg(spool)
            .arg(agent_bin())
            .args(["--collector", collector, "--hostname", "spool-full", "--interval", "200ms", "--api-key-file"])
            .arg(key)
            .arg("--spool")
            .arg(spool)
            .env("PROCYON_CONFIG", "/dev/null")
            .env("PROCYON_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("this test needs `unshare` (util-linux)");
        let agent = Agent { child, spool: spool.to_path_buf(), log: log.to_path_buf() };
        let mounted = common::wait_for(Duration::from_secs(10), || {
            let mounts = std::fs::read_to_string(format!("/proc/{}/mounts", agent.child.id())).unwrap_or_default();
            mounts.lines().any(|l| l.starts_with("procyon-spool ") && l.contains(" tmpfs "))
        });
        assert!(mounted, "the spool is not a tmpfs of its own: {}", agent.log());
        agent
    }

    /// The spool directory, from inside the agent's mount namespace.
    fn spool(&self) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.child.id())).join(self.spool.strip_prefix("/").unwrap())
    }

    /// The seqs in the spool, ascending.
    fn spooled(&self) -> Vec<u64> {
        let files = std::fs::read_dir(self.spool()).into_iter().flatten().flatten();
        let mut seqs: Vec<u64> =
            files.filter_map(|e| e.file_name().to_str()?.strip_suffix(".zst")?.parse().ok()).collect();
        seqs.sort_unstable();
        seqs
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every stored seq of the agent's host, ascending, duplicates kept.
async fn stored(c: &Collector, token: &str) -> Vec<u64> {
    let (status, list) = c.get("/api/process-snapshots/list/?hostname=spool-full&limit=1000", token).await;
    if status == 404 {
        return Vec::new();
    }
    assert_eq!(status, 200, "{list}");
    let mut seqs: Vec<u64> = list.as_array().unwrap().iter().map(|s| s["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    seqs
}

/// The drops agents reported, summed from the collector's log lines.
fn reported_drops(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("agent dropped snapshots"))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("count=")?.parse::<u64>().ok()))
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_spool_disk_drops_the_oldest_says_so_and_the_rest_arrives_once() {
    if !namespaces_available() {
        return;
    }
    agent_bin();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let collector_log = dir.path().join("collector.log");
    let mut c = Collector::start_logging(&data, &["--no-local"], Some(&collector_log));
    let token = c.admin_token().await;
    let port = c.base.rsplit(':').next().unwrap().to_owned();
    let key = dir.path().join("fleet.key");
    std::fs::write(&key, new_key(&data, "fleet", None)).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut agent = Agent::start(&c.base, &key, &dir.path().join("spool"), &dir.path().join("agent.log"));
    let logs = |agent: &Agent| {
        format!("collector:\n{}\nagent:\n{}", std::fs::read_to_string(&collector_log).unwrap_or_default(), agent.log())
    };

    // Streaming; then the collector goes away and the spool starts to fill.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored(&c, &token).await.len() < 3 {
        assert!(Instant::now() < deadline, "the agent reports: {}", logs(&agent));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = stored(&c, &token).await;
    assert!(c.stop(), "the collector stops cleanly");
    assert!(common::wait_for(Duration::from_secs(20), || agent.spooled().len() >= 3), "{}", logs(&agent));

    // A file of zeros takes every byte left on the spool's disk.
    let filler = agent.spool().join("filler");
    {
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 16 << 10];
        let full = loop {
            if let Err(e) = file.write_all(&chunk) {
                break e;
            }
        };
        assert_eq!(full.kind(), std::io::ErrorKind::StorageFull, "{full}");
    }
    let full_at = agent.spooled();

    // While the disk is full the agent keeps sampling: each new snapshot takes the
    // room of the oldest, so the newest seq in the spool keeps rising, the oldest go,
    // and the agent says so.
    let newest_at_full = *full_at.last().unwrap();
    let moved_on = common::wait_for(Duration::from_secs(30), || {
        let now = agent.spooled();
        now.last().is_some_and(|&n| n >= newest_at_full + 10) && now.first() > full_at.first()
    });
    assert!(
        moved_on,
        "the agent keeps spooling on a full disk, dropping the oldest: {full_at:?} then {:?}\n{}",
        agent.spooled(),
        logs(&agent)
    );
    assert!(agent.running(), "the agent keeps running: {}", logs(&agent));
    let said = agent.log();
    assert!(said.contains("spool disk is full: dropped the oldest snapshots"), "the agent says so: {said}");
    assert!(!said.contains("cannot spool a snapshot"), "no snapshot is lost unsaid: {said}");

    // Space comes back; once the snapshot being written meanwhile is in, what the spool
    // holds now is what must arrive.
    std::fs::remove_file(&filler).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let remaining = agent.spooled();
    assert!(remaining.len() >= 3, "{remaining:?}");

    // The collector comes back on its address: no restart of the agent.
    let back = Instant::now();
    c = Collector::start_logging(
        &data,
        &["--no-local", "--bind", &format!("127.0.0.1:{port}")],
        Some(&dir.path().join("collector-2.log")),
    );
    let newest = *remaining.last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The token outlives the restart: its signing key is in `--data`.
        let all = stored(&c, &token).await;
        if remaining.iter().all(|s| all.contains(s)) && !agent.spooled().contains(&newest) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the spool drains: stored {all:?}, remaining {remaining:?}\n{}",
            logs(&agent)
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let recovered = back.elapsed();
    let all = stored(&c, &token).await;
    assert!(all.windows(2).all(|w| w[0] < w[1]), "each stored once: {all:?}");
    assert!(all.starts_with(&before), "what was stored before stays: {before:?} then {all:?}");
    assert!(remaining.iter().all(|s| all.contains(s)), "all that stayed in the spool arrived: {remaining:?} {all:?}");
    assert!(agent.running(), "{}", logs(&agent));

    // Every hole in the seqs up to the newest that was spooled is a snapshot the agent
    // dropped and reported: none went missing without a word.
    let holes = (1..=newest).filter(|s| !all.contains(s)).count() as u64;
    assert!(holes > 0, "the full disk cost snapshots: {all:?}");
    let log2 = std::fs::read_to_string(dir.path().join("collector-2.log")).unwrap_or_default();
    let reported = common::wait_for(Duration::from_secs(10), || {
        reported_drops(&std::fs::read_to_string(dir.path().join("collector-2.log")).unwrap_or_default()) >= holes
    });
    assert!(reported, "{holes} holes, reported: {}\n{log2}", reported_drops(&log2));
    println!(
        "{} snapshots stayed in the spool on a full disk, {holes} dropped and reported; all stored {:.2} s after \
         the collector came back",
        remaining.len(),
        recovered.as_secs_f64()
    );
}
