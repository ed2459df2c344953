//! Prometheus metrics of a host, made from its newest snapshot at scrape time.
//!
//! This module owns the metric names, their labels and the grouping of processes; the
//! collector (`GET /metrics`, over every host the hub holds) and the agent
//! (`--metrics-listen`, over its own machine) both build their host part with
//! [`HostFamilies::add`], so the two expose the same series under the same names.
//!
//! Nothing here keeps figures between scrapes: a snapshot holds counters since boot
//! (network) and rates over its interval (CPU), and each scrape reads the newest one.
//! The encoding is prometheus-client's, in the Prometheus text format or, when the
//! scraper asks for it, in OpenMetrics.
//!
//! Labels are `hostname` on every host series and `groupname` on process groups (the
//! process name, or its user when grouping by user: [`GroupBy`]), never a pid: pids come and go, and a label per pid would make a new
//! series for every short-lived process. Groups are bounded per host ([`top_groups`]):
//! a host with thousands of distinct process names adds at most `max_groups` series per
//! family, and a gauge says how many were left out.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::model::Snapshot;
use crate::tui::filter::ProcessQuery;

/// Process groups per host by default (`--metrics-groups`).
pub const DEFAULT_GROUPS: usize = 20;

/// The most process groups per host a setting may ask for: enough for any dashboard,
/// few enough that one host cannot flood a Prometheus with series.
pub const MAX_GROUPS: usize = 1000;

/// Longest group name, in characters: longer process names (an upload may send any) are
/// cut, and grouped by what is left, so that one label value stays small and no two
/// groups share a label.
pub const MAX_GROUP_NAME_CHARS: usize = 128;

/// The content type of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A gauge holding a float.
type FloatGauge = Gauge<f64, AtomicU64>;

/// The labels of a host's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostLabels {
    /// The host's name.
    pub hostname: String,
}

/// The labels of one CPU core's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CoreLabels {
    hostname: String,
    core: String,
}

/// The labels of a process group's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    hostname: String,
    groupname: String,
}

/// The labels of `procyon_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    program: String,
    version: String,
}

/// The text format a scraper gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4 (the default).
    Prometheus,
    /// OpenMetrics 1.0, ending in `# EOF`.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it names it, else the
    /// Prometheus text format (which every scraper reads).
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.to_ascii_lowercase().contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// `registry` as text in `format`.
pub fn encode(registry: &Registry, format: Format) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    match format {
        Format::Prometheus => prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?,
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, registry)?,
    }
    Ok(out)
}

/// Registers `procyon_build_info{program, version}`, always 1: which build answers.
pub fn register_build_info(registry: &mut Registry, program: &str) {
    let info = Family::<BuildLabels, Gauge>::default();
    info.get_or_create(&BuildLabels { program: program.to_owned(), version: env!("CARGO_PKG_VERSION").to_owned() })
        .set(1);
    registry.register("procyon_build_info", "Which Procyon program and version answers; always 1", info);
}

/// The per-host metric families, registered once per scrape and filled with one
/// [`HostFamilies::add`] per host.
pub struct HostFamilies {
    cpu: Family<HostLabels, FloatGauge>,
    cpu_core: Family<CoreLabels, FloatGauge>,
    cores: Family<HostLabels, Gauge>,
    memory_total: Family<HostLabels, Gauge>,
    memory_used: Family<HostLabels, Gauge>,
    memory_available: Family<HostLabels, Gauge>,
    swap_total: Family<HostLabels, Gauge>,
    swap_used: Family<HostLabels, Gauge>,
    load1: Family<HostLabels, FloatGauge>,
    load5: Family<HostLabels, FloatGauge>,
    load15: Family<HostLabels, FloatGauge>,
    net_rx_bytes: Family<HostLabels, Counter>,
    net_tx_bytes: Family<HostLabels, Counter>,
    net_rx_packets: Family<HostLabels, Counter>,
    net_tx_packets: Family<HostLabels, Counter>,
    net_rx_errors: Family<HostLabels, Counter>,
    net_tx_errors: Family<HostLabels, Counter>,
    net_rx_drops: Family<HostLabels, Counter>,
    net_tx_drops: Family<HostLabels, Counter>,
    processes: Family<HostLabels, Gauge>,
    threads: Family<HostLabels, Gauge>,
    online: Family<HostLabels, Gauge>,
    age: Family<HostLabels, FloatGauge>,
    group_cpu: Family<GroupLabels, FloatGauge>,
    group_resident: Family<GroupLabels, Gauge>,
    group_count: Family<GroupLabels, Gauge>,
    groups_left_out: Family<HostLabels, Gauge>,
}

