//! The response shapes of the two original API documents, built from a [`Snapshot`].
//!
//! A client written against those documents must work unchanged, so their names are
//! added next to ours rather than instead of them:
//!
//! - **stored snapshot** (`/api/process-snapshots/...`): the snapshot with `snapshot_id`,
//!   `hostname`, `snapshot_time` and `timestamp`; each process also carries
//!   `parent_pid`, `cpu` and `memory` (bytes); with `tree` the processes nest under
//!   `children`.
//! - **monitoring snapshot** (`/api/monitoring/{server_id}/snapshot` and its WebSocket):
//!   `processes`, `network_connections`, `network_stats` (psutil's counter names),
//!   `cpu_per_core` and `port_usage`, plus the rest of ours.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::model::Snapshot;

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn with_seed_process_names(mut process: Map<String, Value>) -> Map<String, Value> {
    let ppid = process.get("ppid").cloned().unwrap_or(Value::Null);
    let cpu = process.get("cpu_percent").cloned().unwrap_or(Value::Null);
    let memory = process.get("rss_bytes").cloned().unwrap_or(Value::Null);
    let user = process.get("user").cloned().unwrap_or(Value::Null);
    process.insert("parent_pid".into(), ppid);
    process.insert("cpu".into(), cpu);
    process.insert("memory".into(), memory);
    process.insert("username".into(), user);
    process
}

/// Nests `processes` under their parents' `children`; processes whose parent is not in
/// the list are roots. Order is kept (pid order from the sampler).
pub fn nest(processes: Vec<Map<String, Value>>) -> Vec<Value> {
    let pid_of = |p: &Map<String, Value>| p.get("pid").and_then(Value::as_u64);
    let pids: std::collections::HashSet<u64> = processes.iter().filter_map(pid_of).collect();
    let mut children: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, p) in processes.iter().enumerate() {
        match p.get("ppid").and_then(Value::as_u64) {
            Some(ppid) if pids.contains(&ppid) && Some(ppid) != pid_of(p) => children.entry(ppid).or_default().push(i),
            _ => roots.push(i),
        }
    }
    let mut slots: Vec<Option<Map<String, Value>>> = processes.into_iter().map(Some).collect();
    // Each node is taken out of `slots` once, so shared or cyclic links cannot repeat
    // it; depth is bounded so hostile data cannot exhaust the stack.
    fn build(
        i: usize,
        slots: &mut Vec<Option<Map<String, Value>>>,
        children: &HashMap<u64, Vec<usize>>,
        depth: usize,
    ) -> Value {
        let mut node = slots[i].take().unwrap_or_default();
        let pid = node.get("pid").and_then(Value::as_u64).unwrap_or(0);
        let mut kids = Vec::new();
        if depth < 512 {
            for &c in children.get(&pid).into_iter().flatten() {
                if slots[c].is_some() {
                    kids.push(build(c, slots, children, depth + 1));
                }
            }
        }
        node.insert("children".into(), Value::Array(kids));
        Value::Object(node)
    }
    let mut out: Vec<Value> = roots.into_iter().map(|r| build(r, &mut slots, &children, 0)).collect();
    // Anything left (a cycle in racy data) becomes a root rather than vanishing.
    for i in 0..slots.len() {
        if slots[i].is_some() {
            out.push(build(i, &mut slots, &children, 0));
        }
    }
    out
}

/// A stored snapshot in the original API's shape.
pub fn stored(snapshot_id: i64, snapshot: &Snapshot, tree: bool) -> Value {
    let mut map = object(serde_json::to_value(snapshot).unwrap_or(Value::Null));
    let processes: Vec<Map<String, Value>> = match map.remove("processes") {
        Some(Value::Array(items)) => items.into_iter().map(object).map(with_seed_process_names).collect(),
        _ => Vec::new(),
    };
    let processes = if tree { nest(processes) } else { processes.into_iter().map(Value::Object).collect() };
    map.insert("processes".into(), Value::Array(processes));
    map.insert("snapshot_id".into(), json!(snapshot_id));
    map.insert("hostname".into(), json!(snapshot.host.hostname));
    map.insert("snapshot_time".into(), json!(snapshot.taken_at));
    map.insert("timestamp".into(), json!(snapshot.taken_at));
    Value::Object(map)
}

