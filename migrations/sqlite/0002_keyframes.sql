-- Raw snapshots stored as deltas from a keyframe, and top lists derived from bodies.
--
-- `body` is zstd-compressed JSON. When `base_id` is NULL it is the whole snapshot (a
-- keyframe, and every row stored before this migration). Otherwise it is the
-- snapshot's delta (`SnapshotDelta`) from the keyframe `base_id`: the same host's first
-- stored snapshot of the same minute.
--
-- No foreign key: retention deletes a keyframe only with its whole minute, and a reader
-- that finds a keyframe gone treats the row as deleted too.
--
-- `top_json` is '' in rows stored from now on: rollups derive a snapshot's top list
-- from its body, and read the stored list of older rows.
ALTER TABLE snapshots ADD COLUMN base_id INTEGER;

-- A snapshot's host bookkeeping moves into its insert trigger, so that storing one is a
-- single statement: the count, the host's times and newest seq, and the queue of
-- snapshots whose minute is already rolled up (merged by the next maintenance).
DROP TRIGGER snapshots_count_insert;
CREATE TRIGGER snapshots_insert AFTER INSERT ON snapshots
BEGIN
    UPDATE hosts SET
        snapshot_count = snapshot_count + 1,
        last_taken_at = MAX(last_taken_at, NEW.taken_at),
        first_seen = MIN(first_seen, NEW.received_at),
        last_seen = MAX(last_seen, NEW.received_at),
        last_seq = MAX(last_seq, NEW.seq)
    WHERE id = NEW.host_id;
    INSERT INTO rollup_late (snapshot_id) SELECT NEW.id FROM rollup_progress
    WHERE host_id = NEW.host_id AND tier = 'minute' AND rolled_until > NEW.taken_at;
END;
