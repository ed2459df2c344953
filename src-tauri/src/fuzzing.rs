//! Shared pieces of the property-based fuzz targets (test builds only): how many cases
//! each target runs, and mutators that turn a real input (an upload, a frame, a delta)
//! into nearby wrong ones.
//!
//! The targets live next to the decoders they exercise, each in a `fuzz` test module, so
//! `cargo test --lib fuzz` runs them all. Each runs `PROCYON_FUZZ_CASES` cases (a few
//! hundred by default, so that `cargo test` stays quick); the bench command runs them
//! with many more. Inputs near a real one find more than random bytes alone: most random
//! bytes are refused by the first check, while a real upload with one field changed
//! reaches the validation behind it.

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Number, Value};

/// Cases per target when `PROCYON_FUZZ_CASES` is not set.
const DEFAULT_CASES: u32 = 256;

/// The configuration of every fuzz target: `PROCYON_FUZZ_CASES` cases (default
/// [`DEFAULT_CASES`]). Failures are not written to regression files: each crash found
/// becomes a named test next to the target instead.
pub(crate) fn config() -> Config {
    let cases = std::env::var("PROCYON_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES);
    Config { cases, failure_persistence: None, ..Config::default() }
}

/// Numbers where decoders go wrong: bounds of every integer width, negatives, floats
/// that overflow `f32`, fractions where integers are due.
fn edge_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            Value::from(0),
            Value::from(1),
            Value::from(-1),
            Value::from(u8::MAX),
            Value::from(u16::MAX),
            Value::from(u32::MAX),
            Value::from(u64::from(u32::MAX) + 1),
            Value::from(i64::MAX),
            Value::from(i64::MIN),
            Value::from(u64::MAX),
            Value::from(0.5),
            Value::from(-0.0),
            Value::from(100.0001),
            Value::from(1e38),
            Value::from(1e39),
            Value::from(1e308),
            Value::from(-1e308),
            Value::from(f64::MIN_POSITIVE),
        ]),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
    ]
}

/// Strings near the schema's: times, sizes, statuses, addresses, empty and long ones,
/// control characters and any text.
fn edge_string() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            " ",
            "2026-01-02T03:04:05Z",
            "2026-13-45T99:99:99Z",
            "+262143-12-31T23:59:59Z",
            "-262144-01-01T00:00:00Z",
            "1970-01-01T00:00:00+23:59",
            "150MB",
            "1.5 GiB",
            "99999999999999999999 TB",
            "-1KB",
            "NaN",
            "inf",
            "1e400",
            "running",
            "zombie",
            "127.0.0.1",
            "::1",
            "300.1.1.1",
            "tcp",
            "udp",
            "\u{0}",
            "\u{202e}evil",
            "h\nx",
        ])
        .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        "x{200,300}".prop_map(Value::from),
    ]
}

/// Any JSON value, leaning to the kinds and edges the wire types hold.
pub(crate) fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::Bool), edge_number(), edge_string()];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,12}", inner), 0..4)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// One change to a JSON document, at the node numbered `at` (modulo the node count, in
/// pre-order).
#[derive(Clone, Debug)]
pub(crate) enum Edit {
    /// Put a value in the node's place.
    Replace(usize, Value),
    /// Remove the node from its object or array.
    Remove(usize),
    /// Repeat the node in its array (or, in an object, nothing).
    Repeat(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), json_value()).prop_map(|(at, v)| Edit::Replace(at, v)),
        2 => any::<usize>().prop_map(Edit::Remove),
        1 => any::<usize>().prop_map(Edit::Repeat),
    ]
}

/// `seed` with one to four edits, each somewhere in it.
pub(crate) fn mutated_json(seed: Value) -> impl Strategy<Value = Value> {
    prop::collection::vec(edit(), 1..5).prop_map(move |edits| {
        let mut doc = seed.clone();
        for e in edits {
            apply(&mut doc, e);
        }
        doc
    })
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

fn apply(doc: &mut Value, edit: Edit) {
    let n = count(doc);
    let target = match &edit {
        Edit::Replace(at, _) | Edit::Remove(at) | Edit::Repeat(at) => at % n,
    };
    if target == 0 {
        // The root itself: only a replacement makes sense.
        if let Edit::Replace(_, v) = edit {
            *doc = v;
        }
        return;
    }
    let mut seen = 0;
    edit_under(doc, target, &mut seen, edit);
}

/// Finds the child numbered `target` under `node` (`seen` counts nodes visited so far,
/// `node` included) and edits it in its parent. Returns whether it was found.
fn edit_under(node: &mut Value, target: usize, seen: &mut usize, edit: Edit) -> bool {
    *seen += 1;
    match node {
        Value::Array(items) => {
            for i in 0..items.len() {
                if *seen == target {
                    match edit {
                        Edit::Replace(_, v) => items[i] = v,
                        Edit::Remove(_) => {
                            items.remove(i);
                        }
                        Edit::Repeat(_) => {
                            let copy = items[i].clone();
                            items.insert(i, copy);
                        }
                    }
                    return true;
                }
                if edit_under(&mut items[i], target, seen, edit.clone()) {
                    return true;
                }
            }
            false
        }
        Value::Object(fields) => {
            let keys: Vec<String> = fields.keys().cloned().collect();
            for k in keys {
                if *seen == target {
                    match edit {
                        Edit::Replace(_, v) => {
                            fields.insert(k, v);
                        }
                        Edit::Remove(_) => {
                            fields.remove(&k);
                        }
                        Edit::Repeat(_) => {}
                    }
                    return true;
                }
                if edit_under(fields.get_mut(&k).expect("a key just listed"), target, seen, edit.clone()) {
                    return true;
                }
            }
            false
        }
        _ => false,
    }
}

/// `seed` with a few byte-level changes: flips, overwrites, insertions, deletions and a
/// possible truncation.
pub(crate) fn mutated_bytes(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    (prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 1..8), prop::option::of(any::<usize>())).prop_map(
        move |(edits, cut)| {
            let mut b = seed.clone();
            for (at, byte, how) in edits {
                if b.is_empty() {
                    b.push(byte);
                    continue;
                }
                let i = at % b.len();
                match how {
                    0 => b[i] ^= 1 << (byte % 8),
                    1 => b[i] = byte,
                    2 => b.insert(i, byte),
                    _ => {
                        b.remove(i);
                    }
                }
            }
            if let Some(cut) = cut.filter(|c| c % 4 == 0) {
                b.truncate(cut % (b.len() + 1));
            }
            b
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_reach_every_node() {
        let doc = serde_json::json!({"a": [1, {"b": 2}], "c": 3});
        let mut reached = std::collections::BTreeSet::new();
        for at in 0..count(&doc) {
            let mut d = doc.clone();
            apply(&mut d, Edit::Replace(at, Value::from("X")));
            reached.insert(d.to_string());
        }
        // Root, "a", 1, {"b":2}, 2, "c": six nodes, six different documents.
        assert_eq!(reached.len(), 6, "{reached:?}");
    }
}
