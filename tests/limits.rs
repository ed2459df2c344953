//! What one client, user or key may hold of the collector, so that none of them can
//! starve the others: the room uploads share, connections per address (and the reserve
//! that keeps sign-in possible when the collector is full), live streams per user,
//! agent sessions and hosts per key. Each limit is set small here and driven past.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Request, header};
use procyon::hub::Hub;
use procyon::server::auth::{Auth, hash_api_key, new_api_key};
use procyon::server::upload::UploadGate;
use procyon::server::{AppState, Settings, app};
use procyon::store::Store;
use serde_json::{Value, json};
use tower::ServiceExt;

const SECRET: &[u8] = b"a secret for the limits tests, 32+ bytes";

async fn state_with(dir: &std::path::Path, settings: Settings) -> AppState {
    let store = Store::open(&dir.join("procyon.db")).await.unwrap();
    AppState::new(store, Hub::new(), Auth::new(SECRET, Duration::from_secs(3600)), settings)
}

/// A new API key's `Authorization` value.
async fn key(state: &AppState, name: &str) -> String {
    let (key, prefix, _) = new_api_key().unwrap();
    state.store.create_api_key(name, &prefix, &hash_api_key(&key), None).await.unwrap();
    format!("Api-Key {key}")
}

fn seed_upload(hostname: &str) -> String {
    json!({"hostname": hostname, "snapshot_time": chrono::Utc::now(), "processes": [{"pid": 1, "name": "init"}]})
        .to_string()
}

/// An upload through the router; its status and answer.
async fn upload(router: &axum::Router, key: &str, body: Body) -> (u16, Option<String>, Value) {
    let request = Request::post("/api/process-snapshots/")
        .header(header::AUTHORIZATION, key)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let retry = response.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, retry, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// An upload whose body never ends until the returned sender is dropped: it holds its
/// room (no declared length, so the largest) all that time.
fn stalled_upload(
    router: &axum::Router,
    key: &str,
) -> (tokio::sync::mpsc::Sender<Bytes>, tokio::task::JoinHandle<u16>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let stream =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx)) },
        );
    let (router, key) = (router.clone(), key.to_owned());
    let task = tokio::spawn(async move { upload(&router, &key, Body::from_stream(stream)).await.0 });
    (tx, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_share_a_bounded_room_and_no_key_holds_all_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = state_with(dir.path(), Settings::default()).await;
    // Room for two bodies of unknown length in all, one per key; short waits.
    state.uploads = Arc::new(UploadGate::new(2 << 20, 1 << 20, 1, Duration::from_millis(300)));
    let router = app(state.clone());
    let (k1, k2, k3, k4) =
        (key(&state, "k1").await, key(&state, "k2").await, key(&state, "k3").await, key(&state, "k4").await);

    // k1 holds its whole share with a body that does not come.
    let (stalled, first) = stalled_upload(&router, &k1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Its next upload waits for its own share, then is told so (429) ...
    let (status, retry, answer) = upload(&router, &k1, Body::from(seed_upload("a-1"))).await;
    assert_eq!((status, answer["error"].as_str()), (429, Some("limit")), "{answer}");
    assert!(retry.is_some() && answer["message"].as_str().unwrap().contains("share"), "{answer}");
    // ... while another key uploads at once.
    let (status, _, answer) = upload(&router, &k2, Body::from(seed_upload("b-1"))).await;
    assert_eq!(status, 201, "{answer}");

    // A second key stalling too fills the room: everyone else gets 503 busy, with when
    // to try again, and nothing stored.
    let (stalled_too, second) = stalled_upload(&router, &k3);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, retry, answer) = upload(&router, &k4, Body::from(seed_upload("d-1"))).await;
    assert_eq!((status, answer["error"].as_str()), (503, Some("busy")), "{answer}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert!(state.store.host("d-1").await.unwrap().is_none());

    // The stalled bodies end (cut short: not JSON) and their room is free again.
    drop((stalled, stalled_too));
    assert_eq!(first.await.unwrap(), 400);
    assert_eq!(second.await.unwrap(), 400);
    let (status, _, answer) = upload(&router, &k1, Body::from(seed_upload("a-1"))).await;
    assert_eq!(status, 201, "{answer}");
    let (status, _, answer) = upload(&router, &k4, Body::from(seed_upload("d-1"))).await;
    assert_eq!(status, 201, "{answer}");
}
