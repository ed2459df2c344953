//! The collector's alerting at run time: the rules and channels in force (the API's,
//! stored, and the `--alerts` file's, read-only), the task that evaluates every
//! published snapshot, and the delivery of notifications with retries.
//!
//! One task ([`Alerts::run`]) owns the [`Engine`]: it follows the hub's all-hosts
//! stream (a snapshot is evaluated as it is published, the database is never polled),
//! ticks once a second for what time alone changes (`host.offline`), and writes each
//! batch of transitions to the store before it notifies, so that what was told is what
//! is stored. A reader that falls behind the hub's backlog skips to the newest
//! snapshots; the next snapshot of each host is evaluated as usual.
//!
//! A channel's quiet hours hold its notifications back: each is stored (so a restart
//! loses none) and recorded as an attempt held back, and the same one-second tick sends
//! the channel one summary of them all once its quiet hours are over. The held
//! notifications are forgotten only when that summary was delivered, or failed its
//! last attempt.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::eval::{Change, Engine, Rules, Transition};
use super::notify::{self, DesktopNotifier, Notice, Origin};
use super::rule::{AlertChannel, AlertRule, ChannelKind, CompiledRule, Invalid, Metric, Severity};
use super::status::{AlertState, DeliveryResult, Silence};
use crate::hub::Hub;
use crate::store::{NewDelivery, StateChange, Store, StoreError};

/// When a failed notification is tried again: after 2 s, 10 s, then 60 s; four
/// attempts in all.
pub const RETRY_AFTER: [Duration; 3] = [Duration::from_secs(2), Duration::from_secs(10), Duration::from_secs(60)];

/// How often alerts still firing are sent again to `alertmanager` channels. An
/// Alertmanager resolves an alert it has not heard of for its `resolve_timeout` (5 min
/// by default), as Prometheus keeps sending what fires; these repeats are not recorded
/// as notifications.
pub const ALERTMANAGER_REFRESH: Duration = Duration::from_secs(60);

/// How long resolved alerts stay in `GET /api/alerts`.
pub const RESOLVED_SHOWN: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// The `--alerts` file: `[[rules]]` and `[[channels]]` tables, each as the API takes it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsFile {
    /// Rules.
    #[serde(default)]
    pub rules: Vec<AlertRule>,
    /// Channels.
    #[serde(default)]
    pub channels: Vec<AlertChannel>,
}

