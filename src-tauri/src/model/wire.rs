//! How times travel in each encoding: RFC 3339 text in human-readable ones (JSON: the
//! API, the store and the seeds' shapes, unchanged), whole nanoseconds since the epoch
//! in binary ones (the agent channel's MessagePack).
//!
//! Why: a snapshot carries a start time per process, and reading 480 RFC 3339 strings is
//! a large share of decoding one; an integer is read in a few nanoseconds and is exact.
//! Use as `#[serde(with = "wire::time")]` (or `wire::option_time`).

/// A `DateTime<Utc>` field.
pub mod time {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// RFC 3339 for people, nanoseconds for machines.
    pub fn serialize<S: Serializer>(value: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            return value.serialize(serializer);
        }
        let nanos = value
            .timestamp_nanos_opt()
            .ok_or_else(|| serde::ser::Error::custom(format!("{value} is outside the years 1677 to 2262")))?;
        serializer.serialize_i64(nanos)
    }

    /// The inverse of [`serialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
        if deserializer.is_human_readable() {
            return DateTime::deserialize(deserializer);
        }
        Ok(DateTime::from_timestamp_nanos(i64::deserialize(deserializer)?))
    }
}

/// An `Option<DateTime<Utc>>` field.
pub mod option_time {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// `None` as the encoding's null, else as [`super::time`].
    pub fn serialize<S: Serializer>(value: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(t) => super::time::serialize(t, serializer),
            None => serializer.serialize_none(),
        }
    }

    /// The inverse of [`serialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        #[derive(serde::Deserialize)]
        struct Wrapped(#[serde(with = "super::time")] DateTime<Utc>);
        Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(t)| t))
    }
}
