//! The floor the desktop app is measured against: the least a Tauri 2 app on this
//! machine's WebKitGTK costs. One window of the desktop app's size (1280x800) showing a
//! number that changes every second, and nothing else: no dashboard, no sampling, no
//! IPC. Same Tauri, same WebKitGTK, same rendering workaround as `procyon desktop`
//! (`procyon::desktop::rendering`), so what the app costs above this is its own.
//!
//! `make bench` (bench/desktop.py) runs it next to `procyon desktop` under the same
//! Xvfb, with the window open and hidden (`--hidden`), and prints the ratios.
//!
//! ```sh
//! cargo run --release --features desktop --example desktop_floor [-- --hidden]
//! ```

use tauri::http::Response;
use tauri::{WebviewUrl, WebviewWindowBuilder};

/// The page: a number, counted up once a second by a timer.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>floor</title>
<style>body{font:48px system-ui,sans-serif;display:grid;place-items:center;height:100vh;margin:0}</style>
</head><body><div id="n">0</div>
<script>let n = 0; setInterval(() => { document.getElementById('n').textContent = String(++n); }, 1000);</script>
</body></html>"#;

fn main() {
    procyon::desktop::rendering::apply();
    let hidden = std::env::args().any(|a| a == "--hidden");
    let mut context = tauri::generate_context!();
    // The app's own window is not this one.
    context.config_mut().app.windows.clear();
    tauri::Builder::default()
        // Served by the app itself, as the dashboard is: no file, no network.
        .register_uri_scheme_protocol("floor", |_ctx, _request| {
            Response::builder()
                .header("Content-Type", "text/html; charset=utf-8")
                .body(PAGE.as_bytes().to_vec())
                .unwrap_or_default()
        })
        // Said once, so that a run can tell the page is up (and not an error page).
        .on_page_load(|_window, payload| {
            if matches!(payload.event(), tauri::webview::PageLoadEvent::Finished) {
                println!("floor page loaded: {}", payload.url());
            }
        })
        .setup(move |app| {
            let url = "floor://localhost/".parse().map_err(|e| format!("{e}"))?;
            WebviewWindowBuilder::new(app, "floor", WebviewUrl::CustomProtocol(url))
                .title("floor")
                .inner_size(1280.0, 800.0)
                .visible(!hidden)
                .build()?;
            Ok(())
        })
        .run(context)
        .unwrap_or_else(|e| panic!("cannot start the floor app: {e}"));
}
