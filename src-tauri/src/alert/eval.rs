//! Evaluation: rules against each snapshot as it is published, and the state of every
//! (rule, host, process) that is pending or firing.
//!
//! [`Engine`] is plain data with no I/O: the collector's alert task owns one, feeds it
//! every published snapshot ([`Engine::snapshot`]) and a tick a second
//! ([`Engine::tick`], which is what notices a host that sends nothing), and turns the
//! [`Transition`]s it returns into stored state and notifications. It is loaded back
//! from the stored state at start ([`Engine::restore`]), so a restart neither fires
//! again what was firing nor forgets what was pending.
//!
//! Cost per snapshot: for each rule that watches the host, one figure read from the
//! snapshot, or the processes its filter matches. Filters are not run per rule: the
//! distinct filters of all rules ([`Plan`]) are run once per process, and only for the
//! processes that changed since the host's previous snapshot. Each host keeps which
//! filters each of its processes matched ([`Matches`]); a process whose fields are all
//! as before keeps its answers, one that only moved its figures (CPU, memory, status)
//! is asked again only by the filters that read figures, and a new process by all of
//! them. A fleet's processes mostly sleep, and most filters name processes
//! (`name:nginx`), so a steady host costs one comparison per process. Nothing is
//! allocated for a process unless it starts to be pending; lookups go by the rule's
//! name and the pid. Only transitions (pending, firing, repeated, resolved) leave the
//! engine, and only they are written.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::rule::{Aggregate, CompiledRule, Metric};
use super::status::{Alert, AlertState};
#[cfg(test)]
use crate::model::FilesystemSample;
use crate::model::{ListeningPort, ProcessSample, Snapshot};

/// How long a silent host's cached filter answers are kept: past this its next
/// snapshot is matched afresh, and the snapshot they were for is let go.
const MATCHES_KEPT_MS: i64 = 10 * 60 * 1000;

/// Which instance of a rule on a host an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// The host, or the rule's processes taken together.
    Whole,
    /// One process (per-process measures).
    Pid(u32),
    /// One port (`host.new_listening_port`).
    Port(u16),
    /// One mount point (`host.disk_percent`), by a hash of its path: a key stays small
    /// and `Copy`, and the path itself is in the entry's label.
    Mount(u64),
}

impl Key {
    /// The key of a stored `process` label: `name (pid)` is one process.
    pub fn from_label(label: &str) -> Key {
        if let Some(mount) = label.strip_prefix("mount ") {
            return Key::mount(mount);
        }
        if let Some(port) =
            label.strip_prefix("port ").and_then(|rest| rest.split(' ').next()).and_then(|p| p.parse().ok())
        {
            return Key::Port(port);
        }
        label
            .strip_suffix(')')
            .and_then(|l| l.rsplit_once(" ("))
            .and_then(|(_, pid)| pid.parse().ok())
            .map_or(Key::Whole, Key::Pid)
    }
}

impl Key {
    /// The key of a mount point: FNV-1a of its path, the same in every run (restored
    /// state finds its entry again).
    pub fn mount(path: &str) -> Key {
        let hash =
            path.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        Key::Mount(hash)
    }
}

/// Where an alert is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The condition holds, not yet for `for_secs`.
    Pending,
    /// Fired.
    Firing,
}

/// One (rule, host, process) that is pending or firing.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Pending or firing.
    pub phase: Phase,
    /// When the condition started to hold (pending), or when it fired.
    pub since_ms: i64,
    /// When people were last told (firing only).
    pub notified_ms: i64,
    /// The newest value.
    pub value: f64,
    /// The `process` label: `""` for a host measure, the filter for processes taken
    /// together, `name (pid)` for one process.
    pub label: String,
    /// The evaluation that last saw it (per-process entries not seen are gone).
    seen: u64,
}

/// What changed, for the store and the channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Started to hold; fires after `for_secs` if it keeps holding.
    Pending,
    /// Stopped holding before it fired: nothing to tell.
    Cancelled,
    /// Fired: tell the channels.
    Firing,
    /// Still firing after `repeat_secs`: tell them again.
    Repeat,
    /// Resolved: tell them it is over.
    Resolved,
}

/// One change of one (rule, host, process).
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    /// The rule's name.
    pub rule: String,
    /// The host.
    pub hostname: String,
    /// The `process` label (see [`Entry::label`]).
    pub process: String,
    /// What happened.
    pub change: Change,
    /// The value that caused it (for `host.offline`, seconds since the last snapshot).
    pub value: f64,
    /// When it started to hold (pending) or fired.
    pub since_ms: i64,
    /// When this happened.
    pub at_ms: i64,
}

#[derive(Debug, Default)]
struct Host {
    last_seen_ms: i64,
    /// Per rule name.
    alerts: HashMap<String, HashMap<Key, Entry>>,
    /// Which filters the processes of the host's previous snapshot matched.
    matches: Option<Matches>,
    /// The network error counters (in and out together) of the host's previous
    /// snapshot and when it was taken (ms): `host.net_errors_per_sec` is their rate.
    net_errors: Option<(u64, i64)>,
    /// The listening sockets (port, process name) of the host's previous snapshot,
    /// while a `host.new_listening_port` rule watches it.
    listening: Option<HashSet<(u16, String)>>,
}

/// The distinct process filters of a set of rules, each run once per process.
#[derive(Debug, Default)]
struct Plan {
    /// The rules it was made for (compared by pointer: the service replaces the set
    /// whole when a rule changes, and holding them keeps a pointer from being reused).
    rules: Vec<Arc<CompiledRule>>,
    /// Per rule, the index of its filter.
    filter_of: Vec<Option<usize>>,
    /// Per distinct filter: a rule that holds it compiled, and whether it reads figures.
    filters: Vec<(usize, bool)>,
    /// 64-bit words of answers per process (one bit a filter).
    words: usize,
    /// Tells apart the plans an engine has made, so that answers cached under an
    /// earlier one are not read under this one.
    id: u64,
}

impl Plan {
    fn new(rules: &Rules, id: u64) -> Plan {
        let mut by_text: HashMap<&str, usize> = HashMap::new();
        let mut filters = Vec::new();
        let filter_of = rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (Some(query), Some(text)) = (&r.query, &r.rule.process) else { return None };
                Some(*by_text.entry(text.as_str()).or_insert_with(|| {
                    filters.push((i, query.reads_figures()));
                    filters.len() - 1
                }))
            })
            .collect();
        let words = filters.len().div_ceil(64);
        Plan { rules: rules.to_vec(), filter_of, filters, words, id }
    }

    fn is_for(&self, rules: &Rules) -> bool {
        self.rules.len() == rules.len() && self.rules.iter().zip(rules).all(|(a, b)| Arc::ptr_eq(a, b))
    }

    fn matches(&self, rules: &Rules, filter: usize, p: &ProcessSample) -> bool {
        let (rule, _) = self.filters[filter];
        rules[rule].query.as_ref().is_some_and(|q| q.matches(p))
    }
}

