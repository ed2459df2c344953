//! Dashboards end to end: a real `procyon serve` with a SQLite file, users made through
//! the CLI, and every request over HTTP. A dashboard saved by one user reads back the
//! same after the collector restarts; other users cannot change it, and see it only when
//! it is shared with them; bad bodies are refused with the field named and change
//! nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::collector::{Collector, new_user};
use serde_json::{Value, json};

/// A request with a bearer token and an optional JSON body: status and JSON (or Null).
async fn send(c: &Collector, method: reqwest::Method, path: &str, token: &str, body: Option<&Value>) -> (u16, Value) {
    let mut req = c.http.request(method, c.url(path)).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(body);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn board() -> Value {
    json!({
        "name": "Web servers",
        "shared": "private",
        "widgets": [
            {"kind": "host_chart", "x": 0, "y": 0, "w": 6, "h": 4, "hosts": "web-*", "metric": "cpu_percent",
             "title": "CPU of the web servers"},
            {"kind": "process_chart", "x": 6, "y": 0, "w": 6, "h": 4, "host": "web-1", "process": "nginx",
             "metric": "rss_bytes"},
            {"kind": "process_table", "x": 0, "y": 4, "w": 12, "h": 6, "host": "web-1", "filter": "cpu>5 user:www",
             "limit": 25},
            {"kind": "top_ports", "x": 0, "y": 10, "w": 4, "h": 4, "host": "web-1", "limit": 10},
            {"kind": "alerts", "x": 4, "y": 10, "w": 8, "h": 4},
            {"kind": "network_map", "x": 0, "y": 14, "w": 12, "h": 8, "hosts": "web-*, db-1", "collapsed": true}
        ]
    })
}

/// What a client sent, out of what the collector answers.
fn sent(answer: &Value) -> Value {
    json!({"name": answer["name"], "shared": answer["shared"], "widgets": answer["widgets"]})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dashboard_is_kept_per_user_shared_read_only_and_checked() {
    let data = tempfile::tempdir().unwrap();
    let mut c = Collector::start(data.path(), &[]);
    let admin_password = c.admin_password.clone().unwrap();
    let bob_password = new_user(data.path(), "bob", "viewer");
    let cy_password = new_user(data.path(), "cy", "viewer");
    let ed_password = new_user(data.path(), "ed", "operator");
    let bob = c.login("bob", &bob_password).await;
    use reqwest::Method as M;

    // A viewer makes their own; an empty one is valid.
    let (status, made) = send(&c, M::POST, "/api/dashboards", &bob, Some(&board())).await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(sent(&made), board());
    assert_eq!((made["owner"].as_str(), made["read_only"].as_bool()), (Some("bob"), Some(false)));
    let id = made["id"].as_i64().unwrap();
    let (status, empty) =
        send(&c, M::POST, "/api/dashboards", &bob, Some(&json!({"name": "Empty", "widgets": []}))).await;
    assert_eq!(status, 201, "{empty}");

    // Read back the same after a restart.
    assert!(c.stop());
    let c = Collector::start(data.path(), &[]);
    let bob = c.login("bob", &bob_password).await;
    let cy = c.login("cy", &cy_password).await;
    let ed = c.login("ed", &ed_password).await;
    let admin = c.login("admin", &admin_password).await;
    let (status, back) = send(&c, M::GET, &format!("/api/dashboards/{id}"), &bob, None).await;
    assert_eq!(status, 200);
    assert_eq!(back, made);
    let (_, list) = send(&c, M::GET, "/api/dashboards", &bob, None).await;
    assert_eq!(
        list.as_array().unwrap().iter().map(|d| d["name"].clone()).collect::<Vec<_>>(),
        ["Empty", "Web servers"]
    );

    // Not shared: nobody else sees it, or learns that it exists.
    let path = format!("/api/dashboards/{id}");
    let mut changed = board();
    changed["name"] = "Mine now".into();
    for (who, token) in [("cy", &cy), ("admin", &admin)] {
        assert_eq!(send(&c, M::GET, &path, token, None).await.0, 404, "{who}");
        assert_eq!(send(&c, M::PUT, &path, token, Some(&changed)).await.0, 404, "{who}");
        assert_eq!(send(&c, M::DELETE, &path, token, None).await.0, 404, "{who}");
        assert_eq!(send(&c, M::GET, "/api/dashboards", token, None).await.1, json!([]), "{who}");
    }

    // Shared with cy: read-only to cy, still unseen by ed.
    let mut shared = board();
    shared["shared"] = "users".into();
    shared["shared_with"] = json!(["cy"]);
    let (status, answer) = send(&c, M::PUT, &path, &bob, Some(&shared)).await;
    assert_eq!(status, 200, "{answer}");
    let (status, seen) = send(&c, M::GET, &path, &cy, None).await;
    assert_eq!((status, seen["read_only"].as_bool()), (200, Some(true)));
    assert_eq!(seen["widgets"], board()["widgets"]);
    let (status, refused) = send(&c, M::PUT, &path, &cy, Some(&changed)).await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(send(&c, M::DELETE, &path, &cy, None).await.0, 403);
    assert_eq!(send(&c, M::GET, &path, &ed, None).await.0, 404);
    assert_eq!(send(&c, M::GET, &path, &bob, None).await.1["name"], "Web servers", "nothing changed");

    // Only admins share with everyone; changes of those are audited.
    let mut everyone = json!({"name": "Fleet", "shared": "everyone", "widgets": []});
    let (status, refused) = send(&c, M::POST, "/api/dashboards", &bob, Some(&everyone)).await;
    assert_eq!(status, 403, "{refused}");
    let (status, fleet) = send(&c, M::POST, "/api/dashboards", &admin, Some(&everyone)).await;
    assert_eq!(status, 201, "{fleet}");
    let fleet_path = format!("/api/dashboards/{}", fleet["id"]);
    for token in [&bob, &cy, &ed] {
        let (status, seen) = send(&c, M::GET, &fleet_path, token, None).await;
        assert_eq!((status, seen["read_only"].as_bool()), (200, Some(true)));
        assert_eq!(send(&c, M::PUT, &fleet_path, token, Some(&everyone)).await.0, 403);
    }
    everyone["name"] = "Whole fleet".into();
    assert_eq!(send(&c, M::PUT, &fleet_path, &admin, Some(&everyone)).await.0, 200);
    let (_, audit) = send(&c, M::GET, "/api/audit", &admin, None).await;
    let audited: Vec<&Value> = audit.as_array().unwrap().iter().filter(|e| e["action"] == "dashboard").collect();
    assert_eq!(audited.len(), 2, "{audit}");
    assert!(audited.iter().all(|e| e["actor"] == "admin"));

    // Another admin may take a dashboard everyone sees down (not change it); nobody else.
    let root_password = new_user(data.path(), "root2", "admin");
    let root = c.login("root2", &root_password).await;
    assert_eq!(send(&c, M::PUT, &fleet_path, &root, Some(&everyone)).await.0, 403);
    for token in [&bob, &ed] {
        assert_eq!(send(&c, M::DELETE, &fleet_path, token, None).await.0, 403);
    }
    assert_eq!(send(&c, M::DELETE, &fleet_path, &root, None).await.0, 204);
    assert_eq!(send(&c, M::GET, &fleet_path, &admin, None).await.0, 404);
    let (_, audit) = send(&c, M::GET, "/api/audit", &admin, None).await;
    let last = audit.as_array().unwrap().iter().find(|e| e["action"] == "dashboard").unwrap().clone();
    assert_eq!(last["actor"], "root2", "{last}");
    assert!(last["message"].as_str().unwrap().contains("deleted"), "{last}");

    // Bad bodies: 422 naming the field, and nothing stored or changed.
    let before = send(&c, M::GET, "/api/dashboards", &bob, None).await.1;
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = board();
        f(&mut v);
        v
    };
    let cases: Vec<(Value, &str)> = vec![
        (with(&|v| v["widgets"][1]["kind"] = "pie".into()), "widgets[1].kind"),
        // A network map with a process chart's settings: its first unknown field named.
        (with(&|v| v["widgets"][1]["kind"] = "network_map".into()), "widgets[1].host"),
        (with(&|v| v["widgets"][5]["collapsed"] = "yes".into()), "widgets[5].collapsed"),
        (with(&|v| v["widgets"][5]["hosts"] = " ".into()), "widgets[5].hosts"),
        (with(&|v| v["widgets"][5]["layout"] = "circle".into()), "widgets[5].layout"),
        (with(&|v| v["widgets"][0]["x"] = 7.into()), "widgets[0].x"),
        (with(&|v| v["widgets"][2]["w"] = 0.into()), "widgets[2].w"),
        (with(&|v| v["widgets"][2]["h"] = (-3).into()), "widgets[2].h"),
        (with(&|v| v["widgets"][3]["y"] = 1.5.into()), "widgets[3].y"),
        (with(&|v| v["widgets"][3]["limit"] = 0.into()), "widgets[3].limit"),
        (with(&|v| v["widgets"][4]["colour"] = "red".into()), "widgets[4].colour"),
        (with(&|v| v["name"] = "n".repeat(101).into()), "name"),
        (with(&|v| v["name"] = "".into()), "name"),
        (with(&|v| v["widgets"] = json!({"kind": "alerts"})), "widgets"),
        (with(&|v| v["shared"] = "world".into()), "shared"),
        (
            with(&|v| {
                v["shared"] = "users".into();
                v["shared_with"] = json!(["cy", "nobody"]);
            }),
            "shared_with[1]",
        ),
        (
            with(&|v| {
                let one = v["widgets"][4].clone();
                v["widgets"] = Value::Array(vec![one; 65]);
            }),
            "widgets",
        ),
    ];
    for (body, field) in &cases {
        for (method, at) in [(M::POST, "/api/dashboards"), (M::PUT, path.as_str())] {
            let (status, error) = send(&c, method.clone(), at, &bob, Some(body)).await;
            assert_eq!((status, error["field"].as_str()), (422, Some(*field)), "{method} {error}");
        }
    }
    // Over the size limit in bytes: refused as it is read.
    let mut huge = board();
    huge["widgets"][0]["title"] = "t".repeat(70 << 10).into();
    assert_eq!(send(&c, M::POST, "/api/dashboards", &bob, Some(&huge)).await.0, 413);
    // Not JSON at all.
    let r = c
        .http
        .post(c.url("/api/dashboards"))
        .bearer_auth(&bob)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(send(&c, M::GET, "/api/dashboards", &bob, None).await.1, before, "a refused body changed nothing");

    // Deleted by its owner, and gone for everyone.
    assert_eq!(send(&c, M::DELETE, &path, &bob, None).await.0, 204);
    assert_eq!(send(&c, M::GET, &path, &bob, None).await.0, 404);
    assert_eq!(send(&c, M::GET, &path, &cy, None).await.0, 404);
}
