//! Network interfaces: counters since boot, and rates over the last interval.
//!
//! Counters are read per OS (`/proc/net/dev` on Linux, sysinfo elsewhere) as
//! [`RawCounters`]; this file keeps the previous reading and turns two readings into
//! [`InterfaceCounters`]. A counter that goes backwards (an interface was reset or
//! re-created) gives a rate of zero, not a huge number.

use std::collections::HashMap;

use crate::model::{InterfaceCounters, InterfaceSample, NetworkSample};

/// One interface's counters as the OS reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct RawCounters {
    pub received_bytes: u64,
    pub received_packets: u64,
    pub errors_in: u64,
    pub drops_in: Option<u64>,
    pub sent_bytes: u64,
    pub sent_packets: u64,
    pub errors_out: u64,
    pub drops_out: Option<u64>,
}

/// Parses `/proc/net/dev`: two header lines, then `name: 16 numbers` per interface.
pub(super) fn parse_proc_net_dev(text: &str) -> Vec<(String, RawCounters)> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let n: Vec<u64> = rest.split_ascii_whitespace().map(|v| v.parse().ok()).collect::<Option<_>>()?;
            if n.len() < 16 {
                return None;
            }
            Some((
                name.trim().to_owned(),
                RawCounters {
                    received_bytes: n[0],
                    received_packets: n[1],
                    errors_in: n[2],
                    drops_in: Some(n[3]),
                    sent_bytes: n[8],
                    sent_packets: n[9],
                    errors_out: n[10],
                    drops_out: Some(n[11]),
                },
            ))
        })
        .collect()
}

/// Loopback traffic is the machine talking to itself: left out of the total.
fn is_loopback(name: &str) -> bool {
    name == "lo" || name.starts_with("lo0") || name.eq_ignore_ascii_case("loopback")
}

/// Turns successive readings into counters with rates.
#[derive(Default)]
pub(super) struct Rates {
    previous: HashMap<String, RawCounters>,
}

impl Rates {
    /// Remembers `now` as the previous reading without producing a sample.
    pub fn prime(&mut self, now: Vec<(String, RawCounters)>) {
        self.previous = now.into_iter().collect();
    }

    /// The sample for `now`, with rates over `secs` since the previous reading.
    pub fn sample(&mut self, now: Vec<(String, RawCounters)>, secs: f64) -> NetworkSample {
        let mut total = InterfaceCounters::default();
        let mut interfaces = Vec::with_capacity(now.len());
        for (name, raw) in &now {
            let prev = self.previous.get(name).copied();
            let counters = with_rates(raw, prev, secs);
            if !is_loopback(name) {
                add(&mut total, &counters);
            }
            interfaces.push(InterfaceSample { name: name.clone(), counters });
        }
        interfaces.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        self.previous = now.into_iter().collect();
        NetworkSample { total: Some(total), interfaces }
    }
}

fn with_rates(now: &RawCounters, prev: Option<RawCounters>, secs: f64) -> InterfaceCounters {
    let rate = |now: u64, prev: Option<u64>| match prev {
        Some(p) if secs > 0.0 && now >= p => (now - p) as f64 / secs,
        _ => 0.0,
    };
    InterfaceCounters {
        sent_bytes: now.sent_bytes,
        received_bytes: now.received_bytes,
        sent_packets: now.sent_packets,
        received_packets: now.received_packets,
        errors_in: now.errors_in,
        errors_out: now.errors_out,
        drops_in: now.drops_in,
        drops_out: now.drops_out,
        sent_bytes_per_sec: rate(now.sent_bytes, prev.map(|p| p.sent_bytes)),
        received_bytes_per_sec: rate(now.received_bytes, prev.map(|p| p.received_bytes)),
        sent_packets_per_sec: rate(now.sent_packets, prev.map(|p| p.sent_packets)),
        received_packets_per_sec: rate(now.received_packets, prev.map(|p| p.received_packets)),
    }
}

fn add(total: &mut InterfaceCounters, c: &InterfaceCounters) {
    let sum = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    };
    total.sent_bytes += c.sent_bytes;
    total.received_bytes += c.received_bytes;
    total.sent_packets += c.sent_packets;
    total.received_packets += c.received_packets;
    total.errors_in += c.errors_in;
    total.errors_out += c.errors_out;
    total.drops_in = sum(total.drops_in, c.drops_in);
    total.drops_out = sum(total.drops_out, c.drops_out);
    total.sent_bytes_per_sec += c.sent_bytes_per_sec;
    total.received_bytes_per_sec += c.received_bytes_per_sec;
    total.sent_packets_per_sec += c.sent_packets_per_sec;
    total.received_packets_per_sec += c.received_packets_per_sec;
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0: 5000000    4000    1    2    0     0          0         0   300000    2500    3    4    0     0       0          0
";

    #[test]
    fn parses_proc_net_dev() {
        let ifs = parse_proc_net_dev(DEV);
        assert_eq!(ifs.len(), 2);
        let (name, eth0) = &ifs[1];
        assert_eq!(name, "eth0");
        assert_eq!(eth0.received_bytes, 5_000_000);
        assert_eq!(eth0.received_packets, 4000);
        assert_eq!((eth0.errors_in, eth0.drops_in), (1, Some(2)));
        assert_eq!((eth0.sent_bytes, eth0.sent_packets), (300_000, 2500));
        assert_eq!((eth0.errors_out, eth0.drops_out), (3, Some(4)));
        assert!(parse_proc_net_dev("garbage\nmore\nx: 1 2 three").is_empty());
    }

    #[test]
    fn rates_are_deltas_over_time_and_the_total_skips_loopback() {
        let mut rates = Rates::default();
        let first = parse_proc_net_dev(DEV);
        rates.prime(first.clone());
        let mut second = first;
        second[1].1.received_bytes += 2000;
        second[0].1.received_bytes += 999_999;
        let s = rates.sample(second, 2.0);
        assert_eq!(s.total.as_ref().unwrap().received_bytes_per_sec, 1000.0);
        assert_eq!(s.total.as_ref().unwrap().received_bytes, 5_002_000);
        assert_eq!(s.interfaces.len(), 2);
    }

    #[test]
    fn a_counter_reset_gives_zero_not_a_spike() {
        let mut rates = Rates::default();
        let first = parse_proc_net_dev(DEV);
        rates.prime(first.clone());
        let mut second = first;
        second[1].1.sent_bytes = 10;
        let s = rates.sample(second, 1.0);
        assert_eq!(s.total.as_ref().unwrap().sent_bytes_per_sec, 0.0);
        assert!(s.total.as_ref().unwrap().received_bytes_per_sec.is_finite());
    }
}
