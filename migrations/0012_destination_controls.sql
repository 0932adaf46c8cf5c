-- Steering delivery while it runs: pause and resume, and the circuit breaker, per destination.
-- DESTINATIONS is static configuration (a deploy); this is the state an operator or the delivery
-- path changes at run time. No row: the destination is active with a closed circuit.
CREATE TABLE destination_state (
  destination      TEXT PRIMARY KEY,
  paused_at        INTEGER,            -- ms; set while paused (by an operator, or after a run of 410s)
  paused_reason    TEXT,               -- why: "paused by an operator", or the 410 rule's words
  failures         INTEGER NOT NULL DEFAULT 0,  -- consecutive failed attempts (a success resets it)
  gone_streak      INTEGER NOT NULL DEFAULT 0,  -- consecutive 410 answers (any other answer resets it)
  opened_at        INTEGER,            -- ms; the circuit is open since then (NULL: closed)
  probe_at         INTEGER,            -- ms; when the next probe is due (set when one is scheduled)
  last_success_at  INTEGER,
  last_failure_at  INTEGER,
  updated_at       INTEGER NOT NULL
);

-- Delivery rounds that failed in a row (an exception while handling the event's message): after
-- 10 the event is dead, everywhere. A round that runs resets it, a replay too. Counting rounds,
-- not the queue's deliveries of a message, keeps busy and deferred deliveries from counting.
ALTER TABLE events ADD COLUMN failed_rounds INTEGER NOT NULL DEFAULT 0;
-- Bumped by a replay and by a release of held deliveries. A delivery round records its outcome
-- only if the event's generation is still the one it claimed, so a replay (or a resume) made
-- while a round is in flight wins over that round's outcome.
ALTER TABLE events ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;

-- The open circuit's current probe: only the probe message carrying this id probes (a lost,
-- late or duplicate probe message is an ordinary message), so probes never multiply.
ALTER TABLE destination_state ADD COLUMN probe_id TEXT;
-- Bumped on the rows a replay or a release resets: a round records a delivery's outcome only if
-- its generation is still the one it claimed, so a replay (or a resume) made while a round is in
-- flight wins for the deliveries it reset, and only for those.
ALTER TABLE deliveries ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
-- While held: the order held work is released and probed in, the event's receipt time (oldest
-- first); a failed probe moves its delivery to the back, so one event a receiver always refuses
-- cannot keep a circuit from probing the rest.
ALTER TABLE deliveries ADD COLUMN held_order INTEGER;
CREATE INDEX deliveries_held ON deliveries (destination, status, held_order);