/// What goes wrong loading the alerts.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, with the line.
        message: String,
    },
    /// A rule or channel is invalid.
    #[error("{path}: {what} `{name}`: {error}")]
    Invalid {
        /// The file.
        path: String,
        /// `rule` or `channel`.
        what: &'static str,
        /// Its name.
        name: String,
        /// The field at fault.
        error: Invalid,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the engine task is told besides snapshots.
enum Command {
    /// The rules changed: drop the state of rules that went.
    RulesChanged,
    /// A host was deleted: forget it (it must not go offline).
    HostDeleted(String),
    /// This collector leads the fleet of its database (or no longer does): `host.offline`
    /// is then its to evaluate (see [`Alerts::lead`]).
    Lead(bool),
}

/// The alerting of one collector. Cheap to share (`Arc`).
pub struct Alerts {
    store: Store,
    /// The rules in force, compiled; replaced whole when one changes.
    rules: RwLock<Arc<Rules>>,
    /// The channels in force, secrets included.
    channels: RwLock<Arc<HashMap<String, AlertChannel>>>,
    /// Silences not yet ended.
    silences: RwLock<Arc<Vec<Silence>>>,
    /// Rules and channels of the `--alerts` file (read-only).
    file_rules: RwLock<Vec<AlertRule>>,
    file_channels: RwLock<Vec<AlertChannel>>,
    /// Where the collector listens, so that no channel posts to it.
    own: RwLock<Vec<SocketAddr>>,
    commands: mpsc::UnboundedSender<Command>,
    commands_rx: Mutex<Option<mpsc::UnboundedReceiver<Command>>>,
    http: reqwest::Client,
    /// The desktop app's native notifications, in the desktop app.
    desktop: RwLock<Option<DesktopNotifier>>,
    /// Notifications held through quiet hours, by channel, with their stored ids; ids
    /// taken out while their summary is being sent.
    held: tokio::sync::Mutex<HashMap<String, Vec<(i64, Notice)>>>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts").finish_non_exhaustive()
    }
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    // Every write replaces the value whole: a poisoned lock still holds a whole one.
    lock.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn write<T>(lock: &RwLock<T>, value: T) {
    *lock.write().unwrap_or_else(|p| p.into_inner()) = value;
}

impl Alerts {
    /// Alerting over `store`, with no rules until [`Alerts::load`].
    pub fn new(store: Store) -> Alerts {
        let (commands, rx) = mpsc::unbounded_channel();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(notify::ATTEMPT_TIMEOUT)
            .timeout(notify::ATTEMPT_TIMEOUT)
            .user_agent(concat!("procyon/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Alerts {
            store,
            rules: RwLock::new(Arc::from(Vec::new())),
            channels: RwLock::default(),
            silences: RwLock::default(),
            file_rules: RwLock::default(),
            file_channels: RwLock::default(),
            own: RwLock::default(),
            commands,
            commands_rx: Mutex::new(Some(rx)),
            http,
            desktop: RwLock::default(),
            held: tokio::sync::Mutex::default(),
        }
    }

    /// Installs the desktop app's native notifications: `desktop` channels show
    /// through it. Without it (a collector), they fail saying why.
    pub fn set_desktop_notifier(&self, notifier: DesktopNotifier) {
        write(&self.desktop, Some(notifier));
    }

    /// Whether `desktop` channels can be shown here.
    pub fn has_desktop(&self) -> bool {
        read(&self.desktop).is_some()
    }

    /// Where messages come from: the collector's addresses and URL, the desktop hook.
    fn origin(&self) -> Origin {
        Origin { own: read(&self.own), external_url: self.external_url(), desktop: read(&self.desktop) }
    }

    /// Reads the stored rules and channels and those of `file` (TOML), checks them all
    /// together, and puts them in force. A bad file is an error naming the rule and
    /// field; nothing is put in force then.
    pub async fn load(&self, file: Option<&Path>) -> Result<(), LoadError> {
        let parsed = match file {
            None => AlertsFile::default(),
            Some(path) => {
                let shown = path.display().to_string();
                let text =
                    std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: shown.clone(), source })?;
                toml::from_str::<AlertsFile>(&text)
                    .map_err(|e| LoadError::Parse { path: shown, message: e.to_string() })?
            }
        };
        let path = file.map(|p| p.display().to_string()).unwrap_or_default();
        let mut file_rules = parsed.rules;
        let mut file_channels = parsed.channels;
        for c in &mut file_channels {
            c.read_only = true;
            c.check().map_err(|error| LoadError::Invalid {
                path: path.clone(),
                what: "channel",
                name: c.name.clone(),
                error,
            })?;
        }
        for r in &mut file_rules {
            r.read_only = true;
        }
        write(&self.file_rules, file_rules);
        write(&self.file_channels, file_channels);
        self.reload().await.map_err(|e| match e {
            Reload::Store(e) => LoadError::Store(e),
            Reload::Invalid { what, name, error } => LoadError::Invalid { path, what, name, error },
        })?;
        self.reload_silences().await?;
        Ok(())
    }

    /// Tells the alerts where the collector listens (channels may not post there).
    pub fn set_own_addresses(&self, addrs: Vec<SocketAddr>) {
        write(&self.own, addrs);
    }

    /// The rules in force (the file's marked read-only), by name.
    pub fn rules(&self) -> Vec<AlertRule> {
        let mut rules: Vec<AlertRule> = read(&self.rules).iter().map(|r| r.rule.clone()).collect();
        rules.sort_by(|a, b| a.name.cmp(&b.name));
        rules
    }

    /// The channels in force, masked for answers.
    pub fn channels_masked(&self) -> Vec<AlertChannel> {
        let mut channels: Vec<AlertChannel> = read(&self.channels).values().map(AlertChannel::masked).collect();
        channels.sort_by(|a, b| a.name.cmp(&b.name));
        channels
    }

    /// A channel in force, secrets included.
    pub fn channel(&self, name: &str) -> Option<AlertChannel> {
        read(&self.channels).get(name).cloned()
    }

    /// Whether `name` is a rule of the file.
    pub fn is_file_rule(&self, name: &str) -> bool {
        read(&self.file_rules).iter().any(|r| r.name == name)
    }

    /// Whether `name` is a channel of the file.
    pub fn is_file_channel(&self, name: &str) -> bool {
        read(&self.file_channels).iter().any(|c| c.name == name)
    }

    /// Checks a rule as the API would store it: by itself, and that its channels exist.
    pub fn check_rule(&self, rule: &AlertRule) -> Result<(), Invalid> {
        rule.compile()?;
        let channels = read(&self.channels);
        for (i, c) in rule.channels.iter().enumerate() {
            if !channels.contains_key(c) {
                return Err(Invalid {
                    field: format!("channels[{i}]"),
                    message: format!("There is no channel `{c}`; make it first (POST /api/alert-channels)."),
                });
            }
        }
        Ok(())
    }

    /// Rules in force that notify channel `name`.
    pub fn rules_using(&self, channel: &str) -> Vec<String> {
        read(&self.rules)
            .iter()
            .filter(|r| r.rule.channels.iter().any(|c| c == channel))
            .map(|r| r.rule.name.clone())
            .collect()
    }

    /// Checks what a channel's check alone cannot: that its URL (or SMTP server) is not
    /// the collector itself, that its mail addresses parse, and that a `desktop`
    /// channel is made where there is a desktop.
    pub async fn check_not_self(&self, channel: &AlertChannel) -> Result<(), Invalid> {
        let url = match (channel.kind, &channel.email) {
            (ChannelKind::Alertmanager, _) => format!("{}/api/v2/alerts", channel.url.trim_end_matches('/')),
            (ChannelKind::Email, Some(email)) => {
                notify::check_email(email)?;
                let host = if email.host.contains(':') { format!("[{}]", email.host) } else { email.host.clone() };
                format!("smtp://{host}:{}", email.port())
            }
            (ChannelKind::Desktop, _) => {
                if !self.has_desktop() {
                    return Err(Invalid {
                        field: "kind".into(),
                        message: "desktop channels are the desktop app's own: a collector has no screen to show \
                            them on."
                            .into(),
                    });
                }
                return Ok(());
            }
            _ => channel.url.clone(),
        };
        notify::refuse_self(&url, &read(&self.own)).await.map_err(|message| Invalid {
            field: "url".into(),
            message: format!("A channel may not point at this collector ({message})."),
        })
    }

    /// Puts the stored rules and channels back in force after a change through the API.
    pub async fn reload_after_change(&self) -> Result<(), StoreError> {
        match self.reload().await {
            Ok(()) => Ok(()),
            Err(Reload::Store(e)) => Err(e),
            // Stored rules were checked when stored; one that no longer passes (its
            // channel went) is left out and said so in the log by `reload`.
            Err(Reload::Invalid { .. }) => Ok(()),
        }
    }

    async fn reload(&self) -> Result<(), Reload> {
        let mut channels: HashMap<String, AlertChannel> = HashMap::new();
        for c in read(&self.file_channels) {
            channels.insert(c.name.clone(), c);
        }
        for c in self.store.alert_channels().await.map_err(Reload::Store)? {
            if channels.contains_key(&c.name) {
                tracing::warn!(channel = %c.name, "a stored alert channel has the name of one in the --alerts file; the file's wins");
                continue;
            }
            channels.insert(c.name.clone(), c);
        }
        let mut compiled: Vec<Arc<CompiledRule>> = Vec::new();
        let check_channels = |rule: &AlertRule| -> Result<(), Invalid> {
            for (i, c) in rule.channels.iter().enumerate() {
                if !channels.contains_key(c) {
                    return Err(Invalid {
                        field: format!("channels[{i}]"),
                        message: format!("There is no channel `{c}`."),
                    });
                }
            }
            Ok(())
        };
        for rule in read(&self.file_rules) {
            let c = rule.compile().and_then(|c| check_channels(&rule).map(|()| c));
            match c {
                Ok(c) => compiled.push(Arc::new(c)),
                Err(error) => return Err(Reload::Invalid { what: "rule", name: rule.name.clone(), error }),
            }
        }
        for rule in self.store.alert_rules().await.map_err(Reload::Store)? {
            if compiled.iter().any(|c| c.rule.name == rule.name) {
                tracing::warn!(rule = %rule.name, "a stored alert rule has the name of one in the --alerts file; the file's wins");
                continue;
            }
            match rule.compile().and_then(|c| check_channels(&rule).map(|()| c)) {
                Ok(c) => compiled.push(Arc::new(c)),
                Err(e) => tracing::warn!(rule = %rule.name, "stored alert rule left out: {e}"),
            }
        }
        write(&self.channels, Arc::new(channels));
        write(&self.rules, Arc::from(compiled));
        let _ = self.commands.send(Command::RulesChanged);
        Ok(())
    }

    /// Reads the silences again after one was added or removed.
    pub async fn reload_silences(&self) -> Result<(), StoreError> {
        let silences = self.store.silences(Utc::now()).await?;
        write(&self.silences, Arc::new(silences));
        Ok(())
    }

    /// Puts the stored rules, channels and silences back in force after a change through
    /// the API, and tells the other collectors of the database to do the same.
    pub async fn changed(&self) -> Result<(), StoreError> {
        self.reload_after_change().await?;
        self.reload_silences().await?;
        if let Err(e) = self.store.announce_alerts_changed().await {
            // The others catch up when their listening connection comes back.
            tracing::warn!("cannot tell the other collectors that the alerts changed: {e}");
        }
        Ok(())
    }

    /// Another collector of the database changed the rules, channels or silences.
    pub async fn changed_elsewhere(&self) {
        if let Err(e) = self.reload_after_change().await {
            tracing::warn!("cannot read the alert rules another collector changed: {e}");
        }
        if let Err(e) = self.reload_silences().await {
            tracing::warn!("cannot read the silences another collector changed: {e}");
        }
    }

    /// Whether this collector leads the fleet of collectors sharing its database: the
    /// leader alone fires and resolves `host.offline`, which every collector could see
    /// (each knows when every host last spoke); every other rule is evaluated by the
    /// collector that stores the snapshot. A store of its own (SQLite) always leads.
    pub fn lead(&self, leading: bool) {
        let _ = self.commands.send(Command::Lead(leading));
    }

    /// Forgets a deleted host.
    pub fn host_deleted(&self, hostname: &str) {
        let _ = self.commands.send(Command::HostDeleted(hostname.to_owned()));
    }

    /// The external URL notifications point back to.
    fn external_url(&self) -> String {
        read(&self.own).first().map_or_else(String::new, |a| format!("http://{a}"))
    }

    /// Sends a test notification to a channel once, records the attempt, and says how
    /// it went.
    pub async fn test_channel(&self, channel: &AlertChannel, by: &str) -> Result<(), String> {
        let now = Utc::now();
        let notice = Notice {
            status: "test",
            rule: "procyon-test".into(),
            metric: Metric::HostOffline,
            hostname: String::new(),
            process: String::new(),
            severity: super::rule::Severity::Info,
            summary: format!("A test notification from Procyon, sent by {by}."),
            value: 0.0,
            starts_at: now,
            ends_at: None,
        };
        let result = notify::send(&self.http, channel, std::slice::from_ref(&notice), &self.origin()).await;
        let record = NewDelivery {
            channel: channel.name.clone(),
            rule: String::new(),
            hostname: String::new(),
            process: String::new(),
            status: "test".into(),
            attempt: 1,
            result: if result.is_ok() { DeliveryResult::Delivered } else { DeliveryResult::Failed },
            error: result.as_ref().err().cloned(),
        };
        if let Err(e) = self.store.record_delivery(&record).await {
            tracing::warn!("cannot record a notification attempt: {e}");
        }
        result
    }

    /// Evaluates every published snapshot and ticks for `host.offline` until the hub
    /// closes or `shutdown` turns true. Call once per collector.
    pub async fn run(self: Arc<Self>, hub: Hub, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let Some(mut commands) = self.commands_rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            tracing::error!("the alert task runs once per collector");
            return;
        };
        // Subscribed first: nothing published while the state is read is missed.
        let mut live = hub.subscribe_all();
        // Other collectors' hosts speak through their glances (their snapshots are
        // read back here only while someone follows them). On SQLite there are none.
        let mut glances = self.store.is_shared().then(|| hub.subscribe_glances());
        let mut engine = Engine::new();
        if let Err(e) = self.restore(&mut engine).await {
            tracing::error!("cannot read the alerts' stored state; starting without it: {e}");
        }
        // Until this collector is told it leads.
        if self.store.is_shared() {
            engine.own_offline(&read(&self.rules), false);
        }
        if let Err(e) = self.restore_held().await {
            tracing::error!("cannot read the notifications held through quiet hours: {e}");
        }
        let mut last_refresh = std::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let transitions = tokio::select! {
                received = live.recv() => match received {
                    // Another collector of the database stored it, and evaluates it:
                    // evaluating it here too would fire every alert twice. Its glance
                    // shows that the host speaks (below).
                    Ok(published) if published.remote => continue,
                    Ok(published) => {
                        let rules = read(&self.rules);
                        if rules.is_empty() {
                            let (host, at) = (&published.snapshot.host.hostname, published.received_at.timestamp_millis());
                            engine.host_spoke(&rules, host, at)
                        } else {
                            engine.snapshot(&rules, &published.snapshot, published.received_at.timestamp_millis())
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(skipped)) => {
                        tracing::debug!(skipped, "alert evaluation skipped snapshots to catch up");
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                // That another collector's host spoke (host.offline, the leader's).
                glanced = next_glance(&mut glances) => match glanced {
                    Ok(glance) if glance.remote => {
                        engine.host_spoke(&read(&self.rules), &glance.hostname, glance.received_at.timestamp_millis())
                    }
                    Ok(_) => continue,
                    // Fell behind: what the skipped glances said is in the hub's.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let rules = read(&self.rules);
                        hub.glances()
                            .iter()
                            .filter(|g| g.remote)
                            .flat_map(|g| engine.host_spoke(&rules, &g.hostname, g.received_at.timestamp_millis()))
                            .collect()
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                _ = tick.tick() => {
                    if last_refresh.elapsed() >= ALERTMANAGER_REFRESH {
                        last_refresh = std::time::Instant::now();
                        self.refresh_alertmanagers(&engine);
                    }
                    self.release_quiet(Utc::now()).await;
                    engine.tick(&read(&self.rules), Utc::now().timestamp_millis())
                }
                command = commands.recv() => match command {
                    Some(Command::RulesChanged) => {
                        let dropped = engine.retain_rules(&read(&self.rules));
                        let changes: Vec<StateChange> = dropped
                            .into_iter()
                            .map(|(rule, hostname, process)| StateChange {
                                rule, hostname, process, severity: Default::default(), state: None,
                                since_ms: 0, value: 0.0, notified_ms: None, at_ms: 0, event: false,
                            })
                            .collect();
                        if let Err(e) = self.store.apply_alert_changes(&changes, Utc::now() - RESOLVED_SHOWN).await {
                            tracing::warn!("cannot drop the state of deleted alert rules: {e}");
                        }
                        continue;
                    }
                    Some(Command::HostDeleted(hostname)) => {
                        engine.forget_host(&hostname);
                        continue;
                    }
                    Some(Command::Lead(leading)) => {
                        if leading != engine.owns_offline() {
                            self.take_offline(&mut engine, leading).await;
                        }
                        continue;
                    }
                    None => break,
                },
                _ = shutdown.changed() => break,
            };
            if !transitions.is_empty() {
                self.handle(transitions).await;
            }
        }
    }

    /// Makes `host.offline` this collector's (with the state the previous leader stored:
    /// what fired is not fired again, and resolves when its host speaks) or gives it up.
    async fn take_offline(&self, engine: &mut Engine, owner: bool) {
        let rules = read(&self.rules);
        engine.own_offline(&rules, owner);
        if !owner {
            return;
        }
        match self.store.alert_states().await {
            Ok(states) => {
                let offline =
                    |name: &str| rules.iter().any(|r| r.rule.name == name && r.rule.metric == Metric::HostOffline);
                for (alert, notified) in states.iter().filter(|(a, _)| offline(&a.rule)) {
                    engine.restore(alert, notified.unwrap_or(0));
                }
            }
            Err(e) => tracing::warn!("cannot read the stored host.offline alerts of the previous leader: {e}"),
        }
    }

    /// Puts the stored state back into `engine`, and the stored hosts with their last
    /// contact (at the earliest, now: the collector's own downtime is not the hosts').
    async fn restore(&self, engine: &mut Engine) -> Result<(), StoreError> {
        let now = Utc::now().timestamp_millis();
        for (hostname, last_seen) in self.store.hosts_last_seen().await? {
            engine.know_host(&hostname, last_seen.max(now));
        }
        for (alert, notified) in self.store.alert_states().await? {
            engine.restore(&alert, notified.unwrap_or(0));
        }
        engine.retain_rules(&read(&self.rules));
        Ok(())
    }

    /// Sends every firing alert again to the `alertmanager` channels of its rule (see
    /// [`ALERTMANAGER_REFRESH`]).
    fn refresh_alertmanagers(&self, engine: &Engine) {
        let rules = read(&self.rules);
        let channels = read(&self.channels);
        let origin = self.origin();
        for (rule_name, hostname, entry) in engine.entries() {
            if entry.phase != super::eval::Phase::Firing {
                continue;
            }
            let Some(rule) = rules.iter().find(|r| r.rule.name == rule_name) else { continue };
            for channel in rule.rule.channels.iter().filter_map(|c| channels.get(c)) {
                // Quiet hours hold these back too: the summary tells the Alertmanager then.
                if channel.kind != ChannelKind::Alertmanager || quiet_until(channel, Utc::now()).is_some() {
                    continue;
                }
                let t = Transition {
                    rule: rule_name.to_owned(),
                    hostname: hostname.to_owned(),
                    process: entry.label.clone(),
                    change: Change::Repeat,
                    value: entry.value,
                    since_ms: entry.since_ms,
                    at_ms: Utc::now().timestamp_millis(),
                };
                let notice = notice(rule, &t, "firing");
                let (http, channel, origin) = (self.http.clone(), channel.clone(), origin.clone());
                tokio::spawn(async move {
                    if let Err(why) = notify::send(&http, &channel, std::slice::from_ref(&notice), &origin).await {
                        tracing::debug!(channel = %channel.name, "refreshing a firing alert failed: {why}");
                    }
                });
            }
        }
    }

    /// Stores a batch of transitions, then notifies their channels.
    async fn handle(&self, transitions: Vec<Transition>) {
        let rules = read(&self.rules);
        let rule_of = |name: &str| rules.iter().find(|r| r.rule.name == name).cloned();
        let changes: Vec<StateChange> = transitions
            .iter()
            .map(|t| {
                let severity = rule_of(&t.rule).map(|r| r.rule.severity).unwrap_or_default();
                let (state, event, notified) = match t.change {
                    Change::Pending => (Some(AlertState::Pending), false, None),
                    Change::Cancelled => (None, false, None),
                    Change::Firing => (Some(AlertState::Firing), true, Some(t.at_ms)),
                    Change::Repeat => (Some(AlertState::Firing), false, Some(t.at_ms)),
                    Change::Resolved => (Some(AlertState::Resolved), true, None),
                };
                StateChange {
                    rule: t.rule.clone(),
                    hostname: t.hostname.clone(),
                    process: t.process.clone(),
                    severity,
                    state,
                    since_ms: t.since_ms,
                    value: t.value,
                    notified_ms: notified,
                    at_ms: t.at_ms,
                    event,
                }
            })
            .collect();
        if let Err(e) = self.store.apply_alert_changes(&changes, Utc::now() - RESOLVED_SHOWN).await {
            tracing::error!("cannot store alert changes (notifying all the same): {e}");
        }
        for t in transitions {
            let status = match t.change {
                Change::Firing | Change::Repeat => "firing",
                Change::Resolved => "resolved",
                Change::Pending | Change::Cancelled => continue,
            };
            let Some(rule) = rule_of(&t.rule) else { continue };
            let notice = notice(&rule, &t, status);
            tracing::info!(rule = %t.rule, hostname = %t.hostname, process = %t.process, status, "alert");
            let now = Utc::now();
            let silenced = read(&self.silences).iter().any(|s| s.covers(&t.rule, &t.hostname, now));
            for name in &rule.rule.channels {
                let channel = self.channel(name);
                let delivery = Delivery {
                    store: self.store.clone(),
                    http: self.http.clone(),
                    channel: channel.clone(),
                    channel_name: name.clone(),
                    notices: vec![notice.clone()],
                    held: Vec::new(),
                    origin: self.origin(),
                };
                let quiet_until = channel.as_ref().and_then(|c| quiet_until(c, now));
                if silenced {
                    delivery.record(1, DeliveryResult::Silenced, None).await;
                } else if let Some(until) = quiet_until {
                    self.hold(name, &notice).await;
                    let why = format!(
                        "held for the channel's quiet hours until {}; sent in one summary then",
                        until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    );
                    delivery.record(1, DeliveryResult::Silenced, Some(why)).await;
                } else {
                    tokio::spawn(delivery.run());
                }
            }
        }
    }
}

/// The next glance of `glances`, or never when there is no stream to read.
async fn next_glance(
    glances: &mut Option<tokio::sync::broadcast::Receiver<Arc<crate::hub::Glance>>>,
) -> Result<Arc<crate::hub::Glance>, tokio::sync::broadcast::error::RecvError> {
    match glances {
        Some(glances) => glances.recv().await,
        None => std::future::pending().await,
    }
}

/// When the quiet hours of `channel` that hold at `now` end; `None` outside them.
fn quiet_until(channel: &AlertChannel, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // Checked when the channel was stored; one that no longer reads (a time zone gone
    // from the system's database) holds nothing back.
    channel.quiet_hours.as_ref()?.compile().ok()?.until(now)
}

/// A held notification as stored (`alert_held.body`).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredNotice {
    status: String,
    rule: String,
    metric: Metric,
    hostname: String,
    process: String,
    severity: Severity,
    summary: String,
    value: f64,
    starts_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
}

impl StoredNotice {
    fn of(n: &Notice) -> StoredNotice {
        StoredNotice {
            status: n.status.into(),
            rule: n.rule.clone(),
            metric: n.metric,
            hostname: n.hostname.clone(),
            process: n.process.clone(),
            severity: n.severity,
            summary: n.summary.clone(),
            value: n.value,
            starts_at: n.starts_at,
            ends_at: n.ends_at,
        }
    }

    fn notice(self) -> Notice {
        Notice {
            status: if self.status == "resolved" { "resolved" } else { "firing" },
            rule: self.rule,
            metric: self.metric,
            hostname: self.hostname,
            process: self.process,
            severity: self.severity,
            summary: self.summary,
            value: self.value,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
        }
    }
}

impl Alerts {
    /// Stores a notification held back by `channel`'s quiet hours.
    async fn hold(&self, channel: &str, notice: &Notice) {
        let body = match serde_json::to_string(&StoredNotice::of(notice)) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!("cannot hold a notification: {e}");
                return;
            }
        };
        match self.store.hold_notice(channel, &body).await {
            Ok(id) => self.held.lock().await.entry(channel.to_owned()).or_default().push((id, notice.clone())),
            Err(e) => tracing::error!(channel, "cannot store a notification held through quiet hours: {e}"),
        }
    }

    /// Reads the held notifications back after a start.
    async fn restore_held(&self) -> Result<(), StoreError> {
        let mut held = self.held.lock().await;
        for (id, channel, body) in self.store.held_notices().await? {
            match serde_json::from_str::<StoredNotice>(&body) {
                Ok(n) => held.entry(channel).or_default().push((id, n.notice())),
                Err(e) => tracing::warn!(id, "a held notification cannot be read; dropped: {e}"),
            }
        }
        Ok(())
    }

    /// Sends each channel whose quiet hours are over one summary of what they held.
    async fn release_quiet(&self, now: DateTime<Utc>) {
        let mut held = self.held.lock().await;
        if held.is_empty() {
            return;
        }
        let mut gone = Vec::new();
        let names: Vec<String> = held.keys().cloned().collect();
        for name in names {
            let channel = self.channel(&name);
            if channel.as_ref().is_some_and(|c| quiet_until(c, now).is_some()) {
                continue;
            }
            let Some(batch) = held.remove(&name) else { continue };
            let Some(channel) = channel else {
                tracing::warn!(channel = %name, "the channel of {} held notifications is gone; dropped", batch.len());
                gone.extend(batch.iter().map(|(id, _)| *id));
                continue;
            };
            let (ids, notices): (Vec<i64>, Vec<Notice>) = batch.into_iter().unzip();
            tracing::info!(channel = %name, held = notices.len(), "quiet hours over: sending their summary");
            let delivery = Delivery {
                store: self.store.clone(),
                http: self.http.clone(),
                channel: Some(channel),
                channel_name: name,
                notices,
                held: ids,
                origin: self.origin(),
            };
            tokio::spawn(delivery.run());
        }
        drop(held);
        if !gone.is_empty()
            && let Err(e) = self.store.release_held(&gone).await
        {
            tracing::warn!("cannot forget held notifications: {e}");
        }
    }
}

