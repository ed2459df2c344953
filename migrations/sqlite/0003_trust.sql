-- What the trust boundary needs: tokens that end with the account, and hosts bound to
-- the agent that first reported them.

-- Every token carries its user's generation; changing the password or the role gives
-- the user a new random one, so tokens issued before no longer verify. Random rather
-- than counted: a user removed and made again under the same name (SQLite may reuse the
-- row id too) must not bring old tokens back to life.
ALTER TABLE users ADD COLUMN token_generation INTEGER NOT NULL DEFAULT 0;

-- Which key and which machine a host name belongs to. A host is bound when it is first
-- seen: to the API key that reported it and, when the agent sent one, to the machine's
-- fingerprint (a hash of its machine id). Kept apart from `hosts`, whose rows the
-- snapshot writer creates: the binding is settled before anything is stored.
CREATE TABLE host_bindings (
    hostname        TEXT    PRIMARY KEY,
    -- No foreign key: a revoked key stays in `api_keys`, and a deleted one leaves the
    -- binding for an admin to reset.
    key_id          INTEGER NOT NULL,
    machine_id      TEXT,
    bound_at        INTEGER NOT NULL
);
CREATE INDEX host_bindings_key ON host_bindings (key_id);
