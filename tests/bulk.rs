//! Bulk process actions (`POST /api/monitoring/{server_id}/processes/{action}`) on the
//! collector's own machine: real child processes killed, one spared by its pid-reuse
//! guard, one audit row per target, and bad requests refused whole with nothing done.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::collector::{Collector, new_user};
use common::state;
use serde_json::{Value, json};

/// A plain `sleep`, a direct child of the test, killed when dropped if still there.
struct Sleep {
    child: Child,
}

impl Sleep {
    fn start() -> Sleep {
        let child = Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        Sleep { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it still runs (not exited, not a zombie).
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None)) && matches!(state(self.pid()), Some('S' | 'R'))
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The start time of each of `pids` as the collector's newest snapshot of its own
/// machine shows it, waiting until all are there.
async fn start_times(c: &Collector, token: &str, pids: &[u32]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, snap) = c.get("/api/monitoring/local/snapshot", token).await;
        let found: Vec<Option<String>> = pids
            .iter()
            .map(|pid| {
                snap["processes"]
                    .as_array()
                    .and_then(|ps| ps.iter().find(|p| p["pid"] == *pid))
                    .and_then(|p| p["start_time"].as_str().map(str::to_owned))
            })
            .collect();
        if found.iter().all(Option::is_some) {
            return found.into_iter().map(Option::unwrap).collect();
        }
        assert!(Instant::now() < deadline, "the children never all appeared in a snapshot: {found:?}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn audit_log(c: &Collector, token: &str) -> Vec<Value> {
    let (status, log) = c.get("/api/audit?limit=1000", token).await;
    assert_eq!(status, 200);
    log.as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_kill_kills_exactly_its_targets_and_spares_a_reused_pid() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path(), &["--interval", "0.5"]);
    let admin = c.admin_token().await;
    let operator = c.login("otto", &new_user(dir.path(), "otto", "operator")).await;
    let viewer = c.login("vera", &new_user(dir.path(), "vera", "viewer")).await;

    let mut targets: Vec<Sleep> = (0..3).map(|_| Sleep::start()).collect();
    let mut stale = Sleep::start();
    let mut bystander = Sleep::start();
    let pids: Vec<u32> = targets.iter().map(Sleep::pid).chain([stale.pid(), bystander.pid()]).collect();
    let starts = start_times(&c, &operator, &pids).await;
    let url = "/api/monitoring/local/processes/kill";

    // Bad requests first: each is refused whole, and neither kills nor stores anything.
    let before = audit_log(&c, &admin).await.len();
    let good = |i: usize| json!({"pid": pids[i], "start_time": starts[i]});
    let over: Vec<Value> = std::iter::once(good(3))
        .chain((0..1000).map(|n| json!({"pid": 4_000_000 + n, "start_time": starts[0]})))
        .collect();
    let bad_bodies = [
        (json!({"targets": over}), Some("targets")),
        (json!({"targets": [good(3), {"pid": "lots", "start_time": starts[0]}]}), Some("targets[1].pid")),
        (json!({"targets": [good(3), {"pid": -4, "start_time": starts[0]}]}), Some("targets[1].pid")),
        (json!({"targets": [good(3), {"pid": pids[0]}]}), Some("targets[1]")),
        (json!({"targets": [good(3), {"pid": pids[0], "start_time": "yesterday"}]}), Some("targets[1].start_time")),
        (json!({"targets": [good(3), {"pid": pids[0], "start_time": starts[0], "tree": true}]}), Some("targets[1]")),
        (json!({"targets": [good(3), good(3)]}), Some("targets[1].pid")),
        (json!({"targets": []}), Some("targets")),
        (json!({"targets": good(3)}), Some("targets")),
        (json!([good(3)]), None),
        (json!({}), None),
    ];
    for (body, field) in &bad_bodies {
        let (status, answer) = c.post(url, &operator, Some(body.clone())).await;
        let shown = body.to_string();
        let shown = &shown[..shown.len().min(200)];
        assert_eq!(status, 422, "{shown}: {answer}");
        assert_eq!(answer["error"], "invalid", "{answer}");
        match field {
            Some(f) => assert!(answer["field"].as_str().is_some_and(|a| a.starts_with(f)), "{shown}: {answer}"),
            None => assert!(answer["field"].is_null(), "{shown}: {answer}"),
        }
        assert!(answer["message"].as_str().unwrap().len() > 20, "{answer}");
    }
    // Not JSON at all, and no body.
    for raw in ["{\"targets\": [", ""] {
        let r = c
            .http
            .post(c.url(url))
            .bearer_auth(&operator)
            .header("Content-Type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{raw:?}");
    }
    // A viewer may not, whatever the body.
    let (status, _) = c.post(url, &viewer, Some(json!({"targets": [good(3)]}))).await;
    assert_eq!(status, 403);
    // An unknown action is not a route.
    assert_eq!(
        c.post("/api/monitoring/local/processes/explode", &operator, Some(json!({"targets": [good(3)]}))).await.0,
        404
    );
    std::thread::sleep(Duration::from_millis(200));
    for child in targets.iter_mut().chain([&mut stale, &mut bystander]) {
        assert!(child.alive(), "process {} was touched by a refused request", child.pid());
    }
    let after = audit_log(&c, &admin).await;
    // The viewer's refusal is the one thing written: an attempt, not an action.
    assert_eq!(after.len(), before + 1, "{after:?}");
    assert_eq!((after[0]["actor"].as_str(), after[0]["result"].as_str()), (Some("vera"), Some("forbidden")));