/// One host's answers: for each process of `snapshot`, in order, `words` words with a
/// bit per filter of the plan `plan` (filters of rules that do not watch the host are
/// never asked and stay 0).
#[derive(Debug)]
struct Matches {
    plan: u64,
    snapshot: Arc<Snapshot>,
    bits: Vec<u64>,
}

/// What a process is, as opposed to its figures: a filter that reads no figure
/// answers the same for two processes alike in these.
fn same_identity(a: &ProcessSample, b: &ProcessSample) -> bool {
    a.pid == b.pid
        && a.start_time == b.start_time
        && a.ppid == b.ppid
        && a.kernel_thread == b.kernel_thread
        && a.name == b.name
        && a.user == b.user
        && a.cmd == b.cmd
}

type ProcessId = (u32, Option<DateTime<Utc>>);

/// How far from its place in the previous list a process is looked for before a map
/// of that list is made (see `match_processes`).
const NEAR: isize = 4;

/// Processes found near their place in neither list that are answered afresh before
/// a map of the previous list is made.
const MISSES_BEFORE_MAP: usize = 4;

/// The evaluation state of every host.
#[derive(Debug, Default)]
pub struct Engine {
    hosts: HashMap<String, Host>,
    generation: u64,
    plan: Plan,
    /// Per filter, the indexes of the processes it matched in the snapshot at hand.
    matched: Vec<Vec<u32>>,
    /// Per filter, whether a rule watching the host at hand uses it.
    asked: Vec<bool>,
    /// A spare answer buffer (the one a host's snapshot replaced), to fill next.
    spare: Vec<u64>,
    /// Whether `host.offline` is this engine's to fire and resolve. Collectors sharing
    /// one database all see every host: only one of them (the maintenance leader) may
    /// say a host went silent, or each would notify it. See [`Engine::own_offline`].
    not_offline_owner: bool,
    /// Tests: ask every filter of every process each time, as without the cache.
    #[cfg(test)]
    uncached: bool,
    /// Tests: how many times a filter was asked about a process.
    #[cfg(test)]
    asks: u64,
}

/// Rules as the engine takes them.
pub type Rules = [Arc<CompiledRule>];

impl Engine {
    /// An engine that knows nothing yet.
    pub fn new() -> Engine {
        Engine::default()
    }

    /// Remembers a host seen at `last_seen_ms` (hosts stored before a restart, so that
    /// one that never comes back still goes offline).
    pub fn know_host(&mut self, hostname: &str, last_seen_ms: i64) {
        let host = self.hosts.entry(hostname.to_owned()).or_default();
        host.last_seen_ms = host.last_seen_ms.max(last_seen_ms);
    }

    /// Makes `host.offline` this engine's (the default) or another's. Giving it up drops
    /// this engine's `host.offline` alerts without a word (their stored state is the
    /// new owner's); taking it up, restore the stored ones with [`Engine::restore`].
    pub fn own_offline(&mut self, rules: &Rules, owner: bool) {
        self.not_offline_owner = !owner;
        if owner {
            return;
        }
        for rule in rules.iter().filter(|r| r.rule.metric == Metric::HostOffline) {
            for host in self.hosts.values_mut() {
                host.alerts.remove(&rule.rule.name);
            }
        }
    }

    /// Whether `host.offline` is this engine's.
    pub fn owns_offline(&self) -> bool {
        !self.not_offline_owner
    }

    /// A host spoke at `seen_ms` through another collector, which evaluates its
    /// snapshot: only `host.offline`, this engine's when it owns it, is resolved here.
    pub fn host_spoke(&mut self, rules: &Rules, hostname: &str, seen_ms: i64) -> Vec<Transition> {
        self.know_host(hostname, seen_ms);
        let mut out = Vec::new();
        if self.not_offline_owner {
            return out;
        }
        let Some(host) = self.hosts.get_mut(hostname) else { return out };
        for rule in rules.iter().filter(|r| r.rule.metric == Metric::HostOffline) {
            if let Some(entries) = host.alerts.get_mut(&rule.rule.name)
                && let Some(e) = entries.remove(&Key::Whole)
                && e.phase == Phase::Firing
            {
                out.push(transition(rule, hostname, &e, Change::Resolved, 0.0, seen_ms));
            }
        }
        out
    }

    /// Forgets a host (deleted).
    pub fn forget_host(&mut self, hostname: &str) {
        self.hosts.remove(hostname);
    }

    /// Puts back a stored alert (pending or firing; resolved ones are over) last
    /// notified at `notified_ms`.
    pub fn restore(&mut self, stored: &Alert, notified_ms: i64) {
        let phase = match stored.state {
            AlertState::Pending => Phase::Pending,
            AlertState::Firing => Phase::Firing,
            AlertState::Resolved => return,
        };
        let host = self.hosts.entry(stored.hostname.clone()).or_default();
        let entry = Entry {
            phase,
            since_ms: stored.since.timestamp_millis(),
            notified_ms,
            value: stored.value,
            label: stored.process.clone(),
            seen: 0,
        };
        host.alerts.entry(stored.rule.clone()).or_default().insert(Key::from_label(&stored.process), entry);
    }

    /// Drops the state of rules not in `rules` (deleted ones), and returns what it
    /// dropped as (rule, host, process).
    pub fn retain_rules(&mut self, rules: &Rules) -> Vec<(String, String, String)> {
        let mut dropped = Vec::new();
        for (hostname, host) in &mut self.hosts {
            host.alerts.retain(|name, entries| {
                let keep = rules.iter().any(|r| r.rule.name == *name && r.watches(hostname));
                if !keep {
                    dropped.extend(entries.values().map(|e| (name.clone(), hostname.clone(), e.label.clone())));
                }
                keep
            });
        }
        dropped
    }

