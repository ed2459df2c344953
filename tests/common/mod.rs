//! Helpers shared by the integration tests: child processes with unique command lines,
//! reading a process's real state from the OS, and waiting for a condition.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A marker unique to this test run and call, for finding our own children.
pub fn marker(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("procyon-test-{tag}-{}-{nanos}", std::process::id())
}

/// A shell that sleeps, with `extra` words on its command line (after `true`, so they
/// are never executed). Killed when dropped.
pub struct Sleeper {
    pub child: Child,
}

impl Sleeper {
    pub fn start(extra: &str) -> Sleeper {
        // `sleep` in the background plus `wait` keeps the shell itself alive as the
        // parent, with our marker on its own command line.
        let script = format!("sleep 600 & wait; true {extra}");
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sh");
        // Let the shell start its child.
        wait_for(Duration::from_secs(5), || !children_of(child.id()).is_empty());
        Sleeper { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        for pid in children_of(self.pid()) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The state letter of `/proc/PID/stat` (`S`, `T`, `Z`, ...), or `None` if gone.
pub fn state(pid: u32) -> Option<char> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    after.split_whitespace().next()?.chars().next()
}

/// Gone, or a zombie nobody has reaped yet: either way, no longer running.
pub fn is_gone(pid: u32) -> bool {
    matches!(state(pid), None | Some('Z') | Some('X'))
}

/// Direct children of `pid`, from `/proc`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(text) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        let Some(close) = text.rfind(')') else { continue };
        let ppid = text[close + 1..].split_whitespace().nth(1).and_then(|v| v.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// The user name this test runs as.
pub fn me() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
pub mod collector;
pub mod load;

/// A throwaway PostgreSQL (shared with the store's unit tests).
#[path = "../../src-tauri/src/store/test_postgres.rs"]
pub mod postgres;
