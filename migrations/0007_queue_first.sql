-- Queue-first ingest (#10): the request path acknowledges after one Queue send, and the
-- consumer stores the event. The request path's enqueue claim is gone; in its place, who may
-- deliver an event:
--   owner       the queue message whose insert created the row. Its retries recognise themselves
--               by message id; every other copy of the provider event is acked as a duplicate.
--               NULL when the row was written outside the consumer (a body too large for a
--               queue message, or an event the dead-letter consumer kept).
--   lease_by,   the message delivering the event now, and until when (ms). Taken in the same D1
--   lease_until batch that stores the event, released in the batch that records the round, so two
--               messages of one event (the owner and a sweep's or a replay's) never forward at once.
ALTER TABLE events DROP COLUMN claimed_at;
ALTER TABLE events ADD COLUMN owner TEXT;
ALTER TABLE events ADD COLUMN lease_by TEXT;
ALTER TABLE events ADD COLUMN lease_until INTEGER;