    /// Every pending or firing entry, as (rule, host, entry).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str, &Entry)> {
        self.hosts.iter().flat_map(|(h, host)| {
            host.alerts.iter().flat_map(move |(r, es)| es.values().map(move |e| (r.as_str(), h.as_str(), e)))
        })
    }

    /// Evaluates `rules` against a snapshot of its host received at `now_ms`. The
    /// snapshot is kept (shared, not copied) until the host's next one, to tell which
    /// processes changed.
    pub fn snapshot(&mut self, rules: &Rules, snapshot: &Arc<Snapshot>, now_ms: i64) -> Vec<Transition> {
        self.generation += 1;
        let generation = self.generation;
        let hostname = snapshot.host.hostname.as_str();
        if !self.plan.is_for(rules) {
            self.plan = Plan::new(rules, self.plan.id + 1);
            self.matched.resize_with(self.plan.filters.len(), Vec::new);
        }
        // Looked up before inserting: no allocation for a host already known.
        if !self.hosts.contains_key(hostname) {
            self.hosts.insert(hostname.to_owned(), Host::default());
        }
        let Some(host) = self.hosts.get_mut(hostname) else { return Vec::new() };
        host.last_seen_ms = host.last_seen_ms.max(now_ms);
        let errors = snapshot
            .network
            .total
            .as_ref()
            .map(|t| (t.errors_in.saturating_add(t.errors_out), snapshot.taken_at.timestamp_millis()));
        // A rate needs two readings, the second later; counters that went down (the
        // host rebooted) give none this time.
        let net_errors_per_sec = match (host.net_errors, errors) {
            (Some((before, then)), Some((now, at))) if at > then && now >= before => {
                Some((now - before) as f64 * 1000.0 / (at - then) as f64)
            }
            _ => None,
        };
        if errors.is_some() {
            host.net_errors = errors;
        }
        let plan = &self.plan;
        self.asked.clear();
        self.asked.resize(plan.filters.len(), false);
        for (i, rule) in rules.iter().enumerate() {
            if let Some(f) = plan.filter_of[i]
                && rule.watches(hostname)
            {
                self.asked[f] = true;
            }
        }
        if self.asked.iter().any(|a| *a) {
            #[cfg(test)]
            if self.uncached {
                host.matches = None;
            }
            let matches = match_processes(plan, rules, &self.asked, host.matches.take(), snapshot, &mut self.spare);
            #[cfg(test)]
            {
                self.asks += ASKS.with(|a| a.replace(0));
            }
            collect_matched(plan, &matches, &mut self.matched);
            host.matches = Some(matches);
        } else {
            host.matches = None;
        }
        // Sockets listening now that the previous snapshot did not have; none on the
        // first snapshot seen (everything would be new).
        let watch_listening =
            rules.iter().any(|r| r.rule.metric == Metric::HostNewListeningPort && r.watches(hostname));
        let mut new_sockets: Vec<&ListeningPort> = Vec::new();
        if watch_listening {
            let key = |l: &ListeningPort| (l.port, l.process_name.clone().unwrap_or_default());
            let now: HashSet<(u16, String)> = snapshot.ports.listening.iter().map(key).collect();
            if let Some(before) = &host.listening {
                new_sockets = snapshot.ports.listening.iter().filter(|l| !before.contains(&key(l))).collect();
            }
            host.listening = Some(now);
        } else {
            host.listening = None;
        }
        let matched = &self.matched;
        let mut out = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            if !rule.watches(hostname) {
                continue;
            }
            let name = rule.rule.name.as_str();
            if !host.alerts.contains_key(name) {
                host.alerts.insert(name.to_owned(), HashMap::new());
            }
            let Some(entries) = host.alerts.get_mut(name) else { continue };
            let at = At { rule, hostname, now_ms, generation };
            let procs: &[u32] = plan.filter_of[i].map_or(&[], |f| &matched[f]);
            let matching = || procs.iter().filter_map(|j| snapshot.processes.get(*j as usize));
            match rule.rule.metric {
                Metric::HostOffline => {
                    if self.not_offline_owner {
                        continue;
                    }
                    if let Some(e) = entries.remove(&Key::Whole)
                        && e.phase == Phase::Firing
                    {
                        out.push(transition(rule, hostname, &e, Change::Resolved, 0.0, now_ms));
                    }
                }
                Metric::HostNewListeningPort => {
                    // With a filter, only the sockets of matching processes count.
                    let pids: Option<HashSet<u32>> = rule.query.as_ref().map(|_| matching().map(|p| p.pid).collect());
                    let counts =
                        |l: &ListeningPort| pids.as_ref().is_none_or(|s| l.pid.is_some_and(|pid| s.contains(&pid)));
                    // Resolved once the socket is gone, or `for_secs` after it fired.
                    let over: Vec<Key> = entries
                        .iter()
                        .filter(|(k, e)| {
                            let Key::Port(port) = k else { return true };
                            now_ms - e.since_ms >= rule.for_ms
                                || !snapshot.ports.listening.iter().any(|l| l.port == *port && counts(l))
                        })
                        .map(|(k, _)| *k)
                        .collect();
                    for key in over {
                        if let Some(e) = entries.remove(&key) {
                            out.push(transition(rule, hostname, &e, Change::Resolved, e.value, now_ms));
                        }
                    }
                    for l in new_sockets.iter().filter(|l| counts(l)) {
                        let key = Key::Port(l.port);
                        if entries.contains_key(&key) {
                            continue;
                        }
                        let e = Entry {
                            phase: Phase::Firing,
                            since_ms: now_ms,
                            notified_ms: now_ms,
                            value: f64::from(l.port),
                            label: port_label(l),
                            seen: generation,
                        };
                        out.push(transition(rule, hostname, &e, Change::Firing, e.value, now_ms));
                        entries.insert(key, e);
                    }
                }
                Metric::HostDiskPercent => {
                    // Each mount its own alert; a rule that names a mount watches that
                    // one only. A snapshot without filesystems (not measured) changes
                    // nothing; a mount gone from a measured one ends its alert.
                    let Some(filesystems) = snapshot.filesystems.as_ref() else { continue };
                    for f in filesystems.iter().filter(|f| rule.mount.as_deref().is_none_or(|m| m == f.mount_point)) {
                        let value = f.used_percent();
                        let label = || format!("mount {}", f.mount_point);
                        at.step(
                            entries,
                            Key::mount(&f.mount_point),
                            value,
                            rule.fires(value),
                            rule.clears(value),
                            &label,
                            &mut out,
                        );
                    }
                    at.end_unseen(entries, &mut out);
                }
                Metric::ProcessAbsent => {
                    let count = procs.len();
                    let absent = count == 0;
                    at.step(entries, Key::Whole, count as f64, absent, !absent, &|| filter_label(rule), &mut out);
                }
                Metric::ProcessCpuPercent | Metric::ProcessRssBytes if rule.rule.aggregate == Aggregate::Each => {
                    let cpu = rule.rule.metric == Metric::ProcessCpuPercent;
                    for p in matching() {
                        let value = if cpu { p.cpu_percent.map(f64::from) } else { p.rss_bytes.map(|b| b as f64) };
                        let Some(value) = value else { continue };
                        let label = || format!("{} ({})", p.name, p.pid);
                        at.step(
                            entries,
                            Key::Pid(p.pid),
                            value,
                            rule.fires(value),
                            rule.clears(value),
                            &label,
                            &mut out,
                        );
                    }
                    // Processes gone since: their alerts end with them.
                    at.end_unseen(entries, &mut out);
                }
                metric => {
                    let value = match metric {
                        Metric::ProcessCpuPercent => {
                            Some(matching().map(|p| p.cpu_percent.map_or(0.0, f64::from)).sum())
                        }
                        Metric::ProcessRssBytes => {
                            Some(matching().map(|p| p.rss_bytes.map_or(0.0, |b| b as f64)).sum())
                        }
                        Metric::ProcessCount => Some(procs.len() as f64),
                        Metric::PortListening => {
                            let port = rule.port.unwrap_or(0);
                            Some(if snapshot.ports.listening.iter().any(|l| l.port == port) { 1.0 } else { 0.0 })
                        }
                        Metric::HostNetErrorsPerSec => net_errors_per_sec,
                        Metric::HostTemperature => temperature(rule.sensor.as_deref(), snapshot),
                        _ => host_value(metric, snapshot),
                    };
                    // A figure the snapshot does not give changes nothing.
                    let Some(value) = value else { continue };
                    let label = || match (&rule.query, &rule.sensor) {
                        (Some(_), _) => filter_label(rule),
                        (None, Some(sensor)) => format!("sensor {sensor}"),
                        (None, None) => String::new(),
                    };
                    at.step(entries, Key::Whole, value, rule.fires(value), rule.clears(value), &label, &mut out);
                }
            }
        }
        out
    }

    /// What time alone changes: hosts silent for a `host.offline` rule's `for_secs`
    /// go offline, and firing alerts of silent hosts are repeated.
    pub fn tick(&mut self, rules: &Rules, now_ms: i64) -> Vec<Transition> {
        let mut out = Vec::new();
        for host in self.hosts.values_mut() {
            if host.matches.is_some() && now_ms - host.last_seen_ms > MATCHES_KEPT_MS {
                host.matches = None;
            }
        }
        // New listening ports resolve `for_secs` after they fired even when their host
        // sends nothing more.
        for rule in rules.iter().filter(|r| r.rule.metric == Metric::HostNewListeningPort && r.for_ms > 0) {
            for (hostname, host) in &mut self.hosts {
                let Some(entries) = host.alerts.get_mut(&rule.rule.name) else { continue };
                let over: Vec<Key> =
                    entries.iter().filter(|(_, e)| now_ms - e.since_ms >= rule.for_ms).map(|(k, _)| *k).collect();
                for key in over {
                    if let Some(e) = entries.remove(&key) {
                        out.push(transition(rule, hostname, &e, Change::Resolved, e.value, now_ms));
                    }
                }
            }
        }
        let offline = rules.iter().filter(|r| r.rule.metric == Metric::HostOffline && !self.not_offline_owner);
        for rule in offline {
            for (hostname, host) in &mut self.hosts {
                if !rule.watches(hostname) || host.last_seen_ms == 0 {
                    continue;
                }
                let silent_ms = now_ms - host.last_seen_ms;
                if silent_ms < rule.for_ms {
                    continue;
                }
                let value = silent_ms as f64 / 1000.0;
                let entries = host.alerts.entry(rule.rule.name.clone()).or_default();
                match entries.get_mut(&Key::Whole) {
                    None => {
                        let e = Entry {
                            phase: Phase::Firing,
                            since_ms: now_ms,
                            notified_ms: now_ms,
                            value,
                            label: String::new(),
                            seen: 0,
                        };
                        out.push(transition(rule, hostname, &e, Change::Firing, value, now_ms));
                        entries.insert(Key::Whole, e);
                    }
                    Some(e) => {
                        e.value = value;
                        if rule.repeat_ms > 0 && now_ms - e.notified_ms >= rule.repeat_ms {
                            e.notified_ms = now_ms;
                            out.push(transition(rule, hostname, e, Change::Repeat, value, now_ms));
                        }
                    }
                }
            }
        }
        out
    }
}

