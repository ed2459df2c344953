-- Alerts: rules, channels, silences, the state of every (rule, host, process) that is
-- pending or firing (or resolved lately), what fired and resolved, and every attempt to
-- notify a channel.
--
-- Written for SQLite and PostgreSQL alike: times are unix milliseconds in INTEGER
-- columns (BIGINT on PostgreSQL), rules and channels are stored as their JSON text, and
-- the queries (store/alerts.rs) use numbered parameters and ON CONFLICT ... DO UPDATE.
-- Ids are SQLite's row ids (INTEGER PRIMARY KEY); PostgreSQL's migration gives them an
-- identity column instead.

-- Rules made through the API (rules of the --alerts file are never stored).
CREATE TABLE alert_rules (
    name            TEXT    PRIMARY KEY,
    -- The rule as JSON (AlertRule).
    body            TEXT    NOT NULL,
    updated_at      INTEGER NOT NULL
);

-- Channels made through the API, secrets included: they never leave the collector
-- whole.
CREATE TABLE alert_channels (
    name            TEXT    PRIMARY KEY,
    -- The channel as JSON (AlertChannel, token included).
    body            TEXT    NOT NULL,
    updated_at      INTEGER NOT NULL
);

-- One row per (rule, host, process) that is pending, firing, or resolved lately.
-- `process` is '' for a host measure.
CREATE TABLE alert_state (
    rule            TEXT    NOT NULL,
    hostname        TEXT    NOT NULL,
    process         TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
    severity        TEXT    NOT NULL,
    -- Pending: since the condition held; firing and resolved: when it fired.
    since           INTEGER NOT NULL,
    value           DOUBLE PRECISION NOT NULL,
    -- When people were last told (firing).
    notified_at     INTEGER,
    resolved_at     INTEGER,
    PRIMARY KEY (rule, hostname, process)
);

-- Every firing and resolution, for the history.
CREATE TABLE alert_events (
    id              INTEGER PRIMARY KEY,
    rule            TEXT    NOT NULL,
    hostname        TEXT    NOT NULL,
    process         TEXT    NOT NULL,
    severity        TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('firing', 'resolved')),
    value           DOUBLE PRECISION NOT NULL,
    -- When it fired (the same for the firing and the resolved event of one alert).
    since           INTEGER NOT NULL,
    at              INTEGER NOT NULL
);
CREATE INDEX alert_events_at ON alert_events (at);

-- Every attempt to notify a channel: delivered, failed (with why), or held back by a
-- silence.
CREATE TABLE alert_deliveries (
    id              INTEGER PRIMARY KEY,
    channel         TEXT    NOT NULL,
    rule            TEXT    NOT NULL,
    hostname        TEXT    NOT NULL,
    process         TEXT    NOT NULL,
    -- firing, resolved or test.
    status          TEXT    NOT NULL,
    attempt         INTEGER NOT NULL,
    result          TEXT    NOT NULL CHECK (result IN ('delivered', 'failed', 'silenced')),
    error           TEXT,
    at              INTEGER NOT NULL
);
CREATE INDEX alert_deliveries_at ON alert_deliveries (at);

-- Silences: notifications of a rule, a host, or both are held back until `ends_at`.
-- NULL matches every rule (or host).
CREATE TABLE alert_silences (
    id              INTEGER PRIMARY KEY,
    rule            TEXT,
    hostname        TEXT,
    ends_at         INTEGER NOT NULL,
    comment         TEXT    NOT NULL,
    created_by      TEXT    NOT NULL,
    created_at      INTEGER NOT NULL
);
