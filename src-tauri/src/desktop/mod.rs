//! The desktop app (feature `desktop`): a Tauri 2 window with the dashboard, a tray
//! icon with a quick view, and the collector built in.
//!
//! The app runs the collector's services in-process for this machine (store in the
//! app's data folder, one sampler task at 1 s, the hub), so the dashboard works with no
//! server and no sign-in. The window talks to them only through the commands in
//! `commands.rs`; REST requests go into the same router `procyon serve` serves, live
//! snapshots over a `tauri::ipc::Channel` from the hub. When the user turns on the
//! built-in collector, that same state also listens on a TCP port, so agents can report
//! to the desktop and their hosts appear in the window. When signed in to a remote
//! collector, requests and live snapshots go there instead (`remote.rs`).
//!
//! - `commands.rs`: the commands (the window's only way in);
//! - `local.rs`: this machine's collector, in the app;
//! - `remote.rs`: a remote collector; `credentials.rs`: its token in the OS keyring;
//! - `notify.rs`: native notifications for the app's own alert rules;
//! - `settings.rs`: the settings file; `tray.rs`: the tray icon and its menu;
//! - `rendering.rs`: the blank-window workaround for some Linux GPU setups.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tauri::ipc::Channel;
use tauri::{AppHandle, Emitter, Manager, Runtime, WebviewUrl, WebviewWindowBuilder, WindowEvent};
use tokio::sync::{oneshot, watch};

use crate::model::desktop::{
    CollectorSettings, CollectorStatus, CommandError, DesktopMode, DesktopSettings, DesktopState, LiveEvent,
};
use crate::server::{Collector, Settings};

pub mod commands;
pub mod credentials;
pub mod local;
pub mod notify;
pub mod remote;
pub mod rendering;
pub mod settings;
pub mod tray;

use local::Local;
use remote::Remote;

/// The event the window listens to for changes it did not ask for (pause from the
/// tray, the collector stopping, a sign-in ending).
pub const STATE_EVENT: &str = "desktop-state";
/// The main window's label (see `tauri.conf.json`).
pub const MAIN: &str = "main";
/// The quick view window's label.
pub const QUICK: &str = "quick";

/// The built-in collector's listener, while it runs.
struct Listening {
    address: SocketAddr,
    stop: oneshot::Sender<()>,
    done: tauri::async_runtime::JoinHandle<()>,
}

#[derive(Default)]
struct BuiltIn {
    listening: Option<Listening>,
    error: Option<String>,
}

/// Everything the app shares between its commands, tray and windows.
pub struct Desktop {
    local: Arc<Local>,
    collector: tokio::sync::Mutex<Option<Collector>>,
    remote: RwLock<Option<Arc<Remote>>>,
    settings: Mutex<DesktopSettings>,
    settings_path: std::path::PathBuf,
    built_in: tokio::sync::Mutex<BuiltIn>,
    /// Updates are paused: the sampler, the tray and the windows follow it.
    paused: watch::Sender<bool>,
    main_visible: watch::Sender<bool>,
    always_visible: watch::Sender<bool>,
    tray: AtomicBool,
    streams: Mutex<HashMap<u32, tauri::async_runtime::JoinHandle<()>>>,
    next_stream: AtomicU32,
}

/// The person using the app: the OS user the app runs as.
fn os_username() -> String {
    #[cfg(unix)]
    if let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::getuid()) {
        return user.name;
    }
    std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "desktop".into())
}