/// What processes are grouped by on `/metrics` (`--metrics-group-by`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GroupBy {
    /// The process name: one group per program, as process exporters do.
    #[default]
    Name,
    /// The user the process runs as: what each account (or service user) costs.
    User,
}

impl std::str::FromStr for GroupBy {
    type Err = String;

    fn from_str(s: &str) -> Result<GroupBy, String> {
        match s {
            "name" => Ok(GroupBy::Name),
            "user" => Ok(GroupBy::User),
            other => Err(format!("`{other}` is not a grouping: use `name` or `user`")),
        }
    }
}

/// The group of processes whose user is not known.
const UNKNOWN_USER: &str = "unknown";

/// A group made of the processes a filter matches (`--metrics-group NAME=FILTER`, in
/// the dashboard's filter language): shown whatever its rank, under its own name.
#[derive(Clone, Debug)]
pub struct NamedGroup {
    /// The `groupname` label.
    pub name: String,
    /// Which processes it gathers.
    pub query: Arc<ProcessQuery>,
}

impl std::str::FromStr for NamedGroup {
    type Err = String;

    /// `NAME=FILTER`, e.g. `web=name:nginx` or `backups=user:backup cpu>1`.
    fn from_str(s: &str) -> Result<NamedGroup, String> {
        let (name, filter) = s.split_once('=').ok_or_else(|| format!("`{s}` is not NAME=FILTER"))?;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_GROUP_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(format!("a group's name is 1 to {MAX_GROUP_NAME_CHARS} printable characters, not `{name}`"));
        }
        let query = ProcessQuery::compile(filter);
        if !query.errors.is_empty() {
            return Err(format!("group `{name}`: {}", query.errors.join("; ")));
        }
        if query.is_empty() {
            return Err(format!("group `{name}` needs a filter after `=` (the dashboard's filter language)"));
        }
        Ok(NamedGroup { name: name.to_owned(), query: Arc::new(query) })
    }
}

/// What the caller knows of a host beyond its snapshot.
#[derive(Clone, Debug)]
pub struct HostState {
    /// Whether it reports now (its agent is connected, or it sent lately).
    pub online: bool,
    /// Seconds since its newest snapshot reached whoever serves the metrics.
    pub age_seconds: f64,
    /// Process groups to expose at most.
    pub max_groups: usize,
    /// What processes are grouped by.
    pub group_by: GroupBy,
    /// Groups made by filters, first match wins; the other processes go by `group_by`.
    pub named: Arc<[NamedGroup]>,
}

