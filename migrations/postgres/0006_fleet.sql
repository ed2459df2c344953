-- Several collectors on one database: which collector holds each agent's channel, and
-- process actions asked on one collector for an agent another one holds. PostgreSQL
-- only: a SQLite store has one collector, which holds every agent it relays to.

-- The collector holding each connected agent's channel. `holder` is the collector's id
-- for this run (random at start), under which it holds a session advisory lock while
-- it runs: a row whose holder holds no such lock is left by a collector that died.
CREATE TABLE agent_holders (
    hostname        TEXT    PRIMARY KEY,
    holder          BIGINT  NOT NULL,
    -- The agent carries out process actions (`--allow-control`).
    allow_control   BOOLEAN NOT NULL,
    since           BIGINT  NOT NULL
);

-- A process action relayed through the database: asked by one collector, carried to
-- the agent by its holder, whose answer comes back here. Rows are deleted once
-- answered and read, or once stale.
CREATE TABLE relayed_actions (
    id              BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hostname        TEXT    NOT NULL,
    holder          BIGINT  NOT NULL,
    -- The action request as JSON (ActionRequest).
    request         TEXT    NOT NULL,
    asked_at        BIGINT  NOT NULL,
    -- Set by the holder as it takes the action: it is carried out once.
    claimed_at      BIGINT,
    -- The outcome as JSON, and when it came.
    answer          TEXT,
    answered_at     BIGINT
);

CREATE INDEX relayed_actions_holder ON relayed_actions (holder) WHERE claimed_at IS NULL;