    // The real thing: three named with the start times they have, one with a start time
    // 30 s off (as if its pid had been reused since the snapshot).
    let real_stale = chrono::DateTime::parse_from_rfc3339(&starts[3]).unwrap();
    let wrong = (real_stale - chrono::TimeDelta::seconds(30)).to_rfc3339();
    let body = json!({"targets": [good(0), good(1), {"pid": pids[3], "start_time": wrong}, good(2)]});
    let (status, answer) = c.post(url, &operator, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    let outcome: Vec<(u64, &str)> =
        results.iter().map(|r| (r["pid"].as_u64().unwrap(), r["status"].as_str().unwrap())).collect();
    assert_eq!(
        outcome,
        [
            (u64::from(pids[0]), "success"),
            (u64::from(pids[1]), "success"),
            (u64::from(pids[3]), "pid_reused"),
            (u64::from(pids[2]), "success"),
        ],
        "{answer}"
    );
    assert!(results[0]["error"].is_null());
    assert!(results[2]["error"].as_str().unwrap().contains("no longer the one you saw"), "{answer}");

    for child in &mut targets {
        let status = child.child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "process {} was killed", child.pid());
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(stale.alive(), "the target with a stale start time lives: {:?}", state(stale.pid()));
    assert!(bystander.alive(), "a process not named lives: {:?}", state(bystander.pid()));

    // One audit row per target, with who, what and how it went.
    let log = audit_log(&c, &admin).await;
    assert_eq!(log.len(), after.len() + 4, "{log:?}");
    let mut rows: Vec<(u64, &str, &str, &str)> = log[..4]
        .iter()
        .map(|e| {
            (
                e["pid"].as_u64().unwrap(),
                e["actor"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
                e["result"].as_str().unwrap(),
            )
        })
        .collect();
    rows.sort_unstable();
    let mut expected = vec![
        (u64::from(pids[0]), "otto", "kill", "success"),
        (u64::from(pids[1]), "otto", "kill", "success"),
        (u64::from(pids[2]), "otto", "kill", "success"),
        (u64::from(pids[3]), "otto", "kill", "pid_reused"),
    ];
    expected.sort_unstable();
    assert_eq!(rows, expected);
    assert!(log[..4].iter().all(|e| e["process_name"] == "sleep"), "{log:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_action_on_a_host_without_an_agent_says_so_for_each_target() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path(), &["--no-local"]);
    let admin = c.admin_token().await;
    let key = common::collector::new_key(dir.path(), "m", None);
    assert_eq!(c.upload(&key, common::collector::SEED_EXAMPLE).await.0, 201);
    let at = "2025-01-01T00:00:00Z";
    let body = json!({"targets": [{"pid": 100, "start_time": at}, {"pid": 101, "start_time": at}]});
    let (status, answer) = c.post("/api/monitoring/MACHINE-01/processes/suspend", &admin, Some(body.clone())).await;
    assert_eq!(status, 200, "{answer}");
    for r in answer["results"].as_array().unwrap() {
        assert_eq!(r["status"], "unsupported", "{answer}");
        assert!(r["error"].as_str().unwrap().contains("No agent is connected"), "{answer}");
    }
    assert_eq!(audit_log(&c, &admin).await.len(), 2);
    // An unknown host is a 404, and nothing is written.
    assert_eq!(c.post("/api/monitoring/nowhere/processes/suspend", &admin, Some(body)).await.0, 404);
    assert_eq!(audit_log(&c, &admin).await.len(), 2);
    // A body over the size limit is refused as it is read.
    let huge = format!(
        "{{\"targets\": [{}]}}",
        vec!["{\"pid\": 100, \"start_time\": \"2025-01-01T00:00:00Z\"}"; 8000].join(",")
    );
    let r = c
        .http
        .post(c.url("/api/monitoring/MACHINE-01/processes/kill"))
        .bearer_auth(&admin)
        .header("Content-Type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(audit_log(&c, &admin).await.len(), 2);
}
