//! Quiet hours of a channel: a daily span of wall-clock time in an IANA time zone
//! (`22:00` to `07:00` in `Europe/Berlin`) during which its notifications are held
//! back, to go out as one summary when the span ends.
//!
//! The span is wall-clock time, not a UTC offset: 22:00 in Berlin is 21:00 UTC in
//! winter and 20:00 UTC in summer, and the night the clocks change is as long as the
//! clocks say (one hour shorter or longer). Whether an instant is quiet is decided on
//! the zone's wall clock at that instant; when they end is the first instant the wall
//! clock shows the end: an end in the hour skipped in spring is the moment the clocks
//! jump, one in the hour repeated in autumn is its first occurrence (and the repeated
//! hour is not quiet again). Everything here is a pure function of the settings and an
//! instant, so the daylight-saving cases are tested over fixed instants.

use chrono::{DateTime, Utc};
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use ts_rs::TS;
use utoipa::ToSchema;

/// When a channel holds its notifications back.
///
/// JSON: `{"start": "22:00", "end": "07:00", "time_zone": "Europe/Berlin"}`. Times are
/// `HH:MM` (or `HH:MM:SS`) on the time zone's wall clock; an end before the start
/// spans midnight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// When they begin each day, `HH:MM` or `HH:MM:SS`.
    pub start: String,
    /// When they end, `HH:MM` or `HH:MM:SS`; before `start` to span midnight.
    pub end: String,
    /// An IANA time zone name (`Europe/Berlin`, `America/New_York`, `UTC`).
    pub time_zone: String,
}

/// Quiet hours read and checked, ready to ask.
#[derive(Clone, Debug)]
pub struct Quiet {
    start: Time,
    end: Time,
    zone: TimeZone,
}

/// Reads `HH:MM` or `HH:MM:SS` (24-hour clock).
fn clock(field: &str, text: &str) -> Result<Time, super::rule::Invalid> {
    let bad = || super::rule::Invalid {
        field: field.into(),
        message: format!("`{text}` is not a time of day: write HH:MM (24-hour clock), e.g. 22:00."),
    };
    let parts: Vec<&str> = text.split(':').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return Err(bad());
    }
    let n = |i: usize| parts.get(i).map_or(Ok(0), |p| p.parse::<i8>()).map_err(|_| bad());
    Time::new(n(0)?, n(1)?, n(2)?, 0).map_err(|_| bad())
}

impl QuietHours {
    /// Checks the settings (fields named `quiet_hours.start` and so on) and reads them.
    pub fn compile(&self) -> Result<Quiet, super::rule::Invalid> {
        let start = clock("quiet_hours.start", &self.start)?;
        let end = clock("quiet_hours.end", &self.end)?;
        if start == end {
            return Err(super::rule::Invalid {
                field: "quiet_hours.end".into(),
                message: "Quiet hours that end when they start would never end (or never begin).".into(),
            });
        }
        if self.time_zone.len() > 100 || self.time_zone.chars().any(|c| c.is_control()) {
            return Err(super::rule::Invalid {
                field: "quiet_hours.time_zone".into(),
                message: "A time zone is an IANA name such as Europe/Berlin.".into(),
            });
        }
        let zone = TimeZone::get(&self.time_zone).map_err(|_| super::rule::Invalid {
            field: "quiet_hours.time_zone".into(),
            message: format!("`{}` is not a known IANA time zone (e.g. Europe/Berlin, UTC).", self.time_zone),
        })?;
        Ok(Quiet { start, end, zone })
    }
}

