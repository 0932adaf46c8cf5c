-- The naive gateway's table (bench/peers.ts): one row per event id.
CREATE TABLE events (
  id          TEXT PRIMARY KEY,
  body        TEXT NOT NULL,
  received_at INTEGER NOT NULL
);
