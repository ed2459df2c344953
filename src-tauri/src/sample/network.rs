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
    // A rate over an interval too short to measure can come out infinite: none then.
    let rate = |now: u64, prev: Option<u64>| match prev {
        Some(p) if secs > 0.0 && now >= p => Some((now - p) as f64 / secs).filter(|r| r.is_finite()).unwrap_or(0.0),
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

/// Adds an interface's counters to the total. The counters are the OS's, as large as it
/// says (a driver's garbage, or years of a fast link): the sums saturate rather than
/// overflow, which would panic a debug build and wrap a release build to nonsense.
fn add(total: &mut InterfaceCounters, c: &InterfaceCounters) {
    let sum = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
    };
    total.sent_bytes = total.sent_bytes.saturating_add(c.sent_bytes);
    total.received_bytes = total.received_bytes.saturating_add(c.received_bytes);
    total.sent_packets = total.sent_packets.saturating_add(c.sent_packets);
    total.received_packets = total.received_packets.saturating_add(c.received_packets);
    total.errors_in = total.errors_in.saturating_add(c.errors_in);
    total.errors_out = total.errors_out.saturating_add(c.errors_out);
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

    pub(super) const DEV: &str = "Inter-|   Receive                                                |  Transmit
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

    /// Found by `fuzz::any_counters_give_sane_rates`: two interfaces whose counters
    /// add up past `u64::MAX` overflowed the total.
    #[test]
    fn totals_of_huge_counters_saturate_instead_of_overflowing() {
        let huge = RawCounters { sent_bytes: u64::MAX, drops_out: Some(u64::MAX), ..Default::default() };
        let one = RawCounters { sent_bytes: 1, drops_out: Some(1), ..Default::default() };
        let mut rates = Rates::default();
        let s = rates.sample(vec![("eth0".into(), huge), ("eth1".into(), one)], 1.0);
        let total = s.total.unwrap();
        assert_eq!((total.sent_bytes, total.drops_out), (u64::MAX, Some(u64::MAX)));
        // And a rate over next to no time is none rather than infinite.
        let s = rates
            .sample(vec![("eth0".into(), huge), ("eth1".into(), RawCounters { sent_bytes: u64::MAX, ..one })], 1e-310);
        assert_eq!(s.total.unwrap().sent_bytes_per_sec, 0.0);
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

/// Fuzz targets for `/proc/net/dev` and the rates made from it: any text, and this
/// machine's real file with bytes changed, parses to interfaces or to nothing, never a
/// panic; any two readings of any counters give rates that are finite and never
/// negative, and totals that never overflow. See `crate::fuzzing`.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzzing::{config, mutated_bytes};
    use proptest::prelude::*;

    /// This machine's `/proc/net/dev`, or the unit tests' copy where there is none.
    fn real() -> Vec<u8> {
        std::fs::read("/proc/net/dev").unwrap_or_else(|_| super::tests::DEV.as_bytes().to_vec())
    }

    /// Counters near where arithmetic goes wrong, and any.
    fn counter() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0), Just(1), Just(u64::MAX), Just(u64::MAX - 1), Just(1 << 63), any::<u64>()]
    }

    fn raw() -> impl Strategy<Value = RawCounters> {
        (prop::array::uniform8(counter()), any::<bool>()).prop_map(|(n, drops)| RawCounters {
            received_bytes: n[0],
            received_packets: n[1],
            errors_in: n[2],
            drops_in: drops.then_some(n[3]),
            sent_bytes: n[4],
            sent_packets: n[5],
            errors_out: n[6],
            drops_out: drops.then_some(n[7]),
        })
    }

    /// A reading: a few interfaces (names repeat, loopback among them) with any counters.
    fn reading() -> impl Strategy<Value = Vec<(String, RawCounters)>> {
        prop::collection::vec((prop::sample::select(vec!["lo", "eth0", "eth1", "wg0", ""]), raw()), 0..5)
            .prop_map(|v| v.into_iter().map(|(n, c)| (n.to_owned(), c)).collect())
    }

    /// The file's text for `interfaces`: the two header lines, then a line each.
    fn as_file(interfaces: &[(String, RawCounters)]) -> String {
        let mut text = String::from("Inter-| Receive | Transmit\n face |bytes packets|bytes packets\n");
        for (name, c) in interfaces {
            let d = |v: Option<u64>| v.unwrap_or(0);
            text.push_str(&format!(
                "{name}: {} {} {} {} 0 0 0 0 {} {} {} {} 0 0 0 0\n",
                c.received_bytes,
                c.received_packets,
                c.errors_in,
                d(c.drops_in),
                c.sent_bytes,
                c.sent_packets,
                c.errors_out,
                d(c.drops_out)
            ));
        }
        text
    }

    fn check_rates(sample: &NetworkSample) -> Result<(), TestCaseError> {
        let all = sample.interfaces.iter().map(|i| &i.counters).chain(sample.total.as_ref());
        for c in all {
            for rate in
                [c.sent_bytes_per_sec, c.received_bytes_per_sec, c.sent_packets_per_sec, c.received_packets_per_sec]
            {
                prop_assert!(rate.is_finite() && rate >= 0.0, "{rate} in {c:?}");
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_text(text in "\\PC{0,300}") {
            let _ = parse_proc_net_dev(&text);
        }

        #[test]
        fn the_real_file_with_bytes_changed(bytes in mutated_bytes(real())) {
            let text = String::from_utf8_lossy(&bytes);
            let mut rates = Rates::default();
            rates.prime(parse_proc_net_dev(&text));
            check_rates(&rates.sample(parse_proc_net_dev(&text), 1.0))?;
        }

        /// Whatever the counters, the file reads back as written, and two readings give
        /// sane rates over any interval (zero and negative ones too: a clock that did
        /// not move).
        #[test]
        fn any_counters_give_sane_rates(
            first in reading(),
            second in reading(),
            secs in prop_oneof![Just(0.0), Just(-1.0), Just(1e-300), 0.0f64..1e6],
        ) {
            let parsed = parse_proc_net_dev(&as_file(&second));
            let expected: Vec<(String, RawCounters)> = second
                .iter()
                .map(|(n, c)| (n.clone(), RawCounters { drops_in: c.drops_in.or(Some(0)), drops_out: c.drops_out.or(Some(0)), ..*c }))
                .collect();
            prop_assert_eq!(&parsed, &expected);
            let mut rates = Rates::default();
            rates.prime(parse_proc_net_dev(&as_file(&first)));
            check_rates(&rates.sample(parsed, secs))?;
        }
    }
}
