//! Query strings: the extractor every REST handler reads its parameters with, and the
//! time forms they accept.
//!
//! A bad parameter is the client's mistake in one named field, so it gets 422 with that
//! field (`{"error": "invalid", "field": "limit", ...}`), like a bad field in a body;
//! axum's own `Query` answers 400 with no field. Times are read as people type them:
//! RFC 3339 with or without a zone (UTC when none), a date alone, seconds since the
//! epoch, `now`, or relative to now (`-15m`, `-2h`, `-7d`).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::error::ApiError;

/// Query string with errors in our shape: 422 naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parse(parts.uri.query().unwrap_or_default()).map(ApiQuery)
    }
}

/// Reads `query` (without the `?`) into `T`.
pub fn parse<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner().to_string();
        // A missing field is reported at the top (`.`); its name is in the message.
        let field = (field != ".").then_some(field);
        let message = match &field {
            Some(f) => format!("Query parameter `{f}`: {inner}."),
            None => format!("Query string: {inner}."),
        };
        ApiError::Invalid { field, message }
    })
}

/// The time forms a query parameter accepts, for messages and the README.
pub const TIME_FORMS: &str = "RFC 3339 (2026-01-02T03:04:05Z; without a zone, UTC), a date \
(2026-01-02), seconds since the epoch, `now`, or relative to now (-15m, -2h, -7d)";

/// A time as people type it (see the module's documentation), against `now`.
pub fn parse_time(text: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("now") {
        return Some(now);
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(t) {
        return Some(at.with_timezone(&Utc));
    }
    // A `+` typed into a query string unencoded arrives as a space: `...T03:04:05 02:00`.
    if let Some(i) = t.rfind(' ')
        && t[..i].contains('T')
        && let Ok(at) = DateTime::parse_from_rfc3339(&format!("{}+{}", &t[..i], &t[i + 1..]))
    {
        return Some(at.with_timezone(&Utc));
    }
    // A space instead of the `T`, as SQL and many logs write it.
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(t, format) {
            return Some(Utc.from_utc_datetime(&naive));
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Some(Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0)?));
    }
    if let Some(ago) = t.strip_prefix('-') {
        let ago = crate::duration::parse(ago).ok()?;
        return now.checked_sub_signed(chrono::Duration::from_std(ago).ok()?);
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = t.parse().ok()?;
        let whole = secs.trunc();
        if !(0.0..=253_402_300_799.0).contains(&whole) {
            return None;
        }
        return DateTime::from_timestamp(whole as i64, ((secs - whole) * 1e9) as u32);
    }
    None
}

/// `#[serde(deserialize_with = "time")]` for an optional time parameter.
pub fn time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    match text {
        None => Ok(None),
        Some(t) if t.trim().is_empty() => Ok(None),
        Some(t) => parse_time(&t, Utc::now())
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("`{t}` is not a time; use {TIME_FORMS}"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn times_read_as_people_type_them() {
        let now = Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap();
        let at = |s: &str| parse_time(s, now).map(|t| t.to_rfc3339());
        assert_eq!(at("2026-01-02T03:04:05Z").as_deref(), Some("2026-01-02T03:04:05+00:00"));
        assert_eq!(at("2026-01-02T03:04:05+02:00").as_deref(), Some("2026-01-02T01:04:05+00:00"));
        assert_eq!(at("2026-01-02T03:04:05 02:00").as_deref(), Some("2026-01-02T01:04:05+00:00"));
        assert_eq!(at("2026-01-02T03:04:05").as_deref(), Some("2026-01-02T03:04:05+00:00"));
        assert_eq!(at("2026-01-02 03:04").as_deref(), Some("2026-01-02T03:04:00+00:00"));
        assert_eq!(at("2026-01-02").as_deref(), Some("2026-01-02T00:00:00+00:00"));
        assert_eq!(at("1767225600").as_deref(), Some("2026-01-01T00:00:00+00:00"));
        assert_eq!(at("-15m").as_deref(), Some("2026-06-01T11:45:00+00:00"));
        assert_eq!(at("-7d").as_deref(), Some("2026-05-25T12:00:00+00:00"));
        assert_eq!(at("NOW").as_deref(), Some("2026-06-01T12:00:00+00:00"));
        for bad in ["yesterday", "", "-", "-lots", "99999999999999999999", "2026-13-01", "1e5"] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Q {
        limit: Option<u32>,
        #[serde(default, deserialize_with = "time")]
        from: Option<DateTime<Utc>>,
        hostname: String,
    }

    #[test]
    fn a_bad_parameter_is_named() {
        let field = |q: &str| match parse::<Q>(q) {
            Err(ApiError::Invalid { field, message }) => (field, message),
            other => panic!("{q}: {other:?}"),
        };
        let (f, m) = field("hostname=a&limit=abc");
        assert_eq!(f.as_deref(), Some("limit"), "{m}");
        let (f, m) = field("hostname=a&from=yesterday");
        assert_eq!(f.as_deref(), Some("from"));
        assert!(m.contains("RFC 3339"), "{m}");
        let (f, m) = field("limit=3");
        assert_eq!(f, None);
        assert!(m.contains("hostname"), "{m}");
        let q: Q = parse("hostname=a&from=-1h&limit=5").unwrap();
        assert_eq!(q.limit, Some(5));
        assert!(q.from.unwrap() < Utc::now());
    }
}

/// Fuzz targets for times and durations as people type them into query strings (and
/// settings): any text, and text near the accepted forms, is a time or `None`, never a
/// panic, even at the ends of the calendar. See `crate::fuzzing`.
#[cfg(test)]
mod fuzz {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::fuzzing::config;
    use proptest::prelude::*;

    /// Text near the forms [`parse_time`] reads.
    fn time_like() -> impl Strategy<Value = String> {
        prop_oneof![
            "[+-]?[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}([T ][0-9]{1,2}:[0-9]{1,2}(:[0-9]{1,2}(\\.[0-9]{0,12})?)?)?(Z|[+-][0-9]{2}:[0-9]{2}| [0-9]{2}:[0-9]{2})?",
            "-[0-9]{1,25}(\\.[0-9]{0,4})?(ns|us|ms|s|m|min|h|d|w|M|y|years)?( [0-9]{1,20}[a-z]{1,5})?",
            "[0-9.]{1,25}",
            ".{0,30}",
        ]
    }

    /// Instants where arithmetic on times overflows.
    fn now() -> impl Strategy<Value = DateTime<Utc>> {
        prop_oneof![
            Just(Utc::now()),
            Just(DateTime::<Utc>::MIN_UTC),
            Just(DateTime::<Utc>::MAX_UTC),
            (-8_000_000_000_000i64..8_000_000_000_000).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default()),
        ]
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_time_text(text in time_like(), now in now()) {
            let _ = parse_time(&text, now);
            let _ = crate::duration::parse(&text);
            let _ = crate::duration::parse(text.trim_start_matches('-'));
        }
    }
}