/// A gauge value from a count that cannot exceed `i64` in practice.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl HostFamilies {
    /// Registers every host family in `registry` (empty until hosts are added).
    pub fn register(registry: &mut Registry) -> HostFamilies {
        let f = HostFamilies {
            cpu: Family::default(),
            cpu_core: Family::default(),
            cores: Family::default(),
            memory_total: Family::default(),
            memory_used: Family::default(),
            memory_available: Family::default(),
            swap_total: Family::default(),
            swap_used: Family::default(),
            load1: Family::default(),
            load5: Family::default(),
            load15: Family::default(),
            net_rx_bytes: Family::default(),
            net_tx_bytes: Family::default(),
            net_rx_packets: Family::default(),
            net_tx_packets: Family::default(),
            net_rx_errors: Family::default(),
            net_tx_errors: Family::default(),
            net_rx_drops: Family::default(),
            net_tx_drops: Family::default(),
            processes: Family::default(),
            threads: Family::default(),
            online: Family::default(),
            age: Family::default(),
            group_cpu: Family::default(),
            group_resident: Family::default(),
            group_count: Family::default(),
            groups_left_out: Family::default(),
        };
        // Help texts end without a full stop: the encoder adds one.
        let r = registry;
        r.register(
            "procyon_host_cpu_usage_ratio",
            "Share of all CPUs in use over the last interval, 0 to 1",
            f.cpu.clone(),
        );
        r.register(
            "procyon_host_cpu_core_usage_ratio",
            "Share of one logical CPU in use over the last interval, 0 to 1",
            f.cpu_core.clone(),
        );
        r.register("procyon_host_cpu_cores", "Logical CPUs", f.cores.clone());
        r.register("procyon_host_memory_total_bytes", "Physical memory", f.memory_total.clone());
        r.register("procyon_host_memory_used_bytes", "Memory in use (total minus available)", f.memory_used.clone());
        r.register(
            "procyon_host_memory_available_bytes",
            "Memory available to new work without swapping",
            f.memory_available.clone(),
        );
        r.register("procyon_host_swap_total_bytes", "Swap space", f.swap_total.clone());
        r.register("procyon_host_swap_used_bytes", "Swap in use", f.swap_used.clone());
        r.register("procyon_host_load1", "Run-queue load average over one minute", f.load1.clone());
        r.register("procyon_host_load5", "Run-queue load average over five minutes", f.load5.clone());
        r.register("procyon_host_load15", "Run-queue load average over fifteen minutes", f.load15.clone());
        // Counters: the encoder adds `_total`.
        r.register(
            "procyon_host_network_receive_bytes",
            "Bytes received since boot, all interfaces but loopback",
            f.net_rx_bytes.clone(),
        );
        r.register(
            "procyon_host_network_transmit_bytes",
            "Bytes sent since boot, all interfaces but loopback",
            f.net_tx_bytes.clone(),
        );
        r.register(
            "procyon_host_network_receive_packets",
            "Packets received since boot, all interfaces but loopback",
            f.net_rx_packets.clone(),
        );
        r.register(
            "procyon_host_network_transmit_packets",
            "Packets sent since boot, all interfaces but loopback",
            f.net_tx_packets.clone(),
        );
        r.register(
            "procyon_host_network_receive_errors",
            "Receive errors since boot, all interfaces but loopback",
            f.net_rx_errors.clone(),
        );
        r.register(
            "procyon_host_network_transmit_errors",
            "Transmit errors since boot, all interfaces but loopback",
            f.net_tx_errors.clone(),
        );
        r.register(
            "procyon_host_network_receive_drops",
            "Received packets dropped since boot, all interfaces but loopback",
            f.net_rx_drops.clone(),
        );
        r.register(
            "procyon_host_network_transmit_drops",
            "Outgoing packets dropped since boot, all interfaces but loopback",
            f.net_tx_drops.clone(),
        );
        r.register("procyon_host_processes", "Processes", f.processes.clone());
        r.register("procyon_host_threads", "Threads of all processes", f.threads.clone());
        r.register("procyon_host_online", "1 while the host reports, else 0", f.online.clone());
        r.register(
            "procyon_host_last_snapshot_age_seconds",
            "Seconds since the host's newest snapshot arrived",
            f.age.clone(),
        );
        r.register(
            "procyon_process_group_cpu_seconds_per_second",
            "CPU time used by a group's processes over the last interval, in CPU seconds per second (1 is one busy core)",
            f.group_cpu.clone(),
        );
        r.register(
            "procyon_process_group_resident_bytes",
            "Resident memory of a group's processes",
            f.group_resident.clone(),
        );
        r.register("procyon_process_group_processes", "Processes in a group", f.group_count.clone());
        r.register(
            "procyon_host_process_groups_left_out",
            "Process groups of the host not exposed, beyond the per-host limit (--metrics-groups)",
            f.groups_left_out.clone(),
        );
        f
    }

    /// Adds the series of one host: what its newest `snapshot` says, and `state`.
    /// Figures the snapshot does not know (an upload in the short format has no memory
    /// or network figures) are left out rather than reported as zero.
    pub fn add(&self, snapshot: &Snapshot, state: &HostState) {
        let hostname = snapshot.host.hostname.clone();
        let host = HostLabels { hostname: hostname.clone() };
        let ratio = |percent: f32| (f64::from(percent) / 100.0).max(0.0);
        self.cpu.get_or_create(&host).set(ratio(snapshot.cpu.total_percent));
        for (i, percent) in snapshot.cpu.per_core_percent.iter().enumerate() {
            let labels = CoreLabels { hostname: hostname.clone(), core: i.to_string() };
            self.cpu_core.get_or_create(&labels).set(ratio(*percent));
        }
        if let Some(cores) = snapshot.host.logical_cores {
            self.cores.get_or_create(&host).set(i64::from(cores));
        }
        let memory = &snapshot.memory;
        let set = |family: &Family<HostLabels, Gauge>, value: Option<u64>| {
            if let Some(v) = value {
                family.get_or_create(&host).set(int(v));
            }
        };
        set(&self.memory_total, memory.total_bytes);
        set(&self.memory_used, Some(memory.used_bytes));
        set(&self.memory_available, memory.available_bytes);
        set(&self.swap_total, memory.swap_total_bytes);
        set(&self.swap_used, memory.swap_used_bytes);
        if let Some(load) = snapshot.cpu.load_average {
            self.load1.get_or_create(&host).set(load.one);
            self.load5.get_or_create(&host).set(load.five);
            self.load15.get_or_create(&host).set(load.fifteen);
        }
        if let Some(net) = &snapshot.network.total {
            let count = |family: &Family<HostLabels, Counter>, value: Option<u64>| {
                if let Some(v) = value {
                    family.get_or_create(&host).inc_by(v);
                }
            };
            count(&self.net_rx_bytes, Some(net.received_bytes));
            count(&self.net_tx_bytes, Some(net.sent_bytes));
            count(&self.net_rx_packets, Some(net.received_packets));
            count(&self.net_tx_packets, Some(net.sent_packets));
            count(&self.net_rx_errors, Some(net.errors_in));
            count(&self.net_tx_errors, Some(net.errors_out));
            count(&self.net_rx_drops, net.drops_in);
            count(&self.net_tx_drops, net.drops_out);
        }
        self.processes.get_or_create(&host).set(snapshot.processes.len() as i64);
        if snapshot.processes.iter().any(|p| p.threads.is_some()) {
            let threads: u64 = snapshot.processes.iter().filter_map(|p| p.threads).map(u64::from).sum();
            self.threads.get_or_create(&host).set(int(threads));
        }
        self.online.get_or_create(&host).set(i64::from(state.online));
        self.age.get_or_create(&host).set(state.age_seconds.max(0.0));

        let (groups, left_out) = top_groups(snapshot, state.max_groups, state.group_by, &state.named);
        for g in groups {
            let labels = GroupLabels { hostname: hostname.clone(), groupname: g.name.to_owned() };
            if let Some(cpu) = g.cpu_cores {
                self.group_cpu.get_or_create(&labels).set(cpu);
            }
            if let Some(rss) = g.resident_bytes {
                self.group_resident.get_or_create(&labels).set(int(rss));
            }
            self.group_count.get_or_create(&labels).set(g.processes as i64);
        }
        self.groups_left_out.get_or_create(&host).set(left_out as i64);
    }
}

