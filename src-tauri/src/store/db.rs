//! The two databases the store runs on, SQLite and PostgreSQL, and where a store is.
//!
//! Each backend keeps its native sqlx pool ([`Db`]): a `Db::Sqlite` or a `Db::Postgres`,
//! never sqlx's `Any` driver. Why: `Any` decodes through its own narrow set of types
//! (no `Vec<u8>` into BYTEA without copies, no native booleans), hides each driver's
//! options (SQLite's WAL, busy timeout and `BEGIN IMMEDIATE`, which the ingest path's
//! latency depends on) and adds a layer of conversion to every row of the hottest
//! path. With native pools, SQLite runs exactly the code it ran before.
//!
//! A query is written once, in SQL both accept: numbered parameters (`$1`, which
//! sqlx's SQLite driver takes too), `ON CONFLICT ... DO UPDATE/NOTHING`, `RETURNING`,
//! `IS [NOT] DISTINCT FROM` for comparisons that may meet NULL. [`on!`] runs the same
//! query text and binds on whichever pool or connection is at hand: the expression is
//! written once and compiled once per backend. Rows decode from both through
//! `#[derive(sqlx::FromRow)]`. Integers are BIGINT on PostgreSQL and bound as `i64`;
//! sums of them are cast back to BIGINT (PostgreSQL's SUM of BIGINT is NUMERIC). Where
//! the SQL must differ (SQLite's PRAGMAs, `COLLATE NOCASE`), both texts stand side by
//! side in the same function, chosen by [`Db::is_sqlite`] or a `match`.

use std::path::PathBuf;

/// One thing of each backend: a pool, a connection, a transaction.
#[derive(Debug)]
pub enum Db<S, P> {
    /// SQLite's.
    Sqlite(S),
    /// PostgreSQL's.
    Postgres(P),
}

impl<S, P> Db<S, P> {
    /// Whether this is SQLite's.
    pub(super) fn is_sqlite(&self) -> bool {
        matches!(self, Db::Sqlite(_))
    }
}

impl<S: Clone, P: Clone> Clone for Db<S, P> {
    fn clone(&self) -> Self {
        match self {
            Db::Sqlite(s) => Db::Sqlite(s.clone()),
            Db::Postgres(p) => Db::Postgres(p.clone()),
        }
    }
}

/// A pool of either backend.
pub(super) type Pool = Db<sqlx::SqlitePool, sqlx::PgPool>;

/// A connection of either backend, borrowed (from a pool or a transaction).
pub(super) type Conn<'c> = Db<&'c mut sqlx::SqliteConnection, &'c mut sqlx::PgConnection>;

/// A pooled connection of either backend.
pub(super) type PoolConn = Db<sqlx::pool::PoolConnection<sqlx::Sqlite>, sqlx::pool::PoolConnection<sqlx::Postgres>>;

/// A transaction of either backend.
pub(super) type Tx = Db<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Transaction<'static, sqlx::Postgres>>;

/// Runs `$body` with `$c` bound to the backend's own pool, connection or transaction
/// in `$db` (a [`Db`], or a reference to one): the same text, compiled for each.
macro_rules! on {
    ($db:expr, |$c:ident| $body:expr) => {
        match $db {
            $crate::store::db::Db::Sqlite($c) => $body,
            $crate::store::db::Db::Postgres($c) => $body,
        }
    };
}
pub(super) use on;

impl Pool {
    /// A connection of this pool.
    pub(super) async fn acquire(&self) -> Result<PoolConn, sqlx::Error> {
        Ok(match self {
            Db::Sqlite(p) => Db::Sqlite(p.acquire().await?),
            Db::Postgres(p) => Db::Postgres(p.acquire().await?),
        })
    }

    /// SQL that is true when `a` equals `b` ignoring the case of ASCII letters. SQLite's
    /// `NOCASE` folds ASCII letters only; PostgreSQL has no such collation, so there both
    /// sides go through `ascii_fold`, which its migration defines to fold the same
    /// letters (its `lower()` would fold others too, by locale).
    pub(super) fn ascii_nocase(&self, a: &str, b: &str) -> String {
        match self {
            Db::Sqlite(_) => format!("{a} = {b} COLLATE NOCASE"),
            Db::Postgres(_) => format!("ascii_fold({a}) = ascii_fold({b})"),
        }
    }

