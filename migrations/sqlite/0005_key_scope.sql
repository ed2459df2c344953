-- What an API key may do: `upload` (snapshots, the agent channel) or `metrics` (read
-- /metrics and nothing else). Every key made before this existed was an agent's key.
ALTER TABLE api_keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'upload' CHECK (scope IN ('upload', 'metrics'));
