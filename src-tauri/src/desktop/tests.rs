//! The commands through Tauri's IPC on its mock runtime, with the app's real
//! configuration and capabilities, a real store in a temporary folder, and real
//! processes to act on.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{INVOKE_KEY, MockRuntime, get_ipc_response, mock_builder};
use tauri::webview::InvokeRequest;
use tauri::{Manager, WebviewWindow, WebviewWindowBuilder};

use super::Desktop;
use crate::model::desktop::{ApiReply, DesktopMode, DesktopState};

struct TestApp {
    _app: tauri::App<MockRuntime>,
    main: WebviewWindow<MockRuntime>,
    quick: WebviewWindow<MockRuntime>,
    dir: tempfile::TempDir,
}

fn app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let desktop =
        tauri::async_runtime::block_on(Desktop::open(&dir.path().join("data"), &dir.path().join("config"))).unwrap();
    let app = super::builder(mock_builder()).build(tauri::generate_context!()).unwrap();
    tauri::async_runtime::block_on(super::notify::install(app.handle(), desktop.local().state()));
    app.manage(desktop);
    let main = WebviewWindowBuilder::new(&app, super::MAIN, Default::default()).build().unwrap();
    let quick = WebviewWindowBuilder::new(&app, super::QUICK, Default::default()).build().unwrap();
    TestApp { _app: app, main, quick, dir }
}

fn invoke(window: &WebviewWindow<MockRuntime>, cmd: &str, args: Value) -> Result<Value, Value> {
    let request = InvokeRequest {
        cmd: cmd.into(),
        callback: CallbackFn(0),
        error: CallbackFn(1),
        url: "tauri://localhost".parse().unwrap(),
        body: InvokeBody::Json(args),
        headers: Default::default(),
        invoke_key: INVOKE_KEY.to_string(),
    };
    get_ipc_response(window, request).map(|b| b.deserialize::<Value>().unwrap())
}

fn api(window: &WebviewWindow<MockRuntime>, method: &str, path: &str, body: Option<Value>) -> ApiReply {
    let request = json!({ "method": method, "path": path, "body": body.map(|b| b.to_string()) });
    serde_json::from_value(invoke(window, "api", json!({ "request": request })).unwrap()).unwrap()
}

fn state(window: &WebviewWindow<MockRuntime>) -> DesktopState {
    serde_json::from_value(invoke(window, "desktop_state", json!({})).unwrap()).unwrap()
}