impl Quiet {
    /// The first instant the zone's wall clock shows `time` on `date`: for a time the
    /// clocks skip, the moment they jump; for one they repeat, its first occurrence.
    fn at(&self, date: Date, time: Time) -> Option<DateTime<Utc>> {
        use jiff::tz::AmbiguousOffset;
        let civil = date.to_datetime(time);
        let ts = match self.zone.to_ambiguous_timestamp(civil).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(civil).ok()?,
            // Read with the later offset, the time lies before the jump; the jump is the
            // zone's next transition from there.
            AmbiguousOffset::Gap { after, .. } => {
                let before_jump = after.to_timestamp(civil).ok()?;
                self.zone.following(before_jump).next()?.timestamp()
            }
            AmbiguousOffset::Fold { before, .. } => before.to_timestamp(civil).ok()?,
        };
        DateTime::from_timestamp(ts.as_second(), u32::try_from(ts.subsec_nanosecond()).unwrap_or(0))
    }

    /// When the quiet hours that hold at `now` end; `None` when `now` is outside them.
    pub fn until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let ts = jiff::Timestamp::from_millisecond(now.timestamp_millis()).ok()?;
        let local = ts.to_zoned(self.zone.clone());
        let (today, clock) = (local.date(), local.time());
        let end = if self.start < self.end {
            // Within one day: [start, end).
            (self.start <= clock && clock < self.end).then(|| self.at(today, self.end)).flatten()
        } else if clock >= self.start {
            // Past the start in the evening: they end tomorrow.
            self.at(today.tomorrow().ok()?, self.end)
        } else if clock < self.end {
            // Before the end in the morning: they began yesterday.
            self.at(today, self.end)
        } else {
            None
        };
        // In the repeated hour of autumn the wall clock goes back into the span after it
        // ended at the end's first occurrence: not quiet again.
        end.filter(|e| *e > now)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn quiet(start: &str, end: &str, zone: &str) -> Quiet {
        QuietHours { start: start.into(), end: end.into(), time_zone: zone.into() }.compile().unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// Berlin's clocks go from 02:00 to 03:00 on 2026-03-29 and from 03:00 back to 02:00
    /// on 2026-10-25. Quiet from 22:00 to 07:00 on the wall clock: in UTC that is 21:00
    /// to 06:00 in winter and 20:00 to 05:00 in summer, and the nights of the changes
    /// end at the new offset.
    #[test]
    fn berlin_nights_follow_the_wall_clock_across_daylight_saving_changes() {
        let q = quiet("22:00", "07:00", "Europe/Berlin");
        // The winter night before the spring change: 22:00 CET is 21:00 UTC.
        assert_eq!(q.until(utc("2026-03-27T20:59:59Z")), None);
        assert_eq!(q.until(utc("2026-03-27T21:00:00Z")), Some(utc("2026-03-28T06:00:00Z")));
        // The night of the change: begins at 22:00 CET (21:00 UTC), ends at 07:00 CEST
        // (05:00 UTC): eight hours long.
        assert_eq!(q.until(utc("2026-03-28T21:00:00Z")), Some(utc("2026-03-29T05:00:00Z")));
        assert_eq!(q.until(utc("2026-03-29T01:30:00Z")), Some(utc("2026-03-29T05:00:00Z")), "just after the gap");
        assert_eq!(q.until(utc("2026-03-29T04:59:59Z")), Some(utc("2026-03-29T05:00:00Z")));
        assert_eq!(q.until(utc("2026-03-29T05:00:00Z")), None, "07:00 CEST");
        assert_eq!(q.until(utc("2026-03-29T05:30:00Z")), None, "06:30 UTC would be wrong: it is 07:30 in Berlin");
        // The first summer evening: 22:00 CEST is 20:00 UTC.
        assert_eq!(q.until(utc("2026-03-29T19:59:59Z")), None);
        assert_eq!(q.until(utc("2026-03-29T20:00:00Z")), Some(utc("2026-03-30T05:00:00Z")));
        // The autumn change: begins at 22:00 CEST (20:00 UTC), ends at 07:00 CET (06:00
        // UTC): ten hours, the repeated hour included.
        assert_eq!(q.until(utc("2026-10-24T20:00:00Z")), Some(utc("2026-10-25T06:00:00Z")));
        assert_eq!(q.until(utc("2026-10-25T00:30:00Z")), Some(utc("2026-10-25T06:00:00Z")), "02:30 CEST");
        assert_eq!(q.until(utc("2026-10-25T01:30:00Z")), Some(utc("2026-10-25T06:00:00Z")), "02:30 CET");
        assert_eq!(q.until(utc("2026-10-25T05:59:59Z")), Some(utc("2026-10-25T06:00:00Z")));
        assert_eq!(q.until(utc("2026-10-25T06:00:00Z")), None);
        // The first winter evening again at 21:00 UTC.
        assert_eq!(q.until(utc("2026-10-25T20:30:00Z")), None, "21:30 CET: not yet");
        assert_eq!(q.until(utc("2026-10-25T21:00:00Z")), Some(utc("2026-10-26T06:00:00Z")));
    }

    /// A start or end inside the skipped or the repeated hour.
    #[test]
    fn times_in_the_skipped_and_the_repeated_hour() {
        // 02:30 does not exist on 2026-03-29 in Berlin: quiet from 01:00 to 02:30 ends
        // at the first instant after the gap, 03:00 CEST (01:00 UTC).
        let q = quiet("01:00", "02:30", "Europe/Berlin");
        assert_eq!(q.until(utc("2026-03-29T00:30:00Z")), Some(utc("2026-03-29T01:00:00Z")));
        assert_eq!(q.until(utc("2026-03-29T01:00:00Z")), None, "03:00 CEST is past 02:30");
        // 02:30 happens twice on 2026-10-25: the first one (CEST, 00:30 UTC) ends them.
        assert_eq!(q.until(utc("2026-10-24T23:30:00Z")), Some(utc("2026-10-25T00:30:00Z")));
        assert_eq!(q.until(utc("2026-10-25T00:45:00Z")), None, "02:45 CEST");
        assert_eq!(q.until(utc("2026-10-25T01:15:00Z")), None, "02:15 CET, the repeated hour: not quiet again");
        // New York springs forward at 02:00 on 2026-03-08 (EST to EDT): 23:00 to 06:00
        // is 04:00 to 10:00 UTC that night.
        let ny = quiet("23:00", "06:00", "America/New_York");
        assert_eq!(ny.until(utc("2026-03-08T04:00:00Z")), Some(utc("2026-03-08T10:00:00Z")));
        assert_eq!(ny.until(utc("2026-03-08T10:00:00Z")), None);
        assert_eq!(ny.until(utc("2026-03-09T03:00:00Z")), Some(utc("2026-03-09T10:00:00Z")), "23:00 EDT");
    }

    #[test]
    fn daytime_spans_and_seconds() {
        let q = quiet("09:00:30", "17:00", "UTC");
        assert_eq!(q.until(utc("2026-06-01T09:00:29Z")), None);
        assert_eq!(q.until(utc("2026-06-01T09:00:30Z")), Some(utc("2026-06-01T17:00:00Z")));
        assert_eq!(q.until(utc("2026-06-01T17:00:00Z")), None);
    }

    #[test]
    fn bad_settings_name_their_field() {
        let check = |start: &str, end: &str, zone: &str| {
            QuietHours { start: start.into(), end: end.into(), time_zone: zone.into() }.compile().unwrap_err().field
        };
        assert_eq!(check("25:00", "07:00", "UTC"), "quiet_hours.start");
        assert_eq!(check("22:00", "7", "UTC"), "quiet_hours.end");
        assert_eq!(check("22:00", "22:00", "UTC"), "quiet_hours.end");
        assert_eq!(check("22:00", "07:00", "Mars/Olympus"), "quiet_hours.time_zone");
        assert_eq!(check("22:00", "07:00", "+02:00"), "quiet_hours.time_zone");
    }
}