impl Desktop {
    /// Opens the app's store in `data`, reads the settings in `config`, starts sampling
    /// this machine, and restores a remote sign-in kept in the keyring.
    pub async fn open(data: &Path, config: &Path) -> anyhow::Result<Desktop> {
        let settings_path = settings::path(config);
        let saved = settings::load(&settings_path);
        let paused = watch::channel(false).0;
        let collector_settings = Settings { interval: Duration::from_secs(1), ..Settings::default() };
        let collector = Collector::start(data, true, collector_settings, paused.subscribe()).await?;
        let local = Arc::new(Local::new(collector.state.clone(), os_username()));
        let remote = match &saved.remote_url {
            Some(url) => match Remote::restore(url).await {
                Ok(r) => r.map(Arc::new),
                Err(e) => {
                    tracing::warn!("cannot restore the sign-in to {url}: {}", e.detail);
                    None
                }
            },
            None => None,
        };
        Ok(Desktop {
            local,
            collector: tokio::sync::Mutex::new(Some(collector)),
            remote: RwLock::new(remote),
            settings: Mutex::new(saved),
            settings_path,
            built_in: tokio::sync::Mutex::default(),
            paused,
            main_visible: watch::channel(true).0,
            always_visible: watch::channel(true).0,
            tray: AtomicBool::new(false),
            streams: Mutex::default(),
            next_stream: AtomicU32::new(1),
        })
    }

    /// This machine's collector.
    pub fn local(&self) -> &Local {
        &self.local
    }

    /// The remote collector, when signed in to one.
    pub fn remote(&self) -> Option<Arc<Remote>> {
        self.remote.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn settings(&self) -> DesktopSettings {
        self.settings.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sampling is paused.
    pub fn paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Pauses or resumes sampling, and tells the windows and the tray.
    pub fn set_paused<R: Runtime>(&self, app: &AppHandle<R>, paused: bool) {
        self.paused.send_replace(paused);
        let app = app.clone();
        tauri::async_runtime::spawn(async move {
            if let Some(desktop) = app.try_state::<Desktop>() {
                desktop.changed(&app).await;
            }
        });
    }

    /// The state, sent to every window as [`STATE_EVENT`], and returned.
    pub async fn changed<R: Runtime>(&self, app: &AppHandle<R>) -> DesktopState {
        let state = self.describe().await;
        let _ = app.emit(STATE_EVENT, &state);
        state
    }

    /// What the window needs to know.
    pub async fn describe(&self) -> DesktopState {
        let remote = self.remote();
        let built_in = self.built_in.lock().await;
        DesktopState {
            version: env!("CARGO_PKG_VERSION").into(),
            mode: if remote.is_some() { DesktopMode::Remote } else { DesktopMode::Local },
            hostname: self.local.state().settings.local_hostname.clone().unwrap_or_default(),
            username: self.local.username().to_owned(),
            remote: remote.map(|r| r.describe()),
            collector: CollectorStatus {
                running: built_in.listening.is_some(),
                address: built_in.listening.as_ref().map(|l| l.address.to_string()),
                error: built_in.error.clone(),
            },
            settings: self.settings(),
            paused: self.paused(),
            tray: self.tray.load(Ordering::Relaxed),
        }
    }

    /// Checks, applies and saves new settings. Nothing is saved when they are refused.
    pub async fn save_settings(&self, new: DesktopSettings) -> Result<(), CommandError> {
        settings::check(&new)?;
        // The remote address follows the sign-in, not this form.
        let new = DesktopSettings { remote_url: self.settings().remote_url, ..new };
        settings::save(&self.settings_path, &new)?;
        self.apply_collector(&new.collector).await;
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = new;
        Ok(())
    }

    /// Starts, restarts or stops the built-in collector to match `wanted`. A port that
    /// cannot be taken is reported in the status, not as a failed save: the setting
    /// stays on and is tried again at the next start.
    pub async fn apply_collector(&self, wanted: &CollectorSettings) {
        let mut built_in = self.built_in.lock().await;
        let address = wanted.bind.parse::<std::net::IpAddr>().ok().map(|ip| SocketAddr::new(ip, wanted.port));
        let same = match (&built_in.listening, address) {
            (Some(l), Some(a)) => wanted.enabled && (l.address == a || (a.port() == 0 && l.address.ip() == a.ip())),
            (None, _) => !wanted.enabled,
            _ => false,
        };
        if same {
            return;
        }
        if let Some(l) = built_in.listening.take() {
            let _ = l.stop.send(());
            let _ = l.done.await;
        }
        built_in.error = None;
        let (true, Some(address)) = (wanted.enabled, address) else { return };
        match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => {
                let bound = listener.local_addr().unwrap_or(address);
                let (stop, stopped) = oneshot::channel::<()>();
                // Its own shutdown signal: stopping the listener ends the agents' and
                // browsers' sockets on it, not the window's streams.
                let state = self.local.state().with_own_shutdown();
                let done = tauri::async_runtime::spawn(async move {
                    if let Err(e) = crate::server::listen(state, listener, async move {
                        let _ = stopped.await;
                    })
                    .await
                    {
                        tracing::warn!("built-in collector: {e:#}");
                    }
                });
                tracing::info!(address = %bound, "built-in collector listening");
                built_in.listening = Some(Listening { address: bound, stop, done });
            }
            Err(e) => built_in.error = Some(format!("Cannot listen on {address}: {e}")),
        }
    }

    /// Signs in to a remote collector and keeps the address in the settings.
    pub async fn sign_in(&self, url: &str, username: &str, password: &str) -> Result<(), CommandError> {
        let remote = Remote::sign_in(url, username, password).await?;
        let mut new = self.settings();
        new.remote_url = Some(remote.base().to_owned());
        settings::save(&self.settings_path, &new)?;
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = new;
        *self.remote.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(remote));
        Ok(())
    }