/// The processes of one name (or one user) on a host, summed.
#[derive(Clone, Debug, PartialEq)]
pub struct Group<'a> {
    /// The process name, or the user.
    pub name: &'a str,
    /// CPU seconds per second of its processes; `None` when none of them says.
    pub cpu_cores: Option<f64>,
    /// Resident bytes of its processes; `None` when none of them says.
    pub resident_bytes: Option<u64>,
    /// How many processes it has.
    pub processes: usize,
    /// Made by a filter ([`NamedGroup`]): shown whatever its rank.
    pub named: bool,
}

/// The snapshot's processes grouped by name (or user), at most `max` groups: half the places go
/// to the busiest groups by CPU, the rest to the largest by resident memory among the
/// others (so a quiet process holding much memory is still seen). Returns the groups
/// kept, busiest first, and how many were left out. Groups made by `named` filters
/// come on top of `max`, whatever their rank: someone asked for them.
pub fn top_groups<'a>(
    snapshot: &'a Snapshot,
    max: usize,
    by: GroupBy,
    named: &'a [NamedGroup],
) -> (Vec<Group<'a>>, usize) {
    let mut by_name: HashMap<&str, Group<'_>> = HashMap::new();
    for p in &snapshot.processes {
        let filtered = named.iter().find(|g| g.query.matches(p));
        let key = match (filtered, by) {
            (Some(g), _) => g.name.as_str(),
            (None, GroupBy::Name) => p.name.as_str(),
            (None, GroupBy::User) => p.user.as_deref().unwrap_or(UNKNOWN_USER),
        };
        let name = match key.char_indices().nth(MAX_GROUP_NAME_CHARS) {
            Some((cut, _)) => &key[..cut],
            None => key,
        };
        let g = by_name.entry(name).or_insert(Group {
            name,
            cpu_cores: None,
            resident_bytes: None,
            processes: 0,
            named: false,
        });
        // A process group of the same name as a filter's joins it: one series per label.
        g.named |= filtered.is_some();
        g.processes += 1;
        if let Some(cpu) = p.cpu_percent {
            *g.cpu_cores.get_or_insert(0.0) += f64::from(cpu.max(0.0)) / 100.0;
        }
        if let Some(rss) = p.rss_bytes {
            let sum = g.resident_bytes.get_or_insert(0);
            *sum = sum.saturating_add(rss);
        }
    }
    let total = by_name.len();
    let (mut kept, mut groups): (Vec<Group<'_>>, Vec<Group<'_>>) = by_name.into_values().partition(|g| g.named);
    // Ties broken by name, so that the same snapshot always gives the same series.
    let cpu_order = |a: &Group<'_>, b: &Group<'_>| {
        b.cpu_cores.unwrap_or(0.0).total_cmp(&a.cpu_cores.unwrap_or(0.0)).then_with(|| a.name.cmp(b.name))
    };
    groups.sort_by(cpu_order);
    if groups.len() > max {
        let by_cpu = max.div_ceil(2);
        let mut rest = groups.split_off(by_cpu.min(groups.len()));
        rest.sort_by(|a, b| {
            b.resident_bytes.unwrap_or(0).cmp(&a.resident_bytes.unwrap_or(0)).then_with(|| a.name.cmp(b.name))
        });
        rest.truncate(max - groups.len());
        groups.extend(rest);
        groups.truncate(max);
    }
    kept.extend(groups);
    kept.sort_by(cpu_order);
    let left_out = total - kept.len();
    (kept, left_out)
}

