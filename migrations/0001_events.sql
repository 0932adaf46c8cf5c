-- Events accepted by the request path. One row per (provider, type, provider event id):
-- concurrent redeliveries collide on that unique key and find the first one's row.
CREATE TABLE events (
  key           TEXT PRIMARY KEY,            -- evt_<hex>, our id (also the forwarded webhook-id)
  provider      TEXT NOT NULL,
  event_id      TEXT NOT NULL,               -- the provider's id, covered by the signature
  type          TEXT NOT NULL,
  known_type    INTEGER NOT NULL,            -- 0: valid envelope, type unknown to this gateway
  tenant        TEXT,
  occurred_at   TEXT,                        -- exactly as the provider sent it (not always ISO)
  received_at   INTEGER NOT NULL,            -- ms since epoch
  verified_with TEXT NOT NULL,               -- which secret matched: current | old
  content_type  TEXT NOT NULL,
  body          TEXT NOT NULL,               -- the raw body, forwarded byte for byte
  status        TEXT NOT NULL,               -- received | queued | delivered | failed | dead
  claimed_at    INTEGER,                     -- an attempt is enqueuing it (lease)
  enqueued_at   INTEGER,                     -- set once the queue accepted it
  UNIQUE (provider, type, event_id)
);
CREATE INDEX events_by_received ON events (received_at DESC, key DESC);
CREATE INDEX events_by_provider_type ON events (provider, type, received_at DESC);
CREATE INDEX events_by_status ON events (status, received_at DESC);
CREATE INDEX events_by_event_id ON events (event_id);

-- Signed bodies that failed JSON parsing or their schema: kept, never lost.
CREATE TABLE quarantine (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  provider      TEXT NOT NULL,
  reason        TEXT NOT NULL,               -- malformed_json | schema_mismatch | ...
  error         TEXT NOT NULL,
  path          TEXT,                        -- JSONPath of the first schema failure
  content_type  TEXT NOT NULL,
  verified_with TEXT NOT NULL,
  body          BLOB NOT NULL,
  body_sha256   TEXT NOT NULL,
  first_received_at INTEGER NOT NULL,
  last_received_at  INTEGER NOT NULL,
  attempts      INTEGER NOT NULL DEFAULT 1,
  UNIQUE (provider, body_sha256)
);
CREATE INDEX quarantine_by_received ON quarantine (last_received_at DESC);