    /// Signs out of the remote collector: the token leaves the keyring first, so a
    /// failure there leaves the user signed in and told why.
    pub async fn sign_out(&self) -> Result<(), CommandError> {
        let Some(remote) = self.remote() else { return Ok(()) };
        Remote::sign_out(remote.base().to_owned()).await?;
        *self.remote.write().unwrap_or_else(|p| p.into_inner()) = None;
        let mut new = self.settings();
        new.remote_url = None;
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = new.clone();
        settings::save(&self.settings_path, &new)
    }

    /// Starts a live stream for the window `label`; its id for [`Desktop::stop_stream`].
    pub fn start_stream(&self, label: &str, hostname: Option<String>, delta: bool, channel: Channel<LiveEvent>) -> u32 {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let visible = if label == MAIN { self.main_visible.subscribe() } else { self.always_visible.subscribe() };
        // The quick view always shows this machine, whatever the main window shows.
        let remote = if label == QUICK { None } else { self.remote() };
        let task = match remote {
            Some(remote) => tauri::async_runtime::spawn(async move { remote.live(hostname, delta, channel).await }),
            None => {
                let local = self.local.clone();
                tauri::async_runtime::spawn(async move { local.live(hostname, delta, channel, visible).await })
            }
        };
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams.retain(|_, t| !t.inner().is_finished());
        streams.insert(id, task);
        id
    }

    /// Ends a live stream (a no-op for an unknown id).
    pub fn stop_stream(&self, id: u32) {
        if let Some(task) = self.streams.lock().unwrap_or_else(|p| p.into_inner()).remove(&id) {
            task.abort();
        }
    }

    /// Tells the main window's streams whether anyone can see it.
    pub fn set_main_visible(&self, visible: bool) {
        self.main_visible.send_replace(visible);
    }

    /// Stops the built-in collector, the streams and the sampler, and closes the store.
    pub async fn shutdown(&self) {
        self.apply_collector(&CollectorSettings { enabled: false, ..CollectorSettings::default() }).await;
        for (_, task) in self.streams.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            task.abort();
        }
        if let Some(collector) = self.collector.lock().await.take() {
            collector.stop().await;
        }
    }
}

/// Shows (or brings back) the main window.
pub fn show_main<R: Runtime>(app: &AppHandle<R>) {
    if let Some(window) = app.get_webview_window(MAIN) {
        let _ = window.unminimize();
        let _ = window.show();
        let _ = window.set_focus();
    }
    if let Some(desktop) = app.try_state::<Desktop>() {
        desktop.set_main_visible(true);
    }
}

/// Shows the quick view window, creating it the first time.
pub fn show_quick_view<R: Runtime>(app: &AppHandle<R>) {
    if let Some(window) = app.get_webview_window(QUICK) {
        let _ = window.show();
        let _ = window.set_focus();
        return;
    }
    let built = WebviewWindowBuilder::new(app, QUICK, WebviewUrl::App("quick.html".into()))
        .title("Procyon quick view")
        .inner_size(360.0, 520.0)
        .resizable(false)
        .always_on_top(true)
        .skip_taskbar(true)
        .build();
    if let Err(e) = built {
        tracing::warn!("cannot open the quick view: {e}");
    }
}

