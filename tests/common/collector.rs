//! A real `procyon serve` process on a free port with its own data directory, and the
//! HTTP helpers the collector tests share.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_procyon");

/// The agent binary, next to `procyon`. `cargo test` does not build another package's
/// binary, so it is built (or found up to date) once per run: a binary left over from
/// an older build would speak an older protocol.
pub fn agent_bin() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo).args(["build", "-p", "procyon-agent"]).status().unwrap();
        assert!(status.success(), "building procyon-agent");
    });
    Path::new(BIN).with_file_name("procyon-agent")
}

/// A running collector. Stopped (SIGTERM) when dropped.
pub struct Collector {
    pub child: Option<Child>,
    pub base: String,
    pub data: PathBuf,
    /// The first-start admin password, if this start created it.
    pub admin_password: Option<String>,
    pub http: reqwest::Client,
}

impl Collector {
    /// Starts `procyon serve` on 127.0.0.1:0 with `data` and `extra` flags, and waits
    /// until it listens.
    pub fn start(data: &Path, extra: &[&str]) -> Collector {
        Collector::start_logging(data, extra, None)
    }

    /// [`Collector::start`], with its log (at `info`) written to `log` when given.
    pub fn start_logging(data: &Path, extra: &[&str], log: Option<&Path>) -> Collector {
        let mut command = Command::new(BIN);
        command.arg("serve");
        if !extra.contains(&"--bind") {
            command.args(["--bind", "127.0.0.1:0"]);
        }
        // The seed document's example upload is from 2025: keep hourly history long
        // enough for it to be accepted (older snapshots are refused).
        if !extra.contains(&"--keep-hours") {
            command.args(["--keep-hours", "20years"]);
        }
        let mut child = command
            .arg("--data")
            .arg(data)
            .args(extra)
            .env("RUST_LOG", if log.is_some() { "info" } else { "warn" })
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(match log {
                Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
                None => Stdio::inherit(),
            })
            .spawn()
            .expect("start procyon serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut admin_password = None;
        let base = loop {
            let line = rx.recv_timeout(Duration::from_secs(30)).expect("collector did not start in time");
            if let Some(rest) = line.strip_prefix("No users yet: created `admin`; its password is in ") {
                let file = rest.split(" (").next().unwrap();
                admin_password = Some(std::fs::read_to_string(file).unwrap().trim().to_owned());
            }
            if let Some(rest) = line.strip_prefix("Procyon collector on ") {
                break rest.split_whitespace().next().unwrap().trim_end_matches('/').to_owned();
            }
        };
        Collector { child: Some(child), base, data: data.to_path_buf(), admin_password, http: reqwest::Client::new() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("{}{path}", self.base.replacen("http://", "ws://", 1))
    }

    /// Stops with SIGTERM and returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return true };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        for _ in 0..200 {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    pub async fn login(&self, username: &str, password: &str) -> String {
        let r = self
            .http
            .post(self.url("/api/auth/login"))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "login of {username}");
        r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
    }

    pub async fn admin_token(&self) -> String {
        self.login("admin", self.admin_password.as_deref().expect("first start")).await
    }

    /// GET with a bearer token; returns status and JSON (or Null).
    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).bearer_auth(token).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POST with a bearer token and an optional JSON body.
    pub async fn post(&self, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.post(self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POST an upload body with an API key.
    pub async fn upload(&self, key: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let r = self
            .http
            .post(self.url("/api/process-snapshots/"))
            .header("Authorization", format!("Api-Key {key}"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Stored snapshots in total (all hosts).
    pub async fn stored_count(&self, token: &str) -> u64 {
        let r =
            self.http.get(self.url("/api/process-snapshots/list/?limit=1")).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.headers()["x-total-count"].to_str().unwrap().parse().unwrap()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `procyon ARGS --data DATA` and returns its stdout; panics on failure.
pub fn cli(data: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--data")
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "procyon {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A new API key from `procyon apikey create` (its last line of output).
pub fn new_key(data: &Path, name: &str, host: Option<&str>) -> String {
    let mut args = vec!["apikey", "create", "--name", name];
    if let Some(h) = host {
        args.extend(["--host", h]);
    }
    cli(data, &args, None).lines().last().unwrap().trim().to_owned()
}

/// A new user with `role`, made through the CLI; returns the password.
pub fn new_user(data: &Path, name: &str, role: &str) -> String {
    let password = format!("pw-{name}-0123456789");
    cli(data, &["user", "add", name, "--role", role, "--password-stdin"], Some(&format!("{password}\n")));
    password
}

/// The example upload of the original API document, verbatim.
pub const SEED_EXAMPLE: &str = include_str!("../fixtures/seed-upload.json");