/// A snapshot in the monitoring API's shape.
pub fn monitoring(snapshot_id: i64, received_at: DateTime<Utc>, s: &Snapshot) -> Value {
    // `null` for each counter the snapshot does not know (a short upload has none).
    let t = s.network.total.as_ref();
    let counter = |f: fn(&crate::model::InterfaceCounters) -> Value| t.map_or(Value::Null, f);
    let processes: Vec<Value> = match serde_json::to_value(&s.processes) {
        Ok(Value::Array(items)) => {
            items.into_iter().map(|p| Value::Object(with_seed_process_names(object(p)))).collect()
        }
        _ => Vec::new(),
    };
    let connections: Vec<Value> = s
        .connections
        .iter()
        .map(|c| {
            let mut m = object(serde_json::to_value(c).unwrap_or(Value::Null));
            m.insert(
                "status".into(),
                json!(c.state.map_or("NONE".to_owned(), |st| {
                    serde_json::to_value(st).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
                })),
            );
            Value::Object(m)
        })
        .collect();
    json!({
        "snapshot_id": snapshot_id,
        "server_id": s.host.hostname,
        "hostname": s.host.hostname,
        "timestamp": s.taken_at,
        "received_at": received_at,
        "host": s.host,
        "processes": processes,
        "network_connections": connections,
        "network_stats": {
            "bytes_sent": counter(|t| json!(t.sent_bytes)),
            "bytes_recv": counter(|t| json!(t.received_bytes)),
            "packets_sent": counter(|t| json!(t.sent_packets)),
            "packets_recv": counter(|t| json!(t.received_packets)),
            "errin": counter(|t| json!(t.errors_in)),
            "errout": counter(|t| json!(t.errors_out)),
            "dropin": counter(|t| json!(t.drops_in)),
            "dropout": counter(|t| json!(t.drops_out)),
            "bytes_sent_per_sec": counter(|t| json!(t.sent_bytes_per_sec)),
            "bytes_recv_per_sec": counter(|t| json!(t.received_bytes_per_sec)),
            "packets_sent_per_sec": counter(|t| json!(t.sent_packets_per_sec)),
            "packets_recv_per_sec": counter(|t| json!(t.received_packets_per_sec)),
            "interfaces": s.network.interfaces,
        },
        "cpu_per_core": s.cpu.per_core_percent,
        "port_usage": s.ports,
        "cpu": s.cpu,
        "memory": s.memory,
        "errors": s.errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_view_carries_both_vocabularies_and_nests_on_request() {
        let snap = super::super::upload::parse(
            br#"{"hostname":"M","snapshot_time":"2025-08-22T09:15:00Z","processes":[{"pid":100,"name":"a","cpu":2.5,"memory":"1KB","children":[{"pid":200,"name":"b","parent_pid":100}]}]}"#,
        )
        .unwrap();
        let flat = stored(7, &snap, false);
        assert_eq!(flat["snapshot_id"], 7);
        assert_eq!(flat["hostname"], "M");
        assert_eq!(flat["snapshot_time"], "2025-08-22T09:15:00Z");
        assert_eq!(flat["processes"][1]["parent_pid"], 100);
        assert_eq!(flat["processes"][0]["cpu"], 2.5);
        assert_eq!(flat["processes"][0]["memory"], 1024);
        // What the upload did not say stays unsaid, in both vocabularies.
        let b = &flat["processes"][1];
        assert!(b["cpu"].is_null() && b["cpu_percent"].is_null() && b["memory"].is_null(), "{b}");
        assert!(b["start_time"].is_null() && flat["memory"]["total_bytes"].is_null(), "{flat}");
        let monitoring = monitoring(7, Utc::now(), &snap);
        assert!(monitoring["network_stats"]["bytes_recv"].is_null(), "{monitoring}");
        let tree = stored(7, &snap, true);
        assert_eq!(tree["processes"].as_array().unwrap().len(), 1);
        assert_eq!(tree["processes"][0]["children"][0]["pid"], 200);
    }

    #[test]
    fn monitoring_view_has_the_seed_keys() {
        let snap = crate::sample::Sampler::new(Default::default()).sample();
        let v = monitoring(1, Utc::now(), &snap);
        for key in ["processes", "network_connections", "network_stats", "cpu_per_core", "port_usage"] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert_eq!(v["cpu_per_core"].as_array().unwrap().len(), snap.cpu.per_core_percent.len());
        assert!(v["network_stats"]["bytes_recv"].is_u64());
    }

    #[test]
    fn nesting_survives_cycles() {
        let p = |pid: u64, ppid: u64| object(json!({"pid": pid, "ppid": ppid}));
        let out = nest(vec![p(1, 2), p(2, 1), p(3, 9)]);
        let count = |v: &Value| -> usize {
            fn walk(v: &Value) -> usize {
                1 + v["children"].as_array().map_or(0, |c| c.iter().map(walk).sum())
            }
            walk(v)
        };
        assert_eq!(out.iter().map(count).sum::<usize>(), 3);
    }
}
