-- Bodies of one queue batch share one R2 object, a segment (src/store/bodies.ts): the consumer
-- writes a batch's bodies with one put instead of one per event. A row whose body is in a segment
-- names it and where its bytes are; a row with body_segment NULL and body_in_r2 1 has its own
-- object, events/<key> (a body stored alone: a batch's only one, the request path's large ones, a moved legacy one,
-- one moved out of its segment by the purge).
ALTER TABLE events ADD COLUMN body_segment TEXT;     -- segments/<body_segment>
ALTER TABLE events ADD COLUMN body_offset INTEGER;   -- the first byte of this body in it
ALTER TABLE events ADD COLUMN body_length INTEGER;   -- its length in bytes

-- Every segment, written in the same D1 transaction as the rows that point at it (a segment with
-- no row here is an orphan: its D1 write failed after the R2 write). Retention goes by the oldest
-- body in it, copies of events stored earlier included (their bytes are in it too, unread; such a
-- copy counts from its event's stored received_at, not from when it was resent): once
-- that one is past the cutoff, the purge moves the bodies of the rows still in it to objects of
-- their own, and a run later deletes it (a reader that read a row's place just before the move
-- still finds the segment), so no body outlives its event's retention for sharing an object.
CREATE TABLE body_segments (
  id                 TEXT PRIMARY KEY,   -- segments/<id>
  oldest_received_at INTEGER NOT NULL,   -- the earliest received_at of the bodies in it
  keys               TEXT NOT NULL,      -- JSON array of the event keys whose bodies it holds
  moved_at           INTEGER             -- when the purge moved out the bodies of the rows still in it
);
CREATE INDEX body_segments_by_age ON body_segments (oldest_received_at) WHERE moved_at IS NULL;
CREATE INDEX body_segments_moved ON body_segments (moved_at) WHERE moved_at IS NOT NULL;
