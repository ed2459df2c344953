//! Durations as people type them: the one parser behind every interval, age and
//! retention setting of every Procyon program (the collector's flags, `procyon watch`,
//! the agent's flags and config file) and the API's relative times (`from=-15m`), so
//! that `2`, `2s`, `500ms`, `1h 30m` and `3d` mean the same everywhere.
//!
//! A bare number is seconds (`2`, `0.5`); anything else is one or more numbers with a
//! unit, as humantime reads them (`ms`, `s`, `m` or `min`, `h`, `d`, `w`, ...).
//!
//! Errors are phrases that complete a sentence starting with the setting's name
//! ("interval must be between 200ms and 1h"): the same text reads right after a flag
//! (clap's "invalid value '0' for '--interval': ...") and after a config file's key.
//!
//! It is part of the core (no feature needed) because the agent, which has neither the
//! collector nor its dependencies, reads its settings with it too.

use std::time::Duration;

/// Longest input echoed back in an error: a setting can be any text.
const ECHO_CHARS: usize = 40;

/// A duration of zero or more: seconds as a number (`2`, `0.5`), or with units (`500ms`,
/// `2s`, `15m`, `1h`, `3d`, `1h 30m`).
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let echo: String = t.chars().take(ECHO_CHARS).collect();
    if let Ok(secs) = t.parse::<f64>() {
        // Negative, NaN and infinite numbers are refused here.
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("must be a duration of zero or more seconds (not `{echo}`)"));
    }
    humantime::parse_duration(t)
        .map_err(|_| format!("must be a duration such as 2 (seconds), 500ms, 2s, 15m, 1h or 7d (not `{echo}`)"))
}

/// [`parse`], then refused unless between `min` and `max` (both included).
pub fn parse_between(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = parse(text)?;
    if (min..=max).contains(&d) { Ok(d) } else { Err(format!("must be between {} and {}", format(min), format(max))) }
}

/// [`parse`], then refused if shorter than `min`.
pub fn parse_at_least(text: &str, min: Duration) -> Result<Duration, String> {
    let d = parse(text)?;
    if d >= min { Ok(d) } else { Err(format!("must be at least {}", format(min))) }
}

/// A duration as [`parse`] reads it back: `200ms`, `1m`, `1h 30m`, `7days`.
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_type_them() {
        let cases = [
            ("2", 2.0),
            ("0.5", 0.5),
            (" 3 ", 3.0),
            ("0", 0.0),
            ("2s", 2.0),
            ("500ms", 0.5),
            ("15m", 900.0),
            ("90min", 5400.0),
            ("1h", 3600.0),
            ("1h 30m", 5400.0),
            ("3d", 259_200.0),
        ];
        for (text, secs) in cases {
            assert_eq!(parse(text), Ok(Duration::from_secs_f64(secs)), "{text}");
        }
        for bad in ["", "yesterday", "-1", "-2s", "NaN", "inf", "2 fortnights", "1e400"] {
            let e = parse(bad).unwrap_err();
            assert!(e.starts_with("must be a duration"), "{bad}: {e}");
        }
        // What is echoed back is bounded.
        assert!(parse(&"x".repeat(10_000)).unwrap_err().len() < 200);
    }

    #[test]
    fn ranges_say_what_they_are_in_the_units_people_type() {
        let (min, max) = (Duration::from_millis(200), Duration::from_secs(3600));
        assert_eq!(parse_between("0.2", min, max), Ok(min));
        assert_eq!(parse_between("1h", min, max), Ok(max));
        assert_eq!(parse_between("0", min, max), Err("must be between 200ms and 1h".into()));
        assert_eq!(parse_between("3601", min, max), Err("must be between 200ms and 1h".into()));
        assert_eq!(parse_at_least("7d", Duration::from_secs(60)), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_at_least("5s", Duration::from_secs(60)), Err("must be at least 1m".into()));
        // A malformed value says so, not that it is out of range.
        assert!(parse_between("soon", min, max).unwrap_err().starts_with("must be a duration"));
    }

    #[test]
    fn formatted_durations_parse_back() {
        for d in [Duration::from_millis(200), Duration::from_secs(60), Duration::from_secs(5400)] {
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
