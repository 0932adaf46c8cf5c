-- Delivery state per event and destination: what the consumer has done and will do next.
CREATE TABLE deliveries (
  event_key        TEXT NOT NULL,
  destination      TEXT NOT NULL,
  status           TEXT NOT NULL,      -- pending | failed (will retry) | delivered | gone (410) | dead
  attempts         INTEGER NOT NULL DEFAULT 0,
  last_status_code INTEGER,
  last_error       TEXT,
  last_attempt_at  INTEGER,
  next_attempt_at  INTEGER,
  delivered_at     INTEGER,
  dead_lettered_at INTEGER,            -- set once the dead-letter queue has the event
  updated_at       INTEGER NOT NULL,
  PRIMARY KEY (event_key, destination)
);
CREATE INDEX deliveries_by_status ON deliveries (status, updated_at DESC);
CREATE INDEX deliveries_by_destination ON deliveries (destination, status, updated_at DESC);

-- Every attempt, for the operator: when, how long, what came back.
CREATE TABLE delivery_attempts (
  event_key    TEXT NOT NULL,
  destination  TEXT NOT NULL,
  attempt      INTEGER NOT NULL,
  started_at   INTEGER NOT NULL,
  duration_ms  INTEGER NOT NULL,
  status_code  INTEGER,
  error        TEXT,
  PRIMARY KEY (event_key, destination, attempt, started_at)
);
