//! The OpenAPI document against a running collector: schemathesis (from PyPI) sends
//! requests generated from `/api/openapi.json` as a signed-in admin, and every answer
//! must be no server error and match the schema the document gives for it.
//!
//! schemathesis is installed in a virtual environment under the target directory, once
//! (a pinned version; later runs reuse it). An install that fails (no network, no
//! `python3-venv`) fails the test: `make test` installs what its tests need
//! (`scripts/deps.sh test`), so a missing tool is a broken set-up, not a reason to skip.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::collector::{Collector, SEED_EXAMPLE, new_key};

/// The schemathesis release the flags below are written for.
const SCHEMATHESIS: &str = "4.32.5";

/// Longest the whole schemathesis run may take before it counts as a failure.
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// A virtual environment with schemathesis, made once per target directory.
fn schemathesis() -> PathBuf {
    // The tests of this file run at once: one installs, the others wait for it.
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _installing = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("schemathesis-{SCHEMATHESIS}"));
    let bin = venv.join("bin").join("schemathesis");
    let installed = || {
        Command::new(&bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(SCHEMATHESIS))
    };
    if installed() {
        return bin;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let status = Command::new("python3").args(["-m", "venv"]).arg(&venv).status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "cannot make a Python virtual environment at {}: install python3 and python3-venv (scripts/deps.sh test)",
        venv.display()
    );
    let pip = venv.join("bin").join("pip");
    let out = Command::new(&pip)
        .args(["install", "--quiet", "--disable-pip-version-check", &format!("schemathesis=={SCHEMATHESIS}")])
        .output()
        .expect("run pip");
    assert!(
        out.status.success() && installed(),
        "cannot install schemathesis {SCHEMATHESIS} from PyPI (is the network reachable?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// Runs schemathesis against `c` with `filters` (which operations), and fails on any
/// answer that is a server error or does not match its schema.
async fn run_schemathesis(c: &Collector, token: &str, key: &str, filters: &[&str]) {
    let bin = schemathesis();
    // Each operation gets the credentials its security scheme names: the admin's token,
    // or (uploads) the agent key. The document itself needs a token, so it is read here
    // and handed over as a file.
    let work = tempfile::tempdir().unwrap();
    let (status, document) = c.get("/api/openapi.json", token).await;
    assert_eq!(status, 200);
    let spec = work.path().join("openapi.json");
    std::fs::write(&spec, document.to_string()).unwrap();
    let config = work.path().join("schemathesis.toml");
    let auth =
        format!("[auth.openapi.bearer]\nbearer = \"{token}\"\n\n[auth.openapi.apiKey]\napi_key = \"Api-Key {key}\"\n");
    std::fs::write(&config, auth).unwrap();
    let mut child = Command::new(&bin)
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(&spec)
        .args(["--url", &c.base])
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        // Bounded: a few examples per operation, no stateful phase (it chains
        // operations), a fixed seed so that a failure can be reproduced.
        .args(["--max-examples", "15", "--phases", "examples,coverage,fuzzing", "--seed", "20261207"])
        // One worker: Hypothesis' lambda descriptions parse source with `ast`, which is
        // not safe across threads on some Pythons (a "recursion depth mismatch" error).
        .args(["--workers", "1", "--request-timeout", "30", "--no-shrink"])
        .args(filters)
        // Its cache (`.schemathesis/`) goes in the run's own directory, not the sources.
        .current_dir(work.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start schemathesis");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let out = child.wait_with_output().unwrap();
    let report = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let status = status.unwrap_or_else(|| panic!("schemathesis ran over {RUN_LIMIT:?}:\n{report}"));
    assert!(status.success(), "schemathesis found answers that do not match the document:\n{report}");
    // Its closing count: "2226 generated, 2226 passed".
    let summary = report
        .lines()
        .find(|l| l.contains(" generated, ") && l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or_default();
    assert!(summary.contains("passed"), "schemathesis tested nothing:\n{report}");
    eprintln!("schemathesis {filters:?}: {}", summary.trim());
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_matches_the_document() {
    let dir = tempfile::tempdir().unwrap();
    // With the collector's own machine (a full snapshot with sockets and interfaces) and
    // a short upload (the seed's shape, where most figures are `null`).
    let c = Collector::start(dir.path(), &[]);
    let key = new_key(dir.path(), "seed", None);
    assert_eq!(c.upload(&key, SEED_EXAMPLE).await.0, 201);
    let token = c.admin_token().await;
    let waited = Instant::now();
    while c.get("/api/monitoring/local/snapshot", &token).await.0 != 200 {
        assert!(waited.elapsed() < Duration::from_secs(30), "the collector's own machine never reported");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let filters = [
        // Left out because they would break the run, not because they are untested:
        // process actions would signal this machine's processes (the collector's own
        // included; `destructive_operations_match_the_document` runs these apart);
        // deleting a host removes the history the other operations read; removing
        // users could leave the collector without the admin this run signs in as
        // (tests/collector.rs holds both).
        "--exclude-operation-id",
        "process_action",
        "--exclude-operation-id",
        "bulk_process_action",
        "--exclude-operation-id",
        "delete_host",
        "--exclude-operation-id",
        "remove_user",
        // WebSockets: an HTTP client cannot open one; tests/collector.rs does.
        "--exclude-path-regex",
        "^/ws/",
    ];
    run_schemathesis(&c, &token, &key, &filters).await;
}

/// The operations the run above leaves out, on a collector of their own without its own
/// machine: the only host is an uploaded one with no agent, so no action can reach a
/// process, and every answer (404, 409, 422, 503 with no agent connected) must still
/// match the document.
#[tokio::test(flavor = "multi_thread")]
async fn destructive_operations_match_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let key = new_key(dir.path(), "seed", None);
    assert_eq!(c.upload(&key, SEED_EXAMPLE).await.0, 201);
    let token = c.admin_token().await;
    let only = [
        "--include-operation-id",
        "process_action",
        "--include-operation-id",
        "bulk_process_action",
        "--include-operation-id",
        "delete_host",
        "--include-operation-id",
        "remove_user",
    ];
    run_schemathesis(&c, &token, &key, &only).await;
}

/// The lists that are streamed (`latest/`, a range export as JSON) end cleanly when
/// they are compressed: the compression layer polls a body's stream once more after its
/// end, which once panicked the connection's task and cut the answer off for every
/// client that accepts gzip (found by the run above).
#[tokio::test(flavor = "multi_thread")]
async fn compressed_streams_end_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path(), &[]);
    let token = c.admin_token().await;
    let waited = Instant::now();
    while c.get("/api/monitoring/local/snapshot", &token).await.0 != 200 {
        assert!(waited.elapsed() < Duration::from_secs(30), "the collector's own machine never reported");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for path in ["/api/process-snapshots/latest/", "/api/hosts/local/export?format=json"] {
        for _ in 0..3 {
            let r = c
                .http
                .get(c.url(path))
                .bearer_auth(&token)
                .header("Accept-Encoding", "gzip")
                .send()
                .await
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(r.status(), 200, "{path}");
            assert_eq!(r.headers().get("content-encoding").map(|v| v.to_str().unwrap()), Some("gzip"), "{path}");
            let body = r.bytes().await.unwrap_or_else(|e| panic!("{path}: the answer was cut off: {e}"));
            assert!(!body.is_empty(), "{path}");
        }
    }
}