enum Reload {
    Store(StoreError),
    Invalid { what: &'static str, name: String, error: Invalid },
}

/// What channels are told of a transition.
fn notice(rule: &CompiledRule, t: &Transition, status: &'static str) -> Notice {
    Notice {
        status,
        rule: t.rule.clone(),
        metric: rule.rule.metric,
        hostname: t.hostname.clone(),
        process: t.process.clone(),
        severity: rule.rule.severity,
        summary: summary(rule, t, status),
        value: t.value,
        starts_at: DateTime::from_timestamp_millis(t.since_ms).unwrap_or_default(),
        ends_at: (status == "resolved").then(|| DateTime::from_timestamp_millis(t.at_ms).unwrap_or_default()),
    }
}

/// The one-line summary of an alert.
fn summary(rule: &CompiledRule, t: &Transition, status: &str) -> String {
    let host = &t.hostname;
    let value = notify::format_value(t.value);
    let what = match rule.rule.metric {
        Metric::HostOffline => format!("{host} sent no snapshot for {value} s"),
        Metric::ProcessAbsent => format!("no process matches `{}` on {host}", t.process),
        Metric::HostNewListeningPort => format!("new listening {} on {host}", t.process),
        Metric::PortListening => {
            let port = rule.port.unwrap_or(0);
            if t.value > 0.0 {
                format!("port {port} is listened on on {host}")
            } else {
                format!("nothing listens on port {port} on {host}")
            }
        }
        metric => {
            let subject = if t.process.is_empty() { host.clone() } else { format!("{} on {host}", t.process) };
            format!(
                "{} of {subject} is {value} ({} {})",
                metric.as_str(),
                rule.op.as_str(),
                notify::format_value(rule.threshold)
            )
        }
    };
    if status == "resolved" { format!("resolved: {what}") } else { what }
}

/// One message to one channel (a notification, or the summary of those held through
/// quiet hours), tried until delivered or out of attempts.
struct Delivery {
    store: Store,
    http: reqwest::Client,
    channel: Option<AlertChannel>,
    channel_name: String,
    /// One notice, or the held ones of a summary.
    notices: Vec<Notice>,
    /// The stored ids of the held notices this summary carries, forgotten once it was
    /// delivered or failed its last attempt.
    held: Vec<i64>,
    origin: Origin,
}

impl Delivery {
    async fn run(self) {
        self.attempts().await;
        if !self.held.is_empty()
            && let Err(e) = self.store.release_held(&self.held).await
        {
            tracing::warn!("cannot forget held notifications: {e}");
        }
    }

