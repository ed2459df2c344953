//! How much memory agents' frames cost the collector while they are decoded, measured as
//! this test process's peak resident memory: frames that each inflate to nearly the most
//! a snapshot may, sent by many sessions at once, are decoded within the decoding budget,
//! not all at once. (One test only in this file: the peak is the whole process's.)

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use procyon::hub::Hub;
use procyon::model::agent::{FRAME_DELTA_PACKED, PROTOCOL_VERSION};
use procyon::server::auth::{Auth, hash_api_key, new_api_key};
use procyon::server::{AppState, Settings, listen};
use procyon::store::Store;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const MIB: usize = 1 << 20;

/// A line of `/proc/self/status`, in bytes.
fn status(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_large_agent_frames_at_once_decode_within_the_budget() {
    const INFLATED: usize = 56 * MIB;
    const SESSIONS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("procyon.db")).await.unwrap();
    // Room to decode one such frame at a time.
    let settings = Settings { agent_decode_budget: INFLATED + 8 * MIB, ..Settings::default() };
    let state = AppState::new(
        store,
        Hub::new(),
        Auth::new(b"a secret of at least 32 bytes!!!", Duration::from_secs(60)),
        settings,
    );
    let (key, prefix, _) = new_api_key().unwrap();
    state.store.create_api_key("fleet", &prefix, &hash_api_key(&key), None).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(listen(state.clone(), listener, std::future::pending()));

    // One frame, made (and its inflated bytes freed) before measuring: its header says
    // what it inflates to, within what a snapshot may be and within the collector's
    // ratio of inflated to compressed size (a varying byte every 256 keeps it from
    // compressing further), and it is garbage once inflated, so that decoding it costs
    // the inflated bytes and nothing more.
    let frame = {
        let mut raw = vec![b'x'; INFLATED];
        let mut x = 1u32;
        for i in (0..INFLATED).step_by(256) {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            raw[i] = (x >> 24) as u8;
        }
        let mut frame = vec![FRAME_DELTA_PACKED];
        frame.extend(zstd::bulk::compress(&raw, 1).unwrap());
        frame
    };
    assert!(frame.len() * 200 > INFLATED, "the frame inflates {} times", INFLATED / frame.len());
    let mut sockets = Vec::new();
    for i in 0..SESSIONS {
        let mut request = format!("ws://{addr}/ws/agent").into_client_request().unwrap();
        request.headers_mut().insert("Authorization", format!("Api-Key {key}").parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let mut host = procyon::sample::Sampler::new(Default::default()).host().clone();
        host.hostname = format!("big-{i}");
        let hello = json!({"type": "hello", "protocol": PROTOCOL_VERSION, "agent_version": "test", "host": host,
            "allow_control": false, "machine_id": format!("{:064x}", i + 1)});
        ws.send(Message::Text(hello.to_string().into())).await.unwrap();
        let welcome = ws.next().await.unwrap().unwrap();
        assert!(welcome.to_text().unwrap().contains("welcome"), "{welcome:?}");
        sockets.push(ws);
    }

    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = status("VmRSS:");
    // Every session sends a few at once; each is answered (as garbage) in turn.
    const FRAMES: usize = 3;
    let mut tasks = tokio::task::JoinSet::new();
    for mut ws in sockets {
        let frame = frame.clone();
        tasks.spawn(async move {
            for _ in 0..FRAMES {
                ws.send(Message::Binary(frame.clone().into())).await.unwrap();
            }
            let mut answers = 0;
            while answers < FRAMES {
                match tokio::time::timeout(Duration::from_secs(60), ws.next()).await.unwrap().unwrap().unwrap() {
                    Message::Text(t) => {
                        assert!(t.contains("bad_frame"), "{t}");
                        answers += 1;
                    }
                    _ => continue,
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let peak = status("VmHWM:").saturating_sub(before);
    eprintln!("peak while decoding: {} MiB over {} MiB before", peak / MIB, before / MIB);
    // One frame inflated at a time, and a little more; without the budget, one per core.
    assert!(peak < INFLATED + 24 * MIB, "{SESSIONS} sessions' frames took {} MiB at the peak", peak / MIB);
    server.abort();
}