/// The app's commands and window behaviour on a Tauri builder, for any runtime (tests
/// use the mock one). [`run`] adds the setup that opens the store and the tray.
pub fn builder<R: Runtime>(builder: tauri::Builder<R>) -> tauri::Builder<R> {
    builder
        // Native notifications for the app's alert rules (`notify.rs`); its commands are
        // granted to the main window only (capabilities/main.json).
        .plugin(tauri_plugin_notification::init())
        .invoke_handler(tauri::generate_handler![
            commands::api,
            commands::live,
            commands::live_stop,
            commands::desktop_state,
            commands::save_settings,
            commands::set_paused,
            commands::remote_sign_in,
            commands::remote_sign_out,
            commands::open_main,
            commands::open_quick_view,
            commands::quit,
        ])
        .on_window_event(|window, event| {
            if window.label() != MAIN {
                return;
            }
            let app = window.app_handle();
            let Some(desktop) = app.try_state::<Desktop>() else { return };
            match event {
                WindowEvent::CloseRequested { api, .. }
                    if desktop.tray.load(Ordering::Relaxed) && desktop.settings().close_to_tray =>
                {
                    api.prevent_close();
                    let _ = window.hide();
                    desktop.set_main_visible(false);
                }
                // Closed for good (no tray, or not wanted): the app ends with it.
                WindowEvent::Destroyed => app.exit(0),
                _ => {}
            }
        })
}

/// Keeps the tray menu's figures current.
fn follow_in_tray<R: Runtime>(tray: tray::Tray<R>, desktop: &Desktop) {
    let hostname = desktop.local.state().settings.local_hostname.clone().unwrap_or_default();
    let mut feed = desktop.local.state().hub.subscribe(&hostname);
    let mut paused = desktop.paused.subscribe();
    tauri::async_runtime::spawn(async move {
        loop {
            let now_paused = *paused.borrow_and_update();
            let figures = match (now_paused, feed.borrow_and_update().clone()) {
                (false, Some(p)) => tray::figures(&p.snapshot),
                _ => tray::waiting(now_paused),
            };
            tray.show(&figures, now_paused);
            tokio::select! {
                r = feed.changed() => if r.is_err() { break },
                r = paused.changed() => if r.is_err() { break },
            }
        }
    });
}

/// How the app starts.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Start in the tray with the main window hidden (for starting at login). Ignored
    /// without a tray: the window is then the only way in.
    pub hidden: bool,
}

/// Runs the desktop app until the user quits.
pub fn run(options: Options) -> anyhow::Result<()> {
    rendering::apply();
    let app = builder(tauri::Builder::default())
        .setup(move |app| {
            let handle = app.handle().clone();
            let data = app.path().app_data_dir()?;
            let config = app.path().app_config_dir()?;
            let desktop = tauri::async_runtime::block_on(Desktop::open(&data, &config))?;
            tauri::async_runtime::block_on(notify::install(&handle, desktop.local.state()));
            let collector = desktop.settings().collector;
            tauri::async_runtime::block_on(desktop.apply_collector(&collector));
            if let Some(tray) = tray::create(&handle) {
                desktop.tray.store(true, Ordering::Relaxed);
                follow_in_tray(tray, &desktop);
                if options.hidden
                    && let Some(window) = app.get_webview_window(MAIN)
                {
                    let _ = window.hide();
                    desktop.set_main_visible(false);
                }
            }
            app.manage(desktop);
            Ok(())
        })
        .build(tauri::generate_context!())
        .map_err(|e| anyhow::anyhow!("cannot start the desktop app: {e}"))?;
    app.run(|app, event| {
        if let tauri::RunEvent::Exit = event
            && let Some(desktop) = app.try_state::<Desktop>()
        {
            tauri::async_runtime::block_on(desktop.shutdown());
        }
    });
    Ok(())
}

#[cfg(test)]
#[cfg(feature = "desktop-test")]
mod tests;
