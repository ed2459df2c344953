-- The host in depth in history: disk I/O and the hottest temperature of each
-- snapshot, and their averages and peaks in rollup buckets, for the charts.
--
-- A snapshot's figures are NULL when it did not measure them (an upload, an older
-- agent, a machine without sensors). The disk rates are the disks' sum, device-mapper
-- and RAID devices left out (their I/O is their member disks').
ALTER TABLE snapshots ADD COLUMN disk_read_bytes_per_sec REAL;
ALTER TABLE snapshots ADD COLUMN disk_write_bytes_per_sec REAL;
ALTER TABLE snapshots ADD COLUMN temperature_celsius REAL;

-- How many of a bucket's `samples` measured disk I/O, and how many a temperature: the
-- averages are over these only, and a bucket where none did shows no figure. Buckets
-- rolled before this migration have 0 of each.
ALTER TABLE rollups ADD COLUMN disk_samples INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollups ADD COLUMN disk_read_avg REAL NOT NULL DEFAULT 0;
ALTER TABLE rollups ADD COLUMN disk_read_max REAL NOT NULL DEFAULT 0;
ALTER TABLE rollups ADD COLUMN disk_write_avg REAL NOT NULL DEFAULT 0;
ALTER TABLE rollups ADD COLUMN disk_write_max REAL NOT NULL DEFAULT 0;
ALTER TABLE rollups ADD COLUMN temperature_samples INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollups ADD COLUMN temperature_avg REAL NOT NULL DEFAULT 0;
ALTER TABLE rollups ADD COLUMN temperature_max REAL NOT NULL DEFAULT 0;
