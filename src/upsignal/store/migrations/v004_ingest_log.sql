-- How far the ingest server's log has been loaded into the events table.

-- The server acknowledges a request once its events are synced to the ingest log
-- (a folder next to the store file); a loader thread copies log records into events
-- and updates loaded_seq in the same transaction, so a restart after a crash loads
-- exactly the records above it.
CREATE TABLE ingest_log_state (
    loaded_seq BIGINT NOT NULL          -- number of the last log record stored in events
);
-- Start above the commit numbers the ingest writer gave live_touched rows before this
-- migration, because log record numbers now number those rows.
INSERT INTO ingest_log_state SELECT COALESCE(max(seq), 0) FROM live_touched;
