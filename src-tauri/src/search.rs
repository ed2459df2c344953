//! Fleet-wide process search: one query over the newest snapshot of every host.
//!
//! A query is the dashboard's filter language ([`crate::tui::filter`]: `name:nginx`,
//! `user:www-data`, `cpu>50`, `container:web`, free text) plus two words that only make sense across
//! hosts and sockets:
//!
//! - `host:PATTERN` keeps hosts whose name matches (`*` any run of characters, `?` one
//!   character, case ignored; several patterns separated by commas; `-host:` leaves
//!   them out). It is applied to host names before any snapshot is read, so a search
//!   narrowed to a few hosts costs a few hosts.
//! - `port:N` keeps processes that hold a socket whose local or remote port is N (a
//!   server listening on it, or a client talking to it; several separated by commas;
//!   `-port:` negates).
//!
//! Unlike the dashboard's search box, which reports a malformed word and ignores it, a
//! search here refuses it ([`SearchError`]): an API client must not get every process
//! of the fleet because of a typo.
//!
//! This module owns the query and the matching over one snapshot; which snapshots are
//! searched (the hub's live ones, else the store's newest) is the REST adapter's.

use std::collections::HashSet;

use crate::model::{ProcessSample, Snapshot};
use crate::tui::filter::{self, ProcessQuery, Token};

/// A query that cannot be used, with every reason (each names the word as typed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct SearchError(pub Vec<String>);

/// One `host:` or `port:` word.
#[derive(Debug)]
struct Word<T> {
    negated: bool,
    values: Vec<T>,
}

/// A compiled fleet search.
#[derive(Debug)]
pub struct FleetQuery {
    hosts: Vec<Word<String>>,
    ports: Vec<Word<u16>>,
    processes: ProcessQuery,
}

impl FleetQuery {
    /// Compiles `query`; any malformed word is an error.
    pub fn compile(query: &str) -> Result<FleetQuery, SearchError> {
        let tokens = filter::tokenize(query, |name| name == "host" || name == "port" || filter::is_field(name));
        let mut errors = Vec::new();
        let (mut hosts, mut ports, mut rest) = (Vec::new(), Vec::new(), Vec::new());
        for token in tokens {
            match token.filter.as_ref().map(|(name, op)| (name.as_str(), *op)) {
                Some(("host", op)) => {
                    if !matches!(op, filter::Op::Colon | filter::Op::Eq) || token.value.is_empty() {
                        errors.push(format!("“{}”: host needs a name or pattern, e.g. host:web-*", token.raw));
                        continue;
                    }
                    let values =
                        token.value.to_lowercase().split(',').filter(|v| !v.is_empty()).map(str::to_owned).collect();
                    hosts.push(Word { negated: token.negated, values });
                }
                Some(("port", op)) => {
                    let values: Option<Vec<u16>> = token.value.split(',').map(|v| v.trim().parse().ok()).collect();
                    match values {
                        Some(values) if matches!(op, filter::Op::Colon | filter::Op::Eq) && !values.is_empty() => {
                            ports.push(Word { negated: token.negated, values });
                        }
                        _ => errors.push(format!("“{}”: port needs a port number, e.g. port:443", token.raw)),
                    }
                }
                _ => rest.push(token),
            }
        }
        let processes = ProcessQuery::compile(&rejoin(&rest));
        errors.extend(processes.errors.iter().cloned());
        if errors.is_empty() { Ok(FleetQuery { hosts, ports, processes }) } else { Err(SearchError(errors)) }
    }

    /// Whether a host of this name is searched at all.
    pub fn host_matches(&self, hostname: &str) -> bool {
        let name = hostname.to_lowercase();
        self.hosts.iter().all(|w| w.values.iter().any(|p| glob(p, &name)) != w.negated)
    }

    /// The processes of `snapshot` that match, in the snapshot's order.
    pub fn matches<'a>(&'a self, snapshot: &'a Snapshot) -> impl Iterator<Item = &'a ProcessSample> + 'a {
        // The pids holding each wanted port, worked out once per snapshot.
        let port_pids: Vec<(bool, HashSet<u32>)> = self
            .ports
            .iter()
            .map(|w| {
                let pids = snapshot
                    .connections
                    .iter()
                    .filter(|c| {
                        w.values.contains(&c.local_port) || c.remote_port.is_some_and(|r| w.values.contains(&r))
                    })
                    .filter_map(|c| c.pid)
                    .collect();
                (w.negated, pids)
            })
            .collect();
        snapshot.processes.iter().filter(move |p| {
            port_pids.iter().all(|(negated, pids)| pids.contains(&p.pid) != *negated) && self.processes.matches(p)
        })
    }
}

