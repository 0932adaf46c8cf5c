-- Event bodies in R2 (src/store/bodies.ts): D1 keeps the index, the bucket BODIES keeps every
-- body byte for byte under events/<key>. A row is written after its body, so it never points at a
-- missing one; an event stored before this keeps its body here until the cron moves it (body_in_r2
-- then becomes 1 and body ''), in bounded batches.
ALTER TABLE events ADD COLUMN body_in_r2 INTEGER NOT NULL DEFAULT 0;  -- 1: the body is in R2, and `body` is ''
-- The events whose bodies the cron still has to move: empty once it has.
CREATE INDEX events_body_in_d1 ON events (key) WHERE body_in_r2 = 0;

-- Quarantined payloads too, under quarantine/<provider>/<body_sha256> (one object per row, as the
-- row is one per provider and bytes). A row kept before this keeps its body here.
ALTER TABLE quarantine ADD COLUMN body_in_r2 INTEGER NOT NULL DEFAULT 0;  -- 1: the body is in R2, and `body` is empty
ALTER TABLE quarantine ADD COLUMN body_bytes INTEGER;                     -- the body's length (NULL: length(body))

-- Objects whose rows the retention purge deleted, to delete from R2: written in the purge's own
-- transaction, so a body is never forgotten when its R2 delete fails or the cron is cut short.
CREATE TABLE body_deletions (
  object TEXT PRIMARY KEY  -- events/<key> or quarantine/<provider>/<body_sha256>
);

-- Where the retention purge's walk through the bucket stands: it deletes objects past retention
-- that no row points at (a body written whose row never was: a write refused after it). One row.
CREATE TABLE body_sweep (
  id     INTEGER PRIMARY KEY CHECK (id = 1),
  cursor TEXT  -- R2's list cursor for the next run; NULL: from the start
);
INSERT INTO body_sweep (id, cursor) VALUES (1, NULL);

-- The search index: a body in R2 is indexed by the code that writes it (store/search.ts,
-- indexBodies), which has the text at hand; the trigger indexes only bodies kept here.
DROP TRIGGER events_search_insert;
CREATE TRIGGER events_search_insert AFTER INSERT ON events WHEN (SELECT enabled FROM search_index) AND new.body_in_r2 = 0 BEGIN
  INSERT OR REPLACE INTO events_search (rowid, text) SELECT rowid, text FROM events_search_text WHERE rowid = new.rowid;
END;
-- Moving a body to R2 empties `body` and keeps the text indexed: only a change to a body kept here re-indexes it.
DROP TRIGGER events_search_update;
CREATE TRIGGER events_search_update AFTER UPDATE OF body ON events WHEN (SELECT enabled FROM search_index) AND new.body_in_r2 = 0 BEGIN
  INSERT OR REPLACE INTO events_search (rowid, text) SELECT rowid, text FROM events_search_text WHERE rowid = new.rowid;
END;
