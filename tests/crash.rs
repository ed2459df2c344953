//! Crashes mid-write: the collector SIGKILLed again and again while real agents stream
//! to it, at random moments within its ingest. Each time the database on disk, exactly as
//! the crash left it, passes `PRAGMA integrity_check`, and at the end every snapshot an
//! agent was acked for is stored exactly once. The same on PostgreSQL (a throwaway
//! cluster, see `common::postgres`), whose own crash safety is the server's: there the
//! check is that every seq is stored exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::collector::{Collector, agent_bin, cli, new_key};
use common::wait_for;

/// How many times the collector is killed.
const KILLS: usize = 8;
/// Agents streaming at once.
const HOSTS: [&str; 3] = ["crash-1", "crash-2", "crash-3"];

/// A running agent at the shortest interval, killed when dropped; its log goes to a file.
struct Agent {
    child: Child,
    log: PathBuf,
    spool: PathBuf,
}

impl Agent {
    fn start(collector: &str, key: &Path, hostname: &str, spool: &Path) -> Agent {
        let log = spool.with_extension("log");
        let child = Command::new(agent_bin())
            .env("PROCYON_CONFIG", "/dev/null")
            .args(["--collector", collector, "--hostname", hostname, "--interval", "200ms", "--api-key-file"])
            .arg(key)
            .arg("--spool")
            .arg(spool)
            .env("PROCYON_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent { child, log, spool: spool.to_path_buf() }
    }

    /// The seqs still in the spool: taken, not yet acked.
    fn spooled(&self) -> Vec<u64> {
        let Ok(dir) = std::fs::read_dir(&self.spool) else { return Vec::new() };
        let mut seqs: Vec<u64> =
            dir.flatten().filter_map(|e| e.file_name().to_str()?.strip_suffix(".zst")?.parse().ok()).collect();
        seqs.sort_unstable();
        seqs
    }

    fn terminate(&mut self) -> bool {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        wait_for(Duration::from_secs(10), || matches!(self.child.try_wait(), Ok(Some(_))))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every stored seq of `hostname`, ascending, duplicates kept.
async fn seqs(c: &Collector, token: &str, hostname: &str) -> Vec<u64> {
    let (status, list) = c.get(&format!("/api/process-snapshots/list/?hostname={hostname}&limit=1000"), token).await;
    if status == 404 {
        return Vec::new();
    }
    let mut seqs: Vec<u64> = list.as_array().unwrap().iter().map(|s| s["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    seqs
}

/// Stored snapshots of all the test's hosts together.
async fn stored(c: &Collector, token: &str) -> usize {
    let mut n = 0;
    for host in HOSTS {
        n += seqs(c, token, host).await.len();
    }
    n
}

/// `PRAGMA integrity_check` on a copy of the database and its WAL as they are on disk
/// now: what the next start will open. The copy, not the file itself, so that checking
/// (which recovers the WAL and checkpoints on close) changes nothing the collector sees.
async fn integrity_of_copy(data: &Path, scratch: &Path) -> String {
    let _ = std::fs::remove_dir_all(scratch);
    std::fs::create_dir_all(scratch).unwrap();
    for name in ["procyon.db", "procyon.db-wal"] {
        if data.join(name).exists() {
            std::fs::copy(data.join(name), scratch.join(name)).unwrap();
        }
    }
    let db = scratch.join("procyon.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    let result: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check").fetch_all(&pool).await.unwrap();
    pool.close().await;
    result.join("; ")
}

/// A small pseudo-random number from the clock: where each kill lands differs per run.
fn random_below(n: u64) -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut x = nanos ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x % n
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_in_the_middle_of_ingest_keeps_the_database_sound_and_loses_nothing() {
    kill_mid_ingest(None, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_in_the_middle_of_ingest_on_postgres_stores_every_seq_once() {
    let Some(url) = common::postgres::database() else { return };
    // PostgreSQL's collector takes longer to start (its pool connects, migrations are
    // checked over the network).
    kill_mid_ingest(Some(&url), Duration::from_secs(120)).await;
}

/// One run at a time: two at once, with their agents at the shortest interval, load
/// two cores enough that neither drains its backlog in time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Kills the collector [`KILLS`] times while agents stream to it, on SQLite in its data
/// directory or on the PostgreSQL database `postgres`, and checks what is stored.
async fn kill_mid_ingest(postgres: Option<&str>, bound: Duration) {
    let _alone = ONE_AT_A_TIME.lock().await;
    agent_bin();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flags: Vec<&str> = match postgres {
        Some(url) => vec!["--no-local", "--database", url],
        None => vec!["--no-local"],
    };
    let mut c = Collector::start(&data, &flags);
    let token = c.admin_token().await;
    let port = c.base.rsplit(':').next().unwrap().to_owned();
    let key = dir.path().join("fleet.key");
    let made = match postgres {
        Some(url) => cli(&data, &["apikey", "create", "--name", "fleet", "--database", url], None)
            .lines()
            .last()
            .unwrap()
            .trim()
            .to_owned(),
        None => new_key(&data, "fleet", None),
    };
    std::fs::write(&key, made).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut agents: Vec<Agent> =
        HOSTS.iter().map(|h| Agent::start(&c.base, &key, h, &dir.path().join(format!("spool-{h}")))).collect();

    // From each restart to the first snapshot stored after it.
    let mut recoveries = Vec::new();
    let mut restarted: Option<Instant> = None;
    for round in 0..KILLS {
        // Writes are flowing (after a restart: the backlog the agents spooled while the
        // collector was down, then the live stream), then a kill at a random moment
        // within them.
        let before = stored(&c, &token).await;
        let flowing = Instant::now();
        loop {
            if stored(&c, &token).await > before {
                break;
            }
            assert!(flowing.elapsed() < Duration::from_secs(20), "round {round}: no writes after a restart");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(at) = restarted {
            recoveries.push(at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(random_below(600))).await;
        let mut child = c.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();

        if postgres.is_none() {
            let integrity = integrity_of_copy(&data, &dir.path().join("check")).await;
            assert_eq!(integrity, "ok", "round {round}: the database as the crash left it");
        }

        restarted = Some(Instant::now());
        let bind = format!("127.0.0.1:{port}");
        c = Collector::start(&data, &[&flags[..], &["--bind", &bind]].concat());
    }

    // Every agent catches up: its spool holds at most the snapshot in flight.
    let drained = Instant::now();
    loop {
        let mut behind = false;
        for agent in &agents {
            behind |= agent.spooled().len() > 1;
        }
        if !behind {
            break;
        }
        assert!(drained.elapsed() < Duration::from_secs(30), "the agents' backlog did not drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for agent in &mut agents {
        assert!(agent.terminate(), "agents stop on SIGTERM");
    }

    for (host, agent) in HOSTS.iter().zip(&agents) {
        let all = seqs(&c, &token, host).await;
        let spooled = agent.spooled();
        let log = std::fs::read_to_string(&agent.log).unwrap_or_default();
        assert_eq!(all.first(), Some(&1), "{host}: {all:?}");
        // Once each, no gaps: a duplicate or a lost snapshot breaks the run of seqs.
        assert!(all.windows(2).all(|w| w[1] == w[0] + 1), "{host}: a gap or a duplicate in {all:?}\n{log}");
        // What was not stored is still in the spool (never acked, never deleted). The
        // spool may also hold a snapshot that was stored but whose ack had not arrived
        // when the agent stopped: sent again, it is a duplicate, stored once.
        let last = *all.last().unwrap();
        assert!(
            spooled.iter().all(|s| *s > last || all.contains(s)),
            "{host}: spooled {spooled:?}, stored up to {last}"
        );
        // More than one a round: it went on streaming through the kills. (How many
        // more depends on how fast the collector restarts, not on what is tested.)
        assert!(all.len() > KILLS, "{host}: streamed through the kills: {all:?}");
    }

    assert!(c.stop(), "the collector stops cleanly after all that");
    if postgres.is_none() {
        let sqlx_result = integrity_of_copy(&data, &dir.path().join("check")).await;
        assert_eq!(sqlx_result, "ok", "the database after a clean stop");
    }

    let worst = recoveries.iter().max().copied().unwrap_or_default();
    println!(
        "{KILLS} kills; writes resumed after a restart within {:.2} s at worst; whole run {:.1} s",
        worst.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(started.elapsed() < bound, "bounded: {:?}", started.elapsed());
}
