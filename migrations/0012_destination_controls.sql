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