/// The whole text for one host alone, as the agent serves it: the host families and
/// `procyon_build_info`.
pub fn render_host(snapshot: &Snapshot, state: &HostState, program: &str, format: Format) -> String {
    let mut registry = Registry::default();
    let families = HostFamilies::register(&mut registry);
    families.add(snapshot, state);
    register_build_info(&mut registry, program);
    // Writing to a String cannot fail.
    encode(&registry, format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Sampler, SamplerOptions};

    fn snapshot_with_names(names: usize) -> Snapshot {
        let mut s = Sampler::new(SamplerOptions::default()).sample();
        let template = s.processes[0].clone();
        s.processes = (0..names)
            .map(|i| {
                let mut p = template.clone();
                p.pid = i as u32 + 1;
                p.name = format!("proc-{i:04}");
                // CPU rises with i, memory falls: the two halves of the limit differ.
                p.cpu_percent = Some(i as f32 / 10.0);
                p.rss_bytes = Some(((names - i) as u64) << 20);
                p
            })
            .collect();
        s
    }

    fn state() -> HostState {
        HostState {
            online: true,
            age_seconds: 1.5,
            max_groups: DEFAULT_GROUPS,
            group_by: GroupBy::Name,
            named: Arc::from(Vec::new()),
        }
    }

    #[test]
    fn a_thousand_names_give_twenty_groups_and_say_how_many_were_left_out() {
        let s = snapshot_with_names(1000);
        let (groups, left_out) = top_groups(&s, 20, GroupBy::Name, &[]);
        assert_eq!((groups.len(), left_out), (20, 980));
        let names: Vec<&str> = groups.iter().map(|g| g.name).collect();
        // Ten busiest by CPU, ten largest by memory.
        assert!(names.contains(&"proc-0999") && names.contains(&"proc-0990"));
        assert!(names.contains(&"proc-0000") && names.contains(&"proc-0009"));
        assert!(!names.contains(&"proc-0500"));
        let text = render_host(&s, &state(), "procyon", Format::Prometheus);
        assert_eq!(text.lines().filter(|l| l.starts_with("procyon_process_group_processes{")).count(), 20);
        assert!(text.contains("procyon_host_process_groups_left_out{hostname=\""), "{text}");
        assert!(text.lines().any(|l| l.starts_with("procyon_host_process_groups_left_out{") && l.ends_with(" 980")));
    }

    #[test]
    fn processes_of_one_name_are_summed_and_no_pid_is_a_label() {
        let mut s = snapshot_with_names(3);
        for p in &mut s.processes {
            p.name = "worker".into();
            p.cpu_percent = Some(50.0);
            p.rss_bytes = Some(100);
        }
        let (groups, left_out) = top_groups(&s, 20, GroupBy::Name, &[]);
        assert_eq!(left_out, 0);
        assert_eq!(
            groups,
            vec![Group { name: "worker", cpu_cores: Some(1.5), resident_bytes: Some(300), processes: 3, named: false }]
        );
        let text = render_host(&s, &state(), "procyon", Format::Prometheus);
        assert!(!text.contains("pid="), "{text}");
    }

    #[test]
    fn grouping_by_user_sums_each_account_and_names_the_unknown() {
        let mut s = snapshot_with_names(4);
        for (p, user) in s.processes.iter_mut().zip([Some("www-data"), Some("postgres"), Some("www-data"), None]) {
            p.user = user.map(str::to_owned);
            (p.cpu_percent, p.rss_bytes) = (Some(10.0), Some(1 << 20));
        }
        let (mut groups, left_out) = top_groups(&s, 20, GroupBy::User, &[]);
        groups.sort_by_key(|g| g.name);
        let summary: Vec<(&str, usize)> = groups.iter().map(|g| (g.name, g.processes)).collect();
        assert_eq!((summary, left_out), (vec![("postgres", 1), ("unknown", 1), ("www-data", 2)], 0));
        let state = HostState { group_by: GroupBy::User, ..state() };
        let text = render_host(&s, &state, "procyon", Format::Prometheus);
        assert!(text.contains("groupname=\"www-data\""), "{text}");
        assert!(!text.contains(&format!("groupname=\"{}\"", s.processes[0].name)), "{text}");
        assert_eq!("user".parse(), Ok(GroupBy::User));
        assert!("pid".parse::<GroupBy>().is_err());
    }

    #[test]
    fn groups_made_by_filters_gather_their_matches_and_are_always_shown() {
        // 30 names, all busier than the two databases, which the top 2 would leave out.
        let mut s = snapshot_with_names(32);
        for (i, p) in s.processes.iter_mut().enumerate() {
            (p.cpu_percent, p.rss_bytes) = (Some(50.0), Some(1 << 30));
            if i < 2 {
                p.name = ["postgres", "pgbouncer"][i].into();
                (p.cpu_percent, p.rss_bytes) = (Some(1.0), Some(1));
            }
        }
        let named: Vec<NamedGroup> = vec!["db=name:postgres,pgbouncer".parse().unwrap()];
        let (groups, left_out) = top_groups(&s, 2, GroupBy::Name, &named);
        let db = groups.iter().find(|g| g.name == "db").expect("the filter's group is shown");
        assert_eq!((db.processes, db.named, db.cpu_cores), (2, true, Some(0.02)));
        assert_eq!((groups.len(), left_out), (3, 28), "{groups:?}");
        assert!(!groups.iter().any(|g| g.name == "postgres"));
        let text = render_host(&s, &HostState { named: named.into(), ..state() }, "procyon", Format::Prometheus);
        assert!(text.contains("groupname=\"db\""), "{text}");
        // Malformed settings are refused with the reason.
        assert!("db".parse::<NamedGroup>().unwrap_err().contains("NAME=FILTER"));
        assert!("db=".parse::<NamedGroup>().unwrap_err().contains("needs a filter"));
        assert!("db=cpu>lots".parse::<NamedGroup>().unwrap_err().contains("cpu>lots"));
        assert!("=name:x".parse::<NamedGroup>().is_err());
    }

    #[test]
    fn long_names_are_cut_and_grouped_by_what_is_left() {
        let mut s = snapshot_with_names(2);
        s.processes[0].name = format!("{}-one", "é".repeat(MAX_GROUP_NAME_CHARS));
        s.processes[1].name = format!("{}-two", "é".repeat(MAX_GROUP_NAME_CHARS));
        let (groups, _) = top_groups(&s, 20, GroupBy::Name, &[]);
        assert_eq!(groups.len(), 1);
        assert_eq!((groups[0].name.chars().count(), groups[0].processes), (MAX_GROUP_NAME_CHARS, 2));
    }

    #[test]
    fn both_formats_carry_the_host_families_and_openmetrics_ends_in_eof() {
        let s = snapshot_with_names(2);
        let prom = render_host(&s, &state(), "procyon-agent", Format::Prometheus);
        for name in [
            "procyon_host_cpu_usage_ratio{",
            "procyon_host_cpu_core_usage_ratio{",
            "procyon_host_memory_used_bytes{",
            "procyon_host_processes{",
            "procyon_host_online{",
            "procyon_host_last_snapshot_age_seconds{",
            "procyon_build_info{program=\"procyon-agent\"",
        ] {
            assert!(prom.contains(name), "{name} missing:\n{prom}");
        }
        assert!(!prom.contains("# EOF"));
        let open = render_host(&s, &state(), "procyon-agent", Format::OpenMetrics);
        assert!(open.ends_with("# EOF\n"), "{open}");
        if s.network.total.is_some() {
            assert!(prom.contains("procyon_host_network_receive_bytes_total{"));
            assert!(open.contains("procyon_host_network_receive_bytes_total{"));
        }
    }

    #[test]
    fn unknown_figures_are_left_out_not_zero() {
        let mut s = snapshot_with_names(1);
        s.memory.available_bytes = None;
        s.network.total = None;
        s.cpu.load_average = None;
        let text = render_host(&s, &state(), "procyon", Format::Prometheus);
        assert!(!text.contains("procyon_host_memory_available_bytes{"));
        assert!(!text.contains("procyon_host_network_receive_bytes_total{"));
        assert!(!text.contains("procyon_host_load1{"));
    }

    #[test]
    fn the_accept_header_chooses_the_format() {
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        assert_eq!(Format::from_accept(Some("text/plain;version=0.0.4")), Format::Prometheus);
        assert_eq!(
            Format::from_accept(Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5")),
            Format::OpenMetrics
        );
    }
}
