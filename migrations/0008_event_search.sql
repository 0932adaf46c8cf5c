-- Payload search (#12): a full-text index of every event's payload, kept in step by triggers, so
-- it is right whatever code inserts, changes or purges events (request path, queue consumer,
-- retention). Opt-in: it adds 25-50% to the cost of storing an event (bench/search.mjs), so
-- the triggers index only while search_index.enabled is 1, which the cron sets to follow the
-- SEARCH var (src/store/search.ts). With SEARCH off they cost one lookup of a one-row table.

-- What is indexed for an event: the payload's string and number values, not its keys (every
-- Seismic event has "Email" and "Id" keys; indexing them would make those words match every
-- event). A body that is not JSON (a forced release, or a leading byte-order mark) is indexed as
-- it is. The one definition of it, for the triggers and for building the index.
CREATE VIEW events_search_text AS
SELECT rowid,
       CASE WHEN json_valid(body)
            THEN (SELECT group_concat(value, ' ') FROM json_tree(events.body) WHERE type IN ('text', 'integer', 'real'))
            ELSE body END AS text
FROM events;

-- Contentless (the text is not stored twice) with contentless_delete, so a row leaves the index
-- by rowid alone: no trigger has to reproduce exactly the text it indexed (SQLite 3.43+).
-- unicode61 splits on punctuation, so jane.doe@example.com is indexed as jane doe example com and
-- found by the phrase "jane.doe@example.com", by "jane" and by "example.com"; remove_diacritics
-- lets "zoe" find "Zoë". Keyed by events' rowid: events has no INTEGER PRIMARY KEY, so after an
-- import (which renumbers rows) the index must be built again (SEARCH off, cron, SEARCH on, cron).
CREATE VIRTUAL TABLE events_search USING fts5(
  text,
  content = '',
  contentless_delete = 1,
  tokenize = 'unicode61 remove_diacritics 2'
);

-- Whether the triggers index, and how far building the index for older events has got. One row.
CREATE TABLE search_index (
  id          INTEGER PRIMARY KEY CHECK (id = 1),
  enabled     INTEGER NOT NULL,  -- 1: every insert, delete and body change of an event is indexed
  build_below INTEGER            -- events with a rowid below this, stored before indexing began, are not indexed yet; NULL: none
);
INSERT INTO search_index (id, enabled, build_below) VALUES (1, 0, NULL);

-- OR REPLACE: the rowid's entry becomes the current text whether or not it has one (a changed
-- body; an event the build reaches after its trigger indexed it).
CREATE TRIGGER events_search_insert AFTER INSERT ON events WHEN (SELECT enabled FROM search_index) BEGIN
  INSERT OR REPLACE INTO events_search (rowid, text) SELECT rowid, text FROM events_search_text WHERE rowid = new.rowid;
END;

-- The retention purge deletes events; so does anything else that ever does.
CREATE TRIGGER events_search_delete AFTER DELETE ON events WHEN (SELECT enabled FROM search_index) BEGIN
  DELETE FROM events_search WHERE rowid = old.rowid;
END;

-- No code changes a stored body today (it is forwarded byte for byte); if any ever does, the index follows.
CREATE TRIGGER events_search_update AFTER UPDATE OF body ON events WHEN (SELECT enabled FROM search_index) BEGIN
  INSERT OR REPLACE INTO events_search (rowid, text) SELECT rowid, text FROM events_search_text WHERE rowid = new.rowid;
END;
