-- Nothing stranded (#9): what the delivery path last did for an event, operator pins, and a
-- record of everything that reaches the dead-letter queue.
ALTER TABLE events ADD COLUMN progress_at INTEGER;  -- ms; last time a consumer handled the event (the sweep's clock)
ALTER TABLE events ADD COLUMN last_error TEXT;      -- why the last delivery round could not run; NULL once one ran
-- 1: an operator replayed this delivery by name, so it is delivered even where routing no longer selects it.
ALTER TABLE deliveries ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;

-- Every message the dead-letter queue delivers: our own notices of dead deliveries, and event
-- messages that used up the queue's retries. Nothing leaves the system unrecorded.
CREATE TABLE dead_letters (
  message_id   TEXT PRIMARY KEY,       -- the queue's message id: a redelivered batch records once
  event_key    TEXT NOT NULL,
  destinations TEXT,                   -- JSON array of dead destinations, or NULL (retries exhausted)
  attempts     INTEGER NOT NULL,       -- the queue's delivery attempts of the dead-letter message
  received_at  INTEGER NOT NULL
);
CREATE INDEX dead_letters_by_received ON dead_letters (received_at DESC);
