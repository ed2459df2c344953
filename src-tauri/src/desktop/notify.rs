//! Native notifications for the desktop's own alert rules: the `desktop` channel kind,
//! shown through Tauri's notification plugin (the freedesktop notification service on
//! Linux, the notification centre on macOS, toasts on Windows).
//!
//! The app's built-in collector evaluates the rules of this machine and of agents that
//! report to it, as `procyon serve` does; the alerting there knows nothing of Tauri, so
//! the app installs a hook ([`install`]) through which `desktop` channels show. A
//! channel named `desktop` is made at the first start, so that a rule can name it
//! without setting anything up.

use std::sync::Arc;

use tauri::{AppHandle, Runtime};
use tauri_plugin_notification::NotificationExt;

use crate::alert::notify::DesktopNotifier;
use crate::alert::rule::{AlertChannel, ChannelKind};
use crate::server::AppState;

/// The channel made at the first start.
pub const CHANNEL: &str = "desktop";

/// The hook that shows a notification with `app`'s notification plugin.
pub fn notifier<R: Runtime>(app: AppHandle<R>) -> DesktopNotifier {
    Arc::new(move |title: &str, body: &str| {
        app.notification()
            .builder()
            .title(title)
            .body(body)
            .show()
            .map_err(|e| format!("the notification could not be shown: {e}"))
    })
}

/// Lets `state`'s alerting show notifications through `app`, and makes the `desktop`
/// channel if there is none.
pub async fn install<R: Runtime>(app: &AppHandle<R>, state: &AppState) {
    state.alerts.set_desktop_notifier(notifier(app.clone()));
    if state.alerts.channel(CHANNEL).is_some() {
        return;
    }
    let channel = AlertChannel {
        name: CHANNEL.into(),
        kind: ChannelKind::Desktop,
        url: String::new(),
        token: None,
        token_set: false,
        email: None,
        quiet_hours: None,
        read_only: false,
    };
    let made = match state.store.put_alert_channel(&channel, true).await {
        Ok(()) => state.alerts.reload_after_change().await,
        Err(e) => Err(e),
    };
    if let Err(e) = made {
        tracing::warn!("cannot make the desktop alert channel: {e}");
    }
}
