-- Payload search (#12): a full-text index of every event's payload, kept in step by triggers,
-- so it is right whatever code inserts or purges events (request path, queue consumer, retention).

-- What is indexed for an event: the payload's string and number values, not its keys (every
-- Seismic event has "Email" and "Id" keys; indexing them would make those words match every
-- event). A body that is not JSON (a forced release, or a leading byte-order mark) is indexed as
-- it is. The one definition of it, used by the triggers and by a rebuild (see README "Search").
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
-- lets "zoe" find "Zoë". Keyed by events' rowid: events has no INTEGER PRIMARY KEY, so an import
-- (which renumbers rows) must be followed by a rebuild.
CREATE VIRTUAL TABLE events_search USING fts5(
  text,
  content = '',
  contentless_delete = 1,
  tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER events_search_insert AFTER INSERT ON events BEGIN
  INSERT INTO events_search (rowid, text) SELECT rowid, text FROM events_search_text WHERE rowid = new.rowid;
END;

-- The retention purge deletes events; so does anything else that ever does.
CREATE TRIGGER events_search_delete AFTER DELETE ON events BEGIN
  DELETE FROM events_search WHERE rowid = old.rowid;
END;

-- No code changes a stored body today (it is forwarded byte for byte); if any ever does, the index follows.
CREATE TRIGGER events_search_update AFTER UPDATE OF body ON events BEGIN
  DELETE FROM events_search WHERE rowid = old.rowid;
  INSERT INTO events_search (rowid, text) SELECT rowid, text FROM events_search_text WHERE rowid = new.rowid;
END;

-- Events stored before this migration.
INSERT INTO events_search (rowid, text) SELECT rowid, text FROM events_search_text;
