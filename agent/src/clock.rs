//! The agent's wall clock: the time it stamps on snapshots (`taken_at`) and ages its
//! spool by. It is the system's clock, unless `PROCYON_TEST_CLOCK_OFFSET_FILE` names a
//! file holding a signed number of seconds to add to it. That variable is for tests
//! only: it lets a test move a running agent's clock (back an hour, forward a day)
//! without being root and without touching the machine's clock. The file is read at
//! every use, so a test changes the offset by rewriting it; unset, nothing is read.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, TimeDelta, Utc};

/// The variable naming the offset file (tests only).
const OFFSET_FILE_VAR: &str = "PROCYON_TEST_CLOCK_OFFSET_FILE";

/// The test offset in seconds, or 0 when unset or unreadable.
fn offset_seconds() -> i64 {
    let Some(path) = std::env::var_os(OFFSET_FILE_VAR) else { return 0 };
    std::fs::read_to_string(path).ok().and_then(|text| text.trim().parse().ok()).unwrap_or(0)
}

/// `at` (a reading of the system clock) moved by the test offset.
pub fn adjust(at: DateTime<Utc>) -> DateTime<Utc> {
    at + TimeDelta::seconds(offset_seconds())
}

/// Now, as [`SystemTime`], moved by the test offset.
pub fn system_now() -> SystemTime {
    let now = SystemTime::now();
    let offset = offset_seconds();
    let by = Duration::from_secs(offset.unsigned_abs());
    if offset >= 0 { now + by } else { now.checked_sub(by).unwrap_or(now) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_variable_it_is_the_system_clock() {
        // The variable is never set in unit tests.
        let before = SystemTime::now();
        let now = system_now();
        assert!(now >= before && now <= SystemTime::now());
        let t = Utc::now();
        assert_eq!(adjust(t), t);
    }
}
