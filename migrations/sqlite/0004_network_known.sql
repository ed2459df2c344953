-- Network rates a snapshot did not give are not made up as zeros in charts.
--
-- A short upload (the original upload API's shape) has no network figures, yet the
-- summary columns `sent_bytes_per_sec` and `received_bytes_per_sec` are NOT NULL, and
-- SQLite cannot drop that constraint without rebuilding the table. So a flag says
-- whether they are known: 0 means the two columns hold 0 for "not known", and series
-- leave such snapshots out of their network averages and peaks (`null` when no snapshot
-- of a point knew). Rows stored before this migration count as known.
ALTER TABLE snapshots ADD COLUMN network_known INTEGER NOT NULL DEFAULT 1;

-- How many of a bucket's `samples` knew their network rates: `sent_avg` and
-- `received_avg` average over these only. NULL (buckets rolled before this migration)
-- means all of them.
ALTER TABLE rollups ADD COLUMN network_samples INTEGER;
