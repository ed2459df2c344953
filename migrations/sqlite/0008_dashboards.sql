-- Dashboards people arrange themselves (store/dashboards.rs): each belongs to one user
-- and is deleted with them (store/accounts.rs); `shared` says who else may read it (`users`: those named in
-- `shared_with`; `everyone`: every user, set by admins only). The widgets are stored as
-- the JSON the API checked (model/dashboard.rs), never as the client sent it.
--
-- Times are unix milliseconds. PostgreSQL's 0004 is the same table in its dialect.
CREATE TABLE dashboards (
    id              INTEGER PRIMARY KEY,
    -- The owner's user name; the desktop app's own user (`desktop:NAME`) is no account.
    owner           TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    shared          TEXT    NOT NULL CHECK (shared IN ('private', 'users', 'everyone')),
    -- A JSON array of user names (empty unless `shared` is 'users').
    shared_with     TEXT    NOT NULL,
    -- A JSON array of widgets.
    widgets         TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX dashboards_owner ON dashboards (owner);
CREATE INDEX dashboards_shared ON dashboards (shared);
