-- Bodies of one queue batch share one R2 object, a segment (src/store/bodies.ts): the consumer
-- writes a batch's bodies with one put instead of one per event. A row whose body is in a segment
-- names it and where its bytes are; a row with body_segment NULL and body_in_r2 1 has its own
-- object, events/<key> (a body stored alone: the request path's large ones, a dead letter's, a
-- moved legacy one).
ALTER TABLE events ADD COLUMN body_segment TEXT;     -- segments/<body_segment>
ALTER TABLE events ADD COLUMN body_offset INTEGER;   -- the first byte of this body in it
ALTER TABLE events ADD COLUMN body_length INTEGER;   -- its length in bytes
-- Whether a segment is still some row's body (the purge deletes it when none is), by an index
-- that leaves out rows with objects of their own.
CREATE INDEX events_by_segment ON events (body_segment) WHERE body_segment IS NOT NULL;