/// The `process` label of a new listening port: `port 8080 (nginx)`, or `port 8080`
/// when its process is not known.
fn port_label(l: &ListeningPort) -> String {
    match l.process_name.as_deref() {
        Some(name) if !name.is_empty() => format!("port {} ({name})", l.port),
        _ => format!("port {}", l.port),
    }
}

/// Which filters of `plan` each process of `snapshot` matches, asking only the filters
/// in `asked`, and only where `previous` (the host's answers for its previous
/// snapshot) does not already tell: a process found there unchanged keeps its answers,
/// one that only moved its figures is asked again by the filters that read figures.
/// `spare` is an answer buffer to fill; it gets the previous one back.
fn match_processes(
    plan: &Plan,
    rules: &Rules,
    asked: &[bool],
    previous: Option<Matches>,
    snapshot: &Arc<Snapshot>,
    spare: &mut Vec<u64>,
) -> Matches {
    let words = plan.words;
    let mut bits = std::mem::take(spare);
    bits.clear();
    bits.resize(snapshot.processes.len() * words, 0);
    let previous = previous.filter(|m| m.plan == plan.id);
    let before: &[ProcessSample] = previous.as_ref().map_or(&[], |m| &m.snapshot.processes);
    // Lists mostly keep their order between snapshots: the process at the same place
    // (shifted by what was added or removed before it) is tried first, then a few
    // places around it. A process found in neither is most often a new one: a map of
    // the previous list is made only once several missed (a list in another order),
    // and until then a miss is answered afresh, which is always right.
    let mut offset: isize = 0;
    let mut misses = 0;
    let mut by_id: Option<HashMap<ProcessId, usize>> = None;
    for (j, p) in snapshot.processes.iter().enumerate() {
        let row = &mut bits[j * words..(j + 1) * words];
        let place = j as isize + offset;
        let at = |k: isize| {
            usize::try_from(k)
                .ok()
                .filter(|k| before.get(*k).is_some_and(|o| o.pid == p.pid && o.start_time == p.start_time))
        };
        let guess = at(place).or_else(|| (1..=NEAR).find_map(|d| at(place + d).or_else(|| at(place - d))));
        let found = guess.or_else(|| {
            misses += 1;
            if before.is_empty() || (by_id.is_none() && misses <= MISSES_BEFORE_MAP) {
                return None;
            }
            let map = by_id
                .get_or_insert_with(|| before.iter().enumerate().map(|(k, o)| ((o.pid, o.start_time), k)).collect());
            map.get(&(p.pid, p.start_time)).copied()
        });
        let kept = match (found, &previous) {
            (Some(k), Some(m)) if same_identity(&before[k], p) => {
                offset = k as isize - j as isize;
                row.copy_from_slice(&m.bits[k * words..(k + 1) * words]);
                Some(before[k] == *p)
            }
            _ => None,
        };
        for (f, &(_, reads_figures)) in plan.filters.iter().enumerate() {
            let ask = asked[f]
                && match kept {
                    None => true,
                    Some(unchanged) => reads_figures && !unchanged,
                };
            if ask {
                #[cfg(test)]
                ASKS.with(|a| a.set(a.get() + 1));
                let bit = 1u64 << (f % 64);
                if plan.matches(rules, f, p) {
                    row[f / 64] |= bit;
                } else {
                    row[f / 64] &= !bit;
                }
            }
        }
    }
    if let Some(m) = previous {
        *spare = m.bits;
    }
    Matches { plan: plan.id, snapshot: Arc::clone(snapshot), bits }
}

#[cfg(test)]
thread_local! {
    static ASKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Fills `matched[f]` with the indexes of the processes that filter `f` matched.
fn collect_matched(plan: &Plan, matches: &Matches, matched: &mut [Vec<u32>]) {
    for list in matched.iter_mut() {
        list.clear();
    }
    if plan.words == 0 {
        return;
    }
    for (j, row) in matches.bits.chunks_exact(plan.words).enumerate() {
        for (w, word) in row.iter().enumerate() {
            let mut rest = *word;
            while rest != 0 {
                let f = w * 64 + rest.trailing_zeros() as usize;
                if let Some(list) = matched.get_mut(f) {
                    list.push(j as u32);
                }
                rest &= rest - 1;
            }
        }
    }
}

/// One rule on one host at one evaluation.
struct At<'a> {
    rule: &'a CompiledRule,
    hostname: &'a str,
    now_ms: i64,
    generation: u64,
}