/// The words back as one query, each quoted where it holds a space (a quote cannot
/// be in a word: quotes only group).
fn rejoin(tokens: &[Token]) -> String {
    tokens
        .iter()
        .map(|t| if t.raw.chars().any(char::is_whitespace) { format!("\"{}\"", t.raw) } else { t.raw.clone() })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `*` and `?` wildcards over the whole of `text`; both lower case already.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // The classic two-pointer match with one backtrack point: linear in practice, and
    // never exponential however many stars a pattern has.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::{ConnectionSample, Protocol};

    /// A snapshot of this machine with made-up processes and sockets in place of its own.
    fn snapshot() -> Snapshot {
        let mut s = crate::sample::Sampler::new(Default::default()).sample();
        let template = s.processes.first().cloned().unwrap();
        let process = |pid: u32, name: &str| ProcessSample {
            pid,
            name: name.into(),
            cmd: format!("/usr/bin/{name}"),
            user: Some("alice".into()),
            ..template.clone()
        };
        s.processes = vec![process(1, "systemd"), process(80, "nginx"), process(81, "curl"), process(90, "web server")];
        let socket = |pid: u32, local_port: u16, remote_port: Option<u16>| ConnectionSample {
            protocol: Protocol::Tcp,
            local_address: "10.0.0.1".parse().unwrap(),
            local_port,
            remote_address: remote_port.map(|_| "10.0.0.2".parse().unwrap()),
            remote_port,
            state: None,
            pid: Some(pid),
        };
        s.connections = vec![socket(80, 443, None), socket(81, 50_000, Some(443)), socket(1, 22, None)];
        s
    }

    fn pids(q: &str) -> Vec<u32> {
        let s = snapshot();
        FleetQuery::compile(q).unwrap().matches(&s).map(|p| p.pid).collect()
    }

    #[test]
    fn process_words_mean_what_they_mean_in_the_dashboard() {
        assert_eq!(pids("name:nginx"), [80]);
        assert_eq!(pids("-name:nginx"), [1, 81, 90]);
        assert_eq!(pids("\"web server\""), [90]);
        assert_eq!(pids(""), [1, 80, 81, 90]);
    }

    #[test]
    fn container_words_name_a_container_by_name_or_id() {
        let mut s = snapshot();
        s.processes[1].container = Some(crate::model::details::ContainerRef {
            runtime: crate::model::details::ContainerRuntime::Podman,
            id: "a1b2c3d4e5f6".repeat(5),
            pod: None,
            name: Some("web".into()),
        });
        let pids = |q: &str| FleetQuery::compile(q).unwrap().matches(&s).map(|p| p.pid).collect::<Vec<_>>();
        assert_eq!(pids("container:web"), [80]);
        assert_eq!(pids("container:A1B2C3"), [80]);
        assert_eq!(pids("-container:web"), [1, 81, 90]);
        assert_eq!(pids("container:db"), Vec::<u32>::new());
        let e = FleetQuery::compile("container>web").unwrap_err();
        assert!(e.0[0].contains("container>web"), "{e}");
    }

    #[test]
    fn port_matches_either_end_of_a_socket() {
        assert_eq!(pids("port:443"), [80, 81]);
        assert_eq!(pids("port:443 name:curl"), [81]);
        assert_eq!(pids("-port:443"), [1, 90]);
        assert_eq!(pids("port:22,443"), [1, 80, 81]);
    }

    #[test]
    fn host_patterns_narrow_hosts_before_reading_them() {
        let q = FleetQuery::compile("host:web-* name:nginx").unwrap();
        assert!(q.host_matches("web-1") && q.host_matches("WEB-10") && !q.host_matches("db-1"));
        let q = FleetQuery::compile("-host:web-1?").unwrap();
        assert!(q.host_matches("web-1") && !q.host_matches("web-12") && q.host_matches("db"));
        let q = FleetQuery::compile("host:db,cache-*").unwrap();
        assert!(q.host_matches("db") && q.host_matches("cache-9") && !q.host_matches("db-2"));
        assert!(FleetQuery::compile("name:x").unwrap().host_matches("anything"));
    }

    #[test]
    fn malformed_words_are_refused_by_name() {
        let e = FleetQuery::compile("cpu>lots port:https host:").unwrap_err();
        assert_eq!(e.0.len(), 3, "{e}");
        assert!(e.0.iter().any(|m| m.contains("cpu>lots")) && e.0.iter().any(|m| m.contains("port:https")));
        assert!(FleetQuery::compile("port:70000").is_err());
        // A word that only looks like a filter is text, as in the dashboard.
        assert!(FleetQuery::compile("http://example").is_ok());
    }

    #[test]
    fn glob_is_whole_name_and_never_blows_up() {
        assert!(glob("web-*", "web-1") && !glob("web-*", "xweb-1") && glob("*", "") && glob("a*b*c", "aXbYc"));
        assert!(!glob("a?", "a") && glob("a?", "ab") && !glob("ab", "abc"));
        let long = "a".repeat(5_000);
        assert!(!glob(&format!("{}b", "*a".repeat(50)), &long));
    }
}