    async fn attempts(&self) {
        let Some(channel) = &self.channel else {
            self.record(1, DeliveryResult::Failed, Some(format!("there is no channel `{}`", self.channel_name))).await;
            return;
        };
        for attempt in 1..=RETRY_AFTER.len() as u32 + 1 {
            match notify::send(&self.http, channel, &self.notices, &self.origin).await {
                Ok(()) => {
                    self.record(attempt, DeliveryResult::Delivered, None).await;
                    return;
                }
                Err(why) => {
                    tracing::warn!(channel = %channel.name, attempt, "notification failed: {why}");
                    self.record(attempt, DeliveryResult::Failed, Some(why)).await;
                }
            }
            if let Some(wait) = RETRY_AFTER.get(attempt as usize - 1) {
                tokio::time::sleep(*wait).await;
            }
        }
    }

    async fn record(&self, attempt: u32, result: DeliveryResult, error: Option<String>) {
        // A summary is recorded as such, without one alert's rule and host.
        let (rule, hostname, process, status) = match self.notices.as_slice() {
            [n] if self.held.is_empty() => (n.rule.clone(), n.hostname.clone(), n.process.clone(), n.status.to_owned()),
            _ => (String::new(), String::new(), String::new(), "summary".to_owned()),
        };
        let record =
            NewDelivery { channel: self.channel_name.clone(), rule, hostname, process, status, attempt, result, error };
        if let Err(e) = self.store.record_delivery(&record).await {
            tracing::warn!("cannot record a notification attempt: {e}");
        }
    }
}
