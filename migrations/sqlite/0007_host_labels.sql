-- Host labels (`env=prod`): those a host's agent sends in its hello (`source = 'agent'`,
-- replaced at each hello) and those an admin sets (`source = 'admin'`, which win per
-- key). Keyed by host name, not id: an agent's labels arrive with its hello, before
-- the host's first snapshot makes its row in `hosts`.
CREATE TABLE host_labels (
    hostname    TEXT    NOT NULL,
    source      TEXT    NOT NULL CHECK (source IN ('agent', 'admin')),
    key         TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    PRIMARY KEY (hostname, source, key)
);