impl At<'_> {
    /// One step of one entry's state machine.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        entries: &mut HashMap<Key, Entry>,
        key: Key,
        value: f64,
        holds: bool,
        clears: bool,
        label: &dyn Fn() -> String,
        out: &mut Vec<Transition>,
    ) {
        let At { rule, hostname, now_ms, generation } = *self;
        match entries.get_mut(&key) {
            None => {
                if !holds {
                    return;
                }
                let mut e = Entry {
                    phase: Phase::Pending,
                    since_ms: now_ms,
                    notified_ms: 0,
                    value,
                    label: label(),
                    seen: generation,
                };
                if rule.for_ms == 0 {
                    e.phase = Phase::Firing;
                    e.notified_ms = now_ms;
                    out.push(transition(rule, hostname, &e, Change::Firing, value, now_ms));
                } else {
                    out.push(transition(rule, hostname, &e, Change::Pending, value, now_ms));
                }
                entries.insert(key, e);
            }
            Some(e) => {
                e.seen = generation;
                e.value = value;
                match e.phase {
                    Phase::Pending if !holds => {
                        let e = entries.remove(&key);
                        if let Some(e) = e {
                            out.push(transition(rule, hostname, &e, Change::Cancelled, value, now_ms));
                        }
                    }
                    Phase::Pending => {
                        if now_ms - e.since_ms >= rule.for_ms {
                            e.phase = Phase::Firing;
                            e.since_ms = now_ms;
                            e.notified_ms = now_ms;
                            out.push(transition(rule, hostname, e, Change::Firing, value, now_ms));
                        }
                    }
                    Phase::Firing if clears => {
                        if let Some(e) = entries.remove(&key) {
                            out.push(transition(rule, hostname, &e, Change::Resolved, value, now_ms));
                        }
                    }
                    Phase::Firing => {
                        if rule.repeat_ms > 0 && now_ms - e.notified_ms >= rule.repeat_ms {
                            e.notified_ms = now_ms;
                            out.push(transition(rule, hostname, e, Change::Repeat, value, now_ms));
                        }
                    }
                }
            }
        }
    }

    /// Ends the entries this evaluation did not see: a mount gone from the host, a
    /// process that exited. Their alerts end with them (resolved if they had fired,
    /// cancelled if still pending).
    fn end_unseen(&self, entries: &mut HashMap<Key, Entry>, out: &mut Vec<Transition>) {
        let At { rule, hostname, now_ms, generation } = *self;
        entries.retain(|_, e| {
            if e.seen == generation {
                return true;
            }
            let change = if e.phase == Phase::Firing { Change::Resolved } else { Change::Cancelled };
            out.push(transition(rule, hostname, e, change, e.value, now_ms));
            false
        });
    }
}

fn transition(rule: &CompiledRule, hostname: &str, e: &Entry, change: Change, value: f64, now_ms: i64) -> Transition {
    Transition {
        rule: rule.rule.name.clone(),
        hostname: hostname.to_owned(),
        process: e.label.clone(),
        change,
        value,
        since_ms: e.since_ms,
        at_ms: now_ms,
    }
}

fn filter_label(rule: &CompiledRule) -> String {
    rule.rule.process.clone().unwrap_or_default()
}

/// The temperature of the sensor named `sensor`, or of the hottest one; `None` when the
/// snapshot has no such sensor (or none at all).
fn temperature(sensor: Option<&str>, s: &Snapshot) -> Option<f64> {
    let sensors = s.temperatures.as_ref()?.iter();
    match sensor {
        Some(name) => sensors.filter(|t| t.name == name).map(|t| t.celsius).next(),
        None => s.hottest_celsius(),
    }
}

