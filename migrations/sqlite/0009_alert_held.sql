-- Notifications a channel's quiet hours hold back (alert/service.rs): kept until the
-- quiet hours end and one summary of them has gone out, so that a restart in between
-- loses none. Written for SQLite and PostgreSQL alike, as 0006_alerts.sql.
CREATE TABLE alert_held (
    id              INTEGER PRIMARY KEY,
    -- The channel whose quiet hours hold it.
    channel         TEXT    NOT NULL,
    -- The notification as JSON: status, rule, metric, host, process, severity,
    -- summary, value, when it fired and resolved.
    body            TEXT    NOT NULL,
    -- When it was held (unix milliseconds).
    at              INTEGER NOT NULL
);
CREATE INDEX alert_held_channel ON alert_held (channel, id);
