//! Build script: rebuild when the SQL migrations change (they are embedded in the
//! binary by `sqlx::migrate!`, which stable Rust cannot track by itself), and when the
//! built dashboard changes (`ui/dist`, embedded by `rust-embed` in release builds: a
//! rebuilt dashboard has new hashed file names, which the compiler cannot know of).
//!
//! With the `desktop` feature it also runs tauri-build, which reads `tauri.conf.json`
//! and `capabilities/`, and declares our commands: each gets an `allow-<name>`
//! permission, and a window may call only the commands its capability grants.

/// The desktop app's commands (`src-tauri/src/desktop/commands.rs`). A command missing
/// here cannot be granted, so the window cannot call it.
#[cfg(feature = "desktop")]
const COMMANDS: &[&str] = &[
    "api",
    "live",
    "live_stop",
    "desktop_state",
    "save_settings",
    "set_paused",
    "remote_sign_in",
    "remote_sign_out",
    "open_main",
    "open_quick_view",
    "quit",
];

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    // Watching a path that does not exist would rerun this script on every build, so
    // until the dashboard is built, watch `ui` for `dist` to appear.
    if std::path::Path::new("ui/dist").exists() {
        println!("cargo:rerun-if-changed=ui/dist");
    } else {
        println!("cargo:rerun-if-changed=ui");
    }
    #[cfg(feature = "desktop")]
    tauri_build::try_build(
        tauri_build::Attributes::new().app_manifest(tauri_build::AppManifest::new().commands(COMMANDS)),
    )
    .unwrap_or_else(|e| panic!("tauri-build: {e:#}"));
}
