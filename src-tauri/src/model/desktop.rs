//! The desktop app's wire types: what its Tauri commands take and return.
//!
//! The desktop window runs the same dashboard as the browser. Its data calls go through
//! one command, `api`, which carries a REST request ([`ApiRequest`]) into the same
//! router the collector serves (in the app, for this machine), or to the remote
//! collector the user signed in to. Live snapshots arrive over a Tauri channel, as the
//! same JSON texts the collector's `/ws/process-snapshots/` socket sends. The other
//! commands are the app's own: its state and settings, the built-in collector, the
//! remote sign-in, pausing updates and the windows.
//!
//! Every command fails with a [`CommandError`]: a machine-readable `code` and a sentence
//! for the user, never a bare string.

use serde::{Deserialize, Serialize};
use ts_rs::TS;

use super::api::Role;

/// A REST request from the window, for the `api` command. Only `/api/` paths are carried.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct ApiRequest {
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: String,
    /// Path and query string, e.g. `/api/servers/local/snapshots?limit=50`.
    pub path: String,
    /// The JSON body, if any.
    #[serde(default)]
    pub body: Option<String>,
}

/// The answer to an [`ApiRequest`], as the collector gave it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct ApiReply {
    /// The HTTP status.
    pub status: u16,
    /// `Content-Type` of the body.
    pub content_type: String,
    /// `Content-Disposition`, for downloads (exports).
    #[serde(default)]
    pub content_disposition: Option<String>,
    /// The body as text (JSON or CSV).
    pub body: String,
}

/// Where the window's data comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "lowercase")]
pub enum DesktopMode {
    /// This machine, sampled in the app, with history in the app's own store (and the
    /// hosts of agents reporting to the built-in collector, when it runs).
    Local,
    /// A remote `procyon serve` the user signed in to.
    Remote,
}

/// The app's settings, kept in a file in its configuration folder. Secrets are never
/// part of them: the remote sign-in token lives in the OS keyring.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(default)]
pub struct DesktopSettings {
    /// Closing the main window hides it to the tray instead of quitting (when there is
    /// a tray).
    pub close_to_tray: bool,
    /// The built-in collector.
    pub collector: CollectorSettings,
    /// The remote collector last signed in to, e.g. `https://procyon.example.com`.
    pub remote_url: Option<String>,
}

impl Default for DesktopSettings {
    fn default() -> Self {
        DesktopSettings { close_to_tray: true, collector: CollectorSettings::default(), remote_url: None }
    }
}

/// The collector inside the app, for agents to report to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(default)]
pub struct CollectorSettings {
    /// Start it with the app. Off by default.
    pub enabled: bool,
    /// The address to listen on: `127.0.0.1` (this machine only) unless agents on other
    /// machines must reach it, e.g. `0.0.0.0`.
    pub bind: String,
    /// The TCP port.
    pub port: u16,
}

impl Default for CollectorSettings {
    fn default() -> Self {
        CollectorSettings { enabled: false, bind: "127.0.0.1".into(), port: 7450 }
    }
}

/// Whether the built-in collector runs, and where.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, TS)]
pub struct CollectorStatus {
    /// It is listening.
    pub running: bool,
    /// The address it listens on (`host:port`), while running.
    pub address: Option<String>,
    /// Why it is not running although enabled (e.g. the port is taken).
    pub error: Option<String>,
}

/// The remote collector the window shows, when signed in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct RemoteSession {
    /// Its base URL.
    pub url: String,
    /// Who is signed in.
    pub username: String,
    /// Their role there.
    pub role: Role,
    /// When the sign-in ends (RFC 3339).
    pub expires_at: String,
}

/// Everything the window needs to know about the app, from `desktop_state`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct DesktopState {
    /// The app's version.
    pub version: String,
    /// Where the data comes from now.
    pub mode: DesktopMode,
    /// This machine's host name (the `local` host).
    pub hostname: String,
    /// The person using the app (the OS user), who acts with the app's own rights.
    pub username: String,
    /// The signed-in remote collector, in remote mode.
    pub remote: Option<RemoteSession>,
    /// The built-in collector.
    pub collector: CollectorStatus,
    /// The settings.
    pub settings: DesktopSettings,
    /// Updates are paused (from the tray or the window).
    pub paused: bool,
    /// The app has a tray icon (false on desktops without one).
    pub tray: bool,
}

/// Why a command failed: a machine-readable `code` and a sentence for the user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS, thiserror::Error)]
#[error("{detail}")]
pub struct CommandError {
    /// `invalid` (bad argument), `unavailable` (e.g. the remote collector cannot be
    /// reached), `unauthorized` (signed out or expired), `keyring` (the OS keyring
    /// refused), `io` (a file or socket), `internal`.
    pub code: String,
    /// What happened and what to do.
    pub detail: String,
}

impl CommandError {
    /// An error with `code` and `detail`.
    pub fn new(code: &str, detail: impl Into<String>) -> CommandError {
        CommandError { code: code.to_owned(), detail: detail.into() }
    }
}

/// What a live channel (the `live` command) carries: the same as a WebSocket's events,
/// so the dashboard treats both alike.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LiveEvent {
    /// The stream is up.
    Open,
    /// One message: a JSON text, exactly as `/ws/process-snapshots/` sends it.
    Message {
        /// The JSON text.
        data: String,
    },
    /// The stream ended: `code` as a WebSocket close code (4001: the sign-in expired;
    /// 1001: the app or the collector is stopping; 1011: it failed).
    Closed {
        /// The close code.
        code: u16,
        /// Why, for the user.
        reason: String,
    },
}