    /// Closes every connection, waiting for those in use.
    pub(super) async fn close(&self) {
        on!(self, |p| p.close().await)
    }
}

impl PoolConn {
    /// The connection, for queries.
    pub(super) fn conn(&mut self) -> Conn<'_> {
        match self {
            Db::Sqlite(c) => Db::Sqlite(&mut **c),
            Db::Postgres(c) => Db::Postgres(&mut **c),
        }
    }
}

impl Tx {
    /// The transaction's connection, for queries.
    pub(super) fn conn(&mut self) -> Conn<'_> {
        match self {
            Db::Sqlite(t) => Db::Sqlite(&mut **t),
            Db::Postgres(t) => Db::Postgres(&mut **t),
        }
    }

    /// Commits.
    pub(super) async fn commit(self) -> Result<(), sqlx::Error> {
        on!(self, |t| t.commit().await)
    }

    /// Rolls back.
    pub(super) async fn rollback(self) -> Result<(), sqlx::Error> {
        on!(self, |t| t.rollback().await)
    }
}

impl Conn<'_> {
    /// The same connection, borrowed again (to pass it on and keep it).
    pub(super) fn reborrow(&mut self) -> Conn<'_> {
        match self {
            Db::Sqlite(c) => Db::Sqlite(&mut **c),
            Db::Postgres(c) => Db::Postgres(&mut **c),
        }
    }
}

/// Where a store is: a SQLite file, or a PostgreSQL database by URL.
///
/// Its `Debug` and `Display` never show a password (see [`Database::redacted`]).
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file, created if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL database: `postgres://USER:PASSWORD@HOST:PORT/DATABASE`.
    Postgres(String),
}

impl Database {
    /// The `--database` URL: `postgres://` or `postgresql://` is PostgreSQL; anything
    /// else is refused (SQLite is what runs without the flag, in the data directory).
    pub fn from_url(url: &str) -> Result<Database, String> {
        let url = url.trim();
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("postgres" | "postgresql") => {
                // Checked now, so that a mistyped URL is told at once rather than at the
                // first query. sqlx's own message may quote the URL: not passed on.
                <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(url).map_err(|_| {
                    format!(
                        "`{}` is not a PostgreSQL URL sqlx can read: write it as \
                         postgres://USER:PASSWORD@HOST:PORT/DATABASE (percent-encode special characters in the \
                         password)",
                        redact(url)
                    )
                })?;
                Ok(Database::Postgres(url.to_owned()))
            }
            _ => Err(format!(
                "`{}` is not a database URL Procyon can use: --database takes a PostgreSQL URL \
                 (postgres://USER:PASSWORD@HOST:PORT/DATABASE). Without it, the store is SQLite, the file \
                 procyon.db in the data directory (--data).",
                redact(url)
            )),
        }
    }

    /// Where it is, for logs and messages: a file's path, or the URL with its password
    /// replaced by `***`.
    pub fn redacted(&self) -> String {
        match self {
            Database::Sqlite(path) => path.display().to_string(),
            Database::Postgres(url) => redact(url),
        }
    }

    /// Whether this is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Database::Postgres(_))
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Database::Postgres(_) => f.debug_tuple("Postgres").field(&self.redacted()).finish(),
        }
    }
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// A URL with the password of its user part and any `password=` parameter replaced by
/// `***`.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => format!("{user}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_pick_the_backend_and_never_show_a_password() {
        let db = Database::from_url("postgres://procyon:s3cret@db.example:5432/fleet").unwrap();
        assert!(db.is_postgres());
        assert_eq!(db.redacted(), "postgres://procyon:***@db.example:5432/fleet");
        assert!(!format!("{db:?} {db}").contains("s3cret"));
        assert!(Database::from_url("postgresql://u@h/d").unwrap().is_postgres());
        assert_eq!(
            redact("postgres://h/d?user=u&password=pw&sslmode=require"),
            "postgres://h/d?user=u&password=***&sslmode=require"
        );
        for bad in ["sqlite:///tmp/x.db", "mysql://u:hunter2@h/d", "/var/lib/procyon", ""] {
            let e = Database::from_url(bad).unwrap_err();
            assert!(e.contains("PostgreSQL URL"), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        let e = Database::from_url("postgres://u:hunter2@h:notaport/d").unwrap_err();
        assert!(!e.contains("hunter2") && e.contains("postgres://u:***@h:notaport/d"), "{e}");
    }
}
