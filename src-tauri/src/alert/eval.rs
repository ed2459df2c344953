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
//! snapshot, or one pass over its processes with the rule's filter (parsed once, when
//! the rule was made). Nothing is allocated for a process unless it starts to be
//! pending; lookups go by the rule's name and the pid. Only transitions (pending,
//! firing, repeated, resolved) leave the engine, and only they are written.

use std::collections::HashMap;
use std::sync::Arc;

use super::rule::{Aggregate, CompiledRule, Metric};
use super::status::{Alert, AlertState};
use crate::model::Snapshot;

/// Which instance of a rule on a host an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// The host, or the rule's processes taken together.
    Whole,
    /// One process (per-process measures).
    Pid(u32),
}

impl Key {
    /// The key of a stored `process` label: `name (pid)` is one process.
    pub fn from_label(label: &str) -> Key {
        label
            .strip_suffix(')')
            .and_then(|l| l.rsplit_once(" ("))
            .and_then(|(_, pid)| pid.parse().ok())
            .map_or(Key::Whole, Key::Pid)
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
}

/// The evaluation state of every host.
#[derive(Debug, Default)]
pub struct Engine {
    hosts: HashMap<String, Host>,
    generation: u64,
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

    /// Evaluates `rules` against a snapshot of its host received at `now_ms`.
    pub fn snapshot(&mut self, rules: &Rules, snapshot: &Snapshot, now_ms: i64) -> Vec<Transition> {
        self.generation += 1;
        let generation = self.generation;
        let hostname = snapshot.host.hostname.as_str();
        // Looked up before inserting: no allocation for a host already known.
        if !self.hosts.contains_key(hostname) {
            self.hosts.insert(hostname.to_owned(), Host::default());
        }
        let Some(host) = self.hosts.get_mut(hostname) else { return Vec::new() };
        host.last_seen_ms = host.last_seen_ms.max(now_ms);
        let mut out = Vec::new();
        for rule in rules.iter().filter(|r| r.watches(hostname)) {
            let name = rule.rule.name.as_str();
            if !host.alerts.contains_key(name) {
                host.alerts.insert(name.to_owned(), HashMap::new());
            }
            let Some(entries) = host.alerts.get_mut(name) else { continue };
            let at = At { rule, hostname, now_ms, generation };
            match rule.rule.metric {
                Metric::HostOffline => {
                    if let Some(e) = entries.remove(&Key::Whole)
                        && e.phase == Phase::Firing
                    {
                        out.push(transition(rule, hostname, &e, Change::Resolved, 0.0, now_ms));
                    }
                }
                Metric::ProcessAbsent => {
                    let count = count_matching(rule, snapshot);
                    let absent = count == 0;
                    at.step(entries, Key::Whole, count as f64, absent, !absent, &|| filter_label(rule), &mut out);
                }
                Metric::ProcessCpuPercent | Metric::ProcessRssBytes if rule.rule.aggregate == Aggregate::Each => {
                    let Some(query) = &rule.query else { continue };
                    let cpu = rule.rule.metric == Metric::ProcessCpuPercent;
                    for p in snapshot.processes.iter().filter(|p| query.matches(p)) {
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
                    let gone: Vec<Key> =
                        entries.iter().filter(|(_, e)| e.seen != generation).map(|(k, _)| *k).collect();
                    for key in gone {
                        if let Some(e) = entries.remove(&key) {
                            let change = if e.phase == Phase::Firing { Change::Resolved } else { Change::Cancelled };
                            out.push(transition(rule, hostname, &e, change, e.value, now_ms));
                        }
                    }
                }
                metric => {
                    let value = match metric {
                        Metric::ProcessCpuPercent | Metric::ProcessRssBytes => Some(sum_matching(rule, snapshot)),
                        Metric::ProcessCount => Some(count_matching(rule, snapshot) as f64),
                        Metric::PortListening => {
                            let port = rule.port.unwrap_or(0);
                            Some(if snapshot.ports.listening.iter().any(|l| l.port == port) { 1.0 } else { 0.0 })
                        }
                        _ => host_value(metric, snapshot),
                    };
                    // A figure the snapshot does not give changes nothing.
                    let Some(value) = value else { continue };
                    let label = || if rule.query.is_some() { filter_label(rule) } else { String::new() };
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
        for rule in rules.iter().filter(|r| r.rule.metric == Metric::HostOffline) {
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

fn count_matching(rule: &CompiledRule, snapshot: &Snapshot) -> usize {
    rule.query.as_ref().map_or(0, |q| snapshot.processes.iter().filter(|p| q.matches(p)).count())
}

fn sum_matching(rule: &CompiledRule, snapshot: &Snapshot) -> f64 {
    let Some(q) = &rule.query else { return 0.0 };
    let cpu = rule.rule.metric == Metric::ProcessCpuPercent;
    snapshot
        .processes
        .iter()
        .filter(|p| q.matches(p))
        .map(|p| if cpu { p.cpu_percent.map_or(0.0, f64::from) } else { p.rss_bytes.map_or(0.0, |b| b as f64) })
        .sum()
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
    fn a_level_fires_after_for_secs_stays_between_clear_and_threshold_and_resolves_below_clear() {
        let rules = rules(serde_json::json!({
            "name": "cpu", "metric": "host.cpu_percent", "threshold": 90, "clear": 70, "for_secs": 10
        }));
        let mut engine = Engine::new();
        let mut s = snapshot();
        let mut at = |cpu: f32, ms: i64, engine: &mut Engine| {
            s.cpu.total_percent = cpu;
            changes(&engine.snapshot(&rules, &s, ms))
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

    #[test]
    fn repeats_only_when_asked_and_offline_comes_from_the_tick() {
        let rules = rules(serde_json::json!({
            "name": "gone", "metric": "host.offline", "for_secs": 30, "repeat_secs": 60
        }));
        let mut engine = Engine::new();
        let s = snapshot();
        assert!(engine.snapshot(&rules, &s, 1_000).is_empty());
        assert!(engine.tick(&rules, 30_000).is_empty());
        assert_eq!(changes(&engine.tick(&rules, 31_000)), [Change::Firing]);
        assert!(engine.tick(&rules, 32_000).is_empty(), "once");
        assert!(engine.tick(&rules, 90_000).is_empty());
        assert_eq!(changes(&engine.tick(&rules, 91_000)), [Change::Repeat]);
        assert_eq!(changes(&engine.snapshot(&rules, &s, 92_000)), [Change::Resolved]);
        assert!(engine.tick(&rules, 93_000).is_empty());
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
        let t = engine.snapshot(&each, &s, 1_000);
        assert_eq!(changes(&t), [Change::Firing]);
        assert_eq!(t[0].process, "busy (4000000)");
        assert!(engine.snapshot(&absent, &s, 1_000).is_empty());
        s.processes.pop();
        let t = engine.snapshot(&each, &s, 2_000);
        assert_eq!(changes(&t), [Change::Resolved], "the process went");
        assert_eq!(changes(&engine.snapshot(&absent, &s, 2_000)), [Change::Pending]);
        assert_eq!(changes(&engine.snapshot(&absent, &s, 7_000)), [Change::Firing]);
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
        assert!(engine.snapshot(&rules, &s, 2_000).is_empty());
        s.cpu.total_percent = 5.0;
        assert_eq!(changes(&engine.snapshot(&rules, &s, 3_000)), [Change::Resolved]);
    }
}
