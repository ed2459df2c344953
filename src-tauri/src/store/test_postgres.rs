//! A throwaway PostgreSQL for tests: a cluster of its own in a temporary directory, on a
//! free loopback port, started once per test process, with a fresh database per caller
//! ([`database`]); or a cluster of the caller's own, to stop and start ([`cluster`]).
//!
//! Compiled into the store's unit tests and, by path, into the integration tests
//! (`tests/common`), so both start PostgreSQL the same way. Debian's `postgresql`
//! package provides the binaries (`/usr/lib/postgresql/*/bin`); the system's own cluster
//! is never touched. `initdb` refuses to run as root, so as root every PostgreSQL
//! command runs as the `postgres` user (`runuser`), in a directory it owns.
//!
//! Without PostgreSQL installed, both say what is missing and return `None` (the caller
//! skips), except when `CI` is set: there PostgreSQL is installed, and a missing one
//! fails the test rather than passing it silently.
//!
//! A [`Cluster`] is stopped and removed when dropped. The shared one is a `static`,
//! never dropped: it and every other are also stopped and removed when the test process
//! ends, by a small watchdog process (a process that panics or aborts must not leave a
//! server running either).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// A running cluster.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// A URL of a new, empty database in this process's cluster, or `None` (with a message
/// on stderr) when PostgreSQL is not installed and `CI` is not set.
pub fn database() -> Option<String> {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    match CLUSTER.get_or_init(Cluster::start) {
        Ok(cluster) => Some(cluster.database()),
        Err(missing) => skip(missing),
    }
}

/// A cluster of the caller's own (to stop and start again), or `None` as [`database`].
pub fn cluster() -> Option<Cluster> {
    match Cluster::start() {
        Ok(cluster) => Some(cluster),
        Err(missing) => skip(&missing),
    }
}

/// `None` with a message, or a failure on CI.
fn skip<T>(missing: &str) -> Option<T> {
    if std::env::var_os("CI").is_some() {
        panic!("PostgreSQL is needed on CI (CI is set): {missing}");
    }
    // Past the test harness's capture (which would show it only for failing tests),
    // once per process.
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipping the PostgreSQL tests: {missing}");
    });
    None
}

/// The directory of PostgreSQL's server binaries: the newest under
/// `/usr/lib/postgresql`, else wherever `initdb` is on the PATH.
fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
}

impl Cluster {
    fn start() -> Result<Cluster, String> {
        let bin = bin_dir().ok_or(
            "PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or on the PATH); install \
             Debian's `postgresql` package (scripts/deps.sh test does)",
        )?;
        let as_postgres = nix::unistd::geteuid().is_root();
        let dir = std::env::temp_dir().join(format!("procyon-pg-{}-{}", std::process::id(), unique()));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        if as_postgres {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .ok_or("running as root, and there is no `postgres` user to run PostgreSQL as")?;
            nix::unistd::chown(&dir, Some(user.uid), Some(user.gid))
                .map_err(|e| format!("cannot give {} to postgres: {e}", dir.display()))?;
        }
        let mut cluster = Cluster { bin, dir, port: 0, as_postgres };
        cluster.watchdog();
        let data = cluster.dir.join("data");
        cluster.run(
            "initdb",
            &["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"],
        )?;
        // A port free now; another process could take it before the server does, which
        // only fails this start (with pg_ctl's message).
        cluster.port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        cluster.start_again()?;
        Ok(cluster)
    }

    /// Starts the server again after [`Cluster::stop`] (same port, same data).
    pub fn start_again(&self) -> Result<(), String> {
        // No fsync (the machine does not crash under a test), but commits are written
        // before they are answered: a test stops the server as a crash would, and an
        // answered commit must survive that, as on a real server.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off \
             -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        self.run("pg_ctl", &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-o", &options, "-w", "start"])
    }

    /// Stops the server at once (as a crash would: `immediate`), keeping its data.
    pub fn stop(&self) {
        let data = self.dir.join("data");
        self.run("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"])
            .unwrap_or_else(|e| panic!("cannot stop PostgreSQL: {e}"));
    }

    /// Stops the server and removes its directory once this process has ended.
    fn watchdog(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = format!("{} -D {} -m immediate stop", pg_ctl.display(), self.dir.join("data").display());
        let stop = if self.as_postgres { format!("runuser -u postgres -- {stop}") } else { stop };
        let script = format!(
            "while kill -0 {} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {}",
            std::process::id(),
            self.dir.display()
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    /// Runs one of PostgreSQL's programs, as `postgres` when this process is root.
    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = command
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// A new empty database; its URL.
    pub fn database(&self) -> String {
        let name = format!("procyon_{}", unique());
        self.run("createdb", &["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", &name])
            .unwrap_or_else(|e| panic!("cannot create a database: {e}"));
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The directory holding the server's files and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self.run("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A number no other call in this process got.
fn unique() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::SeqCst)
}