/// A host figure of the snapshot, if it gives it.
fn host_value(metric: Metric, s: &Snapshot) -> Option<f64> {
    let percent = |used: u64, total: u64| if total == 0 { 0.0 } else { used as f64 * 100.0 / total as f64 };
    match metric {
        Metric::HostCpuPercent => Some(f64::from(s.cpu.total_percent)),
        Metric::HostMemoryPercent => s.memory.total_bytes.filter(|t| *t > 0).map(|t| percent(s.memory.used_bytes, t)),
        Metric::HostSwapPercent => s.memory.swap_total_bytes.map(|t| percent(s.memory.swap_used_bytes.unwrap_or(0), t)),
        Metric::HostLoad1 => s.cpu.load_average.map(|l| l.one),
        Metric::HostNetSentBytesPerSec => s.network.total.as_ref().map(|t| t.sent_bytes_per_sec),
        Metric::HostNetReceivedBytesPerSec => s.network.total.as_ref().map(|t| t.received_bytes_per_sec),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::alert::rule::AlertRule;
    use crate::sample::{Sampler, SamplerOptions};

    fn rules(json: serde_json::Value) -> Vec<Arc<CompiledRule>> {
        let rule: AlertRule = serde_json::from_value(json).unwrap();
        vec![Arc::new(rule.compile().unwrap())]
    }

    fn snapshot() -> Snapshot {
        let mut s = Sampler::new(SamplerOptions::default()).sample();
        s.host.hostname = "h".into();
        s
    }

    fn changes(t: &[Transition]) -> Vec<Change> {
        t.iter().map(|t| t.change).collect()
    }

    #[test]
    fn disk_percent_fires_per_mount_from_a_real_snapshot() {
        // This machine's own filesystems, as the sampler reads them.
        let s = Arc::new(snapshot());
        let filesystems = s.filesystems.clone().expect("filesystems are measured here");
        let root = filesystems.iter().find(|f| f.mount_point == "/").expect("a root filesystem");
        let real = root.used_percent();
        assert!(real > 0.0, "{root:?}");
        // A threshold below the real figure fires, for `/` and for every mount with `*`.
        let threshold = (real - 0.5).max(0.0);
        let named = rules(serde_json::json!({
            "name": "root full", "metric": "host.disk_percent", "mount": "/", "threshold": threshold,
        }));
        let mut engine = Engine::new();
        let t = engine.snapshot(&named, &s, 1_000);
        assert_eq!(changes(&t), [Change::Firing]);
        assert_eq!(t[0].process, "mount /");
        assert!((t[0].value - real).abs() < 1e-9, "{} vs {real}", t[0].value);
        // Restored from its label, it is the same instance: no second firing.
        let mut restored = Engine::new();
        let stored = crate::alert::status::Alert {
            state: crate::alert::status::AlertState::Firing,
            rule: "root full".into(),
            hostname: "h".into(),
            process: "mount /".into(),
            severity: crate::alert::rule::Severity::Warning,
            value: real,
            since: DateTime::from_timestamp_millis(1_000).unwrap(),
            resolved_at: None,
        };
        restored.restore(&stored, 1_000);
        assert!(restored.snapshot(&named, &s, 2_000).is_empty());
        // Above the real figure: nothing.
        let above = rules(serde_json::json!({
            "name": "root full", "metric": "host.disk_percent", "mount": "/", "threshold": real + 1.0,
        }));
        assert!(Engine::new().snapshot(&above, &s, 1_000).is_empty());
        // `*`: one alert per mount; a mount gone resolves its own.
        let every = rules(serde_json::json!({
            "name": "any full", "metric": "host.disk_percent", "threshold": 0,
        }));
        let mut engine = Engine::new();
        let t = engine.snapshot(&every, &s, 1_000);
        let used: Vec<&FilesystemSample> = filesystems.iter().filter(|f| f.used_bytes > 0).collect();
        assert_eq!(t.len(), used.len(), "{t:?}");
        let mut fewer = (*s).clone();
        fewer.filesystems = Some(filesystems.iter().filter(|f| f.mount_point != "/").cloned().collect());
        let t = engine.snapshot(&every, &Arc::new(fewer), 2_000);
        assert_eq!(changes(&t), [Change::Resolved]);
        assert_eq!(t[0].process, "mount /");
    }

    #[test]
    fn temperature_is_the_hottest_sensor_or_the_named_one() {
        let mut s = snapshot();
        let sensor = |name: &str, celsius: f64| crate::model::TemperatureSample {
            name: name.into(),
            celsius,
            high_celsius: None,
            critical_celsius: None,
        };
        s.temperatures = Some(vec![sensor("cpu", 71.0), sensor("nvme", 45.0)]);
        let s = Arc::new(s);
        let hottest = rules(serde_json::json!({"name": "hot", "metric": "host.temperature", "threshold": 70}));
        let t = Engine::new().snapshot(&hottest, &s, 1_000);
        assert_eq!((changes(&t), t[0].value, t[0].process.as_str()), (vec![Change::Firing], 71.0, ""));
        let nvme = rules(serde_json::json!({
            "name": "hot", "metric": "host.temperature", "sensor": "nvme", "threshold": 70,
        }));
        assert!(Engine::new().snapshot(&nvme, &s, 1_000).is_empty());
        let nvme = rules(serde_json::json!({
            "name": "hot", "metric": "host.temperature", "sensor": "nvme", "threshold": 40,
        }));
        let t = Engine::new().snapshot(&nvme, &s, 1_000);
        assert_eq!((t[0].value, t[0].process.as_str()), (45.0, "sensor nvme"));
        // No sensors at all: nothing to compare, nothing fires.
        let mut none = (*s).clone();
        none.temperatures = Some(Vec::new());
        assert!(Engine::new().snapshot(&hottest, &Arc::new(none), 1_000).is_empty());
    }

    #[test]
    fn a_level_fires_after_for_secs_stays_between_clear_and_threshold_and_resolves_below_clear() {
        let rules = rules(serde_json::json!({
            "name": "cpu", "metric": "host.cpu_percent", "threshold": 90, "clear": 70, "for_secs": 10
        }));
        let mut engine = Engine::new();
        let mut s = snapshot();
        let mut at = |cpu: f32, ms: i64, engine: &mut Engine| {
            s.cpu.total_percent = cpu;
            changes(&engine.snapshot(&rules, &Arc::new(s.clone()), ms))
        };
        assert_eq!(at(95.0, 1_000, &mut engine), [Change::Pending]);
        assert_eq!(at(95.0, 5_000, &mut engine), []);
        assert_eq!(at(50.0, 6_000, &mut engine), [Change::Cancelled], "it did not hold for 10 s");
        assert_eq!(at(95.0, 7_000, &mut engine), [Change::Pending]);
        assert_eq!(at(95.0, 17_000, &mut engine), [Change::Firing]);
        for (i, cpu) in [85.0, 75.0, 91.0, 71.0].into_iter().enumerate() {
            assert_eq!(at(cpu, 18_000 + i as i64 * 1000, &mut engine), [], "{cpu} is between clear and threshold");
        }
        assert_eq!(at(69.0, 30_000, &mut engine), [Change::Resolved]);
    }

    fn listening(port: u16, pid: u32, name: &str) -> ListeningPort {
        ListeningPort {
            protocol: crate::model::Protocol::Tcp,
            address: std::net::Ipv4Addr::UNSPECIFIED.into(),
            port,
            pid: Some(pid),
            process_name: Some(name.into()),
        }
    }

    #[test]
    fn a_new_listening_port_fires_once_and_resolves_when_gone_or_after_for_secs() {
        let rules = rules(serde_json::json!({"name": "new port", "metric": "host.new_listening_port", "for_secs": 60}));
        let mut engine = Engine::new();
        let mut s = snapshot();
        s.ports.listening = vec![listening(22, 1, "sshd")];
        let mut at = |ports: Vec<ListeningPort>, ms: i64, engine: &mut Engine| {
            s.ports.listening = ports;
            engine.snapshot(&rules, &Arc::new(s.clone()), ms)
        };
        assert!(at(vec![listening(22, 1, "sshd")], 1_000, &mut engine).is_empty(), "the first snapshot is no news");
        let t = at(vec![listening(22, 1, "sshd"), listening(8080, 7, "nc")], 2_000, &mut engine);
        assert_eq!(changes(&t), [Change::Firing]);
        assert_eq!((t[0].process.as_str(), t[0].value), ("port 8080 (nc)", 8080.0));
        assert!(at(vec![listening(22, 1, "sshd"), listening(8080, 7, "nc")], 3_000, &mut engine).is_empty(), "once");
        let t = at(vec![listening(22, 1, "sshd")], 4_000, &mut engine);
        assert_eq!(changes(&t), [Change::Resolved], "the socket is gone");
        // Back again: new again; then it stays, and resolves after for_secs.
        assert_eq!(changes(&at(vec![listening(8080, 8, "nc")], 5_000, &mut engine)), [Change::Firing]);
        assert!(engine.tick(&rules, 64_000).is_empty());
        assert_eq!(changes(&engine.tick(&rules, 65_000)), [Change::Resolved], "for_secs after it fired");
        assert!(at(vec![listening(8080, 8, "nc")], 66_000, &mut engine).is_empty(), "still there, not new");
        // Another process on the same port is a new socket.
        let t = at(vec![listening(8080, 9, "python3")], 67_000, &mut engine);
        assert_eq!(t.iter().map(|t| t.process.as_str()).collect::<Vec<_>>(), ["port 8080 (python3)"]);
        // Restored from its label after a restart, it keeps its port.
        assert_eq!(Key::from_label("port 8080 (python3)"), Key::Port(8080));
        assert_eq!(Key::from_label("port 443"), Key::Port(443));
        assert_eq!(Key::from_label("nginx (12)"), Key::Pid(12));
        assert_eq!(Key::from_label("mount /mnt/a (1)"), Key::mount("/mnt/a (1)"));
        assert_ne!(Key::mount("/"), Key::mount("/home"));
    }

    #[test]
    fn a_new_listening_port_with_for_secs_0_resolves_at_the_next_snapshot_and_follows_its_filter() {
        let rules = rules(serde_json::json!({
            "name": "new port", "metric": "host.new_listening_port", "process": "name:nc"
        }));
        let mut engine = Engine::new();
        let mut s = snapshot();
        let me = s.processes.first().cloned().unwrap();
        let mut nc = me.clone();
        nc.pid = 4_000_000;
        nc.name = "nc".into();
        let mut other = me.clone();
        other.pid = 4_000_001;
        other.name = "other".into();
        s.processes.extend([nc, other]);
        let mut at = |ports: Vec<ListeningPort>, ms: i64, engine: &mut Engine| {
            s.ports.listening = ports;
            changes(&engine.snapshot(&rules, &Arc::new(s.clone()), ms))
        };
        assert_eq!(at(vec![], 1_000, &mut engine), []);
        assert_eq!(at(vec![listening(9000, 4_000_001, "other")], 2_000, &mut engine), [], "not a matching process");
        let both = vec![listening(9000, 4_000_001, "other"), listening(9001, 4_000_000, "nc")];
        assert_eq!(at(both.clone(), 3_000, &mut engine), [Change::Firing]);
        assert_eq!(at(both, 4_000, &mut engine), [Change::Resolved], "for_secs 0: the next snapshot ends it");
        assert!(engine.tick(&rules, 100_000).is_empty());
    }

    #[test]
    fn a_new_listening_port_rule_takes_no_level_and_no_repeat() {
        let bad = |json: serde_json::Value| {
            let rule: AlertRule = serde_json::from_value(json).unwrap();
            rule.compile().unwrap_err().field
        };
        assert_eq!(
            bad(serde_json::json!({"name": "n", "metric": "host.new_listening_port", "threshold": 1})),
            "threshold"
        );
        assert_eq!(
            bad(serde_json::json!({"name": "n", "metric": "host.new_listening_port", "repeat_secs": 60})),
            "repeat_secs"
        );
        assert_eq!(
            bad(serde_json::json!({"name": "n", "metric": "host.new_listening_port", "process": "cpu>"})),
            "process"
        );
    }

    #[test]
    fn network_errors_are_a_rate_of_the_last_two_snapshots() {
        let rules = rules(serde_json::json!({"name": "errs", "metric": "host.net_errors_per_sec", "threshold": 5}));
        let mut engine = Engine::new();
        let mut s = snapshot();
        let start = s.taken_at;
        let mut at = |errors_in: u64, secs: i64, engine: &mut Engine| {
            let t = s.network.total.get_or_insert_with(Default::default);
            t.errors_in = errors_in;
            t.errors_out = 0;
            s.taken_at = start + chrono::TimeDelta::seconds(secs);
            engine.snapshot(&rules, &Arc::new(s.clone()), 1_000 + secs * 1000)
        };
        assert!(at(100, 0, &mut engine).is_empty(), "one reading is no rate");
        assert!(at(104, 1, &mut engine).is_empty(), "4 a second");
        let t = at(124, 3, &mut engine);
        assert_eq!(changes(&t), [Change::Firing]);
        assert_eq!(t[0].value, 10.0, "20 errors over 2 s");
        assert!(at(3, 4, &mut engine).is_empty(), "counters reset: no rate, no change");
        assert_eq!(changes(&at(4, 5, &mut engine)), [Change::Resolved]);
    }

    #[test]
    fn repeats_only_when_asked_and_offline_comes_from_the_tick() {
        let rules = rules(serde_json::json!({
            "name": "gone", "metric": "host.offline", "for_secs": 30, "repeat_secs": 60
        }));
        let mut engine = Engine::new();
        let s = snapshot();
        assert!(engine.snapshot(&rules, &Arc::new(s.clone()), 1_000).is_empty());
        assert!(engine.tick(&rules, 30_000).is_empty());
        assert_eq!(changes(&engine.tick(&rules, 31_000)), [Change::Firing]);
        assert!(engine.tick(&rules, 32_000).is_empty(), "once");
        assert!(engine.tick(&rules, 90_000).is_empty());
        assert_eq!(changes(&engine.tick(&rules, 91_000)), [Change::Repeat]);
        assert_eq!(changes(&engine.snapshot(&rules, &Arc::new(s.clone()), 92_000)), [Change::Resolved]);
        assert!(engine.tick(&rules, 93_000).is_empty());
    }

    #[test]
    fn only_the_owner_of_host_offline_fires_and_resolves_it() {
        let rules = rules(serde_json::json!({"name": "gone", "metric": "host.offline", "for_secs": 30}));
        let s = Arc::new(snapshot());
        let host = s.host.hostname.clone();
        // Another collector leads: this one sees the host speak and go silent, says nothing.
        let mut other = Engine::new();
        other.own_offline(&rules, false);
        assert!(other.snapshot(&rules, &s, 1_000).is_empty());
        assert!(other.tick(&rules, 40_000).is_empty(), "not this engine's to fire");
        assert!(other.snapshot(&rules, &s, 41_000).is_empty());

        // The leader hears of the host only through the other collector's snapshots.
        let mut leader = Engine::new();
        assert!(leader.host_spoke(&rules, &host, 1_000).is_empty());
        assert_eq!(changes(&leader.tick(&rules, 31_000)), [Change::Firing]);
        assert_eq!(changes(&leader.host_spoke(&rules, &host, 32_000)), [Change::Resolved]);
        assert!(leader.host_spoke(&rules, &host, 33_000).is_empty(), "once");

        // Giving the lead up drops what it fired, without a word; the next leader
        // restores it from the store.
        assert_eq!(changes(&leader.tick(&rules, 70_000)), [Change::Firing]);
        leader.own_offline(&rules, false);
        assert!(!leader.owns_offline());
        assert!(leader.entries().next().is_none());
        assert!(leader.host_spoke(&rules, &host, 71_000).is_empty());
    }

    #[test]
    fn per_process_alerts_follow_their_process_and_absence_is_a_condition() {
        let each = rules(serde_json::json!({
            "name": "busy", "metric": "process.cpu_percent", "process": "name:busy", "threshold": 50
        }));
        let absent = rules(serde_json::json!({
            "name": "gone", "metric": "process.absent", "process": "name:busy", "for_secs": 5
        }));
        let mut s = snapshot();
        let mut p = s.processes[0].clone();
        p.name = "busy".into();
        p.pid = 4_000_000;
        p.cpu_percent = Some(99.0);
        s.processes.push(p);
        let mut engine = Engine::new();
        let t = engine.snapshot(&each, &Arc::new(s.clone()), 1_000);
        assert_eq!(changes(&t), [Change::Firing]);
        assert_eq!(t[0].process, "busy (4000000)");
        assert!(engine.snapshot(&absent, &Arc::new(s.clone()), 1_000).is_empty());
        s.processes.pop();
        let t = engine.snapshot(&each, &Arc::new(s.clone()), 2_000);
        assert_eq!(changes(&t), [Change::Resolved], "the process went");
        assert_eq!(changes(&engine.snapshot(&absent, &Arc::new(s.clone()), 2_000)), [Change::Pending]);
        assert_eq!(changes(&engine.snapshot(&absent, &Arc::new(s.clone()), 7_000)), [Change::Firing]);
        assert_eq!(Key::from_label("busy (4000000)"), Key::Pid(4_000_000));
        assert_eq!(Key::from_label("name:busy"), Key::Whole);
    }

    #[test]
    fn restored_state_does_not_fire_again() {
        let rules = rules(serde_json::json!({"name": "cpu", "metric": "host.cpu_percent", "threshold": 10}));
        let mut engine = Engine::new();
        let stored = Alert {
            state: AlertState::Firing,
            rule: "cpu".into(),
            hostname: "h".into(),
            process: String::new(),
            severity: crate::alert::rule::Severity::Warning,
            value: 95.0,
            since: chrono::DateTime::from_timestamp_millis(1_000).unwrap(),
            resolved_at: None,
        };
        engine.restore(&stored, 1_000);
        let mut s = snapshot();
        s.cpu.total_percent = 95.0;
        assert!(engine.snapshot(&rules, &Arc::new(s.clone()), 2_000).is_empty());
        s.cpu.total_percent = 5.0;
        assert_eq!(changes(&engine.snapshot(&rules, &Arc::new(s.clone()), 3_000)), [Change::Resolved]);
    }

    fn process(pid: u32, name: &str, cpu: f32) -> crate::model::ProcessSample {
        let mut p = snapshot().processes[0].clone();
        p.pid = pid;
        p.name = name.into();
        p.cmd = format!("/usr/bin/{name} --serve");
        p.user = Some(if pid % 2 == 0 { "root" } else { "www" }.into());
        p.cpu_percent = Some(cpu);
        p.rss_bytes = Some(u64::from(pid) << 20);
        p.start_time = chrono::DateTime::from_timestamp(1_700_000_000 + i64::from(pid), 0);
        p
    }

    fn many_rules() -> Vec<Arc<CompiledRule>> {
        [
            serde_json::json!({"name": "a", "metric": "process.absent", "process": "name:nginx", "for_secs": 2}),
            serde_json::json!({"name": "b", "metric": "process.count", "process": "user:root", "threshold": 3}),
            serde_json::json!({"name": "c", "metric": "process.cpu_percent", "process": "user:www cpu>5", "threshold": 50, "clear": 30}),
            serde_json::json!({"name": "d", "metric": "process.rss_bytes", "process": "name:nginx", "aggregate": "sum", "threshold": 1e9}),
            serde_json::json!({"name": "e", "metric": "process.cpu_percent", "process": "name:nginx", "threshold": 60, "host": "h"}),
            serde_json::json!({"name": "f", "metric": "process.count", "process": "status:running", "threshold": 0, "host": "other"}),
            serde_json::json!({"name": "g", "metric": "host.cpu_percent", "threshold": 50}),
        ]
        .into_iter()
        .map(|json| Arc::new(serde_json::from_value::<AlertRule>(json).unwrap().compile().unwrap()))
        .collect()
    }

    /// The cached answers change nothing: an engine that asks every filter of every
    /// process each time sees the same transitions, snapshot after snapshot, while
    /// processes come and go, move their figures, change their names in place (exec),
    /// and the list is reordered.
    #[test]
    fn cached_filter_answers_give_what_asking_afresh_gives() {
        let rules = many_rules();
        let (mut cached, mut fresh) = (Engine::new(), Engine::new());
        fresh.uncached = true;
        let mut s = snapshot();
        s.processes = (1..=40).map(|i| process(i, if i % 5 == 0 { "nginx" } else { "worker" }, 1.0)).collect();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let mut transitions = 0;
        for step in 0..400i64 {
            for _ in 0..next(4) {
                let len = s.processes.len() as u64;
                let i = next(len.max(1)) as usize;
                match next(7) {
                    0 if len > 1 => {
                        s.processes.remove(i);
                    }
                    1 => {
                        let pid = 100 + next(1000) as u32;
                        let name = if next(2) == 0 { "nginx" } else { "worker" };
                        s.processes.insert(i.min(s.processes.len()), process(pid, name, next(100) as f32));
                    }
                    2 if len > 0 => s.processes[i].name = if next(2) == 0 { "nginx" } else { "other" }.into(),
                    3 if len > 0 => s.processes[i].status = crate::model::ProcessStatus::Running,
                    4 if len > 1 => {
                        let j = next(len) as usize;
                        s.processes.swap(i, j);
                    }
                    _ if len > 0 => s.processes[i].cpu_percent = Some(next(100) as f32),
                    _ => {}
                }
            }
            s.cpu.total_percent = next(100) as f32;
            let shared = Arc::new(s.clone());
            let at = 1_000 + step * 1_000;
            let (a, b) = (cached.snapshot(&rules, &shared, at), fresh.snapshot(&rules, &shared, at));
            assert_eq!(a, b, "step {step}");
            transitions += a.len();
            if step == 200 {
                // A new rule set: answers cached under the old one are not read.
                let mut changed = many_rules();
                changed.truncate(4);
                for engine in [&mut cached, &mut fresh] {
                    engine.retain_rules(&changed);
                }
                let (a, b) = (cached.snapshot(&changed, &shared, at + 1), fresh.snapshot(&changed, &shared, at + 1));
                assert_eq!(a, b);
            }
        }
        assert!(transitions > 50, "the sequence should move alerts: {transitions}");
        assert!(cached.asks * 3 < fresh.asks, "the cache should spare most asks: {} of {}", cached.asks, fresh.asks);
    }

    /// Each distinct filter is asked once per process, whatever the number of rules
    /// using it; an unchanged process is asked nothing, and one whose figures moved is
    /// asked only by the filters that read figures.
    #[test]
    fn filters_are_asked_once_per_process_and_only_when_it_changed() {
        let rules: Vec<Arc<CompiledRule>> = (0..10)
            .map(|i| {
                let json = if i % 2 == 0 {
                    serde_json::json!({"name": format!("r{i}"), "metric": "process.count", "process": "name:nginx", "threshold": 100})
                } else {
                    serde_json::json!({"name": format!("r{i}"), "metric": "process.cpu_percent", "process": "cpu>5", "threshold": 100})
                };
                Arc::new(serde_json::from_value::<AlertRule>(json).unwrap().compile().unwrap())
            })
            .collect();
        let mut s = snapshot();
        s.processes = (1..=30).map(|i| process(i, "nginx", 1.0)).collect();
        let mut engine = Engine::new();
        engine.snapshot(&rules, &Arc::new(s.clone()), 1_000);
        assert_eq!(engine.asks, 60, "two distinct filters, 30 processes");
        engine.snapshot(&rules, &Arc::new(s.clone()), 2_000);
        assert_eq!(engine.asks, 60, "nothing changed: nothing asked");
        s.processes[3].cpu_percent = Some(9.0);
        s.processes.remove(10);
        s.processes.insert(0, process(77, "nginx", 1.0));
        engine.snapshot(&rules, &Arc::new(s.clone()), 3_000);
        assert_eq!(engine.asks, 60 + 1 + 2, "one figure moved, one process new");
    }
}