/// Waits until this machine's first snapshot is stored.
fn wait_for_local(window: &WebviewWindow<MockRuntime>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = api(window, "GET", "/api/monitoring/local/snapshot", None);
        if reply.status == 200 {
            return serde_json::from_str(&reply.body).unwrap();
        }
        assert!(Instant::now() < deadline, "no local snapshot: {reply:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn proc_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap()
}

#[test]
fn the_window_sees_this_machine_without_signing_in_and_acts_through_the_same_handlers() {
    let t = app();
    let s = state(&t.main);
    assert_eq!(s.mode, DesktopMode::Local);
    assert!(!s.hostname.is_empty());
    assert!(!s.collector.running, "the built-in collector is off by default");
    assert!(!s.tray, "no tray was made in this test");

    let latest = wait_for_local(&t.main);
    assert_eq!(latest["hostname"], json!(s.hostname));

    // A real child, suspended and resumed through the same REST handler as the web.
    let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id();
    let start_time = loop {
        let snap: Value =
            serde_json::from_str(&api(&t.main, "GET", "/api/monitoring/local/snapshot", None).body).unwrap();
        if let Some(p) = snap["processes"].as_array().unwrap().iter().find(|p| p["pid"] == json!(pid)) {
            break p["start_time"].as_str().unwrap().to_owned();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let path = format!("/api/monitoring/local/process/{pid}/suspend");
    let reply = api(&t.main, "POST", &path, Some(json!({ "start_time": start_time })));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(proc_state(pid), 'T');
    let reply = api(
        &t.main,
        "POST",
        &format!("/api/monitoring/local/process/{pid}/resume"),
        Some(json!({ "start_time": start_time })),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_ne!(proc_state(pid), 'T');
    // A stale start time is refused by the same guard.
    let reply = api(&t.main, "POST", &path, Some(json!({ "start_time": "2001-01-01T00:00:00Z" })));
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert_ne!(proc_state(pid), 'T');
    let _ = child.kill();
    let _ = child.wait();

    // The audit log names the person at the desktop.
    let audit: Value = serde_json::from_str(&api(&t.main, "GET", "/api/audit?limit=10", None).body).unwrap();
    assert!(audit.to_string().contains(&s.username), "{audit}");

    // Only /api/ paths go through, with a structured error.
    let e = invoke(&t.main, "api", json!({ "request": { "method": "GET", "path": "/ws/agent" } })).unwrap_err();
    assert_eq!(e["code"], json!("invalid"), "{e}");
}

#[test]
fn the_quick_view_may_not_call_what_it_does_not_need() {
    let t = app();
    assert!(invoke(&t.quick, "desktop_state", json!({})).is_ok());
    for cmd in ["api", "save_settings", "remote_sign_in", "quit"] {
        let e = invoke(&t.quick, cmd, json!({})).unwrap_err();
        assert!(e.to_string().contains("not allowed"), "{cmd}: {e}");
    }
}

#[test]
fn settings_start_and_stop_the_built_in_collector_and_bad_ones_change_nothing() {
    let t = app();
    let mut settings = state(&t.main).settings;
    settings.collector.enabled = true;
    settings.collector.bind = "127.0.0.1".into();
    settings.collector.port = 0;

    let mut bad = settings.clone();
    bad.collector.bind = "not-an-address".into();
    let e = invoke(&t.main, "save_settings", json!({ "settings": bad })).unwrap_err();
    assert_eq!(e["code"], json!("invalid"), "{e}");
    assert!(!t.dir.path().join("config/settings.json").exists(), "nothing saved");
    assert!(!state(&t.main).collector.running);

    let s: DesktopState =
        serde_json::from_value(invoke(&t.main, "save_settings", json!({ "settings": settings })).unwrap()).unwrap();
    let address = s.collector.address.clone().expect("listening");
    assert!(s.collector.running && s.settings.collector.enabled);
    // A real HTTP client reaches the same collector the window sees.
    let health = tauri::async_runtime::block_on(async {
        reqwest::get(format!("http://{address}/api/health")).await.unwrap().status()
    });
    assert_eq!(health.as_u16(), 200);

    settings.collector.enabled = false;
    let s: DesktopState =
        serde_json::from_value(invoke(&t.main, "save_settings", json!({ "settings": settings })).unwrap()).unwrap();
    assert!(!s.collector.running);
    let refused = tauri::async_runtime::block_on(async { reqwest::get(format!("http://{address}/api/health")).await });
    assert!(refused.is_err(), "the listener is gone");
    // And the window's own data still flows (its streams do not depend on the listener).
    wait_for_local(&t.main);
}

#[test]
fn remote_sign_in_errors_are_structured_and_leave_local_mode() {
    let t = app();
    let e =
        invoke(&t.main, "remote_sign_in", json!({ "url": "ftp://x", "username": "a", "password": "b" })).unwrap_err();
    assert_eq!(e["code"], json!("invalid"), "{e}");
    // Nothing listens on port 9 of loopback.
    let e = invoke(&t.main, "remote_sign_in", json!({ "url": "http://127.0.0.1:9", "username": "a", "password": "b" }))
        .unwrap_err();
    assert_eq!(e["code"], json!("unavailable"), "{e}");
    assert_eq!(state(&t.main).mode, DesktopMode::Local);
}

#[test]
fn a_remote_collector_is_signed_in_to_used_and_signed_out_of_with_the_token_in_the_keyring() {
    let t = app();
    // A real collector on loopback, as `procyon serve` runs it.
    let remote_dir = tempfile::tempdir().unwrap();
    let (url, password, _server) = tauri::async_runtime::block_on(async {
        let collector = crate::server::Collector::start(
            remote_dir.path(),
            false,
            crate::server::Settings::default(),
            tokio::sync::watch::channel(false).1,
        )
        .await
        .unwrap();
        let password = crate::server::ensure_admin(&collector.state.store).await.unwrap().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tauri::async_runtime::spawn(crate::server::listen(
            collector.state.clone(),
            listener,
            std::future::pending(),
        ));
        (url, password, server)
    });

    let e =
        invoke(&t.main, "remote_sign_in", json!({ "url": url, "username": "admin", "password": "wrong" })).unwrap_err();
    assert_eq!(e["code"], json!("unauthorized"), "{e}");
    assert_eq!(state(&t.main).mode, DesktopMode::Local);

    let s: DesktopState = serde_json::from_value(
        invoke(
            &t.main,
            "remote_sign_in",
            json!({ "url": format!("{url}/"), "username": "admin", "password": password }),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(s.mode, DesktopMode::Remote);
    assert_eq!(s.remote.as_ref().map(|r| (r.url.as_str(), r.username.as_str())), Some((url.as_str(), "admin")));
    assert_eq!(s.settings.remote_url.as_deref(), Some(url.as_str()));
    let kept = super::credentials::load(&url).unwrap().expect("the token is in the keyring");
    assert!(!std::fs::read_to_string(t.dir.path().join("config/settings.json")).unwrap().contains(&kept.token));

    // Requests now go to the remote collector, signed in there.
    let me = api(&t.main, "GET", "/api/auth/me", None);
    assert_eq!(me.status, 200, "{}", me.body);
    assert!(me.body.contains("\"admin\""), "{}", me.body);
    let users = api(&t.main, "GET", "/api/users", None);
    assert_eq!(users.status, 200, "{}", users.body);

    let s: DesktopState = serde_json::from_value(invoke(&t.main, "remote_sign_out", json!({})).unwrap()).unwrap();
    assert_eq!(s.mode, DesktopMode::Local);
    assert_eq!(s.settings.remote_url, None);
    assert_eq!(super::credentials::load(&url).unwrap(), None, "signing out removes the token");
    // And the window shows this machine again.
    assert!(api(&t.main, "GET", "/api/auth/me", None).body.contains(&s.username));
}

#[test]
fn pausing_stops_sampling_and_resuming_starts_it_again() {
    let t = app();
    wait_for_local(&t.main);
    let seq = |w: &WebviewWindow<MockRuntime>| wait_for_local(w)["snapshot_id"].as_u64().unwrap();
    let s: DesktopState =
        serde_json::from_value(invoke(&t.main, "set_paused", json!({ "paused": true })).unwrap()).unwrap();
    assert!(s.paused);
    // A tick may be under way when the pause comes; after it, nothing new is taken.
    std::thread::sleep(Duration::from_millis(1500));
    let paused_at = seq(&t.main);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(seq(&t.main), paused_at, "no snapshot while paused");

    let s: DesktopState =
        serde_json::from_value(invoke(&t.main, "set_paused", json!({ "paused": false })).unwrap()).unwrap();
    assert!(!s.paused);
    let deadline = Instant::now() + Duration::from_secs(10);
    while seq(&t.main) == paused_at {
        assert!(Instant::now() < deadline, "sampling did not resume");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// This machine's dashboards are kept in the app's own store, through the same routes
/// and checks as a collector's, owned by the person using the app.
#[test]
fn dashboards_of_this_machine_are_kept_in_the_apps_store() {
    let t = app();
    let s = state(&t.main);
    let body = json!({"name": "This machine", "widgets": [
        {"kind": "host_chart", "x": 0, "y": 0, "w": 6, "h": 4, "hosts": s.hostname, "metric": "cpu_percent"}
    ]});
    let reply = api(&t.main, "POST", "/api/dashboards", Some(body.clone()));
    assert_eq!(reply.status, 201, "{}", reply.body);
    let made: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(made["owner"], json!(format!("desktop:{}", s.username)));
    let listed: Value = serde_json::from_str(&api(&t.main, "GET", "/api/dashboards", None).body).unwrap();
    assert_eq!(listed, json!([made]));
    let mut bad = body;
    bad["widgets"][0]["w"] = json!(13);
    let reply = api(&t.main, "POST", "/api/dashboards", Some(bad));
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert!(reply.body.contains("widgets[0].w"), "{}", reply.body);
}

/// A local rule notifies the `desktop` channel made at the first start: its test button
/// and the rule's firing go through the notification plugin (on the mock runtime, as
/// far as the plugin taking the notification), and are recorded as delivered. Only the
/// main window is granted the plugin.
#[test]
fn a_local_rule_shows_a_native_notification() {
    let t = app();
    let channels: Value = serde_json::from_str(&api(&t.main, "GET", "/api/alert-channels", None).body).unwrap();
    let desktop = channels.as_array().unwrap().iter().find(|c| c["name"] == "desktop").cloned();
    assert_eq!(desktop.map(|c| c["kind"].clone()), Some(json!("desktop")), "{channels}");

    let reply = api(&t.main, "POST", "/api/alert-channels/desktop/test", None);
    assert_eq!(reply.status, 200, "{}", reply.body);

    let hostname = wait_for_local(&t.main)["hostname"].as_str().unwrap().to_owned();
    let rule = json!({"name": "gone", "metric": "process.absent", "host": hostname,
                      "process": "cmd:procyon-desktop-test-never-runs", "for_secs": 1, "channels": ["desktop"]});
    let reply = api(&t.main, "POST", "/api/alert-rules", Some(rule));
    assert_eq!(reply.status, 201, "{}", reply.body);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let deliveries: Value =
            serde_json::from_str(&api(&t.main, "GET", "/api/alerts/deliveries", None).body).unwrap();
        let shown = |status: &str| {
            deliveries
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["channel"] == "desktop" && d["status"] == status && d["result"] == "delivered")
        };
        if shown("firing") && shown("test") {
            break;
        }
        assert!(Instant::now() < deadline, "the rule's notification is shown: {deliveries}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The plugin's commands: the main window may, the quick view may not.
    assert!(invoke(&t.main, "plugin:notification|is_permission_granted", json!({})).is_ok());
    assert!(invoke(&t.quick, "plugin:notification|is_permission_granted", json!({})).is_err());
    assert!(invoke(&t.quick, "plugin:notification|notify", json!({"options": {"title": "x"}})).is_err());
}
