//! The commands the window calls: thin adapters over [`Desktop`](super::Desktop), like
//! the REST handlers are over the collector's services. Each is listed in `build.rs`
//! and granted in `capabilities/` only to the windows that need it. Every failure is a
//! [`CommandError`] (`{code, detail}`).

use tauri::ipc::Channel;
use tauri::{AppHandle, Runtime, State, Window};

use super::Desktop;
use crate::model::desktop::{ApiReply, ApiRequest, CommandError, DesktopSettings, DesktopState, LiveEvent};

/// One REST request: into this machine's collector in the app, or to the remote
/// collector signed in to.
#[tauri::command]
pub async fn api(desktop: State<'_, Desktop>, request: ApiRequest) -> Result<ApiReply, CommandError> {
    match desktop.remote() {
        Some(remote) => remote.api(&request).await,
        None => desktop.local().api(&request).await,
    }
}

/// Streams live snapshots (of `hostname`, or of every host) into `on_event`, as the
/// live WebSocket does (`delta`: its `?delta=1` form); returns the stream's id for
/// [`live_stop`].
#[tauri::command]
pub async fn live<R: Runtime>(
    window: Window<R>,
    desktop: State<'_, Desktop>,
    hostname: Option<String>,
    delta: Option<bool>,
    on_event: Channel<LiveEvent>,
) -> Result<u32, CommandError> {
    if hostname.as_ref().is_some_and(|h| h.len() > 255 || h.chars().any(char::is_control)) {
        return Err(CommandError::new("invalid", "That is not a host name."));
    }
    Ok(desktop.start_stream(window.label(), hostname, delta.unwrap_or(false), on_event))
}

/// Ends a live stream.
#[tauri::command]
pub fn live_stop(desktop: State<'_, Desktop>, id: u32) {
    desktop.stop_stream(id);
}

/// The app's state: mode, host, user, collector, settings, pause, tray.
#[tauri::command]
pub async fn desktop_state(desktop: State<'_, Desktop>) -> Result<DesktopState, CommandError> {
    Ok(desktop.describe().await)
}

/// Checks and saves the settings, starting or stopping the built-in collector to match.
#[tauri::command]
pub async fn save_settings<R: Runtime>(
    app: AppHandle<R>,
    desktop: State<'_, Desktop>,
    settings: DesktopSettings,
) -> Result<DesktopState, CommandError> {
    desktop.save_settings(settings).await?;
    Ok(desktop.changed(&app).await)
}

/// Pauses or resumes sampling (and so every view and the tray).
#[tauri::command]
pub async fn set_paused<R: Runtime>(
    app: AppHandle<R>,
    desktop: State<'_, Desktop>,
    paused: bool,
) -> Result<DesktopState, CommandError> {
    desktop.set_paused(&app, paused);
    Ok(desktop.describe().await)
}

/// Signs in to a remote collector; the window then shows it.
#[tauri::command]
pub async fn remote_sign_in<R: Runtime>(
    app: AppHandle<R>,
    desktop: State<'_, Desktop>,
    url: String,
    username: String,
    password: String,
) -> Result<DesktopState, CommandError> {
    desktop.sign_in(&url, &username, &password).await?;
    Ok(desktop.changed(&app).await)
}

/// Signs out of the remote collector (its token leaves the keyring); the window shows
/// this machine again.
#[tauri::command]
pub async fn remote_sign_out<R: Runtime>(
    app: AppHandle<R>,
    desktop: State<'_, Desktop>,
) -> Result<DesktopState, CommandError> {
    desktop.sign_out().await?;
    Ok(desktop.changed(&app).await)
}

/// Shows the main window.
#[tauri::command]
pub fn open_main<R: Runtime>(app: AppHandle<R>) {
    super::show_main(&app);
}

/// Shows the quick view window.
#[tauri::command]
pub fn open_quick_view<R: Runtime>(app: AppHandle<R>) {
    super::show_quick_view(&app);
}

/// Quits the app.
#[tauri::command]
pub fn quit<R: Runtime>(app: AppHandle<R>) {
    app.exit(0);
}
